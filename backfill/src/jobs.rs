//! `jobs enable|disable`: TimescaleDB background jobs on the target (runbook step 7).
//!
//! `schema` leaves the user jobs (id >= 1000: retention, compression, continuous-aggregate
//! refresh) disabled so nothing runs on half-copied history. `enable` first refreshes the
//! continuous aggregates over the backfilled range (the stored plans' range, or
//! `--from`/`--until`), optionally runs each job once, then schedules them all again in one
//! transaction. Without TimescaleDB there is nothing to do.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use dualwrite_common::catalog::TimeType;
use dualwrite_common::ident::{quote_ident, quote_literal};
use tokio_postgres::Client;

use crate::cli::{JobsAction, JobsArgs};
use crate::pg::{self, PgError, ServerInfo, Side};
use crate::timescale;
use crate::Error;

/// One background job as `timescaledb_information.jobs` shows it.
#[derive(Clone, Debug)]
struct Job {
    id: i32,
    proc_name: String,
    scheduled: bool,
    hypertable: Option<String>,
    next_start: Option<String>,
}

/// What `enable` does with one job.
#[derive(Clone, Debug)]
struct Scheduling {
    id: i32,
    scheduled: bool,
    /// The next start to set, a timestamptz literal; `None` leaves it.
    next_start: Option<String>,
    /// For the output.
    why: String,
}

/// A continuous aggregate and the type of its time bucket.
#[derive(Clone, Debug)]
struct Cagg {
    view: String,
    time_type: Option<TimeType>,
}

/// Run `jobs`.
pub async fn run(args: JobsArgs) -> crate::Result<ExitCode> {
    let url = pg::parse_url(&args.target.target, Side::Target)
        .map_err(|e| Error::Input(e.to_string()))?;
    let client = pg::open(&url, Side::Target).await.map_err(|e| match e {
        PgError::Query { .. } => Error::from(e),
        other => Error::Input(other.to_string()),
    })?;
    let info = ServerInfo::read(&client, Side::Target).await?;
    let verb = match args.action {
        JobsAction::Enable => "enable",
        JobsAction::Disable => "disable",
    };
    let Some(version) = &info.timescaledb else {
        println!(
            "TimescaleDB is not installed in the target database {}: there are no background jobs to {verb} and no continuous aggregates to refresh; nothing to do.",
            info.database
        );
        return Ok(ExitCode::SUCCESS);
    };
    let schema = info
        .timescaledb_schema
        .clone()
        .unwrap_or_else(|| "public".into());
    println!(
        "target: database {}, TimescaleDB {version} in schema {schema}",
        info.database
    );
    let jobs = list_jobs(&client).await?;
    match args.action {
        JobsAction::Disable => {
            set_scheduled(&client, &schema, false).await?;
            println!(
                "disabled {} background jobs (id >= {}):",
                jobs.len(),
                timescale::FIRST_USER_JOB
            );
        }
        JobsAction::Enable => {
            if args.no_refresh {
                println!("continuous aggregates: not refreshed (--no-refresh); their re-enabled refresh policies catch up on their own schedule");
            } else {
                refresh(&client, &schema, &args).await?;
            }
            let (states, origin) = source_states(&client, &args).await?;
            let paused: Vec<i32> = jobs
                .iter()
                .filter(|j| states.get(&j.id).is_some_and(|s| !s.scheduled))
                .map(|j| j.id)
                .collect();
            if args.run_now {
                let to_run: Vec<Job> = jobs
                    .iter()
                    .filter(|j| !paused.contains(&j.id))
                    .cloned()
                    .collect();
                run_each(&client, &schema, &to_run).await?;
            }
            let plan = schedule_plan(&client, &jobs, &states, args.stagger).await?;
            apply_schedule(&client, &schema, &plan).await?;
            println!(
                "enabled {} of {} background jobs (id >= {}); schedules from {origin}:",
                plan.iter().filter(|p| p.scheduled).count(),
                jobs.len(),
                timescale::FIRST_USER_JOB
            );
            for p in &plan {
                println!("  job {:>5}  {}", p.id, p.why);
            }
        }
    }
    for job in list_jobs(&client).await? {
        println!(
            "  job {:>5}  {:<32} {:<28} scheduled: {:<5} next start: {}",
            job.id,
            job.proc_name,
            job.hypertable.as_deref().unwrap_or("-"),
            job.scheduled,
            job.next_start.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn query_err(source: tokio_postgres::Error) -> Error {
    Error::from(PgError::Query {
        side: Side::Target,
        source,
    })
}

async fn list_jobs(client: &Client) -> crate::Result<Vec<Job>> {
    let rows = client
        .query(
            "SELECT job_id, proc_name::text, scheduled,
                    CASE WHEN hypertable_name IS NOT NULL
                         THEN hypertable_schema::text || '.' || hypertable_name::text END,
                    next_start::text
               FROM timescaledb_information.jobs WHERE job_id >= $1 ORDER BY job_id",
            &[&timescale::FIRST_USER_JOB],
        )
        .await
        .map_err(query_err)?;
    Ok(rows
        .iter()
        .map(|r| Job {
            id: r.get(0),
            proc_name: r.get(1),
            scheduled: r.get(2),
            hypertable: r.get(3),
            next_start: r.get(4),
        })
        .collect())
}

/// Each job's schedule on the source: live with `--source`, else as `schema` recorded it.
/// Empty (every job enabled now, staggered) when neither is there.
async fn source_states(
    client: &Client,
    args: &JobsArgs,
) -> crate::Result<(BTreeMap<i32, timescale::SourceJob>, String)> {
    if let Some(text) = &args.source {
        let url = pg::parse_url(text, Side::Source).map_err(|e| Error::Input(e.to_string()))?;
        let source = pg::open(&url, Side::Source).await.map_err(|e| match e {
            PgError::Query { .. } => Error::from(e),
            other => Error::Input(other.to_string()),
        })?;
        let jobs = crate::schema::source_jobs(&source).await?;
        return Ok((
            jobs.into_iter().map(|j| (j.id, j)).collect(),
            "the source, now".into(),
        ));
    }
    let recorded: bool = client
        .query_one(
            &format!(
                "SELECT to_regclass('{}') IS NOT NULL",
                timescale::RECORDED_JOBS_TABLE
            ),
            &[],
        )
        .await
        .map_err(query_err)?
        .get(0);
    if !recorded {
        println!("jobs: no source schedules recorded by `schema` and no --source: every job is enabled, those due staggered by --stagger");
        return Ok((BTreeMap::new(), "nowhere (none recorded)".into()));
    }
    let rows = client
        .query(
            &format!(
                "SELECT job_id, scheduled, next_start::text, recorded_at::text FROM {} ORDER BY job_id",
                timescale::RECORDED_JOBS_TABLE
            ),
            &[],
        )
        .await
        .map_err(query_err)?;
    let when: Option<String> = rows.first().map(|r| r.get(3));
    Ok((
        rows.iter()
            .map(|r| {
                let id: i32 = r.get(0);
                (
                    id,
                    timescale::SourceJob {
                        id,
                        scheduled: r.get(1),
                        next_start: r.get(2),
                    },
                )
            })
            .collect(),
        format!(
            "the source as `schema` recorded it at {} (--source reads them now)",
            when.as_deref().unwrap_or("-")
        ),
    ))
}

/// Each job's new schedule: paused on the source stays paused; a next start still ahead is
/// kept; jobs already due start one `stagger` apart from now, in id order.
async fn schedule_plan(
    client: &Client,
    jobs: &[Job],
    states: &BTreeMap<i32, timescale::SourceJob>,
    stagger: std::time::Duration,
) -> crate::Result<Vec<Scheduling>> {
    let now: i64 = client
        .query_one("SELECT (extract(epoch FROM now()) * 1000000)::int8", &[])
        .await
        .map_err(query_err)?
        .get(0);
    let tt = TimeType::Timestamptz;
    let step = i64::try_from(stagger.as_micros()).unwrap_or(i64::MAX);
    let mut due = 0i64;
    let mut plan = Vec::new();
    for job in jobs {
        let state = states.get(&job.id);
        if let Some(s) = state.filter(|s| !s.scheduled) {
            let at = s.next_start.as_deref().and_then(|t| tt.parse(t).ok());
            plan.push(Scheduling {
                id: job.id,
                scheduled: false,
                next_start: at.map(|t| tt.literal(t)),
                why: "paused on the source: stays paused".into(),
            });
            continue;
        }
        let ahead = state
            .and_then(|s| s.next_start.as_deref())
            .and_then(|t| tt.parse(t).ok())
            .filter(|t| *t > now);
        let (at, why) = match ahead {
            Some(t) => (
                t,
                format!("next start kept from the source: {}", tt.display(t)),
            ),
            None => {
                let t = now.saturating_add(step.saturating_mul(due));
                due += 1;
                (t, format!("due now: starts at {}", tt.display(t)))
            }
        };
        plan.push(Scheduling {
            id: job.id,
            scheduled: true,
            next_start: Some(tt.literal(at)),
            why,
        });
    }
    Ok(plan)
}

/// Apply the schedules in one transaction.
async fn apply_schedule(client: &Client, schema: &str, plan: &[Scheduling]) -> crate::Result<()> {
    let mut sql = String::from("BEGIN;\n");
    for p in plan {
        sql.push_str(&timescale::schedule_job_sql(
            schema,
            p.id,
            p.scheduled,
            p.next_start.as_deref(),
        ));
        sql.push('\n');
    }
    sql.push_str("COMMIT;");
    client.batch_execute(&sql).await.map_err(query_err)
}

/// Every user job on or off, in one transaction.
async fn set_scheduled(client: &Client, schema: &str, on: bool) -> crate::Result<()> {
    client
        .batch_execute(&format!(
            "BEGIN; {} COMMIT;",
            timescale::schedule_jobs_sql(schema, on)
        ))
        .await
        .map_err(query_err)
}

/// Refresh each continuous aggregate over the window (outside a transaction block, as
/// `refresh_continuous_aggregate` requires).
async fn refresh(client: &Client, schema: &str, args: &JobsArgs) -> crate::Result<()> {
    let caggs = list_caggs(client).await?;
    if caggs.is_empty() {
        println!("continuous aggregates: none");
        return Ok(());
    }
    let (from, until, origin) = window(client, args).await?;
    println!(
        "continuous aggregates: refreshing {} over [{}, {}) ({origin})",
        caggs.len(),
        from.as_deref().unwrap_or("-infinity"),
        until.as_deref().unwrap_or("+infinity"),
    );
    // Every statement first, so a bad --from/--until is refused before anything runs.
    let mut statements = Vec::new();
    for cagg in &caggs {
        let literal = |v: &Option<String>, what: &str| -> crate::Result<Option<String>> {
            match (v, cagg.time_type) {
                (None, _) => Ok(None),
                (Some(text), Some(tt)) => tt
                    .parse(text)
                    .map(|x| Some(tt.literal(x)))
                    .map_err(|e| Error::Input(format!("{what} for {}: {e}", cagg.view))),
                (Some(text), None) => Ok(Some(quote_literal(text))),
            }
        };
        statements.push(timescale::refresh_cagg_sql(
            schema,
            &cagg.view,
            literal(&from, "--from")?.as_deref(),
            literal(&until, "--until")?.as_deref(),
        ));
    }
    for (i, (cagg, sql)) in caggs.iter().zip(&statements).enumerate() {
        let started = Instant::now();
        client.batch_execute(sql).await.map_err(|e| {
            Error::Other(anyhow::anyhow!(
                "refreshing {} failed: {}; the jobs were left disabled",
                cagg.view,
                pg::describe(&e)
            ))
        })?;
        println!(
            "  [{}/{}] {} refreshed in {:.1}s",
            i + 1,
            caggs.len(),
            cagg.view,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

async fn list_caggs(client: &Client) -> crate::Result<Vec<Cagg>> {
    let rows = client
        .query(
            "SELECT c.view_schema::text, c.view_name::text, d.column_type::text,
                    ca.mat_hypertable_id, ca.raw_hypertable_id
               FROM timescaledb_information.continuous_aggregates c
               JOIN _timescaledb_catalog.continuous_agg ca
                 ON ca.user_view_schema = c.view_schema AND ca.user_view_name = c.view_name
               LEFT JOIN timescaledb_information.dimensions d
                 ON d.hypertable_schema = c.materialization_hypertable_schema
                AND d.hypertable_name = c.materialization_hypertable_name
                AND d.dimension_number = 1
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(query_err)?;
    let caggs: Vec<(Cagg, i32, i32)> = rows
        .iter()
        .map(|r| {
            (
                Cagg {
                    view: format!(
                        "{}.{}",
                        quote_ident(&r.get::<_, String>(0)),
                        quote_ident(&r.get::<_, String>(1))
                    ),
                    time_type: r
                        .get::<_, Option<String>>(2)
                        .as_deref()
                        .and_then(TimeType::from_pg),
                },
                r.get(3),
                r.get(4),
            )
        })
        .collect();
    // An aggregate on another aggregate is refreshed after it, or it stays empty.
    Ok(timescale::refresh_order(&caggs))
}

/// The refresh window: `--from`/`--until`, else the span of the stored backfill plans, else
/// everything. Returns the bounds as typed and where they came from.
async fn window(
    client: &Client,
    args: &JobsArgs,
) -> crate::Result<(Option<String>, Option<String>, String)> {
    if args.from.is_some() || args.until.is_some() {
        return Ok((
            args.from.clone(),
            args.until.clone(),
            "--from/--until".into(),
        ));
    }
    let has_plans: bool = client
        .query_one(
            "SELECT to_regclass('_dualwrite_backfill.plan') IS NOT NULL",
            &[],
        )
        .await
        .map_err(query_err)?
        .get(0);
    if !has_plans {
        return Ok((
            None,
            None,
            "no stored backfill plans and no --from/--until: the whole range".into(),
        ));
    }
    let rows = client
        .query(
            "SELECT from_value, until_value FROM _dualwrite_backfill.plan",
            &[],
        )
        .await
        .map_err(|e| {
            Error::Input(format!(
                "cannot read the stored backfill plans ({}): pass --from and --until",
                pg::describe(&e)
            ))
        })?;
    let plans: Vec<(Option<String>, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let (from, until) = plan_span(&plans);
    Ok((
        from,
        until,
        format!("the span of {} stored backfill plans", plans.len()),
    ))
}

/// The span of the plans' `[from, until)`: the earliest start (open when one plan has none) and
/// the latest end, compared as times.
fn plan_span(plans: &[(Option<String>, String)]) -> (Option<String>, Option<String>) {
    let t = TimeType::Timestamptz;
    let key = |s: &str| t.parse(s).ok();
    let from = if plans.iter().any(|(f, _)| f.is_none()) {
        None
    } else {
        plans
            .iter()
            .filter_map(|(f, _)| f.clone())
            .min_by_key(|f| key(f).unwrap_or(i64::MIN))
    };
    let until = plans
        .iter()
        .map(|(_, u)| u.clone())
        .max_by_key(|u| key(u).unwrap_or(i64::MAX));
    (from, until)
}

/// `CALL run_job(id)` for each job, one at a time, with progress.
async fn run_each(client: &Client, schema: &str, jobs: &[Job]) -> crate::Result<()> {
    println!("running {} jobs once, one at a time:", jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let started = Instant::now();
        println!(
            "  [{}/{}] job {} ({}{}) ...",
            i + 1,
            jobs.len(),
            job.id,
            job.proc_name,
            job.hypertable
                .as_deref()
                .map(|h| format!(" on {h}"))
                .unwrap_or_default()
        );
        client
            .batch_execute(&timescale::run_job_sql(schema, job.id))
            .await
            .map_err(|e| {
                Error::Other(anyhow::anyhow!(
                    "job {} ({}) failed: {}; the jobs were left disabled",
                    job.id,
                    job.proc_name,
                    pg::describe(&e)
                ))
            })?;
        println!(
            "  [{}/{}] job {} done in {:.1}s",
            i + 1,
            jobs.len(),
            job.id,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_of_plans() {
        let plans = vec![
            (Some("2024-02-01".to_string()), "2024-03-01".to_string()),
            (
                Some("2024-01-15 00:00:00+00".to_string()),
                "2024-06-01T00:00:00Z".to_string(),
            ),
        ];
        assert_eq!(
            plan_span(&plans),
            (
                Some("2024-01-15 00:00:00+00".to_string()),
                Some("2024-06-01T00:00:00Z".to_string())
            )
        );
        let plans = vec![
            (None, "2024-03-01".to_string()),
            (Some("2024-01-01".to_string()), "2024-02-01".to_string()),
        ];
        assert_eq!(plan_span(&plans), (None, Some("2024-03-01".to_string())));
        assert_eq!(plan_span(&[]), (None, None));
    }
}
