//! Space-partitioned hypertables on a real TimescaleDB: several chunks share each time range,
//! and the validator must compare each source chunk with the target chunk in the same slice of
//! every dimension. Chunks are created in a different order on the target, so their names and
//! ids differ between the sides. Identical data must compare EQUAL; a single missing or changed
//! row in any chunk position must be found in that chunk and nowhere else.

use dualwrite_tests::validator_util::{differing, has_row, run_on};
use dualwrite_tests::Pair;
use dualwrite_validator::report::{Report, RowDiffKind, Status};

const DAYS: i64 = 3;
const PER_DAY: i64 = 96;

/// A hypertable `m` partitioned by day and by a hash of `key_col` into `partitions`.
fn create(
    pair: &Pair,
    partitions_source: u32,
    partitions_target: u32,
    key_col: &str,
    key_type: &str,
) {
    for (cluster, n) in [
        (&pair.source, partitions_source),
        (&pair.target, partitions_target),
    ] {
        cluster.psql(
            &pair.db,
            &format!(
                "CREATE EXTENSION timescaledb;
                 CREATE TABLE m (ts timestamptz NOT NULL, {key_col} {key_type} NOT NULL, v double precision,
                                 PRIMARY KEY (ts, {key_col}));
                 SELECT create_hypertable('m', by_range('ts', interval '1 day'));
                 SELECT add_dimension('m', by_hash('{key_col}', {n}));"
            ),
        );
    }
}

/// The same rows on both sides, inserted in opposite orders so that the target creates its
/// chunks (and names them) in a different order from the source.
fn fill(pair: &Pair, key_expr: &str) {
    let rows = |order: &str| {
        format!(
            "INSERT INTO m SELECT '2024-01-01'::timestamptz + (i / 8) * interval '{} seconds', {key_expr}, i * 0.5
             FROM generate_series(0, {} - 1) i ORDER BY i {order}",
            86_400 / (PER_DAY / 8),
            DAYS * PER_DAY
        )
    };
    pair.source.psql(&pair.db, &rows("ASC"));
    pair.target.psql(&pair.db, &rows("DESC"));
}

/// Source chunks with one of their rows: `(chunk name, ts, key)`.
fn chunk_rows(pair: &Pair, key_col: &str) -> Vec<(String, String, String)> {
    let chunks = pair.source.psql(
        &pair.db,
        "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks
         WHERE hypertable_name = 'm' ORDER BY 1",
    );
    chunks
        .lines()
        .map(|c| {
            let row = pair.source.psql(
                &pair.db,
                &format!(
                    "SET TimeZone = 'UTC'; SELECT ts || '|' || {key_col} FROM {c} ORDER BY ts DESC, {key_col} LIMIT 1"
                ),
            );
            let (ts, key) = row.split_once('|').expect("ts|key");
            let name = c.rsplit('.').next().expect("chunk name").to_string();
            (name, ts.to_string(), key.to_string())
        })
        .collect()
}

fn assert_equal(r: &Report, rows: i64) {
    assert_eq!(r.summary.status, Status::Equal, "{r:#?}");
    assert_eq!(r.summary.source_rows, rows, "{r:#?}");
    assert_eq!(r.summary.target_rows, rows, "{r:#?}");
    for u in &r.tables[0].units {
        assert_eq!(u.status, Status::Equal, "{u:#?}");
        assert_eq!(u.difference, 0, "{u:#?}");
    }
}

/// Every chunk position: a row missing on the target is found by `counts` in that chunk only
/// (one row fewer), and a changed value by `checksum` in that chunk only.
async fn every_position(
    pair: &Pair,
    key_col: &str,
    key_literal: fn(&str) -> String,
    by_chunk: bool,
) {
    let total = DAYS * PER_DAY;
    let positions = chunk_rows(pair, key_col);
    for (chunk, ts, key) in &positions {
        let key_sql = key_literal(key);
        let cond = format!("ts = '{ts}' AND {key_col} = {key_sql}");
        pair.target
            .psql(&pair.db, &format!("DELETE FROM m WHERE {cond}"));

        let r = run_on(pair, "counts", &[]).await.unwrap();
        assert_eq!(r.summary.status, Status::Differ, "{chunk}: {r:#?}");
        let bad = differing(&r, "public.m");
        assert_eq!(bad.len(), 1, "{chunk}: {bad:#?}");
        assert_eq!(bad[0].difference, -1, "{chunk}: {bad:#?}");
        if by_chunk {
            assert_eq!(&bad[0].label, chunk, "{chunk}: {bad:#?}");
        }
        assert_eq!(r.summary.target_rows, total - 1);

        let r = run_on(pair, "checksum", &[]).await.unwrap();
        let bad = differing(&r, "public.m");
        assert_eq!(bad.len(), 1, "{chunk}: {bad:#?}");
        assert!(
            has_row(bad[0], RowDiffKind::Missing, &[ts, key]),
            "{chunk}: {bad:#?}"
        );

        // Back in, then changed in place: only checksum sees it.
        let v = pair
            .source
            .psql(&pair.db, &format!("SELECT v FROM m WHERE {cond}"));
        pair.target.psql(
            &pair.db,
            &format!("INSERT INTO m VALUES ('{ts}', {key_sql}, {v} + 1)"),
        );
        let r = run_on(pair, "counts", &[]).await.unwrap();
        assert_equal(&r, total);
        let r = run_on(pair, "checksum", &[]).await.unwrap();
        let bad = differing(&r, "public.m");
        assert_eq!(bad.len(), 1, "{chunk}: {bad:#?}");
        if by_chunk {
            assert_eq!(&bad[0].label, chunk, "{chunk}: {bad:#?}");
        }
        assert!(
            has_row(bad[0], RowDiffKind::Changed, &[ts, key]),
            "{chunk}: {bad:#?}"
        );
        pair.target
            .psql(&pair.db, &format!("UPDATE m SET v = {v} WHERE {cond}"));
    }
    let r = run_on(pair, "checksum", &[]).await.unwrap();
    assert_equal(&r, total);
}

#[tokio::test]
async fn two_hash_partitions_match_chunks_by_every_dimension() {
    let pair = Pair::start_timescaledb();
    create(&pair, 2, 2, "device_id", "int");
    fill(&pair, "i % 8");
    let chunks = chunk_rows(&pair, "device_id");
    assert_eq!(chunks.len() as i64, DAYS * 2, "{chunks:?}");
    // The sides name their chunks differently (created in another order).
    let names = |c: &dualwrite_tests::Cluster| {
        c.psql(
            &pair.db,
            "SELECT string_agg(chunk_name, ',' ORDER BY range_start, chunk_name) FROM timescaledb_information.chunks",
        )
    };
    assert_ne!(names(&pair.source), names(&pair.target));

    for command in ["counts", "checksum"] {
        let r = run_on(&pair, command, &[]).await.unwrap();
        assert_equal(&r, DAYS * PER_DAY);
        assert_eq!(r.tables[0].units.len(), chunks.len(), "{r:#?}");
    }
    every_position(&pair, "device_id", |k| k.to_string(), true).await;
}

#[tokio::test]
async fn three_hash_partitions_on_text_match_chunks_by_every_dimension() {
    let pair = Pair::start_timescaledb();
    create(&pair, 3, 3, "host", "text");
    fill(&pair, "'host-' || (i % 8)");
    let chunks = chunk_rows(&pair, "host");
    assert_eq!(chunks.len() as i64, DAYS * 3, "{chunks:?}");
    for command in ["counts", "checksum"] {
        let r = run_on(&pair, command, &[]).await.unwrap();
        assert_equal(&r, DAYS * PER_DAY);
        assert_eq!(r.tables[0].units.len(), chunks.len(), "{r:#?}");
    }
    every_position(&pair, "host", |k| format!("'{k}'"), true).await;
}

#[tokio::test]
async fn different_hash_partition_counts_compare_by_time_range() {
    let pair = Pair::start_timescaledb();
    create(&pair, 2, 3, "device_id", "int");
    fill(&pair, "i % 8");
    for command in ["counts", "checksum"] {
        let r = run_on(&pair, command, &[]).await.unwrap();
        assert_equal(&r, DAYS * PER_DAY);
        assert_eq!(r.tables[0].units.len() as i64, DAYS, "{r:#?}");
        assert!(
            r.tables[0]
                .notes
                .iter()
                .any(|n| n.contains("space partitions")),
            "{:?}",
            r.tables[0].notes
        );
    }
    every_position(&pair, "device_id", |k| k.to_string(), false).await;
}
