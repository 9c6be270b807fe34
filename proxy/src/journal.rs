//! Interim journal (replaced by the full one).
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecordKind { Missed, Divergence }
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub seq: u64, pub time_micros: i64, pub kind: RecordKind, pub session: u64, pub user: String, pub database: String,
    pub prelude: Vec<String>, pub messages: Vec<u8>, pub wrap: bool, pub tables: Vec<String>, pub error: String,
    pub primary_result: Option<String>, pub secondary_result: Option<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum JournalError { #[error("{0}")] Io(#[from] std::io::Error) }
pub struct JournalStats { pub records: u64, pub bytes: u64, pub missed: u64, pub divergences: u64, pub last_seq: u64 }
#[derive(Clone)]
pub struct Journal { dir: PathBuf, seq: Arc<AtomicU64>, missed: Arc<AtomicU64>, div: Arc<AtomicU64> }
impl Journal {
    pub async fn open(dir: &Path, _i: std::time::Duration) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir)?;
        Ok(Journal { dir: dir.to_path_buf(), seq: Default::default(), missed: Default::default(), div: Default::default() })
    }
    pub async fn append(&self, r: Record) -> Result<u64, JournalError> {
        match r.kind { RecordKind::Missed => self.missed.fetch_add(1, Ordering::Relaxed), RecordKind::Divergence => self.div.fetch_add(1, Ordering::Relaxed) };
        Ok(self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }
    pub fn stats(&self) -> JournalStats { let s = self.seq.load(Ordering::Relaxed); JournalStats { records: s, bytes: 0, missed: self.missed.load(Ordering::Relaxed), divergences: self.div.load(Ordering::Relaxed), last_seq: s } }
    pub fn dir(&self) -> &Path { &self.dir }
}
