//! Shared shadow-read connections: one secondary session per login (side, server, user,
//! database and startup parameters) that runs the shadow samples of every client session of
//! that login which has no session state of its own.
//!
//! A sample is a read outside any transaction; what it needs from its client's session is only
//! that the session's earlier writes are committed on the secondary and its later ones are
//! not, which the session's worker guarantees by handing the sample over only after the
//! earlier ones were applied, and by waiting for the sample's answer before applying a later
//! one. Nothing else waits for it: the comparison is made when the answer arrives.
//!
//! Running samples on one shared session instead of each client's own costs the secondary far
//! less: one backend kept busy, woken once for several samples, instead of one woken per
//! sample in every client session.
//!
//! - Prepared statements are shared across client sessions: each distinct Parse (text and
//!   parameter types) is prepared once on the lane, as `_dw_shadow_N`, and the client's Binds
//!   are pointed at it. A statement whose sample fails is forgotten and prepared again under a
//!   new name next time.
//! - Samples are pipelined: written as they come (those queued meanwhile in one write) while
//!   the answers of earlier ones are read.
//! - Extended-protocol samples written together share one Sync: the server answers the group
//!   with one ReadyForQuery instead of one per sample. Each sample's answer ends at its last
//!   Execute's result, and a Flush after it makes the server send it as soon as it is done, so
//!   the time the server took on each sample is seen (from its start, or the answer before it,
//!   to its answer). A sample
//!   that fails makes the server skip the rest of its group: those are sent again, each with
//!   its own Sync, so a failing sample costs no other its comparison. A group's reads run in
//!   one implicit transaction, begun once all of them were handed over, so each still sees
//!   every write its session made before it.
//! - The lane lives while a client session holds it and closes its backend session after the
//!   last one lets go. A broken connection ends the lane; the next sample opens a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::debug;

use crate::dual::order::CommitOrder;
use crate::dual::outcome::{read_outcome, session_bound_error};
use crate::dual::outcome::{Collector, Outcome, ResultKind};
use crate::dual::unit::Step;
use crate::wire::backend::Conn;
use crate::wire::protocol::{self, backend as b, frontend as f};
use crate::wire::read::read_message;
use crate::wire::tls::Reader;

mod answer;

use answer::answer;

/// Samples sent in one write at most.
const MAX_BATCH: usize = 64;

/// The lanes of a proxy, by login.
#[derive(Default)]
pub struct Lanes {
    lanes: Mutex<HashMap<String, Weak<Lane>>>,
}

impl Lanes {
    /// The running lane for `key`, if a client session still holds it.
    pub fn get(&self, key: &str) -> Option<Arc<Lane>> {
        running(&self.lanes.lock().expect("lock poisoned"), key)
    }

    /// Start a lane for `key` on `conn` (a fresh secondary session of that login). When another
    /// session started one meanwhile, that one is used and `conn` is closed.
    ///
    /// `gather`: how long a sample that finds the lane idle waits for others to go out with
    /// it (`shadow_batch_wait`). Nobody waits on it meanwhile: the client has its answer, and
    /// the session's worker waits only before its next write.
    pub fn start(
        &self,
        key: String,
        conn: Conn,
        gather: Duration,
        order: Arc<CommitOrder>,
    ) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().expect("lock poisoned");
        if let Some(lane) = running(&lanes, &key) {
            tokio::spawn(close(conn));
            return lane;
        }
        lanes.retain(|_, l| l.strong_count() > 0);
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane { tx });
        lanes.insert(key, Arc::downgrade(&lane));
        tokio::spawn(serve(conn, rx, gather, order));
        lane
    }
}

fn running(lanes: &HashMap<String, Weak<Lane>>, key: &str) -> Option<Arc<Lane>> {
    lanes
        .get(key)
        .and_then(Weak::upgrade)
        .filter(|l| !l.tx.is_closed())
}

/// A handle on a running lane; the lane ends when the last handle is dropped.
pub struct Lane {
    tx: mpsc::UnboundedSender<Request>,
}

/// What to do with a sample's answer (and when the secondary started on it and how long it
/// took), or with the reason the lane could not run it. Called once, on the lane's task.
pub type Finish = Box<dyn FnOnce(Result<(Outcome, crate::shadow::compare::Span), NotRun>) + Send>;

/// Why the lane did not run a sample.
#[derive(Debug)]
pub enum NotRun {
    /// The commits its read saw were not all settled on the secondary in time.
    Watermark,
    /// The lane could not run it (the connection broke, the steps need a session of their own).
    Failed(String),
}

/// How long a sample waits for its watermark (see `Request::mark`) before it is not run.
pub const WATERMARK_WAIT: Duration = Duration::from_secs(2);

struct Request {
    steps: Vec<Step>,
    /// Its watermark: it runs once every commit acknowledged up to this mark is settled on
    /// the secondary (`CommitOrder::acks_settled_to`).
    mark: u64,
    finish: Finish,
    /// Sent again after its group failed: it gets a Sync of its own.
    alone: bool,
}

impl Request {
    /// The number of Executes when the sample can share its Sync with the samples after it:
    /// extended protocol only, ending at its one Sync.
    fn shareable(&self) -> Option<usize> {
        if self.alone
            || !matches!(self.steps.last(), Some(Step::Raw(f)) if f.first() == Some(&f::SYNC))
        {
            return None;
        }
        let mut executes = 0;
        for step in &self.steps[..self.steps.len() - 1] {
            if let Step::Raw(frame) = step {
                match frame.first() {
                    Some(&f::EXECUTE) => executes += 1,
                    _ => return None,
                }
            }
        }
        (executes > 0).then_some(executes)
    }
}

const SYNC: &[u8] = b"S\0\0\0\x04";
const FLUSH: &[u8] = b"H\0\0\0\x04";

impl Lane {
    /// Hand over one sample (the steps of a shadow unit); `finish` gets its answer. `false`
    /// when the lane is gone (`finish` is dropped uncalled): run the sample elsewhere.
    pub fn submit(&self, steps: Vec<Step>, mark: u64, finish: Finish) -> bool {
        self.tx
            .send(Request {
                steps,
                mark,
                finish,
                alone: false,
            })
            .is_ok()
    }
}

/// The lane's statements: a Parse's text and parameter types -> the name it has on the lane.
#[derive(Default)]
struct Statements {
    names: HashMap<Bytes, String>,
    next: u64,
}

impl Statements {
    /// Append `steps` to `out` with each Bind pointed at the lane's own statement (prepared
    /// first when new). Returns the statements prepared here, or `None` when the steps hold
    /// something a shared session can't run.
    fn encode(&mut self, steps: &[Step], out: &mut BytesMut) -> Option<Vec<Bytes>> {
        let start = out.len();
        let mut parsed = Vec::new();
        if self.encode_into(steps, out, &mut parsed).is_none() {
            // Nothing of a refused sample reaches the server.
            out.truncate(start);
            self.forget(parsed);
            return None;
        }
        Some(parsed)
    }

    fn encode_into(
        &mut self,
        steps: &[Step],
        out: &mut BytesMut,
        parsed: &mut Vec<Bytes>,
    ) -> Option<()> {
        for step in steps {
            match step {
                Step::Raw(frame) => match frame.first() {
                    Some(&f::QUERY) | Some(&f::EXECUTE) | Some(&f::SYNC) => {
                        out.extend_from_slice(frame)
                    }
                    _ => return None,
                },
                Step::Parse { .. } => return None,
                Step::Bind { parse, bind, .. } => {
                    // Parse: name \0 text \0 types; the key is everything after the name.
                    let (_, spec) = split_cstr(parse.slice(5..))?;
                    let name = match self.names.get(&spec) {
                        Some(n) => n.clone(),
                        None => {
                            self.next += 1;
                            let n = format!("_dw_shadow_{}", self.next);
                            let mut body = BytesMut::with_capacity(n.len() + 1 + spec.len());
                            body.put_slice(n.as_bytes());
                            body.put_u8(0);
                            body.put_slice(&spec);
                            protocol::frontend_message(out, f::PARSE, &body);
                            self.names.insert(spec.clone(), n.clone());
                            parsed.push(spec);
                            n
                        }
                    };
                    // Bind: portal \0 statement \0 rest.
                    let (portal, rest) = split_cstr(bind.slice(5..))?;
                    let (_, rest) = split_cstr(rest)?;
                    let mut body =
                        BytesMut::with_capacity(portal.len() + name.len() + 2 + rest.len());
                    body.put_slice(&portal);
                    body.put_u8(0);
                    body.put_slice(name.as_bytes());
                    body.put_u8(0);
                    body.put_slice(&rest);
                    protocol::frontend_message(out, f::BIND, &body);
                }
            }
        }
        Some(())
    }

    fn forget(&mut self, parsed: Vec<Bytes>) {
        for spec in parsed {
            self.names.remove(&spec);
        }
    }
}

/// `b` split after its first NUL: (the string before it, the rest).
fn split_cstr(b: Bytes) -> Option<(Bytes, Bytes)> {
    let end = b.iter().position(|c| *c == 0)?;
    Some((b.slice(..end), b.slice(end + 1..)))
}

/// A sample written to the lane, waiting for its answer.
struct InFlight {
    finish: Finish,
    parsed: Vec<Bytes>,
    sent: Instant,
    /// `Some(executes)` when later samples share its Sync: its answer ends after that many
    /// results (or at an error), not at a ReadyForQuery.
    shares_sync: Option<usize>,
    /// Kept to send it again should an earlier sample of its group fail.
    steps: Vec<Step>,
}

/// Two halves, so that answers are read while later samples are written: the writer sends
/// samples as they come (those queued meanwhile in one write), the reader answers them in
/// order.
async fn serve(
    conn: Conn,
    mut rx: mpsc::UnboundedReceiver<Request>,
    gather: Duration,
    order: Arc<CommitOrder>,
) {
    let Conn {
        reader,
        mut writer,
        buf,
        ..
    } = conn;
    let statements = Arc::new(Mutex::new(Statements::default()));
    let broken = Arc::new(AtomicBool::new(false));
    let (flight_tx, flight_rx) = mpsc::unbounded_channel();
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel();
    let pending = Arc::new(Pending::default());
    let read = tokio::spawn(answer(Answering {
        reader,
        buf,
        flights: flight_rx,
        retry: retry_tx,
        statements: statements.clone(),
        broken: broken.clone(),
        pending: pending.clone(),
    }));
    let mut out = BytesMut::new();
    let mut flights: Vec<InFlight> = Vec::new();
    // No session holds the lane any more: what was sent is still answered, and samples sent
    // back after a failure in their group still go again.
    let mut closed = false;
    // Samples whose watermark the secondary has not reached yet, with when they came.
    let mut held: Vec<(Request, Instant)> = Vec::new();
    loop {
        if held.is_empty() {
            let first = if !closed {
                tokio::select! {
                    biased;
                    Some(r) = retry_rx.recv() => r,
                    r = rx.recv() => match r {
                        Some(r) => r,
                        None => {
                            closed = true;
                            continue;
                        }
                    },
                }
            } else {
                if retry_rx.is_empty()
                    && (pending.outstanding.load(Ordering::Acquire) == 0 || retry_rx.is_closed())
                {
                    break;
                }
                tokio::select! {
                    biased;
                    Some(r) = retry_rx.recv() => r,
                    _ = pending.idle.notified() => continue,
                }
            };
            if rx.is_empty() && retry_rx.is_empty() && !gather.is_zero() {
                // A quiet moment: give other sessions' samples a little while to join this
                // one, so the secondary's backend wakes once for several.
                tokio::time::sleep(gather).await;
            }
            held.push((first, Instant::now()));
        }
        while held.len() < MAX_BATCH {
            match retry_rx.try_recv().or_else(|_| rx.try_recv()) {
                Ok(r) => held.push((r, Instant::now())),
                Err(_) => break,
            }
        }
        // The watermark: a sample goes once every commit acknowledged before its read was
        // sent is settled on the secondary. The samples wait here, together, and those whose
        // watermark is reached go without waiting for the others: a sample's session may
        // hold a later commit back until the sample has run.
        let settled = order.acks_settled();
        let now = Instant::now();
        let mut batch = Vec::new();
        let mut oldest: Option<(Instant, u64)> = None;
        for (r, since) in std::mem::take(&mut held) {
            if r.mark <= settled {
                batch.push(r);
            } else if now >= since + WATERMARK_WAIT {
                (r.finish)(Err(NotRun::Watermark));
            } else {
                let lowest = oldest.map_or(r.mark, |(_, m)| m.min(r.mark));
                oldest = Some((oldest.map_or(since, |(s, _)| s.min(since)), lowest));
                held.push((r, since));
            }
        }
        if batch.is_empty() {
            if let Some((since, lowest)) = oldest {
                let deadline = tokio::time::Instant::from_std(since + WATERMARK_WAIT);
                tokio::select! {
                    _ = order.acks_settled_to(lowest, None) => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                    Some(r) = retry_rx.recv() => held.push((r, Instant::now())),
                    Some(r) = rx.recv(), if !closed => held.push((r, Instant::now())),
                }
            }
            continue;
        }
        out.clear();
        let sent = Instant::now();
        // The group of samples written since the last Sync is still open.
        let mut open = false;
        for r in batch {
            if broken.load(Ordering::Acquire) {
                (r.finish)(Err(NotRun::Failed(
                    "shared shadow connection closed".into(),
                )));
                continue;
            }
            let shares = r.shareable();
            if shares.is_none() && open {
                close_group(&mut out, &mut flights);
                open = false;
            }
            let steps = match shares {
                Some(_) => &r.steps[..r.steps.len() - 1],
                None => &r.steps[..],
            };
            let encoded = statements
                .lock()
                .expect("lock poisoned")
                .encode(steps, &mut out);
            match encoded {
                Some(parsed) => {
                    if shares.is_some() {
                        // The server sends this sample's answer as soon as it has it, not with
                        // the group's at the Sync: each sample's time on the server is seen.
                        out.extend_from_slice(FLUSH);
                    }
                    open = shares.is_some();
                    flights.push(InFlight {
                        finish: r.finish,
                        parsed,
                        sent,
                        shares_sync: shares,
                        steps: r.steps,
                    });
                }
                None => {
                    (r.finish)(Err(NotRun::Failed(
                        "not runnable on a shared session".into(),
                    )));
                }
            }
        }
        if open {
            close_group(&mut out, &mut flights);
        }
        let mut reader_gone = false;
        for flight in flights.drain(..) {
            if reader_gone {
                (flight.finish)(Err(NotRun::Failed(
                    "shared shadow connection closed".into(),
                )));
                continue;
            }
            pending.outstanding.fetch_add(1, Ordering::AcqRel);
            if let Err(mpsc::error::SendError(f)) = flight_tx.send(flight) {
                pending.outstanding.fetch_sub(1, Ordering::AcqRel);
                (f.finish)(Err(NotRun::Failed(
                    "shared shadow connection closed".into(),
                )));
                reader_gone = true;
            }
        }
        if reader_gone {
            break;
        }
        if out.is_empty() {
            if broken.load(Ordering::Acquire) {
                break;
            }
            continue;
        }
        let wrote = match writer.write_all(&out).await {
            Ok(()) => writer.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = wrote {
            debug!(error = %e, "shared shadow connection lost");
            break;
        }
    }
    // The server answers everything before the Terminate; the reader ends at end of stream.
    drop(flight_tx);
    let _ = writer.write_all(b"X\0\0\0\x04").await;
    let _ = writer.shutdown().await;
    let _ = read.await;
    // Samples the reader sent back after the lane stopped taking any.
    retry_rx.close();
    while let Some(r) = retry_rx.recv().await {
        (r.finish)(Err(NotRun::Failed(
            "shared shadow connection closed".into(),
        )));
    }
}

/// End the open group with its Sync: its last sample's answer ends at the ReadyForQuery.
fn close_group(out: &mut BytesMut, flights: &mut [InFlight]) {
    out.extend_from_slice(SYNC);
    if let Some(last) = flights.last_mut() {
        last.shares_sync = None;
    }
}

/// Samples written and not yet answered (or sent back), so that a lane no session holds any
/// more still waits for the samples a failure in their group sends back.
#[derive(Default)]
struct Pending {
    outstanding: std::sync::atomic::AtomicUsize,
    /// Notified when `outstanding` falls to zero.
    idle: tokio::sync::Notify,
}

impl Pending {
    fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_one();
        }
    }
}

/// The reading half of a lane.
struct Answering {
    reader: Reader,
    buf: BytesMut,
    flights: mpsc::UnboundedReceiver<InFlight>,
    /// Samples to send again, on their own.
    retry: mpsc::UnboundedSender<Request>,
    statements: Arc<Mutex<Statements>>,
    broken: Arc<AtomicBool>,
    pending: Arc<Pending>,
}

async fn close(mut conn: Conn) {
    let _ = conn.writer.write_all(b"X\0\0\0\x04").await;
    let _ = conn.writer.shutdown().await;
}

#[cfg(test)]
mod tests;
