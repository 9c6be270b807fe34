//! `copy`: time-series rows below T, source to target, resumable and parallel.
//!
//! Checks everything that can be wrong with the input before writing anything (servers,
//! versions, tables, columns, times, target partitions), plans the units, stores the plan in
//! the target (or resumes the stored one), then runs `--jobs` workers under one exported
//! source snapshot until no unit is left.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};

use dualwrite_common::catalog::{self, CatalogError, TimeSeriesTable};
use dualwrite_common::PgUrl;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::cli::CopyArgs;
use crate::columns::{self, ColumnsError, TableCopy};
use crate::pg::{self, describe, PgError, ServerInfo, Side};
use crate::plan::{self, PlanError, PlanRequest, UnitSpec};
use crate::progress::{self, Mode, Progress};
use crate::store;
use crate::throttle::Throttle;
use crate::worker::{self, Shared};
use crate::{cover, status, Error};

/// A connection or server problem at the start is bad input: nothing was written.
pub(crate) fn input_pg(e: PgError) -> Error {
    match e {
        PgError::Query { .. } => Error::Other(anyhow::Error::new(e)),
        other => Error::Input(other.to_string()),
    }
}

fn query_err(side: Side, what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::Other(anyhow::anyhow!("{side}: {what}: {}", describe(&e)))
}

/// Everything `copy` learnt before copying.
struct Prepared {
    source_info: ServerInfo,
    tables: Vec<TimeSeriesTable>,
    copies: HashMap<String, TableCopy>,
    units: Vec<UnitSpec>,
    plan_id: String,
    /// Source partitions the target lacks, created before the workers start.
    missing: Vec<cover::Missing>,
}

/// Run `copy`.
pub async fn run(args: CopyArgs) -> crate::Result<ExitCode> {
    if args.jobs == 0 {
        return Err(Error::Input("--jobs must be at least 1".into()));
    }
    if args.max_rows_per_second == Some(0) {
        return Err(Error::Input(
            "--max-rows-per-second must be at least 1".into(),
        ));
    }
    let source_url = pg::parse_url(&args.source.source, Side::Source).map_err(input_pg)?;
    let target_url = pg::parse_url(&args.target.target, Side::Target).map_err(input_pg)?;
    let source = pg::open(&source_url, Side::Source)
        .await
        .map_err(input_pg)?;
    let mut target = pg::open(&target_url, Side::Target)
        .await
        .map_err(input_pg)?;
    let prepared = prepare(&args, &source, &target).await?;

    if args.dry_run {
        print_plan(&prepared, &args);
        for m in &prepared.missing {
            println!("would create on the target: {}", m.create_sql());
        }
        return Ok(ExitCode::SUCCESS);
    }

    // From here on the target is written to. Partitions first: created by one session before
    // the workers start, so no two of them race to create the same one.
    if !prepared.missing.is_empty() {
        cover::create(&mut target, &prepared.missing)
            .await
            .map_err(|e| Error::Other(anyhow::anyhow!(e)))?;
        for m in &prepared.missing {
            println!("created on the target: {}", m.create_sql());
        }
    }
    store::ensure_schema(&mut target)
        .await
        .map_err(query_err(Side::Target, "creating the plan schema"))?;
    let new = store::NewPlan {
        plan_id: prepared.plan_id.clone(),
        source: format!(
            "{}/{}",
            source_url.endpoint(),
            prepared.source_info.database
        ),
        from: args.from.clone(),
        until: args.until.clone(),
        tables: prepared
            .tables
            .iter()
            .map(|t| format!("{}:{}", t.table, t.time_column))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let created = store::create_or_resume(&mut target, &new, &prepared.units)
        .await
        .map_err(query_err(Side::Target, "storing the plan"))?;
    let retried = store::retry_failed(&target, &prepared.plan_id)
        .await
        .map_err(query_err(Side::Target, "reading the plan"))?;
    let before = store::progress(&target, &prepared.plan_id)
        .await
        .map_err(query_err(Side::Target, "reading the plan"))?;
    let total: i64 = before.iter().map(|t| t.units).sum();
    let done_before: i64 = before.iter().map(|t| t.done).sum();
    let est_left: Option<i64> = before
        .iter()
        .map(|t| t.est_rows.map(|e| (e - t.rows).max(0)))
        .sum();
    let mode = Mode::detect(args.quiet);
    if mode != Mode::Quiet {
        if created {
            eprintln!(
                "plan {}: {total} units over {} table(s), rows below {}",
                prepared.plan_id,
                prepared.tables.len(),
                args.until
            );
        } else {
            eprintln!(
                "resuming plan {}: {done_before} of {total} units done{}",
                prepared.plan_id,
                if retried > 0 {
                    format!(", retrying {retried} failed")
                } else {
                    String::new()
                }
            );
        }
    }

    let progress = Progress::new(
        mode,
        "units",
        total as u64,
        done_before as u64,
        est_left.map(|e| e as u64),
    );
    // The coordinator's REPEATABLE READ transaction keeps the exported snapshot alive.
    let (coordinator, snapshot) = if args.no_shared_snapshot {
        (None, None)
    } else {
        match export_snapshot(&source_url).await {
            Ok((c, s)) => (Some(c), Some(s)),
            Err(e) => {
                progress.note(&format!(
                    "no shared snapshot ({e}); each unit reads under its own snapshot"
                ));
                (None, None)
            }
        }
    };
    drop(source);

    let shared = Arc::new(Shared {
        source_url,
        target_url,
        plan_id: prepared.plan_id.clone(),
        owner: format!("{}:{}", hostname(), std::process::id()),
        tables: prepared.copies,
        snapshot: RwLock::new(snapshot),
        progress: Arc::clone(&progress),
        throttle: args.max_rows_per_second.map(Throttle::new),
        stop: CancellationToken::new(),
        kill: CancellationToken::new(),
        attempts: args.attempts.max(1),
        fatal: Mutex::new(Vec::new()),
    });
    let signals = tokio::spawn(watch_signals(Arc::clone(&shared)));
    let ticker = progress.start_ticker();
    let workers: Vec<_> = (0..args.jobs)
        .map(|n| tokio::spawn(worker::run(Arc::clone(&shared), n + 1)))
        .collect();
    for w in workers {
        if let Err(e) = w.await {
            shared
                .fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("a worker panicked: {e}"));
        }
    }
    signals.abort();
    if let Some(t) = ticker {
        t.abort();
    }
    progress.finish();
    drop(coordinator);

    let after = store::progress(&target, &prepared.plan_id)
        .await
        .map_err(query_err(Side::Target, "reading the plan"))?;
    println!("{}", status::table_summary(&after));
    let secs = progress.elapsed().as_secs_f64().max(1e-3);
    println!(
        "this process: {} units, {} rows, {} in {} ({} rows/s, {:.1} MB/s)",
        progress.done(),
        progress::group(progress.rows()),
        progress::mb(progress.bytes()),
        progress::duration(secs),
        progress::group((progress.rows() as f64 / secs) as u64),
        progress.bytes() as f64 / secs / 1e6
    );
    let failed: i64 = after.iter().map(|t| t.failed).sum();
    let done: i64 = after.iter().map(|t| t.done).sum();
    let running: i64 = after.iter().map(|t| t.running).sum();
    let fatal = shared
        .fatal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let left = total - done - failed - running;
    if failed > 0 {
        println!(
            "{failed} units failed (see `dualwrite-backfill status --target ...`); rerun the same command to retry them"
        );
    }
    if shared.stop.is_cancelled() && left + running > 0 {
        println!(
            "interrupted: {} units left; rerun the same command to resume",
            left + running
        );
        return Ok(ExitCode::from(1));
    }
    if !fatal.is_empty() {
        for f in &fatal {
            println!("error: {f}");
        }
        return Ok(ExitCode::from(1));
    }
    if running > 0 {
        println!("{running} units are being copied by other workers");
    }
    if failed == 0 && left == 0 && running == 0 && !args.no_analyze {
        analyze(&target, &prepared.tables).await?;
    }
    Ok(if failed > 0 || left > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// ANALYZE each copied table on the target. Rows written by COPY leave the planner without
/// statistics until autovacuum's threshold is crossed and its next round comes: until then
/// the target may plan the application's reads worse than the source does.
async fn analyze(target: &Client, tables: &[TimeSeriesTable]) -> crate::Result<()> {
    for t in tables {
        let started = std::time::Instant::now();
        target
            .batch_execute(&format!("ANALYZE {}", t.table.quoted()))
            .await
            .map_err(query_err(Side::Target, "analyzing the copied tables"))?;
        println!(
            "analyzed {} on the target in {:.1}s",
            t.table,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Checks and planning; nothing is written.
async fn prepare(args: &CopyArgs, source: &Client, target: &Client) -> crate::Result<Prepared> {
    let source_info = ServerInfo::read(source, Side::Source)
        .await
        .map_err(input_pg)?;
    let target_info = ServerInfo::read(target, Side::Target)
        .await
        .map_err(input_pg)?;
    if target_info.major < source_info.major {
        return Err(Error::Input(format!(
            "the target runs PostgreSQL {}, older than the source's {}: a migration goes to the same or a newer major version",
            target_info.version, source_info.version
        )));
    }
    let tables = catalog::discover(source, &args.tables)
        .await
        .map_err(|e| match e {
            CatalogError::Query(q) => Error::Other(anyhow::anyhow!(
                "source: finding the time-series tables: {}",
                describe(&q)
            )),
            other => Error::Input(format!("source: {other}")),
        })?;
    let mut copies = HashMap::new();
    for t in &tables {
        let c = columns::table_copy(source, target, &t.table)
            .await
            .map_err(|e| match e {
                ColumnsError::Query { .. } => Error::Other(anyhow::Error::new(e)),
                other => Error::Input(other.to_string()),
            })?;
        copies.insert(t.table.to_string(), c);
    }
    let req = PlanRequest {
        tables: tables.clone(),
        from: args.from.clone(),
        until: args.until.clone(),
        slice: args.slice.clone(),
        rows_per_unit: args.rows_per_unit,
    };
    let units = plan::build(source, &req).await.map_err(|e| match e {
        PlanError::Query { .. } => Error::Other(anyhow::Error::new(e)),
        other => Error::Input(other.to_string()),
    })?;
    let (missing, problems) = cover::check(
        source,
        target,
        &tables,
        &units,
        target_info.timescaledb.is_some(),
    )
    .await
    .map_err(|e| Error::Other(anyhow::anyhow!(e)))?;
    if !problems.is_empty() {
        return Err(Error::Input(format!(
            "the target cannot take every row:\n  {}",
            problems.join("\n  ")
        )));
    }
    let plan_id = match &args.plan {
        Some(p) => p.clone(),
        None => default_plan_id(&source_info.database, &tables, args)?,
    };
    Ok(Prepared {
        source_info,
        tables,
        copies,
        units,
        plan_id,
        missing,
    })
}

/// The default plan id: the same database, tables and range (as values, however typed) give
/// the same id on any machine, so identical command lines share one plan.
fn default_plan_id(
    database: &str,
    tables: &[TimeSeriesTable],
    args: &CopyArgs,
) -> crate::Result<String> {
    let mut key = database.to_string();
    for t in tables {
        let (from, until) = plan::bounds(t, args.from.as_deref(), &args.until)
            .map_err(|e| Error::Input(e.to_string()))?;
        key.push_str(&format!(
            "|{}:{}:{}:{until}",
            t.table.quoted(),
            t.time_column,
            from.map(|f| f.to_string()).unwrap_or_default()
        ));
    }
    Ok(format!("p{:012x}", plan::fnv64(&key) & 0xffff_ffff_ffff))
}

/// Open a source connection in a REPEATABLE READ transaction and export its snapshot.
async fn export_snapshot(url: &PgUrl) -> Result<(Client, String), String> {
    let c = pg::open(url, Side::Source)
        .await
        .map_err(|e| e.to_string())?;
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| describe(&e))?;
    let s: String = c
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    Ok((c, s))
}

/// First Ctrl-C (or SIGTERM): finish the running units, claim no more. Second: roll back.
async fn watch_signals(shared: Arc<Shared>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Listening from the start, so a second Ctrl-C right after the first is not missed.
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            soft_stop(&shared);
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            hard_stop(&shared);
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        soft_stop(&shared);
        if tokio::signal::ctrl_c().await.is_ok() {
            hard_stop(&shared);
        }
    }
}

fn soft_stop(shared: &Shared) {
    shared.progress.note(
        "stopping: finishing the running units (Ctrl-C again to roll them back and stop now)",
    );
    shared.stop.cancel();
}

fn hard_stop(shared: &Shared) {
    shared
        .progress
        .note("rolling back the running units and stopping");
    shared.kill.cancel();
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| progress::group(v.max(0) as u64))
        .unwrap_or_else(|| "?".into())
}

/// `--dry-run`: the plan as it would be stored.
fn print_plan(p: &Prepared, args: &CopyArgs) {
    println!(
        "plan {} (dry run, nothing copied): {} units over {} table(s), rows {}below {}",
        p.plan_id,
        p.units.len(),
        p.tables.len(),
        args.from
            .as_deref()
            .map(|f| format!("from {f} "))
            .unwrap_or_default(),
        args.until
    );
    for t in &p.tables {
        let name = t.table.to_string();
        let fmt = match p.copies.get(&name) {
            Some(c) if c.binary => "binary COPY".to_string(),
            Some(c) => format!(
                "text COPY ({})",
                c.text_reason.as_deref().unwrap_or("no binary form")
            ),
            None => "?".into(),
        };
        println!(
            "  {name} ({}, time column {}, {} chunks or partitions): {fmt}",
            plan::kind_name(&t.kind),
            t.time_column,
            t.chunks.len()
        );
    }
    println!(
        "{:>5}  {:<28} {:<36} {:<56} {:>12} {:>10}",
        "unit", "table", "read from", "range", "est. rows", "est. MB"
    );
    let (mut rows, mut bytes) = (0i64, 0i64);
    for (i, u) in p.units.iter().enumerate() {
        rows += u.est_rows.unwrap_or(0);
        bytes += u.est_bytes.unwrap_or(0);
        println!(
            "{:>5}  {:<28} {:<36} {:<56} {:>12} {:>10}",
            i + 1,
            u.table.qn().to_string(),
            u.source.qn().to_string(),
            u.range_text(),
            opt(u.est_rows),
            u.est_bytes
                .map(|b| format!("{:.1}", b as f64 / 1e6))
                .unwrap_or_else(|| "?".into())
        );
    }
    println!(
        "total: {} units, about {} rows, {:.1} MB (estimates from the source's statistics)",
        p.units.len(),
        progress::group(rows.max(0) as u64),
        bytes as f64 / 1e6
    );
}
