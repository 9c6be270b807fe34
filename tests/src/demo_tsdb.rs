//! `dualwrite-demo --timescaledb`: the runbook on a TimescaleDB source as applications have
//! it (space-partitioned hypertable with compressed chunks, stacked continuous aggregates,
//! compression, retention and refresh policies, a paused job, the extension in schema `ext`,
//! a non-superuser owner), a live writer through the dual-writing proxy, and a final check that
//! the target is the source's twin: rows, aggregates, compressed chunks, jobs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dualwrite_validator::report::{Report, Status};

use crate::proxy::{client, ProxyHandle};
use crate::{Pair, PgBin};

const STEPS: u32 = 8;

fn step(n: u32, what: &str) -> Instant {
    println!("\n== step {n}/{STEPS}: {what}");
    Instant::now()
}

fn done(t: Instant) {
    println!("   done in {:.1}s", t.elapsed().as_secs_f64());
}

async fn backfill(args: &[&str]) -> Result<()> {
    let mut argv = vec!["dualwrite-backfill"];
    argv.extend_from_slice(args);
    let cli = dualwrite_backfill::parse_args(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    let code = dualwrite_backfill::run(cli).await;
    if code != std::process::ExitCode::SUCCESS {
        bail!("dualwrite-backfill {} failed", args[0]);
    }
    Ok(())
}

async fn validator(args: &[&str]) -> Result<Report> {
    let mut argv = vec!["dualwrite-validator"];
    argv.extend_from_slice(args);
    let cli = dualwrite_validator::parse_args(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(dualwrite_validator::execute(&cli.command).await?)
}

/// The same query on both sides, compared.
fn same(pair: &Pair, what: &str, sql: &str) -> bool {
    let (s, t) = (
        pair.source.psql(&pair.db, sql),
        pair.target.psql(&pair.db, sql),
    );
    let ok = s == t && !s.is_empty();
    println!(
        "   {what}: {}",
        if ok {
            "same on both sides"
        } else {
            "DIFFERENT"
        }
    );
    if !ok {
        println!("     source: {s}\n     target: {t}");
    }
    ok
}

/// Run the TimescaleDB demo; `Ok(true)` when the target ends identical.
pub async fn run(seconds: u64) -> Result<bool> {
    let total = Instant::now();
    PgBin::timescaledb().map_err(|e| anyhow::anyhow!(e))?;
    println!("dualwrite demo (TimescaleDB): the runbook on a TimescaleDB source, writes through the proxy");

    let t = step(
        1,
        "a source and a target, PostgreSQL 18 with TimescaleDB 2.29.2",
    );
    let pair = Pair::start_runbook_layout();
    let (s, tg) = (pair.source_url(), pair.target_url());
    println!(
        "   source on 127.0.0.1:{}, target on 127.0.0.1:{}, database {}",
        pair.source.port, pair.target.port, pair.db
    );
    done(t);

    let t = step(
        2,
        "the source: a hypertable by day and by_hash(device_id, 2), compressed chunks, stacked aggregates, policies, jobs",
    );
    let facts = pair.source.psql(
        &pair.db,
        "SELECT (SELECT count(*) FROM app.metrics) || ' rows; ' ||
                (SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics') || ' chunks, ' ||
                (SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics' AND is_compressed) || ' compressed; ' ||
                (SELECT count(*) FROM timescaledb_information.continuous_aggregates) || ' continuous aggregates; ' ||
                (SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000) || ' jobs (' ||
                (SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000 AND NOT scheduled) || ' paused); TimescaleDB in schema ext; owner app_owner'",
    );
    println!("   app.metrics: {facts}");
    done(t);

    let t = step(
        3,
        "dualwrite-backfill schema --roles --privileges (one transaction; owners kept)",
    );
    let workdir = tempfile::tempdir().context("workdir")?;
    let wd = workdir.path().join("schema");
    let wd = wd.to_str().context("workdir path")?;
    backfill(&[
        "schema",
        "--source",
        &s,
        "--target",
        &tg,
        "--roles",
        "--privileges",
        "--workdir",
        wd,
    ])
    .await?;
    done(t);

    let t = step(
        4,
        "dualwrite-proxy in dual-write mode, the application writing through it",
    );
    let journal = tempfile::tempdir().context("journal dir")?;
    let toml = format!(
        "mode = \"dual-write\"\nprimary = \"source\"\n[source]\nurl = \"{s}\"\n[target]\nurl = \"{tg}\"\n\
         [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"app_owner\", password = \"owner-pw\" }}]\n\
         [journal]\ndir = \"{}\"\n",
        journal.path().display()
    );
    let proxy = ProxyHandle::start(&toml).await;
    let t_value = pair.source.psql(
        &pair.db,
        "SET TimeZone = 'UTC'; SELECT date_trunc('day', now())::text",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let url = proxy.url("app_owner", "owner-pw", &pair.db);
        let t_value = t_value.clone();
        tokio::spawn(async move {
            let app = client(&url).await;
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // Times chosen by the application, so both sides store the same values.
                let sql = format!(
                    "INSERT INTO app.metrics VALUES ('{t_value}'::timestamptz + {n} * interval '1 second', {}, {n} * 0.5, 'live')",
                    n % 4
                );
                if app.batch_execute(&sql).await.is_ok() {
                    n += 1;
                    written.store(n, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "   writing live rows from T = {t_value} through the proxy ({} so far)",
        written.load(Ordering::Relaxed)
    );
    done(t);

    let t = step(5, "dualwrite-backfill copy --until T: the history, below T");
    backfill(&[
        "copy", "--source", &s, "--target", &tg, "--until", &t_value, "-q",
    ])
    .await?;
    done(t);

    let t = step(
        6,
        "dualwrite-backfill compress: the chunks compressed on the source, compressed on the target",
    );
    backfill(&["compress", "--source", &s, "--target", &tg]).await?;
    done(t);

    let t = step(
        7,
        "dualwrite-backfill jobs enable: aggregates in dependency order, schedules as on the source",
    );
    backfill(&["jobs", "enable", "--target", &tg, "--source", &s]).await?;
    done(t);

    let t = step(8, "validate: rows, aggregates, compressed chunks, jobs");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.context("writer")?;
    let live = written.load(Ordering::Relaxed);
    let live_sql = format!("SELECT count(*) FROM app.metrics WHERE ts >= '{t_value}'");
    for _ in 0..100 {
        if pair.target.psql(&pair.db, &live_sql) == live.to_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut equal = true;
    for command in ["counts", "checksum"] {
        let r = validator(&[command, "--source", &s, "--target", &tg, "-q"]).await?;
        let text =
            dualwrite_validator::report::render(&r, dualwrite_validator::report::Format::Text)?;
        for line in text
            .lines()
            .filter(|l| l.contains("compression:") || l.starts_with("summary"))
        {
            println!("   {command}: {}", line.trim());
        }
        equal &= r.summary.status == Status::Equal;
    }
    let below = |sql: &str| sql.replace("{T}", &t_value);
    equal &= same(
        &pair,
        "app.metrics_hourly below T",
        &below("SELECT string_agg(format('%s %s %s %s', bucket, device_id, round(avg_value::numeric, 6), n), ',' ORDER BY bucket, device_id) FROM app.metrics_hourly WHERE bucket < '{T}'"),
    );
    equal &= same(
        &pair,
        "app.metrics_daily below T (built on metrics_hourly)",
        &below("SELECT string_agg(format('%s %s %s', day, device_id, n), ',' ORDER BY day, device_id) FROM app.metrics_daily WHERE day < '{T}'"),
    );
    equal &= same(
        &pair,
        "chunks and their compression",
        "SELECT string_agg(c.range_start || ' ' || c.is_compressed, ',' ORDER BY c.range_start, c.is_compressed) FROM timescaledb_information.chunks c WHERE c.hypertable_name = 'metrics'",
    );
    equal &= same(
        &pair,
        "jobs: owner, scheduled, next start",
        "SELECT string_agg(format('%s %s %s %s', job_id, owner, scheduled, next_start), ',' ORDER BY job_id) FROM timescaledb_information.jobs WHERE job_id >= 1000",
    );
    done(t);
    proxy.stop().await;
    println!(
        "\nsummary: {} history rows backfilled, {live} live rows written through the proxy; final validation {} in {:.1}s",
        history_rows(&pair, &t_value),
        if equal { "EQUAL" } else { "DIFFERENT" },
        total.elapsed().as_secs_f64()
    );
    Ok(equal)
}

fn history_rows(pair: &Pair, t_value: &str) -> String {
    pair.target.psql(
        &pair.db,
        &format!("SELECT count(*) FROM app.metrics WHERE ts < '{t_value}'"),
    )
}
