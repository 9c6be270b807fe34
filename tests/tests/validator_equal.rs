//! Identical source and target: counts and checksums find nothing, exit code 0.

use dualwrite_tests::validator_util::{fill_both, run_on};
use dualwrite_tests::Pair;
use dualwrite_validator::report::Status;

#[tokio::test]
async fn identical_tables_agree_in_counts_and_checksums() {
    let pair = Pair::start();
    fill_both(&pair);
    let tables = ["--table", "public.metrics", "--table", "public.events:at"];

    let counts = run_on(&pair, "counts", &tables).await.unwrap();
    assert_eq!(counts.summary.status, Status::Equal, "{counts:#?}");
    assert_eq!(counts.exit_code(), 0);
    assert_eq!(counts.summary.source_rows, 5760 + 10 + 3000);
    let metrics = &counts.tables[0];
    assert_eq!(metrics.kind, "partitioned");
    // Four daily partitions and the default one.
    assert_eq!(metrics.units.len(), 5, "{:?}", metrics.units);
    // The plain table is cut into daily buckets.
    assert_eq!(counts.tables[1].kind, "plain");
    assert_eq!(counts.tables[1].units.len(), 4);

    for digest in ["typed", "text"] {
        let sums = run_on(
            &pair,
            "checksum",
            &[&tables[..], &["--digest", digest]].concat(),
        )
        .await
        .unwrap();
        assert_eq!(sums.digest.as_deref(), Some(digest));
        assert_eq!(sums.summary.status, Status::Equal, "{digest}: {sums:#?}");
        assert_eq!(sums.summary.units_differing, 0);
        assert_eq!(sums.summary.rows_listed, 0);
        assert_eq!(sums.exit_code(), 0);
        assert!(sums.tables[0]
            .units
            .iter()
            .all(|u| u.source_digest.is_some() && u.source_digest == u.target_digest));
    }

    // Discovery without --table finds the partitioned table; a finer bucket splits partitions.
    let hourly = run_on(&pair, "counts", &["--bucket", "6h"]).await.unwrap();
    assert_eq!(hourly.tables.len(), 1);
    assert_eq!(hourly.tables[0].table, "public.metrics");
    assert_eq!(hourly.summary.status, Status::Equal);
    assert!(
        hourly.tables[0].units.len() >= 16,
        "{:?}",
        hourly.tables[0].units.len()
    );

    // Clipping to [F, T) counts only that range.
    let clipped = run_on(
        &pair,
        "counts",
        &[
            "--table",
            "metrics",
            "--from",
            "2024-01-02 12:00",
            "--until",
            "2024-01-03",
        ],
    )
    .await
    .unwrap();
    assert_eq!(clipped.summary.source_rows, 720);
    assert_eq!(clipped.summary.status, Status::Equal);
}

/// Types without a stable typed hash (hashed through their text) and types whose hash is
/// looser than their text (numeric scale, interval units) are compared by their text.
#[tokio::test]
async fn exotic_types_are_compared_by_text() {
    let pair = Pair::start();
    pair.both(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TYPE pair_t AS (a int, b text);
         CREATE DOMAIN positive AS int CHECK (VALUE > 0);
         CREATE TABLE odd (ts timestamptz NOT NULL PRIMARY KEY, p point, m money, e mood, c pair_t,
                           j json, n numeric, iv interval, d positive, x tsvector, r int4range, bp char(4));
         INSERT INTO odd SELECT '2024-01-01'::timestamptz + i * interval '1 hour', point(i, i / 3.0),
                i * 1.25, (ARRAY['sad', 'ok', 'happy'])[i % 3 + 1]::mood, ROW(i, 'b,' || i)::pair_t,
                ('{\"k\": ' || i || '}')::json, i / 7.0, make_interval(days => i), i + 1,
                to_tsvector('simple', 'w' || i || ' v'), int4range(i, i + 10), 'ab'
         FROM generate_series(0, 99) i;",
    );
    for digest in ["typed", "text"] {
        let r = run_on(
            &pair,
            "checksum",
            &["--table", "odd:ts", "--digest", digest],
        )
        .await
        .unwrap();
        assert_eq!(r.summary.status, Status::Equal, "{digest}: {r:#?}");
    }
    // Equal as values, different as text: still a difference.
    pair.target.psql(
        &pair.db,
        "UPDATE odd SET n = 1.50 WHERE ts = '2024-01-01 00:00:00+00';
         UPDATE odd SET iv = interval '24 hours' WHERE ts = '2024-01-01 01:00:00+00';
         UPDATE odd SET p = point(2, 0.5) WHERE ts = '2024-01-01 02:00:00+00';",
    );
    pair.source.psql(
        &pair.db,
        "UPDATE odd SET n = 1.5 WHERE ts = '2024-01-01 00:00:00+00'",
    );
    for digest in ["typed", "text"] {
        let r = run_on(
            &pair,
            "checksum",
            &["--table", "odd:ts", "--digest", digest],
        )
        .await
        .unwrap();
        let rows: Vec<Vec<String>> = r.tables[0]
            .units
            .iter()
            .flat_map(|u| u.rows.iter())
            .map(|d| d.changed_columns.clone())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec!["n".to_string()],
                vec!["iv".to_string()],
                vec!["p".to_string()]
            ],
            "{digest}"
        );
    }
}

#[test]
fn binary_exits_0_when_equal() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (ts timestamptz NOT NULL, v text) PARTITION BY RANGE (ts);
               CREATE TABLE t1 PARTITION OF t FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
               INSERT INTO t SELECT '2024-01-01'::timestamptz + i * interval '1 hour', i::text FROM generate_series(0, 99) i;");
    let bin = dualwrite_tests::bins::binary("dualwrite-validator", "dualwrite-validator");
    for cmd in ["counts", "checksum"] {
        let out = std::process::Command::new(&bin)
            .args([
                cmd,
                "--source",
                &pair.source_url(),
                "--target",
                &pair.target_url(),
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{cmd}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("summary: EQUAL"), "{stdout}");
        assert!(!stdout.contains(":postgres@"), "password printed: {stdout}");
    }
}
