//! The proxy's live state (mode, primary, shadow rate, cutover history), persisted next to the
//! journal so a restart resumes where the proxy left off rather than from the file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Mode, Settings, Side};
use crate::cutover::CutoverEvent;
use crate::server::Shared;

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

/// Write the current state atomically (temp file, fsync, rename).
pub fn save(shared: &Shared) {
    let settings = shared.settings();
    let state = State {
        mode: settings.mode,
        primary: settings.primary,
        shadow_reads: settings.shadow_reads,
        history: shared.gate.history(),
        saved_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let dir = &settings.journal_dir;
    let written = serde_json::to_vec_pretty(&state)
        .map_err(std::io::Error::other)
        .and_then(|text| write_atomic(dir, FILE, &text));
    if let Err(e) = written {
        tracing::error!(error = %e, dir = %dir.display(), "cannot persist the proxy state");
    }
}

/// Write `dir/name` atomically: a temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
