//! `tokio-postgres` clients from a [`PgUrl`], with TLS per `sslmode`.

use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, NoTls};

use crate::pgurl::{Host, PgUrl, SslMode};
use crate::tls::{client_config, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{endpoint}: {source}")]
    Tls { endpoint: String, source: TlsError },
    #[error("cannot connect to {endpoint} as {user}: {source}")]
    Connect {
        endpoint: String,
        user: String,
        source: tokio_postgres::Error,
    },
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
