//! Helpers for the backfill's end-to-end tests: a source with a range-partitioned time-series
//! table of many types, a plain time-series table, a relational table; row digests to compare
//! the two sides; running `dualwrite-backfill` in-process or as a process.

use std::process::{Command, ExitCode, Output};

use crate::{bins, Cluster, Pair};

/// The consistency time T used by the tests.
pub const T: &str = "2024-03-15 12:00:00+00";

/// Same DDL on both sides (the tests create the target schema themselves). `readings`: 14
/// weekly partitions from 2024-01-01 and a DEFAULT one; `events`: plain, with an enum array
/// (copied in text format: arrays of user-defined types have no portable binary form);
/// `devices`: relational.
pub const SCHEMA: &str = r#"
CREATE TYPE level AS ENUM ('low', 'mid', 'high');
CREATE TABLE readings (
    ts timestamptz NOT NULL,
    device int NOT NULL,
    value float8,
    amount numeric(14,4),
    payload jsonb,
    note text,
    tags text[],
    lvl level,
    local_ts timestamp,
    PRIMARY KEY (device, ts)
) PARTITION BY RANGE (ts);
DO $$ BEGIN
  FOR w IN 0..13 LOOP
    EXECUTE format('CREATE TABLE readings_w%s PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
      lpad(w::text, 2, '0'), '2024-01-01 00:00:00+00'::timestamptz + w * interval '7 days',
      '2024-01-01 00:00:00+00'::timestamptz + (w + 1) * interval '7 days');
  END LOOP;
END $$;
CREATE TABLE readings_default PARTITION OF readings DEFAULT;
CREATE TABLE events (at timestamptz NOT NULL, kinds level[], body text, n numeric);
CREATE TABLE devices (id int PRIMARY KEY, name text, lvl level);
"#;

/// `readings` rows `i` in `[lo, hi)` of `n` spread evenly over the 98 days of the partitions.
pub fn readings_rows(n: u64, lo: u64, hi: u64) -> String {
    format!(
        r#"INSERT INTO readings (ts, device, value, amount, payload, note, tags, lvl, local_ts)
SELECT '2024-01-01 00:00:00+00'::timestamptz + (i * (98 * 86400.0 / {n})) * interval '1 second',
       i % 100,
       CASE WHEN i % 17 = 0 THEN NULL WHEN i % 19 = 0 THEN 'NaN'::float8 ELSE (i % 1000) * 0.5 END,
       (i * 1.2345)::numeric(14,4),
       CASE WHEN i % 11 = 0 THEN NULL ELSE jsonb_build_object('i', i, 'tag', 'x' || (i % 7), 'arr', jsonb_build_array(i % 3, NULL)) END,
       CASE i % 6 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'say "hi", it''s' WHEN 3 THEN E'multi\nline\ttab \\ back' ELSE 'note ' || i END,
       CASE WHEN i % 5 = 0 THEN NULL ELSE ARRAY['a' || (i % 4), NULL, 'q"u,ote'] END,
       (ARRAY['low', 'mid', 'high']::level[])[1 + i % 3],
       CASE WHEN i % 9 = 0 THEN NULL ELSE '2024-01-01 00:00:00'::timestamp + i * interval '1 second' END
FROM generate_series({lo}, {hi} - 1) i"#
    )
}

/// Source data: `n` readings, 1,000 in the DEFAULT partition on each side of the partitioned
/// range, `n / 20` events, 100 devices.
pub fn source_data(n: u64) -> String {
    format!(
        "{};
INSERT INTO readings (ts, device, value, note, lvl)
SELECT '2023-12-01 00:00:00+00'::timestamptz + i * interval '1 minute', 200 + i % 10, i, 'early ' || i, 'low' FROM generate_series(0, 999) i;
INSERT INTO readings (ts, device, value, note, lvl)
SELECT '2024-05-01 00:00:00+00'::timestamptz + i * interval '1 minute', 300 + i % 10, i, 'late ' || i, 'high' FROM generate_series(0, 999) i;
{};",
        readings_rows(n, 0, n),
        events_rows(n / 20, 0, n / 20)
    )
}

/// `events` rows `i` in `[lo, hi)` of `n` over the same 98 days.
pub fn events_rows(n: u64, lo: u64, hi: u64) -> String {
    format!(
        r#"INSERT INTO events
SELECT '2024-01-01 00:00:00+00'::timestamptz + (i * (98 * 86400.0 / {n})) * interval '1 second',
       CASE WHEN i % 7 = 0 THEN NULL ELSE ARRAY['mid', 'high']::level[] END,
       CASE WHEN i % 4 = 0 THEN E'line one\nline "two", done' ELSE 'body ' || i END,
       i * 0.001
FROM generate_series({lo}, {hi} - 1) i"#
    )
}

/// The relational table, the same on both sides (as the schema step leaves it).
pub const DEVICES: &str = "INSERT INTO devices SELECT i, 'device ' || i, (ARRAY['low', 'mid', 'high']::level[])[1 + i % 3] FROM generate_series(0, 99) i";

/// Create the schema on both sides, fill the source (and the relational table on both).
pub fn setup(pair: &Pair, rows: u64) {
    pair.both(SCHEMA);
    pair.both(DEVICES);
    pair.source.psql(&pair.db, &source_data(rows));
    pair.source.psql(&pair.db, "ANALYZE");
}

/// Count and order-independent digest of the rows of `table` matching `cond`: equal digests
/// mean equal multisets of rows (row text compared under UTC).
pub fn digest(cluster: &Cluster, db: &str, table: &str, cond: &str) -> String {
    let out = cluster.psql(
        db,
        &format!(
            "SET TimeZone = 'UTC'; SELECT count(*) || ' ' || coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::int8), 0) FROM {table} t WHERE {cond}"
        ),
    );
    out.lines().last().unwrap_or_default().to_string()
}

/// Both sides' digests of `table` below T.
pub fn below_t(pair: &Pair, table: &str, time_column: &str) -> (String, String) {
    let cond = format!("{time_column} < '{T}'");
    (
        digest(&pair.source, &pair.db, table, &cond),
        digest(&pair.target, &pair.db, table, &cond),
    )
}

/// Assert that both time-series tables of [`setup`] are identical on both sides below T.
pub fn assert_same_below_t(pair: &Pair) {
    for (table, col) in [("readings", "ts"), ("events", "at")] {
        let (s, t) = below_t(pair, table, col);
        assert_eq!(s, t, "{table} below T");
    }
}

/// Run `dualwrite-backfill ARGS...` in-process.
pub async fn run(args: &[&str]) -> ExitCode {
    let mut argv = vec!["dualwrite-backfill"];
    argv.extend_from_slice(args);
    let cli = dualwrite_backfill::parse_args(argv).expect("valid command line");
    dualwrite_backfill::run(cli).await
}

/// `copy --source .. --target .. --until T -q EXTRA...` in-process.
pub async fn copy(pair: &Pair, extra: &[&str]) -> ExitCode {
    let (s, t) = (pair.source_url(), pair.target_url());
    let mut args = vec!["copy", "--source", &s, "--target", &t, "--until", T, "-q"];
    args.extend_from_slice(extra);
    run(&args).await
}

/// `schema --roles --privileges` from the pair's source to its target (the runbook's step 3),
/// asserting that it succeeds.
pub fn clone_schema(pair: &Pair) {
    let workdir = tempfile::tempdir().expect("temp dir");
    let wd = workdir.path().join("wd");
    let (s, t) = (pair.source_url(), pair.target_url());
    let (code, out, err) = outcome(&[
        "schema",
        "--source",
        &s,
        "--target",
        &t,
        "--roles",
        "--privileges",
        "--workdir",
        wd.to_str().expect("utf-8 temp path"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The start of today (UTC) on the source: a T below which a layout's history lies.
pub fn start_of_today(pair: &Pair) -> String {
    pair.source.psql(
        &pair.db,
        "SET TimeZone = 'UTC'; SELECT date_trunc('day', now())::text",
    )
}

/// `copy` of everything below `until`, in-process, asserting that it succeeds.
pub async fn copy_until(pair: &Pair, until: &str) {
    let (s, t) = (pair.source_url(), pair.target_url());
    let code = run(&[
        "copy", "--source", &s, "--target", &t, "--until", until, "-q",
    ])
    .await;
    assert_eq!(format!("{code:?}"), format!("{:?}", ExitCode::SUCCESS));
}

/// The binary as a command.
pub fn command() -> Command {
    Command::new(bins::binary("dualwrite-backfill", "dualwrite-backfill"))
}

/// Run the binary to its end.
pub fn process(args: &[&str]) -> Output {
    command()
        .args(args)
        .output()
        .expect("running dualwrite-backfill")
}

/// Exit code of an in-process run, for assertions.
pub fn code(c: ExitCode) -> String {
    format!("{c:?}")
}

/// Whether the target has the plan schema.
pub fn has_plan_schema(pair: &Pair) -> bool {
    pair.target.psql(
        &pair.db,
        "SELECT count(*) FROM pg_namespace WHERE nspname = '_dualwrite_backfill'",
    ) == "1"
}

/// Run the binary with no URL or tool defaults from the environment: exit code, stdout, stderr.
pub fn outcome(args: &[&str]) -> (i32, String, String) {
    let out = command()
        .args(args)
        .env_remove("DUALWRITE_SOURCE_URL")
        .env_remove("DUALWRITE_TARGET_URL")
        .env_remove("DUALWRITE_PG_BIN")
        .output()
        .expect("running dualwrite-backfill");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `schema --source SOURCE --target TARGET EXTRA... --workdir WORKDIR`, as [`outcome`].
pub fn schema(source: &str, target: &str, workdir: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["schema", "--source", source, "--target", target];
    args.extend_from_slice(extra);
    args.extend(["--workdir", workdir]);
    outcome(&args)
}
