//! A target that lacks some of the source's partitions (and has no DEFAULT partition): `copy`
//! creates them with the source's names and bounds before its workers start, then copies every
//! row below T. `--dry-run` only says what it would create.

use dualwrite_tests::backfill_util::{code, copy};
use dualwrite_tests::Pair;

const SCHEMA: &str = "CREATE TABLE m (at timestamptz NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE m_d1 PARTITION OF m FOR VALUES FROM ('2024-03-01 00:00+00') TO ('2024-03-02 00:00+00');";

#[tokio::test]
async fn missing_target_partitions_are_created_before_the_copy() {
    let pair = Pair::start();
    pair.both(SCHEMA);
    pair.source.psql(
        &pair.db,
        "CREATE TABLE m_d2 PARTITION OF m FOR VALUES FROM ('2024-03-02 00:00+00') TO ('2024-03-03 00:00+00');
         CREATE TABLE \"M d3\" PARTITION OF m FOR VALUES FROM ('2024-03-03 00:00+00') TO ('2024-03-04 00:00+00');
         INSERT INTO m SELECT '2024-03-01 00:00+00'::timestamptz + i * interval '1 minute', i
           FROM generate_series(0, 3 * 1440 - 1) i",
    );
    let partitions = "SELECT string_agg(c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid), '; ' ORDER BY c.relname)
                        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'm'::regclass";
    // T (2024-03-15) is after every row.
    let until = ["--table", "public.m:at"];

    let c = copy(&pair, &[&until[..], &["--dry-run"]].concat()).await;
    assert_eq!(code(c), code(std::process::ExitCode::SUCCESS));
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'm'::regclass"
        ),
        "1",
        "a dry run creates nothing"
    );

    let c = copy(&pair, &until).await;
    assert_eq!(code(c), code(std::process::ExitCode::SUCCESS));
    assert_eq!(
        pair.target.psql(&pair.db, partitions),
        pair.source.psql(&pair.db, partitions)
    );
    let rows = "SELECT count(*), sum(v), min(at), max(at) FROM m";
    assert_eq!(
        pair.target.psql(&pair.db, rows),
        pair.source.psql(&pair.db, rows)
    );
}
