//! Helpers for the validator's end-to-end tests: a table set covering many types, and running
//! `dualwrite-validator` commands in-process against a [`Pair`].

use dualwrite_validator::report::{Report, RowDiffKind, UnitReport};

use crate::Pair;

/// A range-partitioned table (daily partitions plus a default one) with a primary key and many
/// types, and a plain table without a key. Text values hold separators, quotes, newlines and
/// backslashes; NULLs and empty strings alternate.
pub const SCHEMA: &str = r#"
CREATE TABLE metrics (
    ts timestamptz NOT NULL,
    device int NOT NULL,
    value float8,
    reading float4,
    amount numeric(14,4),
    label text,
    payload jsonb,
    flag bool,
    tags text[],
    raw bytea,
    span interval,
    day date,
    uid uuid,
    local_ts timestamp,
    note varchar(50),
    PRIMARY KEY (device, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE metrics_20240101 PARTITION OF metrics FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-01-02 00:00:00+00');
CREATE TABLE metrics_20240102 PARTITION OF metrics FOR VALUES FROM ('2024-01-02 00:00:00+00') TO ('2024-01-03 00:00:00+00');
CREATE TABLE metrics_20240103 PARTITION OF metrics FOR VALUES FROM ('2024-01-03 00:00:00+00') TO ('2024-01-04 00:00:00+00');
CREATE TABLE metrics_20240104 PARTITION OF metrics FOR VALUES FROM ('2024-01-04 00:00:00+00') TO ('2024-01-05 00:00:00+00');
CREATE TABLE metrics_default PARTITION OF metrics DEFAULT;
CREATE TABLE events (at timestamptz NOT NULL, kind text, body text, n numeric);
"#;

/// Rows for [`SCHEMA`]: one row a minute for four days (5,760 rows), a few in the default
/// partition, and 3,000 events over a bit more than three days (with legitimate duplicates).
pub const DATA: &str = r#"
INSERT INTO metrics
SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 minute',
       i % 7,
       CASE WHEN i % 11 = 0 THEN NULL WHEN i % 13 = 0 THEN 'NaN'::float8 ELSE i * 0.1 END,
       (i * 1.5)::float4,
       (i * 1.2345)::numeric(14,4),
       CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'a|b,c"d' WHEN 3 THEN E'line1\nline2 \\x' ELSE 'plain ' || i END,
       jsonb_build_object('i', i, 'f', i * 0.5, 'nested', jsonb_build_array(1, 'two', NULL)),
       CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END,
       ARRAY['x', NULL, 'y,z', ''],
       decode(md5(i::text), 'hex'),
       make_interval(secs => i),
       '2024-01-01'::date + i / 1440,
       md5(i::text)::uuid,
       '2024-01-01 00:00:00'::timestamp + i * interval '1 second',
       'v' || i
FROM generate_series(0, 4 * 1440 - 1) i;
INSERT INTO metrics (ts, device, value, label)
SELECT '2025-06-01 00:00:00+00'::timestamptz + i * interval '1 hour', 100 + i, 1e-300 * i, 'late ' || i
FROM generate_series(0, 9) i;
INSERT INTO events
SELECT '2024-01-01 00:00:00+00'::timestamptz + (i / 2) * interval '3 minutes',
       CASE WHEN i % 4 = 0 THEN NULL ELSE 'k' || (i % 3) END,
       CASE WHEN i % 6 = 0 THEN '' ELSE 'body, ' || (i / 2) END,
       (i / 2) * 0.01
FROM generate_series(0, 2999) i;
"#;

/// Create and fill the tables on both sides of a pair.
pub fn fill_both(pair: &Pair) {
    pair.both(SCHEMA);
    pair.both(DATA);
}

/// Parse a command line (without the program name) and run it in-process.
pub async fn run(args: &[&str]) -> anyhow::Result<Report> {
    let mut argv = vec!["dualwrite-validator"];
    argv.extend_from_slice(args);
    let cli = dualwrite_validator::parse_args(argv)?;
    Ok(dualwrite_validator::execute(&cli.command).await?)
}

/// `COMMAND --source ... --target ... -q EXTRA...` against a pair, in-process.
pub async fn run_on(pair: &Pair, command: &str, extra: &[&str]) -> anyhow::Result<Report> {
    let (s, t) = (pair.source_url(), pair.target_url());
    let mut args = vec![command, "--source", &s, "--target", &t, "-q"];
    args.extend_from_slice(extra);
    run(&args).await
}

/// The units of `table` that differ.
pub fn differing<'a>(report: &'a Report, table: &str) -> Vec<&'a UnitReport> {
    report
        .tables
        .iter()
        .filter(|t| t.table == table)
        .flat_map(|t| t.units.iter())
        .filter(|u| u.status == dualwrite_validator::report::Status::Differ)
        .collect()
}

/// Whether `unit` lists a row of `kind` whose key columns hold `key` (canonical text).
pub fn has_row(unit: &UnitReport, kind: RowDiffKind, key: &[&str]) -> bool {
    unit.rows.iter().any(|r| {
        r.kind == kind
            && r.key.len() == key.len()
            && r.key.iter().zip(key).all(|(a, b)| a.as_deref() == Some(*b))
    })
}
