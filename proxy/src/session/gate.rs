//! The pause/epoch gate every session passes between transactions: a cutover or a live
//! configuration change pauses it, waits for sessions to be quiet, and bumps the epoch so that
//! sessions adopt the new settings at their next idle point. `control::cutover` drives it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Proxy-wide pause/epoch state the relay consults between transactions.
#[derive(Default)]
pub struct Gate {
    paused: AtomicBool,
    resumed: Notify,
    /// Sessions inside a transaction or with statements in flight.
    busy: AtomicUsize,
    quiet: Notify,
    /// Bumped whenever settings that sessions must adopt change (primary, mode).
    epoch: AtomicU64,
    history: Mutex<Vec<CutoverEvent>>,
    /// Held by the cutover in progress: one at a time.
    pub(crate) running: tokio::sync::Mutex<()>,
}

/// One cutover attempt, for `status` and the persisted state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CutoverEvent {
    pub at: String,
    pub from: String,
    pub to: String,
    pub outcome: String,
    pub pause_ms: f64,
    pub reason: Option<String>,
}

impl Gate {
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// A session about to start a transaction (or a statement outside one). Returns once it
    /// may go on; the session counts as busy until [`Gate::leave`].
    pub async fn enter(&self) {
        loop {
            self.busy.fetch_add(1, Ordering::SeqCst);
            if !self.paused.load(Ordering::SeqCst) {
                return;
            }
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            self.leave();
            if self.paused.load(Ordering::SeqCst) {
                resumed.await;
            }
        }
    }

    /// The session is idle again (no transaction, nothing in flight).
    pub fn leave(&self) {
        // Only a paused gate has a waiter; one that pauses after this sees the count (SeqCst).
        if self.busy.fetch_sub(1, Ordering::SeqCst) == 1 && self.paused.load(Ordering::SeqCst) {
            self.quiet.notify_waiters();
        }
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub(crate) fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub(crate) fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.resumed.notify_waiters();
    }

    pub(crate) async fn wait_quiet(&self, deadline: Instant) -> Result<(), usize> {
        loop {
            let quiet = self.quiet.notified();
            tokio::pin!(quiet);
            quiet.as_mut().enable();
            let busy = self.busy.load(Ordering::SeqCst);
            if busy == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left.min(Duration::from_millis(50)), quiet)
                    .await
                    .is_err()
                    && Instant::now() >= deadline
            {
                return Err(self.busy.load(Ordering::SeqCst));
            }
        }
    }

    pub fn history(&self) -> Vec<CutoverEvent> {
        self.history.lock().expect("lock poisoned").clone()
    }

    pub fn set_history(&self, h: Vec<CutoverEvent>) {
        *self.history.lock().expect("lock poisoned") = h;
    }

    pub(crate) fn record(&self, e: CutoverEvent) {
        let mut h = self.history.lock().expect("lock poisoned");
        h.push(e);
        let len = h.len();
        if len > 100 {
            h.drain(..len - 100);
        }
    }
}
