//! `schema`: the target gets the source's schema and relational data; the time-series tables
//! arrive empty (their data is for `copy`); grants with `--privileges`; bad input refused with
//! nothing written.

use std::path::Path;
use std::process::Command;

use dualwrite_tests::backfill_util::schema;
use dualwrite_tests::{free_port, Cluster, Pair, PgBin};

/// A source with a range-partitioned time-series table, a plain time-series table, relational
/// tables with foreign keys, sequences, a view, an enum and indexes.
const SOURCE_SQL: &str = r#"
CREATE TYPE mood AS ENUM ('ok', 'sad', 'it''s');
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    mood mood,
    tags text[]
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    note text,
    amount numeric(12, 2),
    placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE events (
    id bigserial,
    at timestamptz NOT NULL,
    customer_id int REFERENCES customers (id),
    payload jsonb,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE events_2024_01 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE events_2024_02 PARTITION OF events FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE events_2024_03 PARTITION OF events FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
CREATE TABLE events_2024_04 PARTITION OF events FOR VALUES FROM ('2024-04-01') TO ('2024-05-01');
CREATE INDEX events_customer_at ON events (customer_id, at DESC);
CREATE SCHEMA metrics;
CREATE TABLE metrics.readings (at timestamptz NOT NULL, sensor int NOT NULL, v double precision);
CREATE INDEX readings_at ON metrics.readings (at);
CREATE VIEW customer_totals AS
    SELECT c.name, count(o.id) AS orders, sum(o.amount) AS total
      FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.name;
CREATE SEQUENCE invoice_no START 1000;
SELECT setval('invoice_no', 4242);

INSERT INTO customers (name, mood, tags) VALUES
    ('Ann', 'ok', '{a,b}'), ('Bob "the builder"', 'it''s', NULL), (E'Zoë\nnewline', NULL, '{}');
INSERT INTO orders (customer_id, note, amount, placed_at)
    SELECT 1 + g % 3, 'note ' || g, g * 1.25, '2024-01-01'::timestamptz + g * interval '1 hour'
      FROM generate_series(1, 200) g;
INSERT INTO events (at, customer_id, payload)
    SELECT '2024-01-01'::timestamptz + g * interval '10 minutes', 1 + g % 3, jsonb_build_object('g', g)
      FROM generate_series(0, 15000) g;
INSERT INTO metrics.readings
    SELECT '2024-01-01'::timestamptz + g * interval '1 minute', g % 7, g / 3.0
      FROM generate_series(1, 2000) g;
"#;

/// `pg_dump --schema-only` of a database with the newest pg_dump, without the lines that
/// differ between any two databases (comments, `\restrict` keys, blank lines).
fn schema_of(cluster: &Cluster, db: &str, pg_dump: &Path) -> String {
    let out = Command::new(pg_dump)
        .args([
            "--schema-only",
            "--quote-all-identifiers",
            "--no-owner",
            "--no-privileges",
            "--restrict-key=compare",
            "-d",
        ])
        .arg(cluster.url(db))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("--") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn newest_pg_dump() -> std::path::PathBuf {
    PgBin::newer().unwrap_or_else(PgBin::source).bin("pg_dump")
}

#[test]
fn schema_and_relational_data_are_cloned_time_series_left_empty() {
    let pair = Pair::start();
    pair.source.psql(&pair.db, SOURCE_SQL);
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("w");
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.target_url(),
        workdir.to_str().unwrap(),
        &["--table", "metrics.readings:at"],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("data left for `copy`: public.events (4 partitions, time column at)"),
        "{out}"
    );
    assert!(
        out.contains("data left for `copy`: metrics.readings (time column at)"),
        "{out}"
    );
    assert!(!out.contains(":postgres@") && !err.contains(":postgres@"));

    // Same schema.
    let pg_dump = newest_pg_dump();
    let source_schema = schema_of(&pair.source, &pair.db, &pg_dump);
    let target_schema = schema_of(&pair.target, &pair.db, &pg_dump);
    assert_eq!(source_schema, target_schema);
    assert!(target_schema.contains("CREATE TYPE \"public\".\"mood\" AS ENUM"));

    // Relational data equal, time-series tables empty, sequences set.
    for query in [
        "SELECT id, name, mood, tags FROM customers ORDER BY id",
        "SELECT id, customer_id, note, amount, placed_at FROM orders ORDER BY id",
        "SELECT * FROM customer_totals ORDER BY name",
        "SELECT last_value, is_called FROM invoice_no",
        "SELECT last_value FROM orders_id_seq",
        "SELECT last_value FROM customers_id_seq",
        "SELECT last_value FROM events_id_seq",
    ] {
        assert_eq!(
            pair.source.psql(&pair.db, query),
            pair.target.psql(&pair.db, query),
            "{query}"
        );
    }
    assert_eq!(
        pair.target
            .psql(&pair.db, "SELECT last_value FROM invoice_no"),
        "4242"
    );
    assert_eq!(
        pair.source.psql(&pair.db, "SELECT count(*) FROM events"),
        "15001"
    );
    assert_eq!(
        pair.target.psql(&pair.db, "SELECT count(*) FROM events"),
        "0"
    );
    assert_eq!(
        pair.target
            .psql(&pair.db, "SELECT count(*) FROM metrics.readings"),
        "0"
    );
    assert_eq!(
        pair.target.psql(&pair.db, "SELECT count(*) FROM orders"),
        "200"
    );
    // The dumps are kept for review.
    for f in [
        "dump.sql",
        "privileges.pg_dump.sql",
        "privileges.sql",
        "schema.restore.log",
    ] {
        assert!(workdir.join(f).exists(), "{f} missing in the workdir");
    }
    let dump = std::fs::read_to_string(workdir.join("dump.sql")).unwrap();
    assert!(!dump.contains("COPY \"public\".\"events_2024_01\""));
    assert!(dump.contains("COPY \"public\".\"orders\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn privileges_are_reapplied_and_failures_written_for_review() {
    let pair = Pair::start();
    pair.source.psql(
        &pair.db,
        "CREATE ROLE app_rw; CREATE ROLE ghost;
         CREATE TABLE accounts (id int PRIMARY KEY, owner text);
         CREATE TABLE audit (at timestamptz, what text);
         CREATE VIEW account_names AS SELECT owner FROM accounts;
         GRANT SELECT, INSERT, UPDATE ON accounts TO app_rw;
         GRANT SELECT ON account_names TO app_rw;
         GRANT SELECT ON audit TO ghost;
         INSERT INTO accounts VALUES (1, 'x');",
    );
    // The application's role exists on the target; `ghost` does not.
    pair.target.psql("postgres", "CREATE ROLE app_rw");
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("w");
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.target_url(),
        workdir.to_str().unwrap(),
        &["--privileges"],
    );
    // Some privileges were not applied: exit 1, with the list.
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("privileges: 1 statements failed"), "{out}");
    assert!(
        out.contains("GRANT SELECT ON TABLE \"public\".\"audit\" TO \"ghost\";"),
        "{out}"
    );
    let acl = |c: &Cluster, rel: &str| {
        c.psql(
            &pair.db,
            &format!(
                "SELECT privilege_type FROM information_schema.role_table_grants
                  WHERE grantee = 'app_rw' AND table_name = '{rel}' ORDER BY 1"
            ),
        )
    };
    assert_eq!(acl(&pair.target, "accounts"), "INSERT\nSELECT\nUPDATE");
    assert_eq!(acl(&pair.target, "accounts"), acl(&pair.source, "accounts"));
    assert_eq!(acl(&pair.target, "account_names"), "SELECT");
    let failed = std::fs::read_to_string(workdir.join("privileges-failed.sql")).unwrap();
    assert!(
        failed.contains("GRANT SELECT ON TABLE \"public\".\"audit\" TO \"ghost\";"),
        "{failed}"
    );
    assert!(failed.contains("role \"ghost\" does not exist"), "{failed}");
    assert!(!failed.contains("app_rw"), "{failed}");

    // Once the role exists, the file applies as it is.
    pair.target.psql("postgres", "CREATE ROLE ghost");
    let out = Command::new(pair.target.bin.bin("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(pair.target_url())
        .arg("-f")
        .arg(workdir.join("privileges-failed.sql"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT privilege_type FROM information_schema.role_table_grants WHERE grantee = 'ghost'"
        ),
        "SELECT"
    );
}

/// What a refused run must leave: no workdir, no tables on the target.
fn assert_nothing_written(target: &Cluster, db: &str, workdir: &Path) {
    assert!(!workdir.exists(), "{} was created", workdir.display());
    assert_eq!(
        target.psql(
            db,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')"
        ),
        "0"
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let pair = Pair::start();
    pair.source.psql(&pair.db, SOURCE_SQL);
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("w");
    let wd = workdir.to_str().unwrap();

    // Unreachable target.
    let nowhere = format!(
        "postgres://postgres:pw-not-shown@127.0.0.1:{}/x?sslmode=disable",
        free_port()
    );
    let (code, out, err) = schema(&pair.source_url(), &nowhere, wd, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("target unreachable"), "{err}");
    assert!(!err.contains("pw-not-shown") && !out.contains("pw-not-shown"));
    assert!(!workdir.exists());

    // A table that does not exist.
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.target_url(),
        wd,
        &["--table", "public.nope:at"],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("public.nope does not exist"), "{err}");
    assert_nothing_written(&pair.target, &pair.db, &workdir);

    // A failing restore: the target has the enum type already. The whole dump is one
    // transaction: nothing is left, and the failing statement is shown.
    pair.target.psql(&pair.db, "CREATE TYPE mood AS ENUM ('x')");
    let (code, out, err) = schema(&pair.source_url(), &pair.target_url(), wd, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("type \"mood\" already exists"), "{err}");
    assert!(
        err.contains("STATEMENT:  CREATE TYPE \"public\".\"mood\" AS ENUM"),
        "{err}"
    );
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')"
        ),
        "0"
    );
    std::fs::remove_dir_all(&workdir).unwrap();

    // A target that is not empty.
    pair.target.psql(&pair.db, "CREATE TABLE stray (a int)");
    let (code, out, err) = schema(&pair.source_url(), &pair.target_url(), wd, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is not empty (it has public.stray)"), "{err}");
    assert!(!workdir.exists());
}

#[test]
fn target_older_than_source_is_refused() {
    let newer = PgBin::newer_required();
    let pair = Pair::start_with(&newer, &PgBin::source());
    pair.source.psql(&pair.db, "CREATE TABLE t (a int)");
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("w");
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.target_url(),
        workdir.to_str().unwrap(),
        &[],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!(
            "the target runs PostgreSQL {}",
            pair.target.bin.major
        )) && err.contains("must be the same major version or newer"),
        "{err}"
    );
    assert_nothing_written(&pair.target, &pair.db, &workdir);

    // Client tools older than the source are refused too (pg_dump must know the source).
    pair.source.create_db("second");
    let old_tools = PgBin::source();
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.source.url("second"),
        workdir.to_str().unwrap(),
        &["--pg-bin", old_tools.dir.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("older than the source") && err.contains("--pg-bin"),
        "{err}"
    );
    assert_nothing_written(&pair.source, "second", &workdir);
}
