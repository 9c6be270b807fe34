//! `schema --roles --privileges` on a real TimescaleDB source: the extension in a non-public
//! schema with continuous aggregates restores, every object keeps its owner (aggregates
//! included; chunk owner statements are not errors), and a restore that fails leaves the
//! target as it was.

use dualwrite_tests::backfill_util::schema;
use dualwrite_tests::Pair;

/// Owners of the application's relations and of TimescaleDB's objects behind them (chunks,
/// aggregates' internals), by name: the same names exist on both sides after the restore.
const OWNERS_SQL: &str = "SELECT string_agg(format('%s.%s=%s', n.nspname, c.relname, pg_get_userbyid(c.relowner)), E'\\n' ORDER BY n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm') AND (n.nspname = 'app' OR (n.nspname = '_timescaledb_internal'
       AND (c.relname LIKE '\\_hyper\\_%' OR c.relname LIKE '\\_materialized\\_%' OR c.relname LIKE '\\_partial\\_view\\_%'
            OR c.relname LIKE '\\_direct\\_view\\_%' OR c.relname LIKE 'compress\\_%')))";

#[test]
fn roles_privileges_keep_every_owner_with_the_extension_in_its_own_schema() {
    let pair = Pair::start_runbook_layout();
    let workdir = tempfile::tempdir().unwrap();
    let wd = workdir.path().join("wd");
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.target_url(),
        wd.to_str().unwrap(),
        &["--roles", "--privileges"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("failed"), "{out}");

    // The extension where the source has it, no longer restoring.
    let where_ext = "SELECT n.nspname || ' ' || e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'";
    assert_eq!(pair.target.psql(&pair.db, where_ext), "ext 2.29.2");
    assert_eq!(
        pair.target.psql(&pair.db, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()"),
        "0"
    );
    // Every relation has its source owner: aggregates and their internals too.
    let owners = pair.source.psql(&pair.db, OWNERS_SQL);
    assert!(owners.contains("app.metrics_hourly=app_owner"), "{owners}");
    assert!(owners.lines().count() > 30, "{owners}");
    assert_eq!(pair.target.psql(&pair.db, OWNERS_SQL), owners);
    // Same chunks, compressed where the source's are.
    let chunks = "SELECT string_agg(format('%s %s %s', chunk_name, range_start, is_compressed), ',' ORDER BY chunk_name) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics'";
    assert_eq!(
        pair.target.psql(&pair.db, chunks),
        pair.source.psql(&pair.db, chunks)
    );
    // The owner reads and refreshes its aggregates; the reader reads them.
    pair.target.psql_as(
        "app_owner",
        "owner-pw",
        &pair.db,
        "CALL ext.refresh_continuous_aggregate('app.metrics_hourly', NULL, NULL)",
    );
    let read = |role: &str, pw: &str| {
        pair.target
            .psql_as(role, pw, &pair.db, "SELECT count(*) FROM app.metrics_daily")
    };
    assert_eq!(read("app_owner", "owner-pw"), "0");
    assert_eq!(read("app_reader", "reader-pw"), "0");
    // Jobs keep their owners.
    let jobs = "SELECT string_agg(job_id || ' ' || owner, ',' ORDER BY job_id) FROM timescaledb_information.jobs WHERE job_id >= 1000";
    assert_eq!(
        pair.target.psql(&pair.db, jobs),
        pair.source.psql(&pair.db, jobs)
    );
}

#[test]
fn a_failed_restore_leaves_the_target_as_it_was() {
    let pair = Pair::start_runbook_layout();
    // A leftover schema of the same name makes the dump's CREATE SCHEMA fail, after the
    // extension was created and pre_restore ran.
    pair.target.psql(
        &pair.db,
        "CREATE ROLE app_owner; CREATE SCHEMA app AUTHORIZATION app_owner",
    );
    let state = "SELECT (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema')
                   || ' | ' || (SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb')
                   || ' | ' || (SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database())
                   || ' | ' || (SELECT count(*) FROM pg_class WHERE relnamespace <> 'pg_catalog'::regnamespace AND relnamespace <> 'information_schema'::regnamespace AND relnamespace <> 'pg_toast'::regnamespace)";
    let before = pair.target.psql(&pair.db, state);
    assert_eq!(before, "app,public | 0 | 0 | 0");

    let workdir = tempfile::tempdir().unwrap();
    let wd = workdir.path().join("wd");
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.target_url(),
        wd.to_str().unwrap(),
        &["--roles", "--privileges"],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("schema \"app\" already exists"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(pair.target.psql(&pair.db, state), before);

    // Removing the cause is enough: no database to recreate.
    pair.target.psql(&pair.db, "DROP SCHEMA app");
    let wd2 = workdir.path().join("wd2");
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.target_url(),
        wd2.to_str().unwrap(),
        &["--roles", "--privileges"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(pair.target.timescaledb_version(&pair.db), "2.29.2");
}

#[test]
fn an_extension_installed_beforehand_in_the_sources_schema_is_used() {
    let pair = Pair::start_runbook_layout();
    // As an operator (or a managed service) prepares a target: the extension already there.
    pair.target.psql(
        &pair.db,
        "CREATE SCHEMA ext; CREATE EXTENSION timescaledb WITH SCHEMA ext VERSION '2.29.2'",
    );
    let workdir = tempfile::tempdir().unwrap();
    let wd = workdir.path().join("wd");
    let (code, out, err) = schema(
        &pair.source_url(),
        &pair.target_url(),
        wd.to_str().unwrap(),
        &["--roles", "--privileges"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT count(*) FROM timescaledb_information.continuous_aggregates"
        ),
        "2"
    );
    let chunks = "SELECT count(*) || ' ' || count(*) FILTER (WHERE is_compressed) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics'";
    assert_eq!(
        pair.target.psql(&pair.db, chunks),
        pair.source.psql(&pair.db, chunks)
    );
}
