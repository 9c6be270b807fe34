//! What an operator reads during a TimescaleDB migration: `copy --dry-run` counts the rows of
//! compressed chunks, notices written to a file carry no terminal colour codes,
//! `dualwrite-proxy status`/`set` need no backend password, and `suggest-t` over many buckets
//! prints a summary, not every bucket.

use std::process::{Command, Stdio};
use std::time::Duration;

use dualwrite_tests::backfill_util::{clone_schema, outcome, start_of_today};
use dualwrite_tests::bins::binary;
use dualwrite_tests::tsdb::RUNBOOK_METRICS_ROWS;
use dualwrite_tests::validator_util::run_on;
use dualwrite_tests::{free_port, Pair};

fn thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn dry_run_counts_compressed_chunks_and_notices_have_no_colour_codes() {
    let pair = Pair::start_runbook_layout();
    let compressed = pair.source.psql(
        &pair.db,
        "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed",
    );
    assert_eq!(compressed, "16");
    let (s, t) = (pair.source_url(), pair.target_url());
    clone_schema(&pair);
    // Statistics as a production source has them.
    pair.source.psql(&pair.db, "ANALYZE");
    let until = start_of_today(&pair);
    let (code, out, err) = outcome(&[
        "copy",
        "--source",
        &s,
        "--target",
        &t,
        "--until",
        &until,
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let total = format!("about {} rows", thousands(RUNBOOK_METRICS_ROWS));
    assert!(out.contains(&total), "expected {total:?} in:\n{out}");

    // Notices (a refresh with nothing to do) reach stderr, here a pipe: plain text.
    let (code, out, err) = outcome(&["jobs", "enable", "--target", &t]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("NOTICE"), "{err}");
    assert!(!err.contains('\u{1b}'), "colour codes in: {err:?}");
}

#[test]
fn proxy_status_and_set_need_no_backend_password() {
    let pair = Pair::start_timescaledb();
    let proxy = binary("dualwrite-proxy", "dualwrite-proxy");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [source]\nurl = \"postgres://postgres@127.0.0.1:{}/{}?sslmode=disable\"\npassword_env = \"DW_TEST_SOURCE_PW\"\n\
             [target]\nurl = \"postgres://postgres@127.0.0.1:{}/{}?sslmode=disable\"\npassword_env = \"DW_TEST_TARGET_PW\"\n\
             [auth]\nmethod = \"trust\"\n[journal]\ndir = \"{}\"\n",
            free_port(),
            pair.source.port,
            pair.db,
            pair.target.port,
            pair.db,
            dir.path().join("journal").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(&proxy)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("DW_TEST_SOURCE_PW", "postgres")
        .env("DW_TEST_TARGET_PW", "postgres")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The operator's shell has neither password variable.
    let call = |args: &[&str]| {
        Command::new(&proxy)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env_remove("DW_TEST_SOURCE_PW")
            .env_remove("DW_TEST_TARGET_PW")
            .output()
            .unwrap()
    };
    let mut status = call(&["status"]);
    for _ in 0..100 {
        if status.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        status = call(&["status"]);
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(status.status.success(), "{text}");
    assert!(text.contains("\"mode\""), "{text}");
    let set = call(&["set", "--mode", "dual-write"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&set.stdout),
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(set.status.success(), "{text}");
    let after = call(&["status"]);
    assert!(
        String::from_utf8_lossy(&after.stdout).contains("dual-write"),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn suggest_t_summarises_long_runs_of_buckets() {
    let pair = Pair::start_timescaledb();
    pair.both(
        "CREATE EXTENSION timescaledb;
         CREATE TABLE m (ts timestamptz NOT NULL, v int, PRIMARY KEY (ts));
         SELECT create_hypertable('m', by_range('ts', interval '7 days'));",
    );
    // Thirty days of minutes on the source; the target has only the last two days.
    pair.source.psql(
        &pair.db,
        "INSERT INTO m SELECT '2024-01-01'::timestamptz + i * interval '1 minute', i
         FROM generate_series(0, 30 * 1440 - 1) i",
    );
    pair.target.psql(
        &pair.db,
        "INSERT INTO m SELECT '2024-01-29'::timestamptz + i * interval '1 minute', 28 * 1440 + i
         FROM generate_series(0, 2 * 1440 - 1) i",
    );
    let r = run_on(&pair, "suggest-t", &["--bucket", "1min"])
        .await
        .unwrap();
    let s = r.tables[0].suggestion.as_ref().expect("a suggestion");
    assert_eq!(
        s.candidate.as_deref(),
        Some("2024-01-29 00:00:00+00"),
        "{s:?}"
    );
    let text =
        dualwrite_validator::report::render(&r, dualwrite_validator::report::Format::Text).unwrap();
    assert!(
        text.lines().count() < 100,
        "{} lines:\n{text}",
        text.lines().count()
    );
    assert!(text.contains("more differing buckets from"), "{text}");
    assert!(text.contains("2024-01-29 00:00:00+00"), "{text}");
    // JSON keeps every bucket.
    assert!(
        r.tables[0].units.len() >= 30 * 1440,
        "{}",
        r.tables[0].units.len()
    );
}
