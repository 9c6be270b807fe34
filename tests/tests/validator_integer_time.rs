//! A plain table with an integer time column, cut into integer buckets (negative values too),
//! clipped with --from/--until.

use dualwrite_tests::validator_util::{differing, has_row, run_on};
use dualwrite_tests::Pair;
use dualwrite_validator::report::{RowDiffKind, Status};

#[tokio::test]
async fn integer_time_buckets_locate_differences() {
    let pair = Pair::start();
    pair.both(
        "CREATE TABLE ticks (tick bigint NOT NULL, v text, PRIMARY KEY (tick));
         INSERT INTO ticks SELECT i, 'v' || i FROM generate_series(-500, 1499) i;",
    );
    pair.target.psql(
        &pair.db,
        "DELETE FROM ticks WHERE tick = -250; UPDATE ticks SET v = 'changed' WHERE tick = 1234;",
    );
    let args = ["--table", "ticks:tick", "--bucket", "100"];
    let r = run_on(&pair, "checksum", &args).await.unwrap();
    assert_eq!(r.tables[0].units.len(), 20);
    let bad = differing(&r, "public.ticks");
    let labels: Vec<&str> = bad.iter().map(|u| u.label.as_str()).collect();
    assert_eq!(labels, vec!["-300", "1200"]);
    assert_eq!(
        (bad[0].start_value, bad[0].end_value),
        (Some(-300), Some(-200))
    );
    assert!(has_row(bad[0], RowDiffKind::Missing, &["-250"]));
    assert!(has_row(bad[1], RowDiffKind::Changed, &["1234"]));

    // Clipped to [0, 1200): what differs lies outside.
    let r = run_on(
        &pair,
        "checksum",
        &[&args[..], &["--from", "0", "--until", "1200"]].concat(),
    )
    .await
    .unwrap();
    assert_eq!(r.summary.status, Status::Equal, "{r:#?}");
    assert_eq!(r.summary.source_rows, 1200);

    // A duration is no bucket for an integer column.
    let err = run_on(
        &pair,
        "counts",
        &["--table", "ticks:tick", "--bucket", "1h"],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("integer"), "{err}");
}
