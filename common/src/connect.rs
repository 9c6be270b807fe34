//! `tokio-postgres` clients from a [`PgUrl`], with TLS per `sslmode`.

use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, NoTls};

use crate::pgurl::{Host, PgUrl, SslMode};
use crate::tls::{client_config, TlsError};

/// Connecting failed. The message carries the server's own words and SQLSTATE when the
/// server answered (wrong password, unknown database, too many connections), the network's
/// otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{endpoint}: {source}")]
    Tls { endpoint: String, source: TlsError },
    #[error("cannot connect to {endpoint} as {user}: {}", describe_error(.source))]
    Connect {
        endpoint: String,
        user: String,
        source: tokio_postgres::Error,
    },
}

impl ConnectError {
    /// Whether the server was not reached at all (refused, timed out, no route, name not
    /// resolved, connection cut): "unreachable" fits this, not a login the server refused.
    pub fn is_network(&self) -> bool {
        match self {
            ConnectError::Tls { .. } => false,
            ConnectError::Connect { source, .. } => is_network_error(source),
        }
    }

    /// The server's SQLSTATE, when it answered with an error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ConnectError::Tls { .. } => None,
            ConnectError::Connect { source, .. } => source.code().map(|c| c.code()),
        }
    }
}

/// A `tokio_postgres` error as one line: the server's message with its SQLSTATE, detail and
/// hint when the server sent one, else the error and its causes (`tokio_postgres` prints
/// neither on its own: "db error", "error connecting to server").
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!(": {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (HINT: {h})"));
        }
        return s;
    }
    with_causes(e)
}

/// An error and its causes, one after the other, as one line.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

/// Whether an error means the network did not carry the conversation: the TCP connection
/// failed or timed out, or broke mid-way. `tokio_postgres` exposes its error kinds only
/// through their fixed messages.
pub fn is_network_error(e: &tokio_postgres::Error) -> bool {
    if e.as_db_error().is_some() {
        return false;
    }
    let top = e.to_string();
    matches!(
        top.as_str(),
        "error connecting to server"
            | "timeout waiting for server"
            | "error communicating with the server"
            | "connection closed"
    )
}

/// The `tokio-postgres` configuration for a URL.
pub fn pg_config(url: &PgUrl, application_name: &str) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    match &url.host {
        Host::Tcp(h) => cfg.host(h),
        Host::Unix(dir) => cfg.host_path(dir),
    };
    cfg.port(url.port)
        .user(&url.user)
        .dbname(&url.dbname)
        .application_name(url.application_name.as_deref().unwrap_or(application_name))
        .connect_timeout(
            url.connect_timeout
                .unwrap_or(std::time::Duration::from_secs(10)),
        )
        .ssl_mode(match url.sslmode {
            SslMode::Disable | SslMode::Allow => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
    if let Some(p) = &url.password {
        cfg.password(p.expose());
    }
    cfg.channel_binding(match url.channel_binding {
        crate::pgurl::ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
        crate::pgurl::ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
        crate::pgurl::ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
    });
    let live = &url.liveness;
    cfg.keepalives(live.keepalives)
        .keepalives_idle(live.idle)
        .keepalives_interval(live.interval)
        .keepalives_retries(live.count);
    if let Some(t) = live.user_timeout {
        cfg.tcp_user_timeout(t);
    }
    cfg
}

/// Connect and drive the connection on a background task.
pub async fn connect(url: &PgUrl, application_name: &str) -> Result<Client, ConnectError> {
    let cfg = pg_config(url, application_name);
    let fail = |source| ConnectError::Connect {
        endpoint: url.endpoint(),
        user: url.user.clone(),
        source,
    };
    let tls = client_config(url).map_err(|source| ConnectError::Tls {
        endpoint: url.endpoint(),
        source,
    })?;
    let client = match tls {
        Some(tls) => {
            let (client, conn) = cfg
                .connect(crate::pgtls::MakeRustls(tls))
                .await
                .map_err(fail)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection closed");
                }
            });
            client
        }
        None => {
            let (client, conn) = cfg.connect(NoTls).await.map_err(fail)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection closed");
                }
            });
            client
        }
    };
    server_side_liveness(&client, url).await.map_err(fail)?;
    Ok(client)
}

/// Ask the server to probe its end of the connection too (`tcp_keepalives_*`,
/// `tcp_user_timeout`, settable by any session), with the URL's settings. Otherwise a session
/// whose client vanished behind a silent network lives on in the server until the server's
/// own keepalives notice (two hours by default), holding its locks: the backfill's claim on a
/// unit, a transaction's row locks. Settings the server does not have (older versions) are
/// skipped; over a Unix socket the server ignores them.
async fn server_side_liveness(client: &Client, url: &PgUrl) -> Result<(), tokio_postgres::Error> {
    let live = &url.liveness;
    if !live.keepalives || !matches!(url.host, Host::Tcp(_)) {
        return Ok(());
    }
    let settings = [
        ("tcp_keepalives_idle", live.idle.as_secs().to_string()),
        (
            "tcp_keepalives_interval",
            live.interval.as_secs().to_string(),
        ),
        ("tcp_keepalives_count", live.count.to_string()),
        (
            "tcp_user_timeout",
            live.user_timeout.map_or(0, |t| t.as_millis()).to_string(),
        ),
    ];
    let names: Vec<&str> = settings.iter().map(|(n, _)| *n).collect();
    let values: Vec<&str> = settings.iter().map(|(_, v)| v.as_str()).collect();
    client
        .execute(
            "SELECT set_config(v.name, v.setting, false)
               FROM unnest($1::text[], $2::text[]) AS v(name, setting)
               JOIN pg_settings s ON s.name = v.name",
            &[&names, &values],
        )
        .await?;
    Ok(())
}
