//! Client drivers other than tokio-postgres through the proxy: psql 18, psycopg 3 (libpq), asyncpg,
//! node-postgres and pgjdbc, each running a small application (`tests/clients/`) that prints a
//! transcript of everything it saw. The application runs once directly against PostgreSQL and
//! once through the proxy in dual-write mode with every read shadowed: the transcripts must be
//! identical (the application cannot tell the difference), the table must be identical on
//! source and target, and the proxy must have journaled nothing and found no difference. Each
//! runs a second time through a proxy that requires TLS, verifying its certificate and address
//! (psycopg starting TLS directly, `sslnegotiation=direct`; the others with an SSLRequest).
//!
//! The drivers are installed by `scripts/setup.sh` (under `/opt/dualwrite-clients`, or
//! `DW_CLIENTS_DIR`); a missing one fails the test with that hint.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dualwrite_tests::certs::TestCerts;
use dualwrite_tests::clients::{self, app, require};
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
            Driver::Psql18 => {
                let newer = dualwrite_tests::PgBin::newer_required();
                assert!(
                    newer.major >= 18,
                    "psql {} has no pipeline commands",
                    newer.major
                );
                // Errors are part of the transcript (psql writes them to stderr); a
                // notification's sender PID and `\watch`'s clock differ from run to run.
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c")
                    .arg(r#"PGPASSWORD="$DW_PASSWORD" "$0" -X -f "$1" "host=$DW_HOST port=$DW_PORT user=$DW_USER dbname=$DW_DB" 2>&1 | sed -E -e 's/with PID [0-9]+/with PID (pid)/' -e 's/^[A-Z][a-z]{2} [A-Z][a-z]{2} +[0-9]+ [0-9:]{8} [0-9]{4} \(every/(time) (every/'"#)
                    .arg(newer.bin("psql"))
                    .arg(app("psql18_app.sql"));
                c
            }
            Driver::Psycopg => python("psycopg", "psycopg 3", "psycopg_app.py"),
            Driver::Asyncpg => python("asyncpg", "asyncpg", "asyncpg_app.py"),
            Driver::NodePostgres => {
                let lib = clients::dir().join("node/node_modules");
                require(lib.join("pg"), "node-postgres");
                let mut c = tokio::process::Command::new("node");
                c.arg(app("node_app.js")).env("NODE_PATH", lib);
                c
            }
            Driver::Jdbc => {
                let jar = require(
                    PathBuf::from("/usr/share/java/postgresql.jar"),
                    "pgjdbc (Debian package libpostgresql-jdbc-java)",
                );
                let mut c = tokio::process::Command::new("java");
                c.arg("-cp").arg(jar).arg(app("JdbcApp.java"));
                c
            }
        }
    }

    /// Run the application against `port`/`db` (over TLS verified against `root_cert` when
    /// given); its transcript (stdout).
    async fn run(self, port: u16, db: &str, root_cert: Option<&Path>) -> String {
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
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), c.output())
            .await
            .unwrap_or_else(|_| panic!("{self:?} application did not finish in 120 s"))
            .unwrap_or_else(|e| panic!("cannot start the {self:?} application: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{self:?} application failed ({}) against port {port}:\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

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
async fn no_difference(driver: Driver, table: &str, tls: bool) -> serde_json::Value {
    let certs = tls.then(|| TestCerts::new(&["127.0.0.1"]));
    let tls_section = certs
        .as_ref()
        .map(|c| c.proxy_tls_section())
        .unwrap_or_default();
    let d = DualWrite::start_with("shadow_reads = 1.0", &tls_section).await;
    d.source
        .psql("postgres", "CREATE DATABASE direct OWNER app");
    let direct = driver.run(d.source.port, "direct", None).await;
    let through = driver
        .run(
            d.proxy.port(),
            "app",
            certs.as_ref().map(|c| c.ca()).as_deref(),
        )
        .await;
    assert!(
        direct.lines().count() > 50,
        "{driver:?} transcript too short:\n{direct}"
    );
    assert!(
        direct == through,
        "{driver:?}: the application saw a difference through the proxy; {}",
        first_difference(&direct, &through)
    );
    let rows = d
        .assert_same(&format!("SELECT * FROM {table} ORDER BY id"))
        .await;
    assert!(rows.lines().count() > 100, "{table} on source: {rows}");
    let status = d.status().await;
    let journal = &status["dual_write"]["journal"];
    assert_eq!(journal["records"], 0, "journal: {journal}");
    assert_eq!(journal["divergences"], 0, "journal: {journal}");
    let shadow: serde_json::Value =
        serde_json::from_str(&d.proxy.admin_get("/shadow").await).expect("shadow is JSON");
    assert!(
        shadow["executions"].as_u64().unwrap_or(0) > 0,
        "no read was shadowed: {shadow}"
    );
    assert_eq!(
        shadow["mismatches"],
        serde_json::json!([]),
        "shadow: {shadow}"
    );
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
    // asyncpg's fetchrow is an Execute with a row limit of 1: each one was compared.
    assert_eq!(
        executions(
            &shadow,
            "SELECT id, name, amount, at, data, tags, doc, flag FROM drv_asyncpg WHERE id = $1"
        ),
        4,
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
    // the transaction's BEGIN and the third with the Parse that made it a named statement.
    assert_eq!(
        executions(
            &shadow,
            "SELECT id, name, amount, at, data, tags, doc, flag FROM drv_jdbc WHERE id = $1"
        ),
        6,
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
