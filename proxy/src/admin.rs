//! Admin HTTP API on `admin_listen`: `GET /metrics` (Prometheus), `GET /status` (JSON).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, Side};
use crate::server::Shared;

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
        max_client_connections: s.max_client_connections,
        source: s.source.url.endpoint(),
        target: s.target.as_ref().map(|t| t.url.endpoint()),
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

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(get_metrics))
        .route("/status", get(get_status))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::warn!(error = %e, "admin server failed");
    }
}
