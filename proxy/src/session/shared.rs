//! The state every session, the admin API and the background tasks share. Built once by
//! `control::server` at start; sessions hold an `Arc` of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::dual::facts::DualState;
use crate::dual::journal::Journal;
use crate::metrics::Metrics;
use crate::wire::cancel::Cancels;

/// State every session and the admin API share.
pub struct Shared {
    /// Replaced whole on a cutover or live change; read with [`Shared::settings`].
    pub(crate) settings: RwLock<Arc<Settings>>,
    pub metrics: Metrics,
    pub cancels: Cancels,
    pub connection_slots: Arc<Semaphore>,
    /// Fired at shutdown: sessions end at their next idle point.
    pub graceful: CancellationToken,
    /// Fired when the grace period is over: sessions end now.
    pub kill: CancellationToken,
    /// Fired by a second stop request: stop even though journal records could not be written.
    pub abandon_journal: CancellationToken,
    pub started: Instant,
    /// Dual-write state: attachment of the secondary, first writes, divergences.
    pub dual: DualState,
    /// Pause and epoch for cutover and live configuration changes.
    pub gate: crate::session::gate::Gate,
    /// "config file" or "persisted state (...)": where mode and primary came from at start.
    pub state_from: String,
    /// Where the secondary's missed writes go (open whenever a target is configured).
    pub journal: Option<Journal>,
    /// Shadow reads: sampling rate, queue bound, per-statement comparison results.
    pub shadow: crate::shadow::results::Shadow,
    /// Shared secondary sessions for shadow reads (see `lane`).
    pub lanes: crate::shadow::lane::Lanes,
    /// Backend sessions lost without a clean close, to be ended on their server.
    pub abandoned: crate::dual::abandoned::Abandoned,
    /// The primary's commit order, which the secondary and the journal follow (see `order`).
    pub order: Arc<crate::dual::order::CommitOrder>,
    /// Commit markers: this run's session keys, and where they can be written (see `marker`).
    pub markers: crate::dual::marker::Markers,
    pub(crate) next_id: AtomicU64,
}

impl Shared {
    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .expect("settings lock poisoned")
            .clone()
    }

    /// Install new settings (cutover, live config); sessions adopt them at their next idle point.
    pub fn replace_settings(&self, settings: Settings) {
        *self.settings.write().expect("settings lock poisoned") = Arc::new(settings);
    }

    /// Live change of the shadow sampling rate.
    pub fn apply_shadow_rate(&self, rate: f64) {
        self.shadow.set_rate(rate);
    }

    /// Clients connected now (slots of `max_client_connections` in use).
    pub fn client_connections(&self) -> usize {
        let s = self.settings();
        s.max_client_connections
            - self
                .connection_slots
                .available_permits()
                .min(s.max_client_connections)
    }
}

impl Shared {
    /// A new session's id, unique in this run.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
