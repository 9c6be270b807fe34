//! Failures during `copy`: a unit whose target connection is killed mid-COPY is retried and
//! completes; a unit that keeps failing is marked failed with its error while the others are
//! copied, the exit code says so, `status` shows it, and a rerun after the fix completes.

use std::time::{Duration, Instant};

use dualwrite_tests::backfill_util::{below_t, code, command, copy, digest, process, setup, T};
use dualwrite_tests::Pair;

#[tokio::test]
async fn failing_units_are_retried_or_reported_and_the_rest_go_on() {
    let pair = Pair::start();
    setup(&pair, 200_000);
    let db = &pair.db;
    let (s, t) = (pair.source_url(), pair.target_url());

    // A constraint on one target partition rejects its rows: that unit fails for good.
    pair.target.psql(
        db,
        "ALTER TABLE readings_w02 ADD CONSTRAINT reject_all CHECK (device < 0)",
    );
    let c = copy(&pair, &["--table", "public.readings", "--attempts", "2"]).await;
    assert_eq!(code(c), code(std::process::ExitCode::from(1)));
    let units = pair.target.psql(
        db,
        "SELECT state, count(*) FROM _dualwrite_backfill.unit GROUP BY state ORDER BY state",
    );
    assert_eq!(units, "done|11\nfailed|1", "{units}");
    let error = pair.target.psql(
        db,
        "SELECT source_relation || ' ' || error FROM _dualwrite_backfill.unit WHERE state = 'failed'",
    );
    assert!(
        error.starts_with("public.readings_w02") && error.contains("23514"),
        "{error}"
    );
    let out = process(&["status", "--target", &t]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("failed") && stdout.contains("reject_all"),
        "{stdout}"
    );

    // Fixed, a rerun copies only the failed unit.
    pair.target
        .psql(db, "ALTER TABLE readings_w02 DROP CONSTRAINT reject_all");
    let c = copy(&pair, &["--table", "public.readings"]).await;
    assert_eq!(code(c), code(std::process::ExitCode::SUCCESS));
    let (src, tgt) = below_t(&pair, "readings", "ts");
    assert_eq!(src, tgt);
    assert_eq!(
        pair.target.psql(
            db,
            "SELECT count(*) FILTER (WHERE state = 'done'), max(copies) FROM _dualwrite_backfill.unit"
        ),
        "12|1"
    );

    // The target backend of a running COPY is terminated: the unit is retried and completes.
    pair.target.psql(
        db,
        "DROP SCHEMA _dualwrite_backfill CASCADE; TRUNCATE readings, events",
    );
    let mut child = command()
        .args([
            "copy",
            "--source",
            &s,
            "--target",
            &t,
            "--until",
            T,
            "--table",
            "public.events:at",
            "--slice",
            "5days",
            "--table",
            "public.readings",
            "--max-rows-per-second",
            "40000",
            "--jobs",
            "1",
            "--quiet",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn copy");
    let started = Instant::now();
    let mut terminated = false;
    while started.elapsed() < Duration::from_secs(60) && !terminated {
        std::thread::sleep(Duration::from_millis(100));
        terminated = pair.target.psql(
            db,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE query LIKE 'COPY \"public\".\"readings\"%FROM STDIN%' AND state = 'active'",
        ) == "1";
    }
    assert!(terminated, "no running COPY was seen");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let (src, tgt) = below_t(&pair, "readings", "ts");
    assert_eq!(src, tgt);
    let (src, tgt) = below_t(&pair, "events", "at");
    assert_eq!(src, tgt);
    assert_eq!(
        pair.target.psql(
            db,
            "SELECT count(*) FILTER (WHERE state <> 'done'), max(copies), max(attempts) FROM _dualwrite_backfill.unit"
        ),
        "0|1|2"
    );
    // --slice 5days: events below T (2024-01-01 to 2024-03-15 12:00) in 15 slices.
    assert_eq!(
        pair.target.psql(
            db,
            "SELECT count(*) FROM _dualwrite_backfill.unit WHERE table_name = 'public.events'"
        ),
        "15"
    );

    // --from: only [F, T) is copied; the DEFAULT partition's older rows stay behind.
    pair.target.psql(
        db,
        "DROP SCHEMA _dualwrite_backfill CASCADE; TRUNCATE readings",
    );
    let f = "2024-02-01 00:00:00+00";
    let c = copy(&pair, &["--table", "public.readings", "--from", f]).await;
    assert_eq!(code(c), code(std::process::ExitCode::SUCCESS));
    let range = format!("ts >= '{f}' AND ts < '{T}'");
    assert_eq!(
        digest(&pair.source, db, "readings", &range),
        digest(&pair.target, db, "readings", &range)
    );
    assert_eq!(
        pair.target.psql(
            db,
            &format!("SELECT count(*) FROM readings WHERE NOT ({range})")
        ),
        "0"
    );
}
