//! `schema --roles`: a real `pg_dumpall --roles-only` with a superuser, replication and
//! bypassrls roles and memberships granted by a role, sanitised and applied on a target whose
//! login role has CREATEROLE but is not a superuser.

use dualwrite_tests::backfill_util::outcome as backfill;
use dualwrite_tests::{unique_name, Pair, PgBin};

#[tokio::test(flavor = "multi_thread")]
async fn roles_are_sanitised_for_a_createrole_target() {
    // GRANTED BY is dumped from PostgreSQL 16 on: the source runs the newer server.
    let newer = PgBin::newer_required();
    let pair = Pair::start_with(&newer, &newer);
    pair.source.psql(
        &pair.db,
        "CREATE ROLE \"We\"\"ird\" SUPERUSER;
         CREATE ROLE repl REPLICATION LOGIN;
         CREATE ROLE byp BYPASSRLS;
         CREATE ROLE grp;
         CREATE ROLE adm CREATEROLE;
         GRANT grp TO adm WITH ADMIN OPTION;
         CREATE ROLE app LOGIN PASSWORD 'it''s \"secret\"';
         GRANT grp TO app GRANTED BY adm;
         GRANT grp TO byp WITH ADMIN OPTION, INHERIT FALSE;
         COMMENT ON ROLE app IS 'the ''app'' role';
         ALTER ROLE app SET search_path = 'app', 'public';
         CREATE ROLE ops LOGIN;
         GRANT pg_read_all_data TO app;
         CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'a');",
    );
    // The target's admin: CREATEROLE, not a superuser, owner of the target database; it made
    // the application's role by hand already (NOLOGIN).
    let migrator = unique_name("migrator");
    pair.target
        .create_role(&migrator, "m1gr''ator", "CREATEROLE NOSUPERUSER");
    let db = unique_name("tdb");
    pair.target.psql(
        "postgres",
        &format!("CREATE DATABASE {db} OWNER {migrator}"),
    );
    // A role the platform's superuser made: the migrator has no ADMIN OPTION on it.
    pair.target.psql("postgres", "CREATE ROLE ops NOLOGIN");
    let target_url = pair.target.url_as(&migrator, "m1gr%27ator", &db);
    let (client, conn) = tokio_postgres::connect(&target_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("CREATE ROLE app NOLOGIN")
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("w");
    let (code, out, err) = backfill(&[
        "schema",
        "--source",
        &pair.source_url(),
        "--target",
        &target_url,
        "--roles",
        "--workdir",
        workdir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // What was removed is listed.
    for expected in [
        "CREATE ROLE \"postgres\";: removed (the source's bootstrap superuser)",
        "ALTER ROLE \"We\"\"ird\" WITH SUPERUSER",
        "removed SUPERUSER, NOCREATEDB, NOREPLICATION, NOBYPASSRLS",
        "ALTER ROLE \"repl\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN REPLICATION NOBYPASSRLS;: removed NOSUPERUSER, NOCREATEDB, REPLICATION, NOBYPASSRLS",
        "removed NOSUPERUSER, NOCREATEDB, NOREPLICATION, BYPASSRLS",
        "PASSWORD '***'",
        "removed GRANTED BY \"adm\"",
        "CREATE ROLE \"app\";: skipped: the role exists on the target",
        "ALTER ROLE \"ops\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;: not applied: the role exists on the target and the target's login role has no ADMIN OPTION on it",
        "no ADMIN OPTION on pg_read_all_data, so it cannot grant it",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(
        !out.contains("it's \"secret\"") && !out.contains("SCRAM-SHA-256$"),
        "{out}"
    );
    assert!(!err.contains("m1gr"), "{err}");

    let script = std::fs::read_to_string(workdir.join("roles.sql")).unwrap();
    for gone in ["SUPERUSER", "REPLICATION", "BYPASSRLS", "GRANTED BY"] {
        assert!(!script.contains(gone), "{gone} left in:\n{script}");
    }
    assert!(!script.contains("ROLE \"postgres\""), "{script}");
    assert!(
        !script.contains(&format!("ROLE \"{migrator}\"")),
        "{script}"
    );

    // The roles are on the target, without the superuser attributes.
    let roles = pair.target.psql(
        "postgres",
        "SELECT rolname, rolsuper, rolreplication, rolbypassrls, rolcanlogin, rolcreaterole
           FROM pg_roles WHERE rolname IN ('We\"ird', 'repl', 'byp', 'grp', 'adm', 'app') ORDER BY 1",
    );
    assert_eq!(
        roles,
        "We\"ird|f|f|f|f|f\nadm|f|f|f|f|t\napp|f|f|f|t|f\nbyp|f|f|f|f|f\ngrp|f|f|f|f|f\nrepl|f|f|f|t|f"
    );
    let members = pair.target.psql(
        "postgres",
        "SELECT r.rolname, m.rolname, a.admin_option, a.inherit_option FROM pg_auth_members a
           JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
          WHERE r.rolname = 'grp' AND m.rolname IN ('adm', 'app', 'byp') ORDER BY 2",
    );
    assert_eq!(members, "grp|adm|t|t\ngrp|app|f|t\ngrp|byp|t|f");
    assert_eq!(
        pair.target.psql(
            "postgres",
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'app'"
        ),
        "the 'app' role"
    );
    // The role the migrator may not alter is left as it was; the grant it may not give is not given.
    assert_eq!(
        pair.target.psql(
            "postgres",
            "SELECT rolcanlogin, pg_has_role('app', 'pg_read_all_data', 'MEMBER') FROM pg_roles WHERE rolname = 'ops'"
        ),
        "f|f"
    );
    // The existing role was altered: it logs in now, with the source's password.
    let app_url = pair.target.url_as("app", "it%27s%20%22secret%22", &db);
    let (app, conn) = tokio_postgres::connect(&app_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("app cannot log in on the target: {e}"));
    tokio::spawn(conn);
    let row = app.query_one("SHOW search_path", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "app, public");
    // The schema came along too.
    assert_eq!(pair.target.psql(&db, "SELECT v FROM t"), "a");
}
