//! `dualwrite-proxy`: a Postgres wire-protocol proxy that an application connects to instead of
//! its database. In `primary-only` mode it is a faithful pass-through to the primary.
//!
//! # Layout
//! - `config`: the TOML file and `DUALWRITE__*` overrides, resolved into `Settings`.
//! - `server`: the accept loop, connection limit and ordered shutdown.
//! - `session`: one client: startup, TLS, authentication, backend session, relay.
//! - `relay`: forwarding frames both ways without re-encoding them; routing writes.
//! - `unit`: the units the secondary replays (writes and session state), per statement.
//! - `order`: the primary's commit order, which the secondary commits in and the journal follows.
//! - `secondary`: a session's secondary backend: ordered replay, transactions, journaling.
//! - `copytrack`: which Syncs the server ignores during an extended-protocol COPY.
//! - `lane`: shared secondary sessions for the shadow reads of sessions without state of their own.
//! - `outcome`: what a backend answered to a unit (tags, row digests, status).
//! - `cutover`: pausing between transactions, swapping primary and secondary, live changes.
//! - `state`: the live state persisted next to the journal (mode, primary, history).
//! - `dual`: proxy-wide dual-write state (attachment, first writes, divergences).
//! - `protocol`: framing, startup packets, and the few messages the proxy writes itself.
//! - `auth`: client authentication (trust, md5, SCRAM-SHA-256).
//! - `backend`: opening an authenticated session on a backend, and cancel requests.
//! - `cancel`: cancel keys (the backend's pid, a secret of the proxy's) mapped to backend sessions.
//! - `tls`: client-side TLS and stream halves.
//! - `admin`: the HTTP API (`/metrics`, `/status`, `/cutover`, `/config`).
//! - `admin_client`: the CLI's requests to a running proxy's admin API.
//! - `metrics`: metric names, descriptions and cached handles.
//! - `classify`: which statements must reach the secondary (writes, session state) and which are pure reads.

pub mod abandoned;
pub mod admin;
pub mod admin_client;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod classify;
pub mod config;
pub mod copytrack;
pub mod cutover;
pub mod dual;
pub mod journal;
pub mod lane;
pub mod metrics;
pub mod order;
pub mod outcome;
pub mod protocol;
pub mod relay;
pub mod replay;
pub mod secondary;
pub mod server;
pub mod session;
pub mod shadow;
pub mod state;
pub mod tls;
pub mod unit;

pub use config::Settings;
pub use server::Proxy;

use tokio_util::sync::CancellationToken;

/// Bind and serve until `shutdown` fires.
pub async fn run(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), server::ServeError> {
    Proxy::bind(settings).await?.run(shutdown).await;
    Ok(())
}

/// SIGHUP: re-read the config file and apply what applies live (`mode`, `shadow_reads`);
/// other changed keys need a restart, which is said in the log.
pub fn reload(shared: &server::Shared, path: &std::path::Path) {
    let fresh = match Settings::load(path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the config file is invalid; nothing changed");
            return;
        }
    };
    let current = shared.settings();
    let mut restart_only = Vec::new();
    if fresh.listen != current.listen {
        restart_only.push("listen");
    }
    if fresh.admin_listen != current.admin_listen {
        restart_only.push("admin_listen");
    }
    if fresh.source.url != current.source.url {
        restart_only.push("source");
    }
    if fresh.target.as_ref().map(|t| &t.url) != current.target.as_ref().map(|t| &t.url) {
        restart_only.push("target");
    }
    if fresh.journal_dir != current.journal_dir {
        restart_only.push("journal.dir");
    }
    if fresh.max_backlog_bytes != current.max_backlog_bytes {
        restart_only.push("journal.max_backlog_bytes");
    }
    if fresh.primary != current.primary {
        restart_only.push("primary (use `dualwrite-proxy cutover`)");
    }
    if !restart_only.is_empty() {
        tracing::warn!(keys = ?restart_only, "reload: these changes are not applied live; restart the proxy (or use cutover) to apply them");
    }
    let live = admin::LiveConfig {
        mode: Some(fresh.mode),
        shadow_reads: Some(fresh.shadow_reads),
    };
    match admin::apply_live(shared, &live) {
        Ok(()) => {
            tracing::info!(mode = ?fresh.mode, shadow_reads = fresh.shadow_reads, "reload applied")
        }
        Err(e) => tracing::error!(error = %e, "reload refused"),
    }
}

/// `dualwrite-proxy check`: connect to each configured backend with the URL's login and report
/// its version. Returns one line per backend; an error names the backend that failed.
pub async fn check(settings: &Settings) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let backends = std::iter::once(&settings.source).chain(settings.target.as_ref());
    for b in backends {
        let client = dualwrite_common::connect(&b.url, "dualwrite-proxy check")
            .await
            .map_err(|e| format!("{}: {e}", b.side.name()))?;
        let row = client
            .query_one("SELECT current_setting('server_version')", &[])
            .await
            .map_err(|e| format!("{}: {e}", b.side.name()))?;
        let version: String = row.get(0);
        lines.push(format!(
            "{}: {} reachable, PostgreSQL {version}",
            b.side.name(),
            b.url
        ));
    }
    Ok(lines)
}
