//! Staged cutover: flip which database is primary without dropping a client.
//!
//! 1. Pause: sessions that are between transactions wait before starting the next one (their
//!    statements wait, they are not refused).
//! 2. Wait for transactions in flight to end; past the timeout, abort and resume on the old
//!    primary, with the reason.
//! 3. Wait until every session's secondary queue is drained.
//! 4. Swap primary and secondary in the settings; each session exchanges its two backend
//!    sessions at its next statement (both already carry its prepared statements and SET
//!    state, since dual-write replays them), then resume. The pause is measured.
//!
//! The same mechanism applies live `mode` changes (POST /config, SIGHUP): a session adopts the
//! new settings at its next idle point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Mode, Side};
use crate::session::gate::CutoverEvent;
use crate::session::shared::Shared;

#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error("cutover refused: {0}")]
    Refused(String),
    #[error("cutover aborted after {pause_ms:.1} ms, traffic resumed on the {primary}: {reason}")]
    Aborted {
        primary: &'static str,
        pause_ms: f64,
        reason: String,
    },
}

/// What `POST /cutover` returns.
#[derive(Debug, Serialize, Deserialize)]
pub struct CutoverReport {
    pub from: String,
    pub to: String,
    pub pause_ms: f64,
    pub drained_ms: f64,
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Make `to` the primary. The secondary must be healthy (attached, journal replayed) unless
/// `force`.
pub async fn cutover(
    shared: &Arc<Shared>,
    to: Side,
    timeout: Duration,
    force: bool,
) -> Result<CutoverReport, CutoverError> {
    let gate = &shared.gate;
    let _one = gate
        .running
        .try_lock()
        .map_err(|_| CutoverError::Refused("another cutover is running".into()))?;
    let settings = shared.settings();
    if settings.primary == to {
        return Err(CutoverError::Refused(format!(
            "the {} is already the primary",
            to.name()
        )));
    }
    if settings.target.is_none() {
        return Err(CutoverError::Refused("no [target] is configured".into()));
    }
    if settings.mode != Mode::DualWrite {
        return Err(CutoverError::Refused(
            "mode is primary-only: switch to dual-write first so both databases hold every session's state".into(),
        ));
    }
    if !force {
        if !shared.dual.attached() {
            return Err(CutoverError::Refused(format!(
                "the {} is detached ({}); replay the journal first, or use --force",
                to.name(),
                shared
                    .dual
                    .detach_reason
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_default()
            )));
        }
        let unreplayed = shared
            .journal
            .as_ref()
            .map(|j| j.stats().missed)
            .unwrap_or(0)
            > 0
            && !shared.dual.attached();
        if unreplayed {
            return Err(CutoverError::Refused(format!(
                "the journal holds writes the {} has not received",
                to.name()
            )));
        }
    }
    let from = settings.primary;
    let started = Instant::now();
    let deadline = started + timeout;
    gate.pause();
    let fail = |reason: String, pause: Duration| {
        let pause_ms = pause.as_secs_f64() * 1000.0;
        gate.record(CutoverEvent {
            at: now_text(),
            from: from.name().into(),
            to: to.name().into(),
            outcome: "aborted".into(),
            pause_ms,
            reason: Some(reason.clone()),
        });
        CutoverError::Aborted {
            primary: from.name(),
            pause_ms,
            reason,
        }
    };
    if let Err(busy) = gate.wait_quiet(deadline).await {
        gate.resume();
        let e = fail(
            format!("{busy} session(s) still in a transaction after {timeout:?}"),
            started.elapsed(),
        );
        crate::control::state::save(shared);
        return Err(e);
    }
    // Every secondary queue drained: the new primary has every write.
    while shared.dual.queued() > 0 {
        if Instant::now() >= deadline {
            gate.resume();
            let e = fail(
                format!("secondary queues not drained after {timeout:?}"),
                started.elapsed(),
            );
            crate::control::state::save(shared);
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let drained = started.elapsed();
    let mut next = (*settings).clone();
    next.primary = to;
    // The new primary is on disk before it takes effect, or the cutover does not happen.
    if let Err(e) = crate::control::state::persist(shared, &next) {
        gate.resume();
        let e = fail(
            format!(
                "cannot persist the new state in {} ({e}); a restart would come back with the old primary",
                next.journal_dir.display()
            ),
            started.elapsed(),
        );
        crate::control::state::save(shared);
        return Err(e);
    }
    shared.replace_settings(next);
    gate.bump_epoch();
    gate.resume();
    let pause = started.elapsed();
    let pause_ms = pause.as_secs_f64() * 1000.0;
    tracing::info!(from = from.name(), to = to.name(), pause_ms, "cutover done");
    metrics::histogram!("dualwrite_cutover_pause_seconds").record(pause.as_secs_f64());
    gate.record(CutoverEvent {
        at: now_text(),
        from: from.name().into(),
        to: to.name().into(),
        outcome: "done".into(),
        pause_ms,
        reason: None,
    });
    crate::control::state::save(shared);
    Ok(CutoverReport {
        from: from.name().into(),
        to: to.name().into(),
        pause_ms,
        drained_ms: drained.as_secs_f64() * 1000.0,
    })
}
