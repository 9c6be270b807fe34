//! A copy worker: a source and a target connection, claiming units of the stored plan one at a
//! time until none is left, retrying a unit on transient errors with backoff and marking it
//! failed when it keeps failing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dualwrite_common::PgUrl;
use rand::Rng;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::columns::TableCopy;
use crate::pg::{self, describe, is_transient, Side};
use crate::progress::Progress;
use crate::store::{self, ClaimError};
use crate::throttle::Throttle;
use crate::unit::{self, UnitError, UnitJob};

/// What every worker of a process shares.
pub struct Shared {
    pub source_url: PgUrl,
    pub target_url: PgUrl,
    pub plan_id: String,
    /// `host:pid`, for the units' owner column.
    pub owner: String,
    /// How each table is copied, by `schema.table`.
    pub tables: HashMap<String, TableCopy>,
    /// The exported snapshot while it lasts.
    pub snapshot: RwLock<Option<String>>,
    pub progress: Arc<Progress>,
    pub throttle: Option<Throttle>,
    /// First Ctrl-C: claim nothing more.
    pub stop: CancellationToken,
    /// Second Ctrl-C: roll back the running units.
    pub kill: CancellationToken,
    /// Attempts per unit.
    pub attempts: u32,
    /// Errors that ended a worker (not a unit).
    pub fatal: Mutex<Vec<String>>,
}

/// Wait before attempt `attempt + 1`: 0.5 s doubling to 15 s, with jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(15_000);
    let jitter = rand::rng().random_range(0..=base / 4);
    Duration::from_millis(base + jitter)
}

fn new_key() -> i32 {
    rand::rng().random_range(1..i32::MAX)
}

struct Worker {
    shared: Arc<Shared>,
    owner: String,
    key: i32,
    source: Option<Client>,
    target: Option<Client>,
}

/// Run one worker to the end of the plan (or a stop).
pub async fn run(shared: Arc<Shared>, number: usize) {
    let owner = format!("{}/{number}", shared.owner);
    let mut w = Worker {
        shared,
        owner,
        key: new_key(),
        source: None,
        target: None,
    };
    w.work().await;
    // Hand back a unit left running by a second Ctrl-C, so `status` shows it pending; then
    // let go of the liveness lock here rather than when the server notices the connection
    // closed, so that nothing run right after this process (`clean`, another copy) still
    // finds this worker alive.
    if let Some(t) = &w.target {
        let _ = store::release(t, &w.shared.plan_id, w.key).await;
        let _ = store::unlock_worker(t, w.key).await;
    }
}

impl Worker {
    async fn work(&mut self) {
        let mut failures = 0u32;
        while !self.shared.stop.is_cancelled() {
            let claim = match self.claim().await {
                Ok(Some(c)) => {
                    failures = 0;
                    c
                }
                Ok(None) => return,
                Err((e, transient)) => {
                    failures += 1;
                    if !transient || failures >= self.shared.attempts {
                        self.fail_worker(e);
                        return;
                    }
                    self.shared.progress.note(&format!(
                        "{}: {e}; retrying (attempt {} of {})",
                        self.owner,
                        failures + 1,
                        self.shared.attempts
                    ));
                    self.target = None;
                    if self.sleep(backoff(failures)).await {
                        return;
                    }
                    continue;
                }
            };
            self.copy(claim).await;
        }
    }

    fn fail_worker(&self, e: String) {
        self.shared.progress.note(&format!("{}: {e}", self.owner));
        self.shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    /// Sleep unless killed; true when killed.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.shared.kill.cancelled() => true,
            _ = tokio::time::sleep(d) => false,
        }
    }

    /// The target connection, holding this worker's liveness lock.
    async fn target(&mut self) -> Result<&Client, String> {
        if self.target.is_none() {
            let c = pg::open(&self.shared.target_url, Side::Target)
                .await
                .map_err(|e| e.to_string())?;
            let q = |e: tokio_postgres::Error| format!("target: {}", describe(&e));
            // A dropped connection's backend may still hold the key for a moment.
            let mut locked = false;
            for _ in 0..10 {
                if store::lock_worker(&c, self.key).await.map_err(q)? {
                    locked = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !locked {
                // Still held (a connection the server has not noticed dead): take a new key;
                // claims stamped with the old one become reclaimable once it goes.
                self.key = new_key();
                if !store::lock_worker(&c, self.key).await.map_err(q)? {
                    return Err("target: cannot take a worker lock".into());
                }
            }
            self.target = Some(c);
        }
        self.target
            .as_ref()
            .ok_or_else(|| "target: not connected".to_string())
    }

    async fn claim(&mut self) -> Result<Option<store::Claim>, (String, bool)> {
        let (plan, owner) = (self.shared.plan_id.clone(), self.owner.clone());
        let key = match self.target().await {
            Ok(_) => self.key,
            Err(e) => return Err((e, true)),
        };
        let t = self
            .target
            .as_ref()
            .ok_or(("not connected".to_string(), true))?;
        store::claim(t, &plan, &owner, key)
            .await
            .map_err(|e| match e {
                ClaimError::Query(q) => (format!("target: {}", describe(&q)), is_transient(&q)),
                other => (other.to_string(), false),
            })
    }

    async fn connect_both(&mut self) -> Result<(), UnitError> {
        self.target().await.map_err(UnitError::Connect)?;
        if self.source.is_none() {
            let c = pg::open(&self.shared.source_url, Side::Source)
                .await
                .map_err(|e| UnitError::Connect(e.to_string()))?;
            self.source = Some(c);
        }
        Ok(())
    }

    async fn attempt(&mut self, claim: &store::Claim) -> Result<unit::Copied, UnitError> {
        self.connect_both().await?;
        let shared = Arc::clone(&self.shared);
        let table_name = claim.spec.table.qn().to_string();
        let Some(table) = shared.tables.get(&table_name) else {
            return Err(UnitError::Invalid(format!(
                "table {table_name} of the stored plan is not among this run's tables"
            )));
        };
        let snapshot = shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let job = UnitJob {
            plan_id: &shared.plan_id,
            unit_id: claim.unit_id,
            worker_key: self.key,
            spec: &claim.spec,
            table,
            snapshot: snapshot.as_deref(),
            progress: &shared.progress,
            throttle: shared.throttle.as_ref(),
            kill: &shared.kill,
        };
        let (Some(source), Some(target)) = (self.source.as_mut(), self.target.as_mut()) else {
            return Err(UnitError::Connect("not connected".into()));
        };
        unit::copy_unit(source, target, &job).await
    }

    async fn copy(&mut self, claim: store::Claim) {
        let spec = &claim.spec;
        let label = format!("{} {}", spec.table.qn(), spec.range_text());
        let mut attempt = 1u32;
        loop {
            let result = self.attempt(&claim).await;
            let e = match result {
                Ok(c) => {
                    self.shared
                        .progress
                        .unit_done(&label, c.rows, c.bytes, c.took);
                    return;
                }
                Err(e) => e,
            };
            // Whatever failed, start the next attempt on fresh connections.
            self.source = None;
            match e {
                UnitError::Cancelled => return,
                UnitError::Lost => {
                    self.shared
                        .progress
                        .note(&format!("{label}: taken over by another worker"));
                    self.target = None;
                    return;
                }
                UnitError::Snapshot(_) => {
                    let had = self
                        .shared
                        .snapshot
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    if had.is_some() {
                        self.shared.progress.note(
                            "the shared snapshot ended; each unit now reads under its own snapshot",
                        );
                    }
                    continue;
                }
                e if e.is_transient() && attempt < self.shared.attempts => {
                    let text = e.to_string();
                    self.shared.progress.note(&format!(
                        "{label}: {text}; retrying (attempt {} of {})",
                        attempt + 1,
                        self.shared.attempts
                    ));
                    // A source error leaves the target connection (and its claim) usable.
                    if !matches!(e, UnitError::Source(_)) {
                        self.target = None;
                    }
                    if self.sleep(backoff(attempt)).await {
                        return;
                    }
                    attempt += 1;
                    if self.target().await.is_ok() {
                        if let Some(t) = &self.target {
                            let _ = store::note_retry(
                                t,
                                &self.shared.plan_id,
                                claim.unit_id,
                                self.key,
                                &text,
                            )
                            .await;
                        }
                    }
                }
                e => {
                    let text = e.to_string();
                    // A failed COPY leaves the target connection usable after its rollback,
                    // but a fresh one is simpler to reason about.
                    self.target = None;
                    let key = self.key;
                    if self.target().await.is_ok() && self.key == key {
                        if let Some(t) = &self.target {
                            let _ = store::mark_failed(
                                t,
                                &self.shared.plan_id,
                                claim.unit_id,
                                key,
                                &text,
                            )
                            .await;
                        }
                    }
                    self.shared.progress.unit_failed(&label, &text);
                    return;
                }
            }
        }
    }
}
