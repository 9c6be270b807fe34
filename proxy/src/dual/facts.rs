//! Proxy-wide dual-write state: whether the secondary is attached, when dual-writing began
//! (overall and per table), divergence and non-determinism counters. When dual-writing began
//! is persisted (`dual.json` next to the journal): it is the evidence for choosing T, and a
//! restart must not move it later.
//!
//! Ordering across an outage: once any write was journaled, every session journals its writes
//! too (the secondary is detached) until the journal has been replayed; only then is the
//! secondary re-attached. The `gate` makes "journal this" and "re-attach now" exclusive, so no
//! live write can overtake a journaled one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use dashmap::DashMap;
use tokio::sync::RwLock;

/// When dual-writing began, overall and per table (microseconds since the epoch).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DualFacts {
    pub started_micros: Option<i64>,
    pub first_write_per_table: std::collections::BTreeMap<String, i64>,
}

const FACTS_FILE: &str = "dual.json";

/// Read `dual.json` from the journal dir, if there is one.
pub fn load_facts(dir: &std::path::Path) -> Option<DualFacts> {
    let text = std::fs::read_to_string(dir.join(FACTS_FILE)).ok()?;
    match serde_json::from_str(&text) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable {}", dir.join(FACTS_FILE).display());
            None
        }
    }
}

/// Write `dual.json` atomically.
pub fn save_facts(dir: &std::path::Path, facts: &DualFacts) {
    let text = serde_json::to_vec_pretty(facts).unwrap_or_default();
    if let Err(e) = write_atomic(dir, FACTS_FILE, &text) {
        tracing::error!(error = %e, dir = %dir.display(), "cannot persist when dual-writing began");
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub struct DualState {
    attached: AtomicBool,
    /// Held shared while a session decides "send live or journal" and does it; held
    /// exclusively while re-attaching.
    pub gate: RwLock<()>,
    started_micros: AtomicU64,
    first_write: DashMap<String, i64>,
    /// `started_micros` or `first_write` changed since the last save.
    dirty: AtomicBool,
    pub divergences: AtomicU64,
    pub secondary_failures: AtomicU64,
    pub detach_reason: Mutex<Option<String>>,
    /// Items queued for secondaries and not yet applied, over all sessions.
    queued: AtomicU64,
    warned_shapes: Mutex<HashSet<u64>>,
}

impl Default for DualState {
    fn default() -> Self {
        DualState {
            attached: AtomicBool::new(true),
            gate: RwLock::new(()),
            started_micros: AtomicU64::new(0),
            first_write: DashMap::new(),
            dirty: AtomicBool::new(false),
            divergences: AtomicU64::new(0),
            secondary_failures: AtomicU64::new(0),
            detach_reason: Mutex::new(None),
            queued: AtomicU64::new(0),
            warned_shapes: Mutex::new(HashSet::new()),
        }
    }
}

impl DualState {
    pub fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// Stop sending live: later writes are journaled until the journal is replayed.
    pub fn detach(&self, reason: &str) {
        if self.attached.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                reason,
                "secondary detached: writes are journaled until the journal is replayed"
            );
            *self.detach_reason.lock().expect("lock poisoned") = Some(reason.to_string());
        }
    }

    /// Call with `gate` held exclusively, after the journal was replayed to its end.
    pub fn attach(&self) {
        if !self.attached.swap(true, Ordering::AcqRel) {
            tracing::info!("secondary re-attached: journal replayed, writes go live again");
            *self.detach_reason.lock().expect("lock poisoned") = None;
        }
    }

    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn queue_add(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    pub fn queue_done(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    /// Record that dual-writing is on (the first time only).
    pub fn mark_started(&self) {
        if self
            .started_micros
            .compare_exchange(0, now_micros() as u64, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.dirty.store(true, Ordering::Release);
        }
    }

    pub fn started_micros(&self) -> Option<i64> {
        match self.started_micros.load(Ordering::Acquire) {
            0 => None,
            v => Some(v as i64),
        }
    }

    /// First time a write to `table` reached the secondary.
    pub fn note_write(&self, table: &str) {
        if !self.first_write.contains_key(table) {
            self.first_write
                .entry(table.to_string())
                .or_insert_with(now_micros);
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// The facts to persist, when they changed since the last call.
    pub fn take_changes(&self) -> Option<DualFacts> {
        self.dirty.swap(false, Ordering::AcqRel).then(|| DualFacts {
            started_micros: self.started_micros(),
            first_write_per_table: self.first_writes().into_iter().collect(),
        })
    }

    /// Restore what an earlier run persisted (earlier times win).
    pub fn restore(&self, facts: &DualFacts) {
        if let Some(t) = facts.started_micros {
            let _ = self
                .started_micros
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                    (cur == 0 || (t as u64) < cur).then_some(t as u64)
                });
        }
        for (table, t) in &facts.first_write_per_table {
            let mut e = self.first_write.entry(table.clone()).or_insert(*t);
            if *t < *e {
                *e = *t;
            }
        }
        self.dirty.store(true, Ordering::Release);
    }

    pub fn first_writes(&self) -> Vec<(String, i64)> {
        let mut v: Vec<_> = self
            .first_write
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        v.sort();
        v
    }

    /// True the first time a statement shape is seen (to warn once per shape).
    pub fn first_sighting(&self, shape: &str) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        shape.hash(&mut h);
        let mut set = self.warned_shapes.lock().expect("lock poisoned");
        set.len() < 100_000 && set.insert(h.finish())
    }
}

/// Write `dir/name` atomically: a temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
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
