//! Connections to the source and the target with the session settings the backfill relies on,
//! what each server is (version, TimescaleDB), and readable Postgres errors.

use std::fmt;

use dualwrite_common::connect::ConnectError;
use dualwrite_common::pgurl::UrlError;
use dualwrite_common::PgUrl;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Which server a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The database being migrated from.
    Source,
    /// The database being migrated to.
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// Connecting or asking a server what it is failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("--{side}: {source}")]
    Url { side: Side, source: UrlError },
    #[error("{side}{}: {source}", if source.is_network() { " unreachable" } else { "" })]
    Connect { side: Side, source: ConnectError },
    #[error("{side}: {}", describe(.source))]
    Query {
        side: Side,
        source: tokio_postgres::Error,
    },
}

impl PgError {
    /// A failed query on `side`, for `map_err`.
    pub fn query(side: Side) -> impl Fn(tokio_postgres::Error) -> PgError {
        move |source| PgError::Query { side, source }
    }
}

/// Parse a `--source`/`--target` URL; the error never echoes the URL (it may hold a password).
pub fn parse_url(text: &str, side: Side) -> Result<PgUrl, PgError> {
    text.parse().map_err(|source| PgError::Url { side, source })
}

/// Session settings every connection gets: canonical text formats (so text-mode COPY round-trips
/// exactly), UTC, and no statement or idle timeouts cutting a long unit short.
pub const SESSION_SETUP: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
     SET lock_timeout = 0";

/// Open a client and apply [`SESSION_SETUP`].
pub async fn open(url: &PgUrl, side: Side) -> Result<Client, PgError> {
    let client = dualwrite_common::connect(url, "dualwrite-backfill")
        .await
        .map_err(|source| PgError::Connect { side, source })?;
    client
        .batch_execute(SESSION_SETUP)
        .await
        .map_err(|source| PgError::Query { side, source })?;
    Ok(client)
}

/// What a server is.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// `server_version_num / 10000`.
    pub major: u32,
    /// `server_version`, for messages.
    pub version: String,
    /// TimescaleDB's version when the extension is installed in this database.
    pub timescaledb: Option<String>,
    /// The schema TimescaleDB is installed in.
    pub timescaledb_schema: Option<String>,
    /// The login role.
    pub user: String,
    /// Whether the login role is a superuser.
    pub is_superuser: bool,
    /// The bootstrap superuser (the role with OID 10), e.g. `postgres`.
    pub bootstrap_superuser: String,
    /// The database name.
    pub database: String,
}

impl ServerInfo {
    /// Ask the server.
    pub async fn read(client: &Client, side: Side) -> Result<ServerInfo, PgError> {
        let q = |source| PgError::Query { side, source };
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int,
                        current_setting('server_version'),
                        current_user::text,
                        (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                        (SELECT rolname::text FROM pg_roles WHERE oid = 10),
                        current_database()::text,
                        (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                        (SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'timescaledb')",
                &[],
            )
            .await
            .map_err(q)?;
        let num: i32 = row.get(0);
        Ok(ServerInfo {
            major: (num / 10000) as u32,
            version: row.get(1),
            user: row.get(2),
            is_superuser: row.get::<_, Option<bool>>(3).unwrap_or(false),
            bootstrap_superuser: row.get(4),
            database: row.get(5),
            timescaledb: row.get(6),
            timescaledb_schema: row.get(7),
        })
    }
}

/// A Postgres error as a user should see it: severity, SQLSTATE, message, detail and hint;
/// for other errors the cause chain.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (DETAIL: {d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (HINT: {h})"));
        }
        if let Some(w) = db.where_() {
            s.push_str(&format!(" (CONTEXT: {w})"));
        }
        return s;
    }
    dualwrite_common::connect::with_causes(e)
}

/// The SQLSTATE of a database error.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

/// Whether an error is worth retrying: the connection was lost, a serialization failure or
/// deadlock, the server is out of resources (class 53), or it is shutting down.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let c = code.code();
            c == "40001"
                || c == "40P01"
                || c.starts_with("53")
                || c.starts_with("08")
                || c == "57P01"
                || c == "57P02"
                || c == "57P03"
        }
        // No SQLSTATE: retry when the connection broke (closed, I/O), not on client-side bugs.
        None => {
            e.is_closed()
                || std::error::Error::source(e)
                    .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
                || e.to_string().contains("communicating with the server")
        }
    }
}
