//! The durable journal of what the secondary missed (and of divergences).
//!
//! `journal.log` is append-only. Each record is a frame: magic `DWJ1`, payload length, CRC-32 of
//! the payload, then the payload (the record as JSON). Appends from every session go through one
//! writer task that writes whatever is queued in one `write` and one `fdatasync`, then
//! acknowledges those records (group commit): `append` returns once its record is durable.
//!
//! After a crash the last frame may be torn (short, or failing its checksum); it is detected,
//! reported and cut off, never misread. A bad frame followed by more data is corruption and
//! an error naming its offset.
//!
//! A write that fails (disk full, I/O error) loses nothing: the file is cut back to its last
//! good length, so it stays well-formed, and the same records are written again, with backoff,
//! ahead of any queued after them. While the disk refuses, records wait in memory; past
//! `max_backlog` bytes of them, [`Journal::room`] makes sessions wait (backpressure) rather
//! than drop any.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

mod read;
mod show;

pub use crate::config::DEFAULT_MAX_BACKLOG;
pub use read::read_records;
pub use show::{describe, render};

const MAGIC: &[u8; 4] = b"DWJ1";
const HEADER: usize = 12;
/// A record larger than this is not a record (guards against reading garbage lengths).
const MAX_RECORD: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    /// Writes the secondary missed: `journal replay` applies them.
    Missed,
    /// A difference between primary and secondary results, or an unknown outcome: reported only.
    Divergence,
}

/// One journaled item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Assigned by [`Journal::append`]: 1, 2, 3... continuing across restarts.
    pub seq: u64,
    /// Assigned by append: UTC microseconds since the epoch.
    pub time_micros: i64,
    pub kind: RecordKind,
    pub session: u64,
    pub user: String,
    pub database: String,
    /// SQL re-establishing the session's state before replay (SET ...).
    pub prelude: Vec<String>,
    /// Frontend wire messages to send to the secondary, as the client sent them.
    #[serde(with = "b64")]
    pub messages: Vec<u8>,
    /// No transaction control inside: replay wraps them with its applied-marker, idempotently.
    pub wrap: bool,
    /// The secondary's connection was lost after these writes were sent and before their
    /// answer came: the secondary may have committed them. Replay asks the secondary's
    /// commit marker (`marker`) whether it did; without one, it applies the record if it can
    /// and, if it fails, takes it as already applied (reported, not retried).
    #[serde(default)]
    pub in_doubt: bool,
    /// For an in-doubt record: the marker its transaction wrote on the secondary, which tells
    /// whether it committed there (see `marker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<crate::dual::marker::Marker>,
    /// The side that missed the writes (`source` or `target`); replay sends them there.
    #[serde(default)]
    pub side: Option<String>,
    pub tables: Vec<String>,
    /// Why the secondary missed it (its SQLSTATE and message, or the connection's fate).
    pub error: String,
    pub primary_result: Option<String>,
    pub secondary_result: Option<String>,
}

impl Record {
    /// Roughly the bytes the record takes in memory and on disk.
    pub fn approx_size(&self) -> u64 {
        let text: usize = self.prelude.iter().map(String::len).sum::<usize>()
            + self.tables.iter().map(String::len).sum::<usize>()
            + self.error.len()
            + self.primary_result.as_ref().map_or(0, String::len)
            + self.secondary_result.as_ref().map_or(0, String::len);
        (self.messages.len() * 4 / 3 + text + 256) as u64
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("journal {path} is corrupt at offset {offset}: {reason} (the file continues after it, so this is not a torn tail)")]
    Corrupt {
        path: String,
        offset: u64,
        reason: String,
    },
    #[error("the journal writer has stopped")]
    Stopped,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Counters shown in `status`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct JournalStats {
    pub records: u64,
    pub bytes: u64,
    pub missed: u64,
    pub divergences: u64,
    pub last_seq: u64,
}

/// What reading found besides the records.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadReport {
    /// Bytes of a torn last frame that were ignored.
    pub torn_tail_bytes: u64,
    /// Length of the valid part of the file.
    pub valid_len: u64,
}

struct Append {
    /// `None` is a barrier: acknowledged once everything queued before it is on disk.
    record: Option<Record>,
    /// The record's share of the backlog (estimated bytes).
    size: u64,
    done: oneshot::Sender<Result<u64, JournalError>>,
}

/// Records queued and not yet on disk: what a failing disk holds back in memory.
struct Backlog {
    bytes: AtomicU64,
    max: u64,
    /// The last write failed; it is being retried.
    failing: AtomicBool,
    /// The writer stopped: nothing more will be written (records queued get an error).
    stopped: AtomicBool,
    /// Signalled when records reach the disk.
    drained: Notify,
}

/// The first wait before writing again after a failed write; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    missed: AtomicU64,
    divergences: AtomicU64,
    last_seq: AtomicU64,
}

/// A handle to the open journal (cheap to clone).
#[derive(Clone)]
pub struct Journal {
    dir: PathBuf,
    id: Arc<str>,
    tx: mpsc::UnboundedSender<Append>,
    counters: Arc<Counters>,
    backlog: Arc<Backlog>,
}

pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("journal.log")
}

/// The journal's id (made once), which names it in the target's applied-marker table.
pub fn journal_id(dir: &Path) -> Result<String, JournalError> {
    let path = dir.join("journal.id");
    match std::fs::read_to_string(&path) {
        Ok(id) => Ok(id.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            let mut bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut bytes);
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&path, &id).map_err(io_err(&path))?;
            Ok(id)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

impl Journal {
    /// Open (or create) the journal in `dir`, cutting off a torn tail, and start the writer.
    pub async fn open(dir: &Path, fsync_interval: Duration) -> Result<Journal, JournalError> {
        Self::open_with(dir, fsync_interval, DEFAULT_MAX_BACKLOG).await
    }

    /// [`Journal::open`], holding at most `max_backlog` bytes of records in memory while the
    /// disk refuses writes (past it, [`Journal::room`] waits).
    pub async fn open_with(
        dir: &Path,
        fsync_interval: Duration,
        max_backlog: u64,
    ) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let id = journal_id(dir)?;
        let path = log_path(dir);
        let (records, report) = read_records(dir)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        if report.torn_tail_bytes > 0 {
            tracing::warn!(
                bytes = report.torn_tail_bytes,
                "journal: ignoring a torn last record (crash during append)"
            );
            file.set_len(report.valid_len).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        let counters = Arc::new(Counters::default());
        for r in &records {
            counters.records.fetch_add(1, Ordering::Relaxed);
            match r.kind {
                RecordKind::Missed => counters.missed.fetch_add(1, Ordering::Relaxed),
                RecordKind::Divergence => counters.divergences.fetch_add(1, Ordering::Relaxed),
            };
        }
        counters.bytes.store(report.valid_len, Ordering::Relaxed);
        counters.last_seq.store(
            records.last().map(|r| r.seq).unwrap_or(0),
            Ordering::Relaxed,
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog {
            bytes: AtomicU64::new(0),
            max: max_backlog,
            failing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            drained: Notify::new(),
        });
        let valid_len = report.valid_len;
        tokio::spawn(writer(
            Writer {
                file: Some(file),
                path,
                valid_len,
                counters: counters.clone(),
                backlog: backlog.clone(),
                fsync_interval,
            },
            rx,
        ));
        Ok(Journal {
            dir: dir.to_path_buf(),
            id: id.into(),
            tx,
            counters,
            backlog,
        })
    }

    /// Append a record; returns its seq once it is on disk.
    pub async fn append(&self, record: Record) -> Result<u64, JournalError> {
        self.enqueue(record)
            .await
            .map_err(|_| JournalError::Stopped)?
    }

    /// Queue a record without waiting; records keep the order they were queued in, and the
    /// receiver resolves once the record is on disk. Lets a session journal many writes in
    /// one group commit instead of one fsync each.
    pub fn enqueue(&self, record: Record) -> oneshot::Receiver<Result<u64, JournalError>> {
        let (done, wait) = oneshot::channel();
        let size = record.approx_size();
        self.backlog.bytes.fetch_add(size, Ordering::AcqRel);
        let _ = self.tx.send(Append {
            record: Some(record),
            size,
            done,
        });
        wait
    }

    /// Wait until the records waiting for the disk are within the backlog bound. Immediate
    /// unless the disk has been refusing writes for a while.
    pub async fn room(&self) {
        loop {
            let drained = self.backlog.drained.notified();
            if self.backlog.bytes.load(Ordering::Acquire) <= self.backlog.max
                || self.backlog.stopped.load(Ordering::Acquire)
            {
                return;
            }
            drained.await;
        }
    }

    /// The last write to the journal failed and is being retried (disk full, I/O error).
    pub fn failing(&self) -> bool {
        self.backlog.failing.load(Ordering::Acquire)
    }

    /// Estimated bytes of records queued and not yet on disk.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog.bytes.load(Ordering::Acquire)
    }

    /// Wait until everything queued so far is on disk.
    pub async fn flush(&self) -> Result<(), JournalError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Append {
                record: None,
                size: 0,
                done,
            })
            .map_err(|_| JournalError::Stopped)?;
        wait.await.map_err(|_| JournalError::Stopped)?.map(|_| ())
    }

    pub fn stats(&self) -> JournalStats {
        let c = &self.counters;
        JournalStats {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            missed: c.missed.load(Ordering::Relaxed),
            divergences: c.divergences.load(Ordering::Relaxed),
            last_seq: c.last_seq.load(Ordering::Relaxed),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

fn encode(record: &Record, out: &mut Vec<u8>) {
    let payload = serde_json::to_vec(record).expect("a record always serializes");
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
}

/// The writer task's state.
struct Writer {
    /// `None` once a blocking write panicked: the journal is stopped.
    file: Option<std::fs::File>,
    path: PathBuf,
    /// Length of the file's valid part: where the next frame goes, and where a failed write
    /// is cut back to.
    valid_len: u64,
    counters: Arc<Counters>,
    backlog: Arc<Backlog>,
    fsync_interval: Duration,
}

async fn writer(mut w: Writer, mut rx: mpsc::UnboundedReceiver<Append>) {
    let mut last_sync = Instant::now() - w.fsync_interval;
    // Records whose write failed, written again first (in order) at the next attempt.
    let mut batch: Vec<Append> = Vec::new();
    let mut retry = RETRY_FIRST;
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => break,
            }
        }
        // At most one fsync per interval: wait out the rest of it, gathering more appends.
        let since = last_sync.elapsed();
        if since < w.fsync_interval {
            tokio::time::sleep(w.fsync_interval - since).await;
        }
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut buf = Vec::new();
        let mut seq = w.counters.last_seq.load(Ordering::Relaxed);
        let now = crate::dual::facts::now_micros();
        for a in &mut batch {
            if let Some(r) = a.record.as_mut() {
                seq += 1;
                r.seq = seq;
                r.time_micros = now;
                encode(r, &mut buf);
            }
        }
        let Some(mut f) = w.file.take() else { break };
        let started = Instant::now();
        let valid_len = w.valid_len;
        let result = tokio::task::spawn_blocking(move || {
            let r = f.write_all(&buf).and_then(|_| f.sync_data());
            let r = match r {
                Ok(()) => Ok(()),
                // Cut off what part of the batch got written, so the file ends with a whole
                // frame and the next attempt writes the batch again from there.
                Err(e) => Err((
                    e,
                    f.set_len(valid_len)
                        .and_then(|_| f.seek(SeekFrom::Start(valid_len)).map(|_| ())),
                )),
            };
            (f, r, buf.len())
        })
        .await;
        last_sync = Instant::now();
        match result {
            Ok((f, Ok(()), len)) => {
                w.file = Some(f);
                w.valid_len += len as u64;
                retry = RETRY_FIRST;
                if w.backlog.failing.swap(false, Ordering::AcqRel) {
                    tracing::warn!(path = %w.path.display(), records = batch.len(), "journal writable again: the held records are on disk");
                }
                metrics::histogram!("dualwrite_journal_fsync_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("dualwrite_journal_bytes_total").increment(len as u64);
                w.counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
                w.counters.last_seq.store(seq, Ordering::Relaxed);
                let mut written = 0;
                for a in batch.drain(..) {
                    written += a.size;
                    let Some(record) = a.record else {
                        let _ = a.done.send(Ok(seq));
                        continue;
                    };
                    w.counters.records.fetch_add(1, Ordering::Relaxed);
                    let kind = match record.kind {
                        RecordKind::Missed => {
                            w.counters.missed.fetch_add(1, Ordering::Relaxed);
                            "missed"
                        }
                        RecordKind::Divergence => {
                            w.counters.divergences.fetch_add(1, Ordering::Relaxed);
                            "divergence"
                        }
                    };
                    metrics::counter!("dualwrite_journal_records_total", "kind" => kind)
                        .increment(1);
                    let _ = a.done.send(Ok(record.seq));
                }
                w.backlog.bytes.fetch_sub(written, Ordering::AcqRel);
                w.backlog.drained.notify_waiters();
            }
            Ok((f, Err((e, cut)), _)) => {
                // The seqs were not used: the next attempt assigns them again.
                w.file = Some(f);
                w.backlog.failing.store(true, Ordering::Release);
                metrics::counter!("dualwrite_errors_total", "kind" => "journal").increment(1);
                tracing::error!(error = %e, path = %w.path.display(), records = batch.len(),
                    backlog_bytes = w.backlog.bytes.load(Ordering::Acquire), retry_in = ?retry,
                    "journal write failed; the records are kept in memory and written again");
                if let Err(cut) = cut {
                    // The file may now end with part of a frame: opening it again cuts that
                    // off as a torn tail, but appending after it would bury it mid-file.
                    tracing::error!(error = %cut, path = %w.path.display(),
                        "journal: cutting back a failed write failed; the journal stops");
                    for a in batch.drain(..) {
                        let _ = a.done.send(Err(JournalError::Stopped));
                    }
                    break;
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
            Err(_) => {
                for a in batch.drain(..) {
                    let _ = a.done.send(Err(JournalError::Stopped));
                }
                break;
            }
        }
    }
    // Stopped: whatever is still queued can never be written.
    w.backlog.failing.store(true, Ordering::Release);
    w.backlog.stopped.store(true, Ordering::Release);
    w.backlog.drained.notify_waiters();
    rx.close();
    while let Ok(a) = rx.try_recv() {
        let _ = a.done.send(Err(JournalError::Stopped));
    }
}

#[cfg(test)]
mod tests;
