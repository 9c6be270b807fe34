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

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

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
    /// answer came: the secondary may have committed them. Replay applies the record if it
    /// can and, if it fails, takes it as already applied (reported, not retried).
    #[serde(default)]
    pub in_doubt: bool,
    /// The side that missed the writes (`source` or `target`); replay sends them there.
    #[serde(default)]
    pub side: Option<String>,
    pub tables: Vec<String>,
    /// Why the secondary missed it (its SQLSTATE and message, or the connection's fate).
    pub error: String,
    pub primary_result: Option<String>,
    pub secondary_result: Option<String>,
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
    done: oneshot::Sender<Result<u64, JournalError>>,
}

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
        tokio::spawn(writer(file, path, rx, counters.clone(), fsync_interval));
        Ok(Journal {
            dir: dir.to_path_buf(),
            id: id.into(),
            tx,
            counters,
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
        let _ = self.tx.send(Append {
            record: Some(record),
            done,
        });
        wait
    }

    /// Wait until everything queued so far is on disk.
    pub async fn flush(&self) -> Result<(), JournalError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Append { record: None, done })
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

async fn writer(
    file: std::fs::File,
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Append>,
    counters: Arc<Counters>,
    fsync_interval: Duration,
) {
    let mut file = Some(file);
    let mut last_sync = Instant::now() - fsync_interval;
    while let Some(first) = rx.recv().await {
        // At most one fsync per interval: wait out the rest of it, gathering more appends.
        let since = last_sync.elapsed();
        if since < fsync_interval {
            tokio::time::sleep(fsync_interval - since).await;
        }
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut buf = Vec::new();
        let mut seq = counters.last_seq.load(Ordering::Relaxed);
        let now = crate::dual::now_micros();
        for a in &mut batch {
            if let Some(r) = a.record.as_mut() {
                seq += 1;
                r.seq = seq;
                r.time_micros = now;
                encode(r, &mut buf);
            }
        }
        let Some(mut f) = file.take() else { break };
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let r = f.write_all(&buf).and_then(|_| f.sync_data());
            (f, r, buf.len())
        })
        .await;
        last_sync = Instant::now();
        match result {
            Ok((f, Ok(()), len)) => {
                file = Some(f);
                metrics::histogram!("dualwrite_journal_fsync_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("dualwrite_journal_bytes_total").increment(len as u64);
                counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
                counters.last_seq.store(seq, Ordering::Relaxed);
                for a in batch {
                    let Some(record) = a.record else {
                        let _ = a.done.send(Ok(seq));
                        continue;
                    };
                    counters.records.fetch_add(1, Ordering::Relaxed);
                    let kind = match record.kind {
                        RecordKind::Missed => {
                            counters.missed.fetch_add(1, Ordering::Relaxed);
                            "missed"
                        }
                        RecordKind::Divergence => {
                            counters.divergences.fetch_add(1, Ordering::Relaxed);
                            "divergence"
                        }
                    };
                    metrics::counter!("dualwrite_journal_records_total", "kind" => kind)
                        .increment(1);
                    let _ = a.done.send(Ok(record.seq));
                }
            }
            Ok((f, Err(e), _)) => {
                tracing::error!(error = %e, path = %path.display(), "journal write failed");
                // The seqs were not used: the next batch reuses them.
                file = Some(f);
                for a in batch {
                    let _ = a.done.send(Err(io_err(&path)(std::io::Error::new(
                        e.kind(),
                        e.to_string(),
                    ))));
                }
            }
            Err(_) => {
                for a in batch {
                    let _ = a.done.send(Err(JournalError::Stopped));
                }
                break;
            }
        }
    }
}

/// Read every complete, valid record. A torn last frame is reported, not returned.
pub fn read_records(dir: &Path) -> Result<(Vec<Record>, ReadReport), JournalError> {
    let path = log_path(dir);
    let mut data = Vec::new();
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut data).map_err(io_err(&path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), ReadReport::default()))
        }
        Err(e) => return Err(io_err(&path)(e)),
    }
    let (records, report) = parse(&data).map_err(|(offset, reason)| JournalError::Corrupt {
        path: path.display().to_string(),
        offset,
        reason,
    })?;
    Ok((records, report))
}

/// Parse frames; `Err((offset, reason))` for corruption before the end.
fn parse(data: &[u8]) -> Result<(Vec<Record>, ReadReport), (u64, String)> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let bad =
            |reason: String, end: usize| -> Result<(Vec<Record>, ReadReport), (u64, String)> {
                if end >= data.len() {
                    // Nothing valid can follow: a torn tail.
                    Ok((Vec::new(), ReadReport::default()))
                } else {
                    Err((pos as u64, reason))
                }
            };
        if data.len() - pos < HEADER {
            break;
        }
        if &data[pos..pos + 4] != MAGIC {
            bad("bad magic".into(), pos + HEADER)?;
            break;
        }
        let len = u32::from_be_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]])
            as usize;
        let crc =
            u32::from_be_bytes([data[pos + 8], data[pos + 9], data[pos + 10], data[pos + 11]]);
        if len > MAX_RECORD {
            bad(format!("record length {len}"), data.len())?;
            break;
        }
        let end = pos + HEADER + len;
        if end > data.len() {
            break;
        }
        let payload = &data[pos + HEADER..end];
        if crc32fast::hash(payload) != crc {
            bad("checksum mismatch".into(), end)?;
            break;
        }
        match serde_json::from_slice::<Record>(payload) {
            Ok(r) => records.push(r),
            Err(e) => {
                bad(format!("undecodable record: {e}"), end)?;
                break;
            }
        }
        pos = end;
    }
    let report = ReadReport {
        torn_tail_bytes: (data.len() - pos) as u64,
        valid_len: pos as u64,
    };
    Ok((records, report))
}

/// The statements in journaled wire messages, for humans: Query text, Parse text and Bind
/// parameters (text as is, binary as hex), COPY data summarized.
pub fn describe(messages: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut parsed: std::collections::HashMap<String, String> = Default::default();
    let text = |b: &[u8]| {
        String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or_default()).into_owned()
    };
    let mut copy_bytes = 0usize;
    while pos + 5 <= messages.len() {
        let tag = messages[pos];
        let len = u32::from_be_bytes([
            messages[pos + 1],
            messages[pos + 2],
            messages[pos + 3],
            messages[pos + 4],
        ]) as usize;
        if len < 4 || pos + 1 + len > messages.len() {
            out.push("<truncated message>".into());
            break;
        }
        let body = &messages[pos + 5..pos + 1 + len];
        match tag {
            b'Q' => out.push(text(body)),
            b'P' => {
                let name = text(body);
                let rest = &body[(name.len() + 1).min(body.len())..];
                parsed.insert(name, text(rest));
            }
            b'B' => {
                let portal = text(body);
                let rest = &body[(portal.len() + 1).min(body.len())..];
                let stmt = text(rest);
                let params = bind_params(&rest[(stmt.len() + 1).min(rest.len())..]);
                let sql = parsed
                    .get(&stmt)
                    .cloned()
                    .unwrap_or_else(|| format!("<statement {stmt:?}>"));
                if params.is_empty() {
                    out.push(sql);
                } else {
                    out.push(format!("{sql}  -- parameters: {}", params.join(", ")));
                }
            }
            b'd' => copy_bytes += body.len(),
            b'c' => {
                out.push(format!("<COPY data: {copy_bytes} bytes>"));
                copy_bytes = 0;
            }
            b'f' => out.push("<COPY failed>".into()),
            _ => {}
        }
        pos += 1 + len;
    }
    out
}

/// A terminal table of records for `journal show`.
pub fn render(records: &[Record], applied: u64) -> String {
    let mut out = format!(
        "{:>6}  {:<24}  {:<10}  {:>7}  {:<20}  {:<8}  {}\n",
        "seq", "time (UTC)", "kind", "session", "user@db", "applied", "error / first statement"
    );
    for r in records {
        let time = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(r.time_micros)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let kind = match r.kind {
            RecordKind::Missed if r.in_doubt => "in-doubt",
            RecordKind::Missed => "missed",
            RecordKind::Divergence => "divergence",
        };
        let applied = match r.kind {
            RecordKind::Missed if r.seq <= applied => "yes",
            RecordKind::Missed => "no",
            RecordKind::Divergence => "-",
        };
        let first: String = describe(&r.messages)
            .into_iter()
            .next()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        out.push_str(&format!(
            "{:>6}  {:<24}  {:<10}  {:>7}  {:<20}  {:<8}  {} | {}\n",
            r.seq,
            time,
            kind,
            r.session,
            format!("{}@{}", r.user, r.database),
            applied,
            r.error,
            first
        ));
    }
    let missed = records
        .iter()
        .filter(|r| r.kind == RecordKind::Missed)
        .count();
    let pending = records
        .iter()
        .filter(|r| r.kind == RecordKind::Missed && r.seq > applied)
        .count();
    out.push_str(&format!(
        "{} record(s): {missed} missed ({pending} not yet applied), {} divergence(s)",
        records.len(),
        records.len() - missed
    ));
    out
}

fn bind_params(b: &[u8]) -> Vec<String> {
    let rd16 = |b: &[u8], p: usize| b.get(p..p + 2).map(|s| i16::from_be_bytes([s[0], s[1]]));
    let mut p = 0;
    let Some(nfmt) = rd16(b, p) else {
        return vec![];
    };
    p += 2;
    let mut formats = Vec::new();
    for _ in 0..nfmt.max(0) {
        formats.push(rd16(b, p).unwrap_or(0));
        p += 2;
    }
    let Some(nparams) = rd16(b, p) else {
        return vec![];
    };
    p += 2;
    let mut out = Vec::new();
    for i in 0..nparams.max(0) as usize {
        let Some(len) = b
            .get(p..p + 4)
            .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        else {
            break;
        };
        p += 4;
        if len < 0 {
            out.push("NULL".into());
            continue;
        }
        let Some(v) = b.get(p..p + len as usize) else {
            break;
        };
        p += len as usize;
        let fmt = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => formats.get(i).copied().unwrap_or(0),
        };
        if fmt == 0 {
            out.push(format!("'{}'", String::from_utf8_lossy(v)));
        } else {
            out.push(format!(
                "\\x{}",
                v.iter().map(|c| format!("{c:02x}")).collect::<String>()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
