//! Source and target partitioned differently (as after a re-layout on the target): every row is
//! compared exactly once, and a difference is still found.

use dualwrite_tests::validator_util::{differing, has_row, run_on};
use dualwrite_tests::Pair;
use dualwrite_validator::report::{RowDiffKind, Status};

#[tokio::test]
async fn different_partition_layouts_compare_every_row_once() {
    let pair = Pair::start();
    pair.source.psql(
        &pair.db,
        "CREATE TABLE r (ts timestamptz NOT NULL, v int, PRIMARY KEY (ts)) PARTITION BY RANGE (ts);
         CREATE TABLE r_d1 PARTITION OF r FOR VALUES FROM ('2024-01-01') TO ('2024-01-02');
         CREATE TABLE r_d2 PARTITION OF r FOR VALUES FROM ('2024-01-02') TO ('2024-01-03');
         CREATE TABLE r_default PARTITION OF r DEFAULT;",
    );
    pair.target.psql(
        &pair.db,
        "CREATE TABLE r (ts timestamptz NOT NULL, v int, PRIMARY KEY (ts)) PARTITION BY RANGE (ts);
         CREATE TABLE r_two_days PARTITION OF r FOR VALUES FROM ('2024-01-01') TO ('2024-01-03');
         CREATE TABLE r_d5 PARTITION OF r FOR VALUES FROM ('2024-01-05') TO ('2024-01-06');
         CREATE TABLE r_default PARTITION OF r DEFAULT;",
    );
    pair.both(
        "INSERT INTO r SELECT '2024-01-01'::timestamptz + i * interval '10 minutes', i
         FROM generate_series(0, 6 * 144 - 1) i;",
    );
    let r = run_on(&pair, "checksum", &["--table", "r"]).await.unwrap();
    assert_eq!(r.summary.status, Status::Equal, "{r:#?}");
    assert_eq!(r.summary.source_rows, 6 * 144);
    assert_eq!(r.summary.target_rows, 6 * 144);
    let labels: Vec<&str> = r.tables[0].units.iter().map(|u| u.label.as_str()).collect();
    assert_eq!(
        labels,
        vec!["r_d1", "r_d2", "r_d5 (target only)", "r_default"]
    );

    pair.target.psql(
        &pair.db,
        "DELETE FROM r WHERE ts = '2024-01-05 12:00:00+00'",
    );
    let r = run_on(&pair, "checksum", &["--table", "r"]).await.unwrap();
    let bad = differing(&r, "public.r");
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0].label, "r_d5 (target only)");
    assert!(has_row(
        bad[0],
        RowDiffKind::Missing,
        &["2024-01-05 12:00:00+00"]
    ));
}
