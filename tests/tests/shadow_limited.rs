//! Shadow reads of single-row and row-limited reads, through real drivers (`tests/clients/`):
//! each way a driver reads one row is compared, and a row changed on the target only is
//! reported every time it is read; a table read in chunks without ORDER BY, with equal data on
//! both sides, is compared by row count and reported as such, never as a mismatch.
//!
//! What is sampled (see docs/proxy.md, "Shadow reads"): a read Query, and an Execute of a
//! portal bound in the same batch (up to Sync), with or without a row limit. A later Execute
//! of a portal bound in an earlier batch (the next chunk of a cursor) is not, nor are cursor
//! statements (DECLARE, FETCH). So psycopg's named (server-side) cursor, DECLARE then FETCH, is
//! not sampled, nor is asyncpg's `Cursor.fetch` (its portal is bound in a batch of its own);
//! asyncpg's iterable cursor binds and executes its first chunk together, and that chunk is.

use std::time::Duration;

use dualwrite_proxy::shadow::{ShadowReport, StatementReport};
use dualwrite_tests::clients;
use dualwrite_tests::proxy::{DualWrite, APP_PASSWORD, APP_USER};

/// A dual-writing proxy shadowing every read, table `probe` (ids 1 to 10, `v` = `v<id>`) on
/// both sides, and row 7 changed on the target only.
async fn changed_row() -> DualWrite {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE probe (id int PRIMARY KEY, v text NOT NULL);
         INSERT INTO probe SELECT i, 'v' || i FROM generate_series(1, 10) i;
         GRANT SELECT ON probe TO app",
    );
    d.target.psql(
        "app",
        "UPDATE probe SET v = 'changed on the target' WHERE id = 7",
    );
    d
}

/// `c` set to connect through the proxy.
fn through(d: &DualWrite, mut c: tokio::process::Command) -> tokio::process::Command {
    c.env("DW_HOST", "127.0.0.1")
        .env("DW_PORT", d.proxy.port().to_string())
        .env("DW_USER", APP_USER)
        .env("DW_PASSWORD", APP_PASSWORD)
        .env("DW_DB", "app");
    c
}

/// Run a driver's reads through the proxy; their output.
async fn run(d: &DualWrite, c: tokio::process::Command, what: &str) -> String {
    let out = clients::run(through(d, c), what, || async {}).await;
    assert!(
        !out.contains("changed on the target"),
        "{what}: the client got the target's row, not the source's:\n{out}"
    );
    out
}

async fn report(d: &DualWrite) -> ShadowReport {
    serde_json::from_str(&d.proxy.admin_get("/shadow").await).expect("/shadow is a report")
}

/// The report once each of `statements` was compared `n` times and nothing is in flight (the
/// comparison runs after the client's answer).
async fn settled(d: &DualWrite, statements: &[&str], n: u64) -> ShadowReport {
    for _ in 0..200 {
        let r = report(d).await;
        let done = statements.iter().all(|s| {
            r.statements
                .iter()
                .any(|e| e.statement == *s && e.executions >= n)
        });
        if done && r.in_flight == 0 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{statements:?} were not each compared {n} times: {:#?}",
        report(d).await
    );
}

fn statement<'a>(r: &'a ShadowReport, text: &str) -> &'a StatementReport {
    r.statements
        .iter()
        .find(|s| s.statement == text)
        .unwrap_or_else(|| panic!("no statement {text:?} in {r:#?}"))
}

/// Each of `statements` read row 7 three times and row 8 once: the three reads of the changed
/// row are mismatches of kind `rows`, the read of row 8 is not, and nothing else differs.
async fn every_read_of_the_changed_row_reported(d: &DualWrite, statements: &[&str]) {
    let r = settled(d, statements, 4).await;
    for text in statements {
        let s = statement(&r, text);
        assert_eq!(s.executions, 4, "{text}: {r:#?}");
        assert_eq!(s.mismatched, 3, "{text}: {r:#?}");
        assert_eq!(s.mismatches, [("rows".to_string(), 3)], "{text}: {r:#?}");
        assert_eq!(s.count_only, 0, "{text}: {r:#?}");
    }
    assert_eq!(
        r.mismatches,
        [("rows".to_string(), 3 * statements.len() as u64)],
        "{r:#?}"
    );
    assert_eq!((r.skipped, r.dropped), (0, 0), "{r:#?}");
}

/// asyncpg: `fetch` (no row limit), `fetchrow` and `fetchval` (row limit 1), and a prepared
/// statement's `fetchrow`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_reports_every_read_of_a_row_changed_on_the_target() {
    let d = changed_row().await;
    let c = clients::python(&[("asyncpg", "asyncpg")], "asyncpg_reads.py");
    let mut c = c;
    c.arg("single");
    let out = run(&d, c, "asyncpg").await;
    assert!(out.contains("fetchrow (7, 'v7')"), "{out}");
    every_read_of_the_changed_row_reported(
        &d,
        &[
            "SELECT id, v AS by_fetch FROM probe WHERE id = $1",
            "SELECT id, v AS by_fetchrow FROM probe WHERE id = $1",
            "SELECT v AS by_fetchval FROM probe WHERE id = $1",
            "SELECT id, v AS by_prepared FROM probe WHERE id = $1",
        ],
    )
    .await;
}

/// psycopg: `fetchone` from a client-side cursor, with and without a server-side prepared
/// statement. A named (server-side) cursor is DECLARE/FETCH: not sampled, so not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_reports_every_read_of_a_row_changed_on_the_target() {
    let d = changed_row().await;
    let c = clients::python(&[("psycopg", "psycopg 3")], "psycopg_reads.py");
    let out = run(&d, c, "psycopg").await;
    assert!(out.contains("named cursor fetchone (7, 'v7')"), "{out}");
    every_read_of_the_changed_row_reported(
        &d,
        &[
            "SELECT id, v AS by_fetchone FROM probe WHERE id = $1",
            "SELECT id, v AS by_prepared FROM probe WHERE id = $1",
        ],
    )
    .await;
    let r = report(&d).await;
    assert!(
        !r.statements
            .iter()
            .any(|s| s.statement.contains("by_named_cursor")),
        "a named cursor's reads are not sampled: {r:#?}"
    );
}

/// node-postgres: a plain query, a named prepared statement, and a query with a row limit
/// (`rows: 1`, the portal executed one row at a time up to its Sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_reports_every_read_of_a_row_changed_on_the_target() {
    let d = changed_row().await;
    let mut c = clients::node("node_reads.js");
    c.arg("single");
    let out = run(&d, c, "node-postgres").await;
    assert!(out.contains(r#"rows 1 [{"id":7,"by_rows":"v7"}]"#), "{out}");
    every_read_of_the_changed_row_reported(
        &d,
        &[
            "SELECT id, v AS by_query FROM probe WHERE id = $1",
            "SELECT id, v AS by_name FROM probe WHERE id = $1",
            "SELECT id, v AS by_rows FROM probe WHERE id = $1",
        ],
    )
    .await;
}

/// pgjdbc: `executeQuery` in autocommit mode, and with `setFetchSize(1)` in a transaction (a
/// named portal executed with a row limit of 1, bound in the same batch as its first Execute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_reports_every_read_of_a_row_changed_on_the_target() {
    let d = changed_row().await;
    let mut c = clients::java("JdbcReads.java");
    c.arg("single");
    let out = run(&d, c, "pgjdbc").await;
    assert!(out.contains("fetch size 1 7 v7"), "{out}");
    every_read_of_the_changed_row_reported(
        &d,
        &[
            "SELECT id, v AS by_execute_query FROM probe WHERE id = $1",
            "SELECT id, v AS by_fetch_size FROM probe WHERE id = $1",
        ],
    )
    .await;
}

/// psql 18: a simple query, the extended protocol (`\bind`), a named statement
/// (`\parse`/`\bind_named`), and FETCH_COUNT 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reports_every_read_of_a_row_changed_on_the_target() {
    let d = changed_row().await;
    let out = run(&d, clients::psql18("psql_reads.sql"), "psql").await;
    assert_eq!(out.matches("  7 | v7").count(), 12, "{out}");
    every_read_of_the_changed_row_reported(
        &d,
        &[
            "SELECT id, v AS by_simple FROM probe WHERE id = ?;",
            "SELECT id, v AS by_bind FROM probe WHERE id = $1",
            "SELECT id, v AS by_bind_named FROM probe WHERE id = $1",
            "SELECT id, v AS by_fetch_count FROM probe WHERE id = ?;",
        ],
    )
    .await;
}

/// Equal data, a 1000-row table read 10 rows at a time without ORDER BY, three times with each
/// driver: asyncpg's iterable cursor and pgjdbc's `setFetchSize(10)` (a named portal, each in
/// a transaction) and node-postgres's `rows: 10`. The first chunk of each read is sampled with
/// a limit of 11 on the target, which has more rows than that: without ORDER BY each side may
/// return other rows first, so only the counts compare. No mismatch; each sample is counted
/// `count_only`, in the report, its statement's entry, the CLI's table and the metrics.
/// (asyncpg's `Cursor.fetch` binds its portal in a batch of its own: not sampled.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_read_in_chunks_without_order_by_is_compared_by_count_only() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE wide (id int PRIMARY KEY, v text NOT NULL);
         INSERT INTO wide SELECT i, md5(i::text) FROM generate_series(1, 1000) i;
         GRANT SELECT ON wide TO app",
    );
    let mut asyncpg = clients::python(&[("asyncpg", "asyncpg")], "asyncpg_reads.py");
    asyncpg.arg("chunks");
    let out = run(&d, asyncpg, "asyncpg").await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "iterated 1000",
            "iterated 1000",
            "iterated 1000",
            "fetched 1000"
        ]
    );
    let mut jdbc = clients::java("JdbcReads.java");
    jdbc.arg("chunks");
    let out = run(&d, jdbc, "pgjdbc").await;
    assert_eq!(out.matches("chunked 1000").count(), 3, "{out}");
    let mut node = clients::node("node_reads.js");
    node.arg("chunks");
    let out = run(&d, node, "node-postgres").await;
    assert_eq!(out.matches("chunked 1000").count(), 3, "{out}");

    let statements = [
        "SELECT id, v AS by_asyncpg FROM wide",
        "SELECT id, v AS by_jdbc FROM wide",
        "SELECT id, v AS by_node FROM wide",
    ];
    let r = settled(&d, &statements, 3).await;
    assert_eq!(r.mismatches, vec![], "{r:#?}");
    assert_eq!((r.skipped, r.dropped), (0, 0), "{r:#?}");
    for text in statements {
        let s = statement(&r, text);
        assert_eq!(
            (s.executions, s.count_only, s.mismatched),
            (3, 3, 0),
            "{text}: {r:#?}"
        );
    }
    assert_eq!(r.count_only, 9, "{r:#?}");
    assert!(
        !r.statements
            .iter()
            .any(|s| s.statement.contains("by_cursor_fetch")),
        "a portal bound in an earlier batch is not sampled: {r:#?}"
    );
    let table = dualwrite_proxy::shadow::render(&r);
    assert!(table.contains("(9 by row count only)"), "{table}");
    for text in statements {
        let line = table
            .lines()
            .find(|l| l.ends_with(text))
            .unwrap_or_else(|| panic!("no line for {text}:\n{table}"));
        let columns: Vec<&str> = line.split_whitespace().take(3).collect();
        assert_eq!(
            columns,
            ["3", "0", "3"],
            "execs, mismatch, count-only:\n{table}"
        );
    }
    assert_eq!(d.metric("dualwrite_shadow_count_only_total", "").await, 9.0);
    assert_eq!(d.metric("dualwrite_shadow_mismatches_total", "").await, 0.0);
}
