//! suggest-t on a target that, as dual-write leaves it, holds only rows after a known time.

use dualwrite_common::catalog::TimeType;
use dualwrite_tests::validator_util::run_on;
use dualwrite_tests::Pair;

const HOUR: i64 = 3_600_000_000;

#[tokio::test]
async fn finds_when_dual_write_began() {
    let pair = Pair::start();
    pair.both(
        "CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL, v float8, PRIMARY KEY (device, ts));
         INSERT INTO readings SELECT '2024-01-01'::timestamptz + (i / 3) * interval '1 minute', i % 3, i * 0.5
         FROM generate_series(0, 3 * 48 * 60 - 1) i;",
    );
    // Dual-write began at 07:30 on the second day: the target lacks everything before.
    pair.target.psql(
        &pair.db,
        "DELETE FROM readings WHERE ts < '2024-01-02 07:30:00+00'",
    );
    let began = TimeType::Timestamptz
        .parse("2024-01-02 07:30:00+00")
        .unwrap();

    let r = run_on(
        &pair,
        "suggest-t",
        &["--table", "readings:ts", "--bucket", "1h"],
    )
    .await
    .unwrap();
    let s = r.tables[0].suggestion.clone().expect("a suggestion");
    let t = s.candidate_value.expect("a candidate");
    assert!(
        t >= began && t - began <= HOUR,
        "candidate {:?}",
        s.candidate
    );
    assert_eq!(s.candidate.as_deref(), Some("2024-01-02 08:00:00+00"));
    assert_eq!(s.confidence, "high", "{s:?}");
    assert_eq!(s.nonempty_buckets_after, 16);
    assert_eq!(
        s.last_differing_bucket.as_deref(),
        Some("2024-01-02 07:00:00+00")
    );
    assert_eq!(
        (s.last_differing_source_rows, s.last_differing_target_rows),
        (Some(180), Some(90))
    );
    assert!(s.reason.contains("16 non-empty buckets"), "{}", s.reason);
    assert_eq!(r.exit_code(), 0);
    let text = dualwrite_validator::report::text::render(&r);
    assert!(
        text.contains("candidate T: 2024-01-02 08:00:00+00"),
        "{text}"
    );
    let html = dualwrite_validator::report::html::render(&r);
    assert!(
        html.contains("title=\"candidate T\""),
        "the heat strip marks the candidate"
    );

    // A row changed after the candidate (same counts) moves it past that bucket: checksums count.
    pair.target.psql(
        &pair.db,
        "UPDATE readings SET v = -1 WHERE device = 1 AND ts = '2024-01-02 09:15:00+00'",
    );
    let r = run_on(
        &pair,
        "suggest-t",
        &["--table", "readings:ts", "--bucket", "1h"],
    )
    .await
    .unwrap();
    let s = r.tables[0].suggestion.clone().unwrap();
    assert_eq!(
        s.candidate.as_deref(),
        Some("2024-01-02 10:00:00+00"),
        "{s:?}"
    );
    assert_eq!(
        s.last_differing_bucket.as_deref(),
        Some("2024-01-02 09:00:00+00")
    );

    // When even the latest bucket differs there is no candidate, and the exit code says so.
    pair.target.psql(
        &pair.db,
        "DELETE FROM readings WHERE ts >= '2024-01-02 23:00:00+00' AND device = 0",
    );
    let r = run_on(
        &pair,
        "suggest-t",
        &["--table", "readings:ts", "--bucket", "1h"],
    )
    .await
    .unwrap();
    let s = r.tables[0].suggestion.clone().unwrap();
    assert_eq!(s.candidate, None);
    assert_eq!(s.confidence, "none");
    assert_eq!(r.exit_code(), 1);
}
