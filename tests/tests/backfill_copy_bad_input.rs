//! Bad input to `copy`: a clear message, exit code 2, nothing written to the target.

use dualwrite_tests::backfill_util::{has_plan_schema, process, setup, T};
use dualwrite_tests::{free_port, Pair, PgBin};

fn expect_refusal(pair: &Pair, args: &[&str], message: &str) {
    let out = process(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(message),
        "{args:?}: expected {message:?} in {stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "a password was printed: {stderr}"
    );
    assert!(!has_plan_schema(pair), "{args:?} wrote the plan schema");
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM events)"
        ),
        "0",
        "{args:?} copied rows"
    );
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    assert!(
        PgBin::target().major > PgBin::source().major,
        "this test needs a target newer than the source: set TARGET_PG_BIN (scripts/test.sh does)"
    );
    let pair = Pair::start();
    setup(&pair, 20_000);
    let (s, t) = (pair.source_url(), pair.target_url());
    let copy = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["copy", "--source", &s, "--target", &t, "--until", T]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };

    let a = copy(&["--table", "public.nope:ts"]);
    expect_refusal(&pair, &as_refs(&a), "table public.nope does not exist");
    let a = copy(&["--table", "public.events:body"]);
    expect_refusal(&pair, &as_refs(&a), "not a time type");
    let a = copy(&["--table", "public.events:nope"]);
    expect_refusal(&pair, &as_refs(&a), "has no column \"nope\"");
    let mut a = copy(&[]);
    a[6] = "yesterday-ish".into();
    expect_refusal(&pair, &as_refs(&a), "is not a timestamp");
    let a = copy(&["--from", "2024-04-01"]);
    expect_refusal(&pair, &as_refs(&a), "--from must be before --until");

    // Unreachable target; the URL's password is never echoed.
    let port = free_port();
    let dead = format!("postgres://postgres:secretpw@127.0.0.1:{port}/db?sslmode=disable");
    let out = process(&["copy", "--source", &s, "--target", &dead, "--until", T]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("target unreachable"), "{stderr}");
    assert!(!stderr.contains("secretpw"), "{stderr}");

    // Target older than the source: the two servers swapped.
    let out = process(&["copy", "--source", &t, "--target", &s, "--until", T]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("older than the source"), "{stderr}");
    assert!(!has_plan_schema(&pair));

    // The target's table lacks a column.
    pair.target
        .psql(&pair.db, "ALTER TABLE events DROP COLUMN n");
    let a = copy(&["--table", "public.events:at"]);
    expect_refusal(
        &pair,
        &as_refs(&a),
        "column \"n\" of public.events is missing on the target",
    );
    pair.target
        .psql(&pair.db, "ALTER TABLE events ADD COLUMN n numeric");

    // The target lacks a partition (which copy would create) and has no DEFAULT partition
    // while the source's holds rows below T: refused before the partition is created.
    pair.target.psql(
        &pair.db,
        "DROP TABLE readings_default; DROP TABLE readings_w03",
    );
    let a = copy(&[]);
    expect_refusal(&pair, &as_refs(&a), "has no DEFAULT partition");
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT count(*) FROM pg_class WHERE relname = 'readings_w03'"
        ),
        "0",
        "nothing created on a refusal"
    );

    // A table on the target only.
    pair.source.psql(&pair.db, "DROP TABLE devices");
    let a = copy(&["--table", "public.devices:id"]);
    expect_refusal(&pair, &as_refs(&a), "table public.devices does not exist");
}
