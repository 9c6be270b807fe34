//! `dualwrite-proxy`: a Postgres wire-protocol proxy that an application connects to instead of
//! its database. In `primary-only` mode it is a faithful pass-through to the primary.
//!
//! # Layout
//! Five layers, each a folder; a layer uses only the layers below it (checked by a test in
//! `layering`), and `config` and `metrics` import nothing of the proxy.
//!
//! - `config`: the TOML file and `DUALWRITE__*` overrides, resolved into `Settings`; key
//!   material derived from it (`config::keys`).
//! - `metrics`: metric names, descriptions and cached handles.
//! - `wire/`: bytes on sockets: framing and the few decoded messages (`protocol`), reading a
//!   message (`read`), TLS and stream halves (`tls`), client authentication and SCRAM (`auth`),
//!   backend sessions (`backend`), cancel keys (`cancel`).
//! - `dual/`: writes: which statements reach the secondary (`classify`), units (`unit`,
//!   `copytrack`), backend answers (`outcome`), the commit order (`order`), commit markers
//!   (`marker`), the journal and its replay (`journal`, `replay`), lost backend sessions
//!   (`abandoned`), dual-write facts (`facts`).
//! - `shadow/`: sampled reads: sampling state and results, comparison, report, and the shared
//!   sessions samples run on (`lane`).
//! - `session/`: one client: startup and authentication (`client`), the relay (`relay`), its
//!   secondary backend (`secondary`), the cutover gate (`gate`), the state sessions share
//!   (`shared`).
//! - `control/`: the listener and shutdown (`server`), the admin API (`admin`,
//!   `admin_client`), cutover (`cutover`), persisted live state (`state`).

pub mod config;
pub mod control;
pub mod dual;
pub mod metrics;
pub mod session;
pub mod shadow;
pub mod wire;

#[cfg(test)]
mod layering;

// Paths the CLI and the tests use.
pub use control::{admin_client, state};
pub use dual::{abandoned, journal, replay};
pub use wire::{backend, protocol};

pub use config::Settings;
pub use control::server::{Proxy, ServeError};

use tokio_util::sync::CancellationToken;

/// Bind and serve until `shutdown` fires.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), ServeError> {
    Proxy::bind(settings).await?.run(shutdown).await;
    Ok(())
}

/// SIGHUP: re-read the config file and apply what applies live (`mode`, `shadow_reads`);
/// other changed keys need a restart, which is said in the log.
pub fn reload(shared: &session::Shared, path: &std::path::Path) {
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
    let live = control::admin::LiveConfig {
        mode: Some(fresh.mode),
        shadow_reads: Some(fresh.shadow_reads),
    };
    match control::admin::apply_live(shared, &live) {
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
