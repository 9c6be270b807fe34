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
//!   with one ReadyForQuery, in one write, and the proxy reads it in one wake-up, instead of
//!   one of each per sample. Each sample's answer ends at its last Execute's result. A sample
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

use crate::outcome::{Collector, Outcome, ResultKind};
use crate::protocol::{self, backend as b, frontend as f};
use crate::secondary::{read_outcome, Conn};
use crate::session::read_message;
use crate::tls::Reader;
use crate::unit::Step;

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
    pub fn start(&self, key: String, conn: Conn, gather: Duration) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().expect("lock poisoned");
        if let Some(lane) = running(&lanes, &key) {
            tokio::spawn(close(conn));
            return lane;
        }
        lanes.retain(|_, l| l.strong_count() > 0);
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane { tx });
        lanes.insert(key, Arc::downgrade(&lane));
        tokio::spawn(serve(conn, rx, gather));
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

/// What to do with a sample's answer (and how long the secondary took), or with the reason
/// the lane could not run it. Called once, on the lane's task.
pub type Finish = Box<dyn FnOnce(Result<(Outcome, Duration), String>) + Send>;

struct Request {
    steps: Vec<Step>,
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

impl Lane {
    /// Hand over one sample (the steps of a shadow unit); `finish` gets its answer. `false`
    /// when the lane is gone (`finish` is dropped uncalled): run the sample elsewhere.
    pub fn submit(&self, steps: Vec<Step>, finish: Finish) -> bool {
        self.tx
            .send(Request {
                steps,
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
async fn serve(conn: Conn, mut rx: mpsc::UnboundedReceiver<Request>, gather: Duration) {
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
    loop {
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
            // A quiet moment: give other sessions' samples a little while to join this one,
            // so the secondary's backend wakes once for several.
            tokio::time::sleep(gather).await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match retry_rx.try_recv().or_else(|_| rx.try_recv()) {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        out.clear();
        let sent = Instant::now();
        // The group of samples written since the last Sync is still open.
        let mut open = false;
        for r in batch {
            if broken.load(Ordering::Acquire) {
                (r.finish)(Err("shared shadow connection closed".into()));
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
                    (r.finish)(Err("not runnable on a shared session".into()));
                }
            }
        }
        if open {
            close_group(&mut out, &mut flights);
        }
        let mut reader_gone = false;
        for flight in flights.drain(..) {
            if reader_gone {
                (flight.finish)(Err("shared shadow connection closed".into()));
                continue;
            }
            pending.outstanding.fetch_add(1, Ordering::AcqRel);
            if let Err(mpsc::error::SendError(f)) = flight_tx.send(flight) {
                pending.outstanding.fetch_sub(1, Ordering::AcqRel);
                (f.finish)(Err("shared shadow connection closed".into()));
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
        (r.finish)(Err("shared shadow connection closed".into()));
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

async fn answer(a: Answering) {
    let Answering {
        mut reader,
        mut buf,
        mut flights,
        retry,
        statements,
        broken,
        pending,
    } = a;
    while let Some(flight) = flights.recv().await {
        let answer = match flight.shares_sync {
            None => read_outcome(&mut reader, &mut buf, true).await,
            Some(executes) => read_results(&mut reader, &mut buf, executes).await,
        };
        match answer.map_err(|e| e.to_string()) {
            Ok(o) => {
                let failed = o.error().is_some();
                if failed {
                    let mut st = statements.lock().expect("lock poisoned");
                    if o.error()
                        .is_some_and(|(code, _)| crate::secondary::session_bound_error(code))
                    {
                        // A statement it keeps went stale (DDL changed its result type): the
                        // next sample prepares it again.
                        st.names.clear();
                    } else {
                        st.forget(flight.parsed);
                    }
                }
                // A read leaves no transaction open; if one is, the session is no longer
                // clean and takes no more samples.
                if flight.shares_sync.is_none() && o.status_after != b'I' {
                    broken.store(true, Ordering::Release);
                }
                let rest_skipped = failed && flight.shares_sync.is_some();
                (flight.finish)(Ok((o, flight.sent.elapsed())));
                pending.done();
                if rest_skipped {
                    // The server skipped the rest of the group up to its Sync: those samples
                    // go again, each on its own, and whatever they prepared is gone.
                    let mut end = false;
                    while !end {
                        let Some(skipped) = flights.recv().await else {
                            return;
                        };
                        end = skipped.shares_sync.is_none();
                        statements
                            .lock()
                            .expect("lock poisoned")
                            .forget(skipped.parsed);
                        metrics::counter!("dualwrite_shadow_resent_total").increment(1);
                        let again = Request {
                            steps: skipped.steps,
                            finish: skipped.finish,
                            alone: true,
                        };
                        if let Err(mpsc::error::SendError(r)) = retry.send(again) {
                            (r.finish)(Err("shared shadow connection closed".into()));
                        }
                        pending.done();
                    }
                    match read_outcome(&mut reader, &mut buf, false).await {
                        Ok(o) if o.status_after == b'I' => {}
                        Ok(_) => broken.store(true, Ordering::Release),
                        Err(e) => {
                            lost(&mut flights, e.to_string(), &broken, &pending).await;
                            return;
                        }
                    }
                }
                // Answers already buffered are read without waiting: let the sessions'
                // relaying run between comparisons.
                tokio::task::consume_budget().await;
            }
            Err(e) => {
                (flight.finish)(Err(e.clone()));
                pending.done();
                lost(&mut flights, e, &broken, &pending).await;
                return;
            }
        }
    }
}

/// The lane's connection broke: every sample still waiting gets the reason.
async fn lost(
    flights: &mut mpsc::UnboundedReceiver<InFlight>,
    e: String,
    broken: &AtomicBool,
    pending: &Pending,
) {
    debug!(error = %e, "shared shadow connection lost");
    broken.store(true, Ordering::Release);
    flights.close();
    while let Some(f) = flights.recv().await {
        (f.finish)(Err(e.clone()));
        pending.done();
    }
}

/// Read the answer of a sample whose Sync is shared with later samples: its `executes`
/// results, or up to its first error (after which the server skips to the Sync). Its outcome
/// ends as if at a ReadyForQuery outside a transaction.
async fn read_results(
    reader: &mut Reader,
    buf: &mut BytesMut,
    executes: usize,
) -> Result<Outcome, crate::session::MessageError> {
    let mut c = Collector::default();
    c.begin(b'I');
    c.keep_rows(true);
    loop {
        let (tag, body) = read_message(reader, buf, 1 << 30).await?;
        if tag == b::READY_FOR_QUERY {
            // The group ended before this sample's results: the answers are out of step
            // with the samples, and the lane cannot go on.
            return Err(crate::session::MessageError::Io(std::io::Error::other(
                "ReadyForQuery before the end of a shared shadow sample",
            )));
        }
        let _ = c.message(tag, &body);
        let results = c.results();
        let failed =
            matches!(results.last(), Some(r) if matches!(r.kind, ResultKind::Error { .. }));
        if results.len() >= executes || failed {
            return Ok(c.message(b::READY_FOR_QUERY, b"I").unwrap_or_default());
        }
    }
}

async fn close(mut conn: Conn) {
    let _ = conn.writer.write_all(b"X\0\0\0\x04").await;
    let _ = conn.writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        protocol::frontend_message(&mut out, tag, body);
        out.freeze()
    }

    fn bind_step(stmt: &str, text: &str) -> Step {
        Step::Bind {
            statement: stmt.into(),
            generation: 1,
            parse: frame(f::PARSE, format!("{stmt}\0{text}\0\0\0").as_bytes()),
            bind: frame(f::BIND, format!("\0{stmt}\0\0\0\0\0\0\0").as_bytes()),
        }
    }

    #[test]
    fn binds_point_at_the_lanes_own_statements_prepared_once() {
        let mut s = Statements::default();
        let mut out = BytesMut::new();
        let sync = Step::Raw(frame(f::SYNC, b""));
        let steps = vec![bind_step("P0_1", "SELECT 1"), sync.clone()];
        let parsed = s.encode(&steps, &mut out).expect("runnable");
        assert_eq!(parsed.len(), 1);
        let first = out.split().freeze();
        assert_eq!(first[0], f::PARSE);
        assert!(first.windows(12).any(|w| w == b"_dw_shadow_1"));
        // Another session's name for the same text: no second Parse, same lane statement.
        let steps = vec![bind_step("S_7", "SELECT 1"), sync];
        assert_eq!(s.encode(&steps, &mut out).expect("runnable").len(), 0);
        let second = out.split().freeze();
        assert_eq!(second[0], f::BIND);
        assert!(second.windows(14).any(|w| w == b"\0_dw_shadow_1\0"));
        assert!(!second.windows(3).any(|w| w == b"S_7"));
        // Forgotten after a failure: prepared again under a new name.
        s.forget(parsed);
        let steps = vec![bind_step("P0_1", "SELECT 1")];
        assert_eq!(s.encode(&steps, &mut out).expect("runnable").len(), 1);
        assert!(out.windows(12).any(|w| w == b"_dw_shadow_2"));
    }

    #[test]
    fn extended_samples_ending_at_their_one_sync_can_share_it() {
        let sync = Step::Raw(frame(f::SYNC, b""));
        let execute = Step::Raw(frame(f::EXECUTE, b"\0\0\0\0\0"));
        let request = |steps: Vec<Step>, alone: bool| Request {
            steps,
            finish: Box::new(|_| {}),
            alone,
        };
        let two = vec![
            bind_step("a", "SELECT 1"),
            execute.clone(),
            bind_step("b", "SELECT 2"),
            execute.clone(),
            sync.clone(),
        ];
        assert_eq!(request(two.clone(), false).shareable(), Some(2));
        // Sent again after its group failed: a Sync of its own.
        assert_eq!(request(two, true).shareable(), None);
        // A simple Query ends at its own ReadyForQuery; so does a sample without a Sync last.
        let query = Step::Raw(frame(f::QUERY, b"SELECT 1\0"));
        assert_eq!(request(vec![query], false).shareable(), None);
        let unsynced = vec![bind_step("a", "SELECT 1"), execute.clone()];
        assert_eq!(request(unsynced, false).shareable(), None);
        let nothing_run = vec![bind_step("a", "SELECT 1"), sync];
        assert_eq!(request(nothing_run, false).shareable(), None);
    }

    #[test]
    fn steps_a_shared_session_cannot_run_are_refused() {
        let mut s = Statements::default();
        let mut out = BytesMut::new();
        let close = Step::Raw(frame(f::CLOSE, b"Sx\0"));
        assert!(s.encode(std::slice::from_ref(&close), &mut out).is_none());
        // Refused after a Bind: nothing of it is left to send, and its statement is not kept.
        let steps = vec![bind_step("P0_1", "SELECT 1"), close];
        assert!(s.encode(&steps, &mut out).is_none());
        assert!(out.is_empty());
        assert!(s.names.is_empty());
        let parse = Step::Parse {
            statement: "x".into(),
            generation: 1,
            parse: frame(f::PARSE, b"x\0SELECT 1\0\0\0"),
        };
        assert!(s.encode(&[parse], &mut out).is_none());
    }
}
