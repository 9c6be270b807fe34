//! Connections to source and target, each session set up so that text output is canonical.

use std::sync::Mutex;

use dualwrite_common::catalog::timescaledb_version;
use dualwrite_common::connect::ConnectError;
use dualwrite_common::PgUrl;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Row};

/// Settings that make every type's text output independent of server defaults and version
/// (PostgreSQL 12 and later print floats shortest-exact whenever `extra_float_digits > 0`).
pub const CANONICAL_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
    SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'; \
    SET lc_monetary = 'C'; SET statement_timeout = 0";

/// A connection or query failed; names the side and what was being done, with the SQLSTATE.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{side}{}: {source}", if source.is_network() { " unreachable" } else { "" })]
    Connect {
        side: &'static str,
        #[source]
        source: ConnectError,
    },
    #[error("{side}: {what}: {detail}")]
    Query {
        side: &'static str,
        what: String,
        detail: String,
    },
}

/// A `tokio_postgres` error as one line, with its SQLSTATE when the server sent one.
pub use dualwrite_common::connect::describe_error as describe_pg_error;

/// A fixed set of connections to one server, lent out one query at a time.
pub struct Pool {
    clients: Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A connection borrowed from a [`Pool`]; returned when dropped.
pub struct Lease<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a lease holds its client until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            self.pool
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }
}

impl Pool {
    /// Wait for a free connection.
    pub async fn get(&self) -> Lease<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let client = self.clients.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Lease {
            pool: self,
            client,
            _permit: permit,
        }
    }
}

/// One server: its connections and the facts about it that change which SQL is used.
pub struct Side {
    /// `source` or `target`, for messages.
    pub name: &'static str,
    /// The URL as shown to people (password hidden).
    pub display: String,
    /// `server_version_num`, e.g. 150004.
    pub version_num: i32,
    /// The TimescaleDB version, when installed.
    pub timescaledb: Option<String>,
    /// The schema TimescaleDB is installed in (`public`, `ext`, ...), when installed.
    pub timescaledb_schema: Option<String>,
    /// Its connections.
    pub pool: Pool,
}

impl Side {
    /// Open `jobs` connections (at least one) with the canonical settings.
    pub async fn open(name: &'static str, url: &PgUrl, jobs: usize) -> Result<Side, SessionError> {
        let jobs = jobs.max(1);
        let opened = futures_util::future::join_all((0..jobs).map(|_| async {
            let client = dualwrite_common::connect(url, "dualwrite-validator")
                .await
                .map_err(|source| SessionError::Connect { side: name, source })?;
            client
                .batch_execute(CANONICAL_SETTINGS)
                .await
                .map_err(|e| SessionError::Query {
                    side: name,
                    what: "setting up the session".into(),
                    detail: describe_pg_error(&e),
                })?;
            Ok::<_, SessionError>(client)
        }))
        .await;
        let clients = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
        let first = &clients[0];
        let version_num: i32 = first
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| SessionError::Query {
                side: name,
                what: "reading the server version".into(),
                detail: describe_pg_error(&e),
            })?
            .get(0);
        let timescaledb = timescaledb_version(first)
            .await
            .map_err(|e| SessionError::Query {
                side: name,
                what: "looking for TimescaleDB".into(),
                detail: e.to_string(),
            })?;
        let timescaledb_schema: Option<String> = first
            .query_opt(
                "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname = 'timescaledb'",
                &[],
            )
            .await
            .map_err(|e| SessionError::Query {
                side: name,
                what: "looking for TimescaleDB's schema".into(),
                detail: describe_pg_error(&e),
            })?
            .map(|r| r.get(0));
        Ok(Side {
            name,
            display: url.to_string(),
            version_num,
            timescaledb,
            timescaledb_schema,
            pool: Pool {
                permits: Semaphore::new(clients.len()),
                clients: Mutex::new(clients),
            },
        })
    }

    /// Run a query on a pooled connection; errors name this side and `what`.
    pub async fn query(&self, sql: &str, what: &str) -> Result<Vec<Row>, SessionError> {
        let client = self.pool.get().await;
        client.query(sql, &[]).await.map_err(|e| {
            tracing::debug!(side = self.name, %sql, "query failed");
            SessionError::Query {
                side: self.name,
                what: what.to_string(),
                detail: describe_pg_error(&e),
            }
        })
    }

    /// Run statements that return nothing (ANALYZE).
    pub async fn execute(&self, sql: &str, what: &str) -> Result<(), SessionError> {
        let client = self.pool.get().await;
        client
            .batch_execute(sql)
            .await
            .map_err(|e| SessionError::Query {
                side: self.name,
                what: what.to_string(),
                detail: describe_pg_error(&e),
            })
    }
}

/// Both servers.
pub struct Sides {
    /// The database being migrated from.
    pub source: Side,
    /// The database being migrated to.
    pub target: Side,
}

impl Sides {
    /// Connect to both at once.
    pub async fn open(source: &PgUrl, target: &PgUrl, jobs: usize) -> Result<Sides, SessionError> {
        let (s, t) = tokio::join!(
            Side::open("source", source, jobs),
            Side::open("target", target, jobs)
        );
        Ok(Sides {
            source: s?,
            target: t?,
        })
    }

    /// The same query on both sides, concurrently.
    pub async fn query_both(
        &self,
        source_sql: &str,
        target_sql: &str,
        what: &str,
    ) -> Result<(Vec<Row>, Vec<Row>), SessionError> {
        let (s, t) = tokio::join!(
            self.source.query(source_sql, what),
            self.target.query(target_sql, what)
        );
        Ok((s?, t?))
    }
}
