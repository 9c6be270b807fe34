//! `status` and `clean`: the stored plans' progress, and dropping them.

use std::process::ExitCode;

use crate::cli::{CleanArgs, StatusArgs};
use crate::copy::input_pg;
use crate::pg::{self, describe, Side};
use crate::progress::{duration, group};
use crate::store::{self, TableProgress};
use crate::Error;

fn target_err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| Error::Other(anyhow::anyhow!("target: {what}: {}", describe(&e)))
}

/// Per-table progress as a table, with a total line.
pub fn table_summary(tables: &[TableProgress]) -> String {
    let mut out = format!(
        "{:<32} {:>6} {:>6} {:>7} {:>6} {:>14} {:>10} {:>9} {:>12}\n",
        "table", "units", "done", "running", "failed", "rows", "MB", "seconds", "rows/s"
    );
    let mut total = TableProgress {
        table: "total".into(),
        ..TableProgress::default()
    };
    let line = |t: &TableProgress| {
        let secs = t.seconds.filter(|s| *s > 0.0);
        format!(
            "{:<32} {:>6} {:>6} {:>7} {:>6} {:>14} {:>10.1} {:>9} {:>12}\n",
            t.table,
            t.units,
            t.done,
            t.running,
            t.failed,
            group(t.rows.max(0) as u64),
            t.bytes as f64 / 1e6,
            secs.map(|s| format!("{s:.1}"))
                .unwrap_or_else(|| "-".into()),
            secs.map(|s| group((t.rows as f64 / s) as u64))
                .unwrap_or_else(|| "-".into())
        )
    };
    for t in tables {
        out.push_str(&line(t));
        total.units += t.units;
        total.done += t.done;
        total.running += t.running;
        total.failed += t.failed;
        total.rows += t.rows;
        total.bytes += t.bytes;
    }
    if tables.len() > 1 {
        out.push_str(&line(&total));
    }
    out.truncate(out.trim_end().len());
    out
}

/// Run `status`.
pub async fn run(args: StatusArgs) -> crate::Result<ExitCode> {
    let url = pg::parse_url(&args.target.target, Side::Target).map_err(input_pg)?;
    let client = pg::open(&url, Side::Target).await.map_err(input_pg)?;
    if !store::exists(&client)
        .await
        .map_err(target_err("reading the catalog"))?
    {
        println!("no backfill plans on the target");
        return Ok(ExitCode::SUCCESS);
    }
    let plans = store::plans(&client)
        .await
        .map_err(target_err("reading the plans"))?;
    let plans: Vec<_> = plans
        .into_iter()
        .filter(|p| args.plan.as_ref().is_none_or(|want| *want == p.plan_id))
        .collect();
    if plans.is_empty() {
        return match &args.plan {
            Some(p) => Err(Error::Input(format!("no plan {p:?} on the target"))),
            None => {
                println!("no backfill plans on the target");
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    for p in plans {
        let tables = store::progress(&client, &p.plan_id)
            .await
            .map_err(target_err("reading the plan"))?;
        let units: i64 = tables.iter().map(|t| t.units).sum();
        let done: i64 = tables.iter().map(|t| t.done).sum();
        let rows: i64 = tables.iter().map(|t| t.rows).sum();
        let est: Option<i64> = tables.iter().map(|t| t.est_rows).sum();
        println!(
            "plan {} (created {}, source {}, rows {}below {}): {done}/{units} units done, {} rows{}",
            p.plan_id,
            p.created_at,
            p.source,
            p.from
                .as_deref()
                .map(|f| format!("from {f} "))
                .unwrap_or_default(),
            p.until,
            group(rows.max(0) as u64),
            est.filter(|e| *e > 0)
                .map(|e| format!(" of about {}", group(e as u64)))
                .unwrap_or_default()
        );
        println!("tables: {}", p.tables);
        println!("{}", table_summary(&tables));
        let listed = store::units(&client, &p.plan_id, args.units)
            .await
            .map_err(target_err("reading the units"))?;
        if !listed.is_empty() {
            println!(
                "{:>5}  {:<8} {:<28} {:<56} {:>12} {:>8} {:>8}  owner / error",
                "unit", "state", "table", "range", "rows", "attempts", "seconds"
            );
            for u in listed {
                let note = match (&u.error, &u.owner) {
                    (Some(e), _) if u.state != "done" => e.clone(),
                    (_, Some(o)) => o.clone(),
                    _ => String::new(),
                };
                println!(
                    "{:>5}  {:<8} {:<28} {:<56} {:>12} {:>8} {:>8}  {}",
                    u.unit_id,
                    u.state,
                    u.table,
                    u.range,
                    u.rows
                        .map(|r| group(r.max(0) as u64))
                        .unwrap_or_else(|| "-".into()),
                    u.attempts,
                    u.seconds.map(duration).unwrap_or_else(|| "-".into()),
                    note
                );
            }
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `clean`: refuse while a copy is running, else drop the schema.
pub async fn clean(args: CleanArgs) -> crate::Result<ExitCode> {
    let url = pg::parse_url(&args.target.target, Side::Target).map_err(input_pg)?;
    let client = pg::open(&url, Side::Target).await.map_err(input_pg)?;
    if !store::exists(&client)
        .await
        .map_err(target_err("reading the catalog"))?
    {
        println!(
            "nothing to clean: the target has no schema {}",
            store::SCHEMA
        );
        return Ok(ExitCode::SUCCESS);
    }
    let live = store::live_workers(&client)
        .await
        .map_err(target_err("looking for running copies"))?;
    if live > 0 {
        return Err(Error::Input(format!(
            "{live} backfill workers are running on this target; stop them first"
        )));
    }
    client
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", store::SCHEMA))
        .await
        .map_err(target_err("dropping the plan schema"))?;
    println!(
        "dropped schema {} (all backfill plans and CSV import records)",
        store::SCHEMA
    );
    Ok(ExitCode::SUCCESS)
}
