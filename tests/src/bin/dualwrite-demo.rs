//! The README's main command: a migration on an embedded default. Two local clusters (the
//! target on PostgreSQL 18 when available), `dualwrite-proxy` in dual-write mode in front of
//! them, an application load through it (pgbench and a time-series writer), validation with
//! `dualwrite-validator`, a cutover to the target under load, and a final validation.
//!
//!   dualwrite-demo [--seconds N] [--keep]

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dualwrite_tests::proxy::ProxyHandle;
use dualwrite_tests::{Cluster, PgBin};

struct Args {
    seconds: u32,
    keep: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        seconds: 10,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                args.seconds = it
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds: a number")?
            }
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!("usage: dualwrite-demo [--seconds N] [--keep]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

fn step(n: u32, what: &str) -> Instant {
    println!("\n== step {n}: {what}");
    Instant::now()
}

fn done(t: Instant) {
    println!("   done in {:.1}s", t.elapsed().as_secs_f64());
}

fn pgbench(bin: &PgBin, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(bin.bin("pgbench"));
    c.env("PGPASSWORD", "app-secret")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg("app");
    c
}

/// Parse pgbench's output: (tps, failed transactions).
fn pgbench_figures(text: &str) -> (f64, u64) {
    let field = |prefix: &str, n: usize| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(n))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        field("tps = ", 2),
        field("number of failed transactions:", 4) as u64,
    )
}

/// Validate until equal: the secondary applies each write a moment after the primary, so a
/// first comparison right after the writer stops may still see it behind. Up to 10 tries.
async fn validate_settled(what: &str, source: &str, target: &str, extra: &[&str]) -> i32 {
    let mut code = 2;
    for attempt in 1..=10 {
        code = validate(what, source, target, extra).await;
        if code != 1 {
            break;
        }
        println!("   (attempt {attempt}: the target is still catching up; comparing again in 1 s)");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    code
}

/// Run the validator in-process; returns its exit code (0 equal, 1 differences, 2 error).
async fn validate(what: &str, source: &str, target: &str, extra: &[&str]) -> i32 {
    let mut args = vec![
        "dualwrite-validator",
        what,
        "--source",
        source,
        "--target",
        target,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    match dualwrite_validator::parse_args(args) {
        Ok(cli) => dualwrite_validator::run_cli(cli).await,
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

const SCHEMA: &str = "CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL, v double precision, note text,
                          PRIMARY KEY (device, ts)) PARTITION BY RANGE (ts);
CREATE TABLE readings_d1 PARTITION OF readings FOR VALUES FROM ('2026-01-01') TO ('2026-01-02');
CREATE TABLE readings_d2 PARTITION OF readings FOR VALUES FROM ('2026-01-02') TO ('2026-01-03');
CREATE TABLE readings_d3 PARTITION OF readings FOR VALUES FROM ('2026-01-03') TO ('2026-01-04');
CREATE TABLE devices (id int PRIMARY KEY, name text);
GRANT ALL ON readings, devices TO app;";

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let total = Instant::now();
    println!(
        "dualwrite demo: dual-write through the proxy, validate, cut over to the target, validate"
    );

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

    let t = step(2, "the same schema and starting data on both (pgbench tables, a partitioned time-series table)");
    for (c, port) in [(&source, source.port), (&target, target.port)] {
        c.create_role("app", "app-secret", "");
        c.psql("postgres", "CREATE DATABASE app OWNER app");
        c.psql("app", SCHEMA);
        let out = pgbench(&source_bin, port, &["-i", "-s", "2", "-q"]).output()?;
        if !out.status.success() {
            bail!(
                "pgbench -i failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    done(t);

    let t = step(
        3,
        "start dualwrite-proxy in dual-write mode (primary = source)",
    );
    let journal = tempfile::tempdir()?;
    let proxy = ProxyHandle::start(&format!(
        "mode = \"dual-write\"\nprimary = \"source\"\n[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n\
         [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"app\", password = \"app-secret\" }}]\n[journal]\ndir = \"{}\"\n",
        source.url("app"),
        target.url("app"),
        journal.path().display()
    ))
    .await;
    println!(
        "   proxy on 127.0.0.1:{}, admin on http://{}",
        proxy.port(),
        proxy.admin.map(|a| a.to_string()).unwrap_or_default()
    );
    done(t);

    let t = step(
        4,
        "the application writes through the proxy: pgbench (tpcb-like) and a time-series writer",
    );
    let secs = args.seconds.to_string();
    let load = pgbench(
        &source_bin,
        proxy.port(),
        &["-M", "prepared", "-c", "4", "-j", "2", "-T", &secs, "-n"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()?;
    let (client, conn) = tokio_postgres::connect(
        &proxy.url("app", "app-secret", "app"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    client
        .batch_execute("INSERT INTO devices SELECT g, 'sensor ' || g FROM generate_series(1, 20) g")
        .await?;
    let ins = client
        .prepare("INSERT INTO readings VALUES ($1, $2, $3, $4)")
        .await?;
    let t0 =
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?.with_timezone(&chrono::Utc);
    let mut readings = 0u64;
    let writer_until = Instant::now() + std::time::Duration::from_secs(args.seconds as u64 / 2);
    while Instant::now() < writer_until {
        let ts = t0 + chrono::Duration::seconds(readings as i64 * 37 % 259_200);
        client
            .execute(
                &ins,
                &[
                    &ts,
                    &((readings % 20) as i32 + 1),
                    &(readings as f64 / 3.0),
                    &format!("r{readings}"),
                ],
            )
            .await?;
        readings += 1;
    }
    println!("   {readings} readings written through the proxy");
    let status = proxy.admin_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    println!(
        "   dual-writing since {}; first write per table: {}",
        status["dual_write"]["started_at"], status["dual_write"]["first_write_per_table"]
    );
    done(t);

    let t = step(
        5,
        "validate while the load runs: dualwrite-validator checksum (readings, per partition)",
    );
    let (s_url, t_url) = (source.url("app"), target.url("app"));
    let first = validate_settled("checksum", &s_url, &t_url, &["--table", "public.readings"]).await;
    println!("   validator exit code: {first} (0 = equal)");
    done(t);

    let t = step(6, "cut over to the target while pgbench keeps going");
    let (code, body) = proxy
        .admin_post("/cutover", r#"{"to": "target", "timeout": "10s"}"#)
        .await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if code != 200 {
        bail!("cutover failed ({code}): {body}");
    }
    let pause = report["pause_ms"].as_f64().unwrap_or(0.0);
    println!("   primary is now the target; pause {pause:.1} ms");
    let out = load.wait_with_output()?;
    let (tps, failed) = pgbench_figures(&String::from_utf8_lossy(&out.stdout));
    println!("   pgbench through the proxy: {tps:.0} tps, {failed} failed transactions");
    done(t);

    let t = step(7, "final validation: both sides hold the same data");
    let last = validate_settled("checksum", &s_url, &t_url, &["--table", "public.readings"]).await;
    let accounts = "SELECT md5(string_agg(a::text, ',' ORDER BY aid)) FROM pgbench_accounts a";
    let mut accounts_equal = false;
    for _ in 0..20 {
        accounts_equal = source.psql("app", accounts) == target.psql("app", accounts);
        if accounts_equal {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let status: serde_json::Value = serde_json::from_str(&proxy.admin_get("/status").await)?;
    let records = status["dual_write"]["journal"]["records"]
        .as_u64()
        .unwrap_or(0);
    println!("   readings: validator exit code {last}; pgbench_accounts identical: {accounts_equal}; journal records: {records}");
    done(t);

    let ok = first == 0 && last == 0 && accounts_equal && failed == 0 && out.status.success();
    println!(
        "\nsummary: {readings} readings + pgbench at {tps:.0} tps dual-written, cutover pause {pause:.1} ms, \
         {failed} failed transactions, final validation {}, {:.1}s in all",
        if ok { "EQUAL" } else { "DIFFERENT" },
        total.elapsed().as_secs_f64()
    );
    if args.keep {
        println!("\n--keep: still running. Connect with:");
        println!("   psql 'postgres://app:app-secret@127.0.0.1:{}/app'   # through the proxy (primary: target)", proxy.port());
        println!("   psql '{s_url}'   # source");
        println!("   psql '{t_url}'   # target");
        println!("Ctrl-C stops everything.");
        tokio::signal::ctrl_c().await?;
    }
    proxy.stop().await;
    if !ok {
        bail!("the demo's validation did not come out equal");
    }
    Ok(())
}
