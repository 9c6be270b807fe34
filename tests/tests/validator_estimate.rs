//! `counts --estimate` after ANALYZE agrees with exact counts within its stated tolerance.

use dualwrite_tests::validator_util::{fill_both, run_on};
use dualwrite_tests::Pair;
use dualwrite_validator::report::Status;

#[tokio::test]
async fn estimates_match_exact_counts_within_tolerance() {
    let pair = Pair::start();
    fill_both(&pair);
    // A partition big enough that ANALYZE samples it instead of reading every row.
    pair.both(
        "CREATE TABLE big (ts timestamptz NOT NULL, v float8, s text) PARTITION BY RANGE (ts);
         CREATE TABLE big_1 PARTITION OF big FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
         CREATE TABLE big_2 PARTITION OF big FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
         INSERT INTO big SELECT '2024-01-01'::timestamptz + i * interval '10 seconds', i, repeat('x', i % 50)
         FROM generate_series(0, 299999) i;",
    );
    // The target holds a few rows fewer in big_1: well within 5%.
    pair.target.psql(
        &pair.db,
        "DELETE FROM big WHERE ts < '2024-01-01 00:10:00+00'",
    );
    let tables = ["--table", "public.metrics", "--table", "public.big"];
    let exact = run_on(&pair, "counts", &tables).await.unwrap();
    let est = run_on(&pair, "counts", &[&tables[..], &["--estimate"]].concat())
        .await
        .unwrap();
    assert_eq!(est.mode, "estimate");
    let tolerance = est.tolerance.expect("an estimate states its tolerance");
    assert_eq!(tolerance, 0.05);
    assert!(crate_text_says_estimate(&est));
    assert_eq!(est.exit_code(), 0, "{est:#?}");
    for (te, tx) in est.tables.iter().zip(&exact.tables) {
        for (ue, ux) in te.units.iter().zip(&tx.units) {
            assert_eq!(ue.label, ux.label);
            assert!(ue.estimated, "{} was not estimated", ue.label);
            for (e, x) in [
                (ue.source_rows, ux.source_rows),
                (ue.target_rows, ux.target_rows),
            ] {
                let err = (e - x).abs() as f64;
                assert!(
                    err <= tolerance * x.max(1) as f64,
                    "{}: estimate {e} vs exact {x}",
                    ue.label
                );
            }
        }
    }
    let big_1 = est.tables[1]
        .units
        .iter()
        .find(|u| u.label == "big_1")
        .unwrap();
    assert!(
        matches!(big_1.status, Status::WithinTolerance | Status::Equal),
        "{big_1:?}"
    );
    // Exact counts see the missing rows.
    assert_eq!(exact.exit_code(), 1);
}

fn crate_text_says_estimate(r: &dualwrite_validator::report::Report) -> bool {
    let text = dualwrite_validator::report::text::render(r);
    text.contains("ESTIMATE") && text.contains("5.0%")
}
