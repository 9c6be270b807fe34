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
    Ok(client)
}
