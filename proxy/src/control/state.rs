//! The proxy's live state (mode, primary, shadow rate, cutover history), persisted next to the
//! journal so a restart resumes where the proxy left off rather than from the file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Mode, Settings, Side};
use crate::session::gate::CutoverEvent;
use crate::session::shared::Shared;

const FILE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub mode: Mode,
    pub primary: Side,
    #[serde(default)]
    pub shadow_reads: f64,
    #[serde(default)]
    pub history: Vec<CutoverEvent>,
    pub saved_at: String,
}

/// Read the persisted state, if any.
pub fn load(dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable {}", dir.join(FILE).display());
            None
        }
    }
}

/// Apply a persisted state to freshly loaded settings.
pub fn apply(settings: &mut Settings, state: &State) {
    settings.mode = state.mode;
    settings.primary = state.primary;
    settings.shadow_reads = state.shadow_reads;
}

/// Write the current state atomically (temp file, fsync, rename); a failure is logged. For a
/// change of mode or primary, [`persist`] it before it takes effect instead.
pub fn save(shared: &Shared) {
    let settings = shared.settings();
    if let Err(e) = persist(shared, &settings) {
        tracing::error!(error = %e, dir = %settings.journal_dir.display(), "cannot persist the proxy state");
    }
}

/// Persist `settings`' mode, primary and shadow rate (with the cutover history so far), to be
/// done before they take effect: a proxy restarted after a change it could not persist would
/// come back with the old primary, and in `primary-only` that splits the writes between two
/// databases. An error means the change must not be made.
pub fn persist(shared: &Shared, settings: &Settings) -> std::io::Result<()> {
    let state = State {
        mode: settings.mode,
        primary: settings.primary,
        shadow_reads: settings.shadow_reads,
        history: shared.gate.history(),
        saved_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let text = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
    crate::dual::facts::write_atomic(&settings.journal_dir, FILE, &text)
}
