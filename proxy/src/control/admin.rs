//! Admin HTTP API on `admin_listen`: `GET /metrics` (Prometheus), `GET /status` (JSON).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, Side};
use crate::session::shared::Shared;

/// `GET /status`. Endpoints only: never a password.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: u64,
    pub mode: String,
    pub primary: String,
    pub client_connections: usize,
    pub max_client_connections: usize,
    pub source: String,
    pub target: Option<String>,
    /// Dual-write facts for choosing the consistency time T.
    pub dual_write: Option<DualWriteStatus>,
    pub shadow_reads: f64,
    /// New transactions wait: a cutover is in progress.
    pub paused: bool,
    pub cutovers: Vec<crate::session::gate::CutoverEvent>,
    /// Where mode and primary came from at start: the config file, or the state the proxy
    /// persisted before it last stopped.
    pub state_from: String,
    /// Backend sessions lost without a clean close and not yet ended on their server.
    #[serde(default)]
    pub lost_sessions: LostSessions,
}

/// `status.lost_sessions`, per side (see `abandoned`).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct LostSessions {
    pub source: usize,
    pub target: usize,
}

/// `status.dual_write`: present when a target is configured.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct DualWriteStatus {
    /// When this proxy began dual-writing (RFC 3339, UTC), if it has.
    pub started_at: Option<String>,
    /// First write that reached the secondary, per table (as the statements name it).
    pub first_write_per_table: std::collections::BTreeMap<String, String>,
    pub secondary_attached: bool,
    pub detach_reason: Option<String>,
    pub secondary_failures: u64,
    pub divergences: u64,
    /// Positions handed out in the commit order (commits the primary acknowledged) and how
    /// many of them, in order, the secondary has applied or the journal holds.
    #[serde(default)]
    pub commit_order: CommitOrderStatus,
    pub journal: Option<JournalStatus>,
}

/// `status.dual_write.commit_order` (see `order`).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct CommitOrderStatus {
    pub assigned: u64,
    pub settled: u64,
    /// Of the positions, those ordered by the primary's WAL position read inside the
    /// transaction; the others follow the order of the primary's acknowledgements.
    #[serde(default)]
    pub by_wal_position: u64,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct JournalStatus {
    pub dir: String,
    pub records: u64,
    pub bytes: u64,
    pub missed: u64,
    pub divergences: u64,
    pub last_seq: u64,
    /// The last write to the journal failed (disk full, I/O error) and is being retried.
    pub write_failing: bool,
    /// Records waiting for the disk, in bytes (estimated).
    pub backlog_bytes: u64,
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

pub fn status(shared: &Shared) -> Status {
    let s = shared.settings();
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        mode: match s.mode {
            Mode::PrimaryOnly => "primary-only",
            Mode::DualWrite => "dual-write",
        }
        .to_string(),
        primary: match s.primary {
            Side::Source => "source",
            Side::Target => "target",
        }
        .to_string(),
        client_connections: shared.client_connections(),
        shadow_reads: s.shadow_reads,
        paused: shared.gate.paused(),
        cutovers: shared.gate.history(),
        state_from: shared.state_from.clone(),
        lost_sessions: LostSessions {
            source: shared.abandoned.pending(Side::Source),
            target: shared.abandoned.pending(Side::Target),
        },
        max_client_connections: s.max_client_connections,
        source: s.source.url.endpoint(),
        target: s.target.as_ref().map(|t| t.url.endpoint()),
        dual_write: s.target.as_ref().map(|_| {
            let d = &shared.dual;
            DualWriteStatus {
                started_at: d.started_micros().map(rfc3339),
                first_write_per_table: d
                    .first_writes()
                    .into_iter()
                    .map(|(t, at)| (t, rfc3339(at)))
                    .collect(),
                secondary_attached: d.attached(),
                detach_reason: d.detach_reason.lock().ok().and_then(|r| r.clone()),
                secondary_failures: d
                    .secondary_failures
                    .load(std::sync::atomic::Ordering::Relaxed),
                divergences: d.divergences.load(std::sync::atomic::Ordering::Relaxed),
                commit_order: CommitOrderStatus {
                    assigned: shared.order.positions(),
                    settled: shared.order.settled(),
                    by_wal_position: shared.order.keyed(),
                },
                journal: shared.journal.as_ref().map(|j| {
                    let st = j.stats();
                    JournalStatus {
                        dir: j.dir().display().to_string(),
                        records: st.records,
                        bytes: st.bytes,
                        missed: st.missed,
                        divergences: st.divergences,
                        last_seq: st.last_seq,
                        write_failing: j.failing(),
                        backlog_bytes: j.backlog_bytes(),
                    }
                }),
            }
        }),
    }
}

async fn get_status(State(shared): State<Arc<Shared>>) -> Json<Status> {
    Json(status(&shared))
}

async fn get_metrics() -> impl IntoResponse {
    let handle = crate::metrics::install();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

/// `POST /cutover` body.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct CutoverRequest {
    pub to: Side,
    /// How long in-flight transactions may take to finish, e.g. "10s".
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub force: bool,
}

fn error(status: StatusCode, message: String) -> axum::response::Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn post_cutover(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<CutoverRequest>,
) -> axum::response::Response {
    let timeout = match req
        .timeout
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
    {
        Ok(t) => t.unwrap_or(std::time::Duration::from_secs(10)),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("timeout: {e}")),
    };
    match crate::control::cutover::cutover(&shared, req.to, timeout, req.force).await {
        Ok(report) => Json(report).into_response(),
        Err(e @ crate::control::cutover::CutoverError::Refused(_)) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `POST /config` body: the keys that apply live.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    pub mode: Option<Mode>,
    pub shadow_reads: Option<f64>,
}

async fn get_shadow(
    State(shared): State<Arc<Shared>>,
) -> Json<crate::shadow::report::ShadowReport> {
    Json(shared.shadow.report())
}

async fn post_config(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<LiveConfig>,
) -> axum::response::Response {
    match apply_live(&shared, &req) {
        Ok(()) => Json(status(&shared)).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

/// Apply live-changeable keys; anything the running proxy can't apply is refused with a reason.
pub fn apply_live(shared: &Shared, req: &LiveConfig) -> Result<(), String> {
    let current = shared.settings();
    let mut next = (*current).clone();
    if let Some(rate) = req.shadow_reads {
        if !(0.0..=1.0).contains(&rate) {
            return Err("shadow_reads must be between 0.0 and 1.0".into());
        }
        if rate > 0.0 && current.target.is_none() {
            return Err("shadow_reads needs a [target]".into());
        }
        next.shadow_reads = rate;
    }
    if let Some(mode) = req.mode {
        if mode == Mode::DualWrite && current.target.is_none() {
            return Err("dual-write needs a [target]".into());
        }
        next.mode = mode;
    }
    let changed_mode = next.mode != current.mode;
    if let Err(e) = crate::control::state::persist(shared, &next) {
        if changed_mode {
            // A restart would come back in the old mode: refuse rather than diverge from disk.
            return Err(format!(
                "cannot persist the new state in {} ({e}); nothing changed",
                next.journal_dir.display()
            ));
        }
        tracing::error!(error = %e, "cannot persist the new shadow_reads; applied until restart");
    }
    shared.apply_shadow_rate(next.shadow_reads);
    shared.replace_settings(next);
    if changed_mode {
        if shared.settings().mode == Mode::DualWrite {
            shared.dual.mark_started();
        }
        shared.gate.bump_epoch();
    }
    Ok(())
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(get_metrics))
        .route("/status", get(get_status))
        .route("/cutover", post(post_cutover))
        .route("/config", post(post_config))
        .route("/shadow", get(get_shadow))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::warn!(error = %e, "admin server failed");
    }
}
