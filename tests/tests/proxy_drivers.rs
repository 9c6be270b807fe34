//! Client drivers other than tokio-postgres through the proxy: psql 18, psycopg 3 (libpq), asyncpg,
//! node-postgres and pgjdbc, each running a small application (`tests/clients/`) that prints a
//! transcript of everything it saw. The application runs once directly against PostgreSQL and
//! once through the proxy in dual-write mode with every read shadowed: the transcripts must be
//! identical (the application cannot tell the difference), the table must be identical on
//! source and target, and the proxy must have journaled nothing. At its end each application
//! reads one row that the test changed on the target only, with the driver's usual single-row
//! call: the shadow report must flag exactly that read and nothing else. Each runs a second
//! time through a proxy that requires TLS, verifying its certificate and address (psycopg
//! starting TLS directly, `sslnegotiation=direct`; the others with an SSLRequest).
//!
//! The drivers are installed by `scripts/setup.sh` (under `/opt/dualwrite-clients`, or
//! `DW_CLIENTS_DIR`); a missing one fails the test with that hint.

use std::path::Path;
use std::time::Duration;

use dualwrite_tests::certs::TestCerts;
use dualwrite_tests::clients;
use dualwrite_tests::proxy::{DualWrite, APP_PASSWORD, APP_USER};

#[derive(Clone, Copy, Debug)]
enum Driver {
    /// PostgreSQL 18's psql running `psql18_app.sql`.
    Psql18,
    Psycopg,
    Asyncpg,
    NodePostgres,
    Jdbc,
}

/// `python3 APP` with the drivers' directory on its path (checking `package` is there).
fn python(package: &str, what: &str, script: &str) -> tokio::process::Command {
    clients::python(&[(package, what)], script)
}

/// How many executions of `statement` the shadow report compared (0 when absent).
fn executions(shadow: &serde_json::Value, statement: &str) -> u64 {
    shadow["statements"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["statement"] == statement))
        .and_then(|s| s["executions"].as_u64())
        .unwrap_or(0)
}

impl Driver {
    fn command(self) -> tokio::process::Command {
        match self {
            Driver::Psql18 => clients::psql18("psql18_app.sql"),
            Driver::Psycopg => python("psycopg", "psycopg 3", "psycopg_app.py"),
            Driver::Asyncpg => python("asyncpg", "asyncpg", "asyncpg_app.py"),
            Driver::NodePostgres => clients::node("node_app.js"),
            Driver::Jdbc => clients::java("JdbcApp.java"),
        }
    }

    /// The statement the application reads its probe row with (`DW_PROBE_ID`), normalized.
    fn probe_statement(self, table: &str) -> String {
        match self {
            Driver::Psql18 => format!("SELECT id, name, amount FROM {table} WHERE id = ?;"),
            Driver::NodePostgres => format!(
                "SELECT id, name, amount::text, at, data, tags, doc, flag FROM {table} WHERE id = $1"
            ),
            _ => format!(
                "SELECT id, name, amount, at, data, tags, doc, flag FROM {table} WHERE id = $1"
            ),
        }
    }

    /// Run the application against `port`/`db` (over TLS verified against `root_cert` when
    /// given), `on_ready` running while it waits before reading row [`PROBE_ID`]; its
    /// transcript (stdout).
    async fn run<F: std::future::Future<Output = ()>>(
        self,
        port: u16,
        db: &str,
        root_cert: Option<&Path>,
        on_ready: impl FnOnce() -> F,
    ) -> String {
        let mut c = self.command();
        if let Some(root) = root_cert {
            c.env("DW_SSLROOTCERT", root);
            if matches!(self, Driver::Psycopg) {
                // libpq 18 under psycopg starts TLS directly (PostgreSQL 17's
                // `sslnegotiation=direct`, ALPN "postgresql"); the others send an SSLRequest.
                c.env("DW_SSLNEGOTIATION", "direct");
            }
        }
        c.env("DW_HOST", "127.0.0.1")
            .env("DW_PORT", port.to_string())
            .env("DW_USER", APP_USER)
            .env("DW_PASSWORD", APP_PASSWORD)
            .env("DW_DB", db)
            .env("DW_PROBE_ID", PROBE_ID.to_string());
        clients::run(c, &format!("{self:?} against port {port}"), on_ready).await
    }
}

/// The row each application reads once more at its end, after the test changed it on the
/// target only.
const PROBE_ID: i32 = 7;
/// What the test appends to the probe row's `name` on the target.
const CHANGED: &str = " (changed on the target)";

/// The first line where two transcripts differ, for a readable failure.
fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  direct: {x}\n  proxy:  {y}", i + 1);
        }
    }
    format!(
        "lengths differ: direct {} lines, proxy {} lines",
        a.lines().count(),
        b.lines().count()
    )
}

/// Run the driver's application directly against the source and through the proxy (requiring
/// TLS from clients when `tls`, the application verifying the proxy's certificate and name),
/// and check that nothing differs; returns the proxy's shadow report.
///
/// At its end the application waits; meanwhile row [`PROBE_ID`] of `table` is changed on the
/// target only, then the application reads it with its usual single-row call. It still gets
/// the source's row (the transcripts are equal), and the shadow report flags exactly that
/// read: one mismatch of kind `rows`, on the application's probe statement, nothing else.
async fn no_difference(driver: Driver, table: &str, tls: bool) -> serde_json::Value {
    let certs = tls.then(|| TestCerts::new(&["127.0.0.1"]));
    let tls_section = certs
        .as_ref()
        .map(|c| c.proxy_tls_section())
        .unwrap_or_default();
    let d = DualWrite::start_with("shadow_reads = 1.0", &tls_section).await;
    d.source
        .psql("postgres", "CREATE DATABASE direct OWNER app");
    let direct = driver.run(d.source.port, "direct", None, || async {}).await;
    let change = |suffix: &str| format!("UPDATE {table} SET name = {suffix} WHERE id = {PROBE_ID}");
    let through = driver
        .run(
            d.proxy.port(),
            "app",
            certs.as_ref().map(|c| c.ca()).as_deref(),
            || async {
                // Only once the reads before are compared: none of them sees the change.
                settled(&d, |s| s["in_flight"] == 0).await;
                d.target
                    .psql("app", &change(&format!("name || '{CHANGED}'")));
            },
        )
        .await;
    assert!(
        direct.lines().count() > 50,
        "{driver:?} transcript too short:\n{direct}"
    );
    assert!(
        direct.lines().any(|l| l == clients::READY),
        "{driver:?} never read the probe row:\n{direct}"
    );
    assert!(
        direct == through,
        "{driver:?}: the application saw a difference through the proxy; {}",
        first_difference(&direct, &through)
    );
    let shadow = settled(&d, |s| {
        s["in_flight"] == 0 && s["mismatches"] != serde_json::json!([])
    })
    .await;
    let probe = driver.probe_statement(table);
    let mismatched: Vec<(&str, &serde_json::Value)> = shadow["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .filter(|s| s["mismatched"] != 0)
        .map(|s| {
            (
                s["statement"].as_str().unwrap_or_default(),
                &s["mismatches"],
            )
        })
        .collect();
    assert_eq!(
        mismatched,
        [(probe.as_str(), &serde_json::json!([["rows", 1]]))],
        "{driver:?}: the changed row's read is the only mismatch: {shadow}"
    );
    assert_eq!(
        shadow["mismatches"],
        serde_json::json!([["rows", 1]]),
        "shadow: {shadow}"
    );
    assert!(
        shadow["executions"].as_u64().unwrap_or(0) > 1,
        "no read was shadowed: {shadow}"
    );
    // Every sample not compared is counted under a reason.
    let by_reason: u64 = shadow["skips"]
        .as_array()
        .expect("skips")
        .iter()
        .map(|s| s[1].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(Some(by_reason), shadow["skipped"].as_u64(), "{shadow}");
    // Back as it was: everything the proxy wrote is the same on both sides.
    d.target
        .psql("app", &change(&format!("left(name, -{})", CHANGED.len())));
    let rows = d
        .assert_same(&format!("SELECT * FROM {table} ORDER BY id"))
        .await;
    assert!(rows.lines().count() > 100, "{table} on source: {rows}");
    let status = d.status().await;
    let journal = &status["dual_write"]["journal"];
    assert_eq!(journal["records"], 0, "journal: {journal}");
    assert_eq!(journal["divergences"], 0, "journal: {journal}");
    shadow
}

/// The shadow report once `done` holds on it (samples are compared after the client's
/// answer), or after 10 s for the caller to assert on.
async fn settled(d: &DualWrite, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut shadow = serde_json::Value::Null;
    for _ in 0..100 {
        shadow = serde_json::from_str(&d.proxy.admin_get("/shadow").await).expect("shadow is JSON");
        if done(&shadow) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shadow
}

// psql 18's own libpq has no TLS in the PyPI build used here, so it runs without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql18_sees_no_difference() {
    no_difference(Driver::Psql18, "drv_psql18", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_sees_no_difference() {
    no_difference(Driver::Psycopg, "drv_psycopg", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_sees_no_difference() {
    let shadow = no_difference(Driver::Asyncpg, "drv_asyncpg", false).await;
    // asyncpg's fetchrow is an Execute with a row limit of 1: each one was compared (four in
    // the transcript, and the probe's).
    assert_eq!(
        executions(
            &shadow,
            "SELECT id, name, amount, at, data, tags, doc, flag FROM drv_asyncpg WHERE id = $1"
        ),
        5,
        "{shadow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_sees_no_difference() {
    no_difference(Driver::NodePostgres, "drv_node", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_sees_no_difference() {
    let shadow = no_difference(Driver::Jdbc, "drv_jdbc", false).await;
    // Every execution of the prepared read was compared, though pgjdbc sent the first one with
    // the transaction's BEGIN and the third with the Parse that made it a named statement
    // (six in the transcript, and the probe's).
    assert_eq!(
        executions(
            &shadow,
            "SELECT id, name, amount, at, data, tags, doc, flag FROM drv_jdbc WHERE id = $1"
        ),
        7,
        "{shadow}"
    );
    assert_eq!(shadow["skipped"], 0, "{shadow}");
    assert_eq!(shadow["dropped"], 0, "{shadow}");
}

// The same applications through a proxy that requires TLS from its clients, each driver
// verifying the proxy's certificate and address (libpq's, Python's, Node's and Java's TLS
// stacks against the proxy's rustls).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_sees_no_difference_over_tls() {
    no_difference(Driver::Psycopg, "drv_psycopg", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_sees_no_difference_over_tls() {
    no_difference(Driver::Asyncpg, "drv_asyncpg", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_sees_no_difference_over_tls() {
    no_difference(Driver::NodePostgres, "drv_node", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_sees_no_difference_over_tls() {
    no_difference(Driver::Jdbc, "drv_jdbc", true).await;
}

/// libpq's `channel_binding=require` over TLS: the proxy offers SCRAM-SHA-256-PLUS bound to its
/// certificate (`tls-server-end-point`), as PostgreSQL does, so a client that insists on
/// channel binding logs in; a wrong password is still refused. (libpq's default,
/// `channel_binding=prefer`, binds too: every libpq TLS test here goes through it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_binds_scram_to_the_proxys_certificate() {
    let certs = TestCerts::new(&["127.0.0.1"]);
    let tls = certs.proxy_tls_section();
    let d = DualWrite::start_with("", &tls).await;
    let out = python("psycopg", "psycopg 3", "psycopg_cbind.py")
        .env("DW_HOST", "127.0.0.1")
        .env("DW_PORT", d.proxy.port().to_string())
        .env("DW_USER", APP_USER)
        .env("DW_PASSWORD", APP_PASSWORD)
        .env("DW_DB", "app")
        .env("DW_SSLROOTCERT", certs.ca())
        .output()
        .await
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "bound login as app ssl True",
            "wrong password refused: True"
        ],
        "{stdout}"
    );
}
