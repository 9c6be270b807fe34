//! Injected differences are found by counts and checksums and located to the right unit and row.

use dualwrite_tests::validator_util::{differing, fill_both, has_row, run_on};
use dualwrite_tests::Pair;
use dualwrite_validator::report::{Report, RowDiffKind, Status};

/// Applied on the target only, after the same data went to both sides.
const INJECT: &str = r#"
DELETE FROM metrics WHERE device = 5 AND ts = '2024-01-01 10:00:00+00';
INSERT INTO metrics (ts, device, label) VALUES ('2025-07-01 00:00:00+00', 200, 'extra');
UPDATE metrics SET amount = amount + 1 WHERE device = 5 AND ts = '2024-01-03 01:40:00+00';
UPDATE metrics SET label = NULL WHERE device = 2 AND ts = '2024-01-04 00:01:00+00';
UPDATE metrics SET value = value + 2.220446049250313e-16 WHERE device = 4 AND ts = '2024-01-02 05:00:00+00';
INSERT INTO events SELECT * FROM events WHERE at = '2024-01-02 12:00:00+00' AND kind IS NULL;
"#;

fn setup() -> Pair {
    let pair = Pair::start();
    fill_both(&pair);
    // A float that the target will hold one unit in the last place higher.
    pair.both("UPDATE metrics SET value = 1.2345678901234567 WHERE device = 4 AND ts = '2024-01-02 05:00:00+00'");
    pair.target.psql(&pair.db, INJECT);
    let label = pair.source.psql(
        &pair.db,
        "SELECT label FROM metrics WHERE device = 2 AND ts = '2024-01-04 00:01:00+00'",
    );
    assert_eq!(label, "", "the row chosen for NULL vs '' holds ''");
    pair
}

fn unit<'a>(
    r: &'a Report,
    table: &str,
    label: &str,
) -> &'a dualwrite_validator::report::UnitReport {
    differing(r, table)
        .into_iter()
        .find(|u| u.label == label)
        .unwrap_or_else(|| {
            panic!(
                "no differing unit {label} in {table}: {:#?}",
                differing(r, table)
            )
        })
}

fn check_checksum(r: &Report) {
    let what = r.digest.clone().unwrap_or_default();
    assert_eq!(r.summary.status, Status::Differ, "{what}");
    assert_eq!(r.exit_code(), 1);
    assert_eq!(
        differing(r, "public.metrics").len(),
        5,
        "{what}: {:#?}",
        differing(r, "public.metrics")
    );
    assert_eq!(differing(r, "public.events").len(), 1, "{what}");

    let u = unit(r, "public.metrics", "metrics_20240101");
    assert!(
        has_row(u, RowDiffKind::Missing, &["5", "2024-01-01 10:00:00+00"]),
        "{what}: {u:#?}"
    );
    assert_eq!(u.rows.len(), 1);

    let u = unit(r, "public.metrics", "metrics_default");
    assert!(
        has_row(u, RowDiffKind::Extra, &["200", "2025-07-01 00:00:00+00"]),
        "{what}: {u:#?}"
    );

    let u = unit(r, "public.metrics", "metrics_20240103");
    assert!(
        has_row(u, RowDiffKind::Changed, &["5", "2024-01-03 01:40:00+00"]),
        "{what}: {u:#?}"
    );
    assert_eq!(u.rows[0].changed_columns, vec!["amount".to_string()]);

    let u = unit(r, "public.metrics", "metrics_20240104");
    assert!(
        has_row(u, RowDiffKind::Changed, &["2", "2024-01-04 00:01:00+00"]),
        "{what}: {u:#?}"
    );
    assert_eq!(u.rows[0].changed_columns, vec!["label".to_string()]);
    let label = r.tables[0]
        .columns
        .iter()
        .position(|c| c == "label")
        .unwrap();
    assert_eq!(
        u.rows[0].source.as_ref().unwrap()[label].as_deref(),
        Some("")
    );
    assert_eq!(u.rows[0].target.as_ref().unwrap()[label], None);

    let u = unit(r, "public.metrics", "metrics_20240102");
    assert!(
        has_row(u, RowDiffKind::Changed, &["4", "2024-01-02 05:00:00+00"]),
        "{what}: {u:#?}"
    );
    assert_eq!(u.rows[0].changed_columns, vec!["value".to_string()]);
    let value = r.tables[0]
        .columns
        .iter()
        .position(|c| c == "value")
        .unwrap();
    let (a, b) = (
        u.rows[0].source.as_ref().unwrap()[value].clone().unwrap(),
        u.rows[0].target.as_ref().unwrap()[value].clone().unwrap(),
    );
    assert_eq!(a, "1.2345678901234567");
    assert_ne!(a, b);
    // The smallest possible change: the next representable double.
    let next = f64::from_bits(a.parse::<f64>().unwrap().to_bits() + 1);
    assert_eq!(b.parse::<f64>().unwrap(), next, "{a} vs {b}");

    let u = unit(r, "public.events", "2024-01-02 00:00:00+00");
    assert_eq!(u.source_rows + 1, u.target_rows);
    assert_eq!(u.rows.len(), 1, "{what}: {u:#?}");
    assert_eq!(u.rows[0].kind, RowDiffKind::Extra);
    assert_eq!(u.rows[0].key[0].as_deref(), Some("2024-01-02 12:00:00+00"));
}

#[tokio::test]
async fn injected_differences_are_found_and_located() {
    let pair = setup();
    let tables = ["--table", "public.metrics", "--table", "public.events:at"];

    let counts = run_on(&pair, "counts", &tables).await.unwrap();
    assert_eq!(counts.exit_code(), 1);
    let diffs: Vec<(String, i64)> = counts
        .tables
        .iter()
        .flat_map(|t| t.units.iter())
        .filter(|u| u.status == Status::Differ)
        .map(|u| (u.label.clone(), u.difference))
        .collect();
    assert_eq!(
        diffs,
        vec![
            ("metrics_20240101".to_string(), -1),
            ("metrics_default".to_string(), 1),
            ("2024-01-02 00:00:00+00".to_string(), 1)
        ]
    );

    for digest in ["typed", "text"] {
        let r = run_on(
            &pair,
            "checksum",
            &[&tables[..], &["--digest", digest]].concat(),
        )
        .await
        .unwrap();
        assert_eq!(r.digest.as_deref(), Some(digest));
        check_checksum(&r);
    }

    // Bisecting down to single rows (and by key hash where rows share a time) finds the same.
    let r = run_on(
        &pair,
        "checksum",
        &[&tables[..], &["--bisect-rows", "1"]].concat(),
    )
    .await
    .unwrap();
    check_checksum(&r);

    // The JSON report carries the same facts.
    let json: serde_json::Value =
        serde_json::from_str(&dualwrite_validator::report::json::render(&r).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["summary"]["status"], "differ");
    assert_eq!(json["summary"]["units_differing"], 6);
    let text = dualwrite_validator::report::text::render(&r);
    let first_unit_line = text.lines().find(|l| l.contains("metrics_")).unwrap();
    assert!(
        first_unit_line.contains("DIFFERS"),
        "mismatches first: {text}"
    );

    // The binary exits 1 and writes the JSON report where asked.
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("report.json");
    let bin = dualwrite_tests::bins::binary("dualwrite-validator", "dualwrite-validator");
    let out = std::process::Command::new(bin)
        .args([
            "checksum",
            "--source",
            &pair.source_url(),
            "--target",
            &pair.target_url(),
        ])
        .args(tables)
        .args(["--format", "json", "--output", out_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(json["summary"]["units_differing"], 6);
}

/// A target missing a whole partition: bisection stops once enough rows are found, lists the
/// earliest ones and says there are more.
#[tokio::test]
async fn a_missing_partition_lists_capped_rows() {
    let pair = Pair::start();
    pair.both(
        "CREATE TABLE big (ts timestamptz NOT NULL PRIMARY KEY, v int) PARTITION BY RANGE (ts);
         CREATE TABLE big_1 PARTITION OF big FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
         CREATE TABLE big_2 PARTITION OF big FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
         INSERT INTO big SELECT '2024-01-01'::timestamptz + i * interval '1 minute', i
         FROM generate_series(0, 60 * 24 * 59) i;",
    );
    pair.target.psql(&pair.db, "TRUNCATE big_2");
    let r = run_on(&pair, "checksum", &["--max-rows", "5"])
        .await
        .unwrap();
    let bad = differing(&r, "public.big");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].label, "big_2");
    assert_eq!(bad[0].target_rows, 0);
    assert_eq!(bad[0].rows.len(), 5);
    assert!(bad[0].rows_truncated);
    assert!(bad[0].rows.iter().all(|d| d.kind == RowDiffKind::Missing));
    assert_eq!(
        bad[0].rows[0].key[0].as_deref(),
        Some("2024-02-01 00:00:00+00")
    );
}
