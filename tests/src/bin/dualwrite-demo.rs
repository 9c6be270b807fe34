//! The README's main command: the whole migration runbook on an embedded default, ten steps,
//! each printed with its timing.
//!
//!  1. a source and a target cluster (the target on PostgreSQL 18 when available);
//!  2. a realistic source: daily-partitioned sensor readings over a few months, relational
//!     tables, roles;
//!  3. `dualwrite-backfill schema` to the target;
//!  4. `dualwrite-proxy` in dual-write mode, a live writer and a reader through it;
//!  5. T from the proxy's status and `dualwrite-validator suggest-t`;
//!  6. `dualwrite-backfill copy --until T`;
//!  7. `dualwrite-backfill jobs enable`;
//!  8. `dualwrite-validator counts` and `checksum`, with the HTML report;
//!  9. shadow reads, and their per-statement summary;
//! 10. cutover to the target under the writer's load, and a final validation.
//!
//!   dualwrite-demo [--rows N] [--days D] [--seconds S] [--keep] [--timescaledb]
//!
//! `--timescaledb` runs the runbook on a TimescaleDB source instead (`demo_tsdb`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dualwrite_tests::proxy::ProxyHandle;
use dualwrite_tests::{Cluster, PgBin};
use dualwrite_validator::report::{Report, Status};

struct Args {
    rows: u64,
    days: u32,
    seconds: u64,
    keep: bool,
    timescaledb: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        rows: 1_000_000,
        days: 90,
        seconds: 5,
        keep: false,
        timescaledb: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name}: a whole number"))
        };
        match a.as_str() {
            "--rows" => args.rows = value("--rows")?.max(1000),
            "--days" => args.days = value("--days")?.clamp(2, 3650) as u32,
            "--seconds" => args.seconds = value("--seconds")?.max(1),
            "--keep" => args.keep = true,
            "--timescaledb" => args.timescaledb = true,
            "-h" | "--help" => {
                println!(
                    "usage: dualwrite-demo [--rows N (1000000)] [--days D (90)] [--seconds S (5)] [--keep] [--timescaledb]\n\
                     Runs the whole migration on two throwaway local clusters: N history rows over D days,\n\
                     S seconds of shadow reads; --keep leaves everything running and prints how to connect.\n\
                     --timescaledb: the runbook on a TimescaleDB source instead (hypertable with compressed\n\
                     chunks, stacked continuous aggregates, policies; needs TimescaleDB, scripts/setup.sh)."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

fn step(n: u32, what: &str) -> Instant {
    println!("\n== step {n}/10: {what}");
    Instant::now()
}

fn done(t: Instant) {
    println!("   done in {:.1}s", t.elapsed().as_secs_f64());
}

const APP_PASSWORD: &str = "app-secret";

/// The source's schema: roles, a daily-partitioned time-series table, relational tables.
fn source_schema(days: u32) -> String {
    format!(
        "CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}';
CREATE ROLE reporting NOLOGIN;
CREATE TYPE reading_status AS ENUM ('ok', 'warn', 'fault');
CREATE TABLE sites (id int PRIMARY KEY, name text NOT NULL, region text);
CREATE TABLE devices (id int PRIMARY KEY, site_id int NOT NULL REFERENCES sites, model text,
                      installed date, last_seen timestamptz);
CREATE TABLE readings (
    ts timestamptz NOT NULL, device int NOT NULL, v double precision, status reading_status NOT NULL,
    attrs jsonb, tags text[], note text, PRIMARY KEY (device, ts)
) PARTITION BY RANGE (ts);
DO $$
DECLARE d date;
BEGIN
  FOR d IN SELECT generate_series(current_date - {days}, current_date + 2, interval '1 day')::date LOOP
    EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                   'readings_' || to_char(d, 'YYYYMMDD'), d, d + 1);
  END LOOP;
END $$;
INSERT INTO sites SELECT s, 'site ' || s, (ARRAY['north','south','east'])[1 + s % 3] FROM generate_series(1, 10) s;
INSERT INTO devices SELECT d, 1 + d % 10, 'model-' || (d % 4), current_date - 400 + d, NULL
  FROM generate_series(1, 100) d;
GRANT USAGE ON SCHEMA public TO app, reporting;
GRANT SELECT, INSERT, UPDATE, DELETE ON readings, devices, sites TO app;
GRANT SELECT ON readings, devices, sites TO reporting;"
    )
}

/// History below today's start: `rows` readings spread over the `days` before today.
fn history(rows: u64, days: u32) -> String {
    let seconds = days as u64 * 86_400;
    let step = (seconds / rows.div_ceil(100)).max(1);
    let per_device = rows.div_ceil(100);
    format!(
        "INSERT INTO readings
         SELECT current_date - {days} + make_interval(secs => i * {step}), d,
                round((20 + 5 * sin(i / 300.0) + d / 10.0)::numeric, 3),
                (CASE WHEN i % 97 = 0 THEN 'fault' WHEN i % 13 = 0 THEN 'warn' ELSE 'ok' END)::reading_status,
                CASE WHEN i % 5 = 0 THEN NULL ELSE jsonb_build_object('fw', 'v' || (d % 3), 'batt', i % 100) END,
                ARRAY['d' || d, 'zone ' || (d % 7)],
                CASE WHEN i % 1000 = 0 THEN e'line one\\nline \"two\", it''s' END
         FROM generate_series(0, {per_device} - 1) i, generate_series(1, 100) d
         WHERE i * {step} < {seconds}"
    )
}

/// A second ago, as a timestamptz literal.
fn settled_now() -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(1))
        .format("%Y-%m-%d %H:%M:%S%.6f+00")
        .to_string()
}

async fn backfill(args: &[&str]) -> Result<()> {
    let mut argv = vec!["dualwrite-backfill"];
    argv.extend_from_slice(args);
    let cli = dualwrite_backfill::parse_args(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    let code = dualwrite_backfill::run(cli).await;
    if code != ExitCode::SUCCESS {
        bail!("dualwrite-backfill {} failed", args[0]);
    }
    Ok(())
}

/// `COMMAND --source S --target T --table public.readings [--until U] -q`.
fn readings_args<'a>(
    command: &'a str,
    urls: &'a (String, String),
    until: Option<&'a str>,
) -> Vec<&'a str> {
    let mut args = vec![
        command,
        "--source",
        &urls.0,
        "--target",
        &urls.1,
        "--table",
        "public.readings",
        "-q",
    ];
    if let Some(u) = until {
        args.extend(["--until", u]);
    }
    args
}

async fn validator(args: &[&str]) -> Result<Report> {
    let mut argv = vec!["dualwrite-validator"];
    argv.extend_from_slice(args);
    let cli = dualwrite_validator::parse_args(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(dualwrite_validator::execute(&cli.command).await?)
}

/// Validate until equal: the secondary applies each write a moment after the primary, so a
/// comparison while the writer runs may catch the target a write behind. Up to 10 tries.
async fn validate_settled(args: &[&str]) -> Result<Report> {
    let mut report = validator(args).await?;
    for attempt in 1..10 {
        if report.summary.status == Status::Equal {
            break;
        }
        println!("   (attempt {attempt}: the target is a write behind; comparing again in 1 s)");
        tokio::time::sleep(Duration::from_secs(1)).await;
        report = validator(args).await?;
    }
    Ok(report)
}

fn print_report(r: &Report) {
    for t in &r.tables {
        println!(
            "   {:<16} {:>9} rows on source, {:>9} on target, {} units, {} differing: {:?}",
            t.table, t.source_rows, t.target_rows, t.units_total, t.units_differing, t.status
        );
    }
}

/// The live application: one session writing readings at the current time (and touching its
/// device), through the proxy, until stopped. Returns (writes, errors).
fn start_writer(
    url: String,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Result<u64>> {
    tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let ins = client
            .prepare(
                "INSERT INTO readings (ts, device, v, status, attrs, tags) \
                 VALUES ($3, $1, $2, 'ok', '{\"live\": true}', ARRAY['live'])",
            )
            .await?;
        let seen = client
            .prepare("UPDATE devices SET last_seen = $2 WHERE id = $1")
            .await?;
        let mut errors = 0u64;
        let mut i = 0u64;
        while !stop.load(Ordering::Acquire) {
            let device = (i % 100) as i32 + 1;
            let r = if i % 10 == 9 {
                client.execute(&seen, &[&device, &chrono::Utc::now()]).await
            } else {
                // The time comes from the application, not the server: each database would
                // compute its own clock_timestamp().
                client
                    .execute(&ins, &[&device, &(i as f64 / 7.0), &chrono::Utc::now()])
                    .await
            };
            match r {
                Ok(_) => {
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("   writer: {e}");
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(errors)
    })
}

/// The application's reads: history and devices, stable data the target must answer alike.
fn start_reader(
    url: String,
    stop: Arc<AtomicBool>,
    until: String,
) -> tokio::task::JoinHandle<Result<u64>> {
    tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let per_device = client
            .prepare(
                "SELECT ts, v, status FROM readings WHERE device = $1 \
                 AND ts >= $2::text::timestamptz - interval '6 hours' AND ts < $2::text::timestamptz ORDER BY ts",
            )
            .await?;
        let device = client
            .prepare("SELECT d.id, d.model, s.name FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.id = $1")
            .await?;
        let mut reads = 0u64;
        let mut i = 0i32;
        while !stop.load(Ordering::Acquire) {
            let d = i % 100 + 1;
            client.query(&per_device, &[&d, &until]).await?;
            client.query(&device, &[&d]).await?;
            if i % 20 == 0 {
                client
                    .simple_query(&format!(
                        "SELECT status, count(*), round(avg(v)::numeric, 3) FROM readings \
                         WHERE ts < '{until}' GROUP BY status ORDER BY status"
                    ))
                    .await?;
                reads += 1;
            }
            reads += 2;
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(reads)
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    if args.timescaledb {
        if !dualwrite_tests::demo_tsdb::run(args.seconds).await? {
            bail!("the target does not match the source");
        }
        return Ok(());
    }
    let total = Instant::now();
    println!("dualwrite demo: the whole migration runbook on two throwaway local clusters");

    let t = step(1, "start a source and a target cluster");
    let source_bin = PgBin::source();
    let target_bin = PgBin::newer().unwrap_or_else(PgBin::target);
    let (sb, tb) = (source_bin.clone(), target_bin.clone());
    let target = std::thread::spawn(move || Cluster::start(&tb));
    let source = Cluster::start(&sb);
    let target = target
        .join()
        .map_err(|_| anyhow::anyhow!("target cluster failed to start"))?;
    println!(
        "   source: PostgreSQL {} on 127.0.0.1:{}",
        source_bin.major, source.port
    );
    println!(
        "   target: PostgreSQL {} on 127.0.0.1:{}",
        target_bin.major, target.port
    );
    done(t);

    let t = step(
        2,
        "a realistic source: daily-partitioned sensor readings, sites and devices, roles",
    );
    source.psql("postgres", "CREATE DATABASE app");
    target.psql("postgres", "CREATE DATABASE app");
    source.psql("app", &source_schema(args.days));
    source.psql("app", &history(args.rows, args.days));
    source.psql("app", "ANALYZE");
    let history_rows = source.psql("app", "SELECT count(*) FROM readings");
    let partitions = source.psql(
        "app",
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass",
    );
    println!(
        "   readings: {history_rows} rows over {} days in {partitions} daily partitions; 10 sites, 100 devices; roles app, reporting",
        args.days
    );
    done(t);

    let urls = (source.url("app"), target.url("app"));
    let (s_url, t_url) = (urls.0.clone(), urls.1.clone());
    let t = step(
        3,
        "dualwrite-backfill schema: roles, schema and relational data to the target",
    );
    let workdir = tempfile::Builder::new()
        .prefix("dwdemo-schema-")
        .tempdir()?;
    let wd = workdir.path().display().to_string();
    backfill(&[
        "schema",
        "--source",
        &s_url,
        "--target",
        &t_url,
        "--roles",
        "--privileges",
        "--workdir",
        &wd,
    ])
    .await?;
    println!(
        "   target: {} tables, readings {} rows (left for the backfill), devices {} rows",
        target.psql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        target.psql("app", "SELECT count(*) FROM readings"),
        target.psql("app", "SELECT count(*) FROM devices")
    );
    done(t);

    let t = step(
        4,
        "dualwrite-proxy in dual-write mode; the application writes (and reads) through it",
    );
    let journal = tempfile::Builder::new()
        .prefix("dwdemo-journal-")
        .tempdir()?;
    let proxy = ProxyHandle::start(&format!(
        "mode = \"dual-write\"\nprimary = \"source\"\n[source]\nurl = \"{s_url}\"\n[target]\nurl = \"{t_url}\"\n\
         [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"app\", password = \"{APP_PASSWORD}\" }}]\n[journal]\ndir = \"{}\"\n",
        journal.path().display()
    ))
    .await;
    let app_url = proxy.url("app", APP_PASSWORD, "app");
    println!(
        "   proxy on 127.0.0.1:{}, admin on http://{}",
        proxy.port(),
        proxy.admin.map(|a| a.to_string()).unwrap_or_default()
    );
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = start_writer(app_url.clone(), stop_writer.clone(), writes.clone());
    // The reader looks at history (before today, where the backfill puts it) and devices.
    let history_end = source.psql("app", "SELECT current_date::timestamptz");
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = start_reader(app_url.clone(), stop_reader.clone(), history_end);
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "   writer: {} writes so far",
        writes.load(Ordering::Relaxed)
    );
    done(t);

    let t = step(
        5,
        "choose T: the proxy's status and dualwrite-validator suggest-t",
    );
    let status: serde_json::Value = serde_json::from_str(&proxy.admin_get("/status").await)?;
    let first_write = status["dual_write"]["first_write_per_table"]["readings"].clone();
    println!(
        "   proxy: dual-writing since {}, first write to readings at {first_write}",
        status["dual_write"]["started_at"]
    );
    // Up to a second ago: writes in flight right now are not on the target yet.
    let settled_until = settled_now();
    let suggest = validator(&readings_args("suggest-t", &urls, Some(&settled_until))).await?;
    let s = suggest.tables[0]
        .suggestion
        .as_ref()
        .context("suggest-t gave no answer")?;
    let until = s
        .candidate
        .clone()
        .with_context(|| format!("suggest-t found no candidate: {}", s.reason))?;
    println!(
        "   suggest-t: T = {until} (confidence {}): {} agreeing buckets after it, last differing bucket {}",
        s.confidence,
        s.agreeing_buckets_after,
        s.last_differing_bucket.as_deref().unwrap_or("-")
    );
    println!(
        "   T = {until}: rows from T on are dual-written; the backfill copies everything before it"
    );
    done(t);

    let t = step(6, "dualwrite-backfill copy --until T");
    let below_t = format!("SELECT count(*) FROM readings WHERE ts < '{until}'");
    let before: i64 = target.psql("app", &below_t).parse()?;
    let copy_started = Instant::now();
    backfill(&[
        "copy", "--source", &s_url, "--target", &t_url, "--until", &until, "--jobs", "2",
    ])
    .await?;
    let copy_secs = copy_started.elapsed().as_secs_f64();
    let after: i64 = target.psql("app", &below_t).parse()?;
    let copied = (after - before).max(0);
    println!(
        "   {copied} rows copied in {copy_secs:.1}s ({:.0} rows/s)",
        copied as f64 / copy_secs
    );
    done(t);

    let t = step(
        7,
        "dualwrite-backfill jobs enable (TimescaleDB background jobs)",
    );
    backfill(&["jobs", "enable", "--target", &t_url]).await?;
    done(t);

    let t = step(
        8,
        "dualwrite-validator counts and checksum, with the HTML report",
    );
    // The writer is still running: compare up to a second ago.
    let settled_until = settled_now();
    println!("   (up to {settled_until}: the writer is still running)");
    let counts = validate_settled(&readings_args("counts", &urls, Some(&settled_until))).await?;
    print_report(&counts);
    let html =
        std::env::temp_dir().join(format!("dualwrite-demo-report-{}.html", std::process::id()));
    let html_s = html.display().to_string();
    let checksum =
        validate_settled(&readings_args("checksum", &urls, Some(&settled_until))).await?;
    print_report(&checksum);
    std::fs::write(&html, dualwrite_validator::report::html::render(&checksum))?;
    println!("   HTML report: {html_s}");
    done(t);

    let t = step(
        9,
        "shadow reads: the application's reads also run on the target, compared",
    );
    let (code, body) = proxy
        .admin_post("/config", r#"{"shadow_reads": 1.0}"#)
        .await;
    if code != 200 {
        bail!("turning shadow reads on failed ({code}): {body}");
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop_reader.store(true, Ordering::Release);
    let reads = reader.await??;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shadow: dualwrite_proxy::shadow::ShadowReport =
        serde_json::from_str(&proxy.admin_get("/shadow").await)?;
    println!(
        "   {reads} reads by the application since step 4; the proxy's summary of the last {}s:",
        args.seconds
    );
    for line in dualwrite_proxy::shadow::render(&shadow).lines() {
        println!("   {line}");
    }
    let mismatches: u64 = shadow.mismatches.iter().map(|(_, n)| n).sum();
    done(t);

    let t = step(
        10,
        "cut over to the target while the writer keeps going, then validate",
    );
    let (code, body) = proxy
        .admin_post("/cutover", r#"{"to": "target", "timeout": "10s"}"#)
        .await;
    if code != 200 {
        bail!("cutover failed ({code}): {body}");
    }
    let report: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let pause = report["pause_ms"].as_f64().unwrap_or(0.0);
    println!("   the target is the primary now; writes paused for {pause:.2} ms");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_writer.store(true, Ordering::Release);
    let writer_errors = writer.await??;
    let total_writes = writes.load(Ordering::Relaxed);
    println!("   writer: {total_writes} writes through the proxy, {writer_errors} errors");
    let last = validate_settled(&readings_args("checksum", &urls, None)).await?;
    print_report(&last);
    let mut sites_equal = true;
    for table in ["sites", "devices"] {
        let sql = format!("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t");
        let same = source.psql("app", &sql) == target.psql("app", &sql);
        println!(
            "   {table}: {}",
            if same { "identical" } else { "DIFFERENT" }
        );
        sites_equal &= same;
    }
    let status: serde_json::Value = serde_json::from_str(&proxy.admin_get("/status").await)?;
    let records = status["dual_write"]["journal"]["records"]
        .as_u64()
        .unwrap_or(0);
    println!("   journal records: {records}");
    done(t);

    let ok = last.summary.status == Status::Equal
        && checksum.summary.status == Status::Equal
        && sites_equal
        && writer_errors == 0
        && mismatches == 0;
    println!(
        "\nsummary: {copied} rows backfilled at {:.0} rows/s, {total_writes} live writes ({writer_errors} failed), \
         shadow mismatches {mismatches}, cutover pause {pause:.2} ms, final validation {}, {:.1}s in all",
        copied as f64 / copy_secs,
        if ok { "EQUAL" } else { "DIFFERENT" },
        total.elapsed().as_secs_f64()
    );
    if args.keep {
        println!("\n--keep: still running. Connect with:");
        println!("   psql '{app_url}'   # through the proxy (primary: target)");
        println!("   psql '{s_url}'   # source");
        println!("   psql '{t_url}'   # target");
        println!("   HTML report: {html_s}");
        println!("Ctrl-C stops everything.");
        tokio::signal::ctrl_c().await?;
    } else {
        let _ = std::fs::remove_file(&html);
    }
    proxy.stop().await;
    if !ok {
        bail!("the demo's final validation did not come out equal");
    }
    Ok(())
}
