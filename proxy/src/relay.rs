//! The relay between a client and its backend session: frames are forwarded as the bytes they
//! arrived as, in batches, and decoded only where the proxy needs to know something
//! (ReadyForQuery for transaction state, ErrorResponse for metrics, and in dual-write mode the
//! statements and their results).
//!
//! The two directions run concurrently so that neither can block the other: a client that
//! pipelines many queries without reading, or a backend streaming a large result while the
//! client is still sending, behave exactly as they would with a direct connection. A client
//! that keeps sending does not hold back the backend's answers either: after each chunk read
//! from it without waiting, the client's direction yields (see `client_to_backend`).

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::classify::TxControl;
use crate::config::CommitOrderMode;
use crate::copytrack::CopyTracker;
use crate::order::Flight;
use crate::outcome::{self, Collector};
use crate::protocol::{self, backend as b, frontend as f, FrameError, Scanner};
use crate::secondary::Secondary;
use crate::server::Shared;
use crate::tls::{Reader, Writer};
use crate::unit::{Builder, Item};

/// Read size for each direction.
const READ_CHUNK: usize = 64 * 1024;
/// How long a session whose client left waits for the primary's answers to writes already
/// sent, so the secondary learns their outcome.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a relay ended.
#[derive(Debug)]
pub enum End {
    /// The client sent Terminate.
    Terminated,
    /// The client's connection closed or failed.
    ClientGone,
    /// The backend's connection closed or failed.
    BackendGone,
    /// The client broke the protocol.
    Protocol(FrameError),
    /// The proxy is shutting down and the session was idle (or the grace period ran out).
    Shutdown,
    /// The settings changed (cutover, live mode change): the session is idle and must adopt
    /// them before going on. Bytes already read from the client stay in its buffer.
    Reconfigure,
    /// The session could not adopt a new primary.
    Switch(String),
}

/// The four halves of a session.
pub struct Ends<'a> {
    pub client_reader: &'a mut Reader,
    pub client_writer: &'a mut Writer,
    pub backend_reader: &'a mut Reader,
    pub backend_writer: &'a mut Writer,
}

/// A query of the proxy's own added to the client's stream, to read the primary's WAL
/// position inside a committing transaction (see `order`). Its answer never reaches the
/// client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inject {
    None,
    /// A Query of its own before the unit that commits (for flight `id`): the whole answer,
    /// up to its ReadyForQuery, is the proxy's.
    Separate(u64),
    /// A statement appended to the unit's own Query text: the last result before its
    /// ReadyForQuery is the proxy's.
    Appended,
}

/// The proxy's query for the WAL position.
const LSN_QUERY: &[u8] = b"SELECT pg_catalog.pg_current_wal_insert_lsn()\0";
/// Appended to a Query's text: a statement of its own, after anything the text ends with.
const LSN_APPENDED: &[u8] =
    b"\n;SELECT pg_catalog.pg_current_wal_insert_lsn() AS dualwrite_commit_order\0";
/// The column name that marks the appended statement's result.
const LSN_COLUMN: &[u8] = b"dualwrite_commit_order\0";

/// A Query, Sync or FunctionCall sent to the primary, waiting for its ReadyForQuery.
struct Pending {
    sent: Instant,
    /// The unit has steps queued for the secondary, which waits for its outcome.
    dual: bool,
    /// The unit is a shadow-read sample (its first rows are kept for mismatch logs).
    shadow: bool,
    /// A Sync sent while an extended-protocol COPY FROM STDIN may be running: if the COPY
    /// started, the server ignores it and answers the next Sync instead.
    maybe_ignored: bool,
    inject: Inject,
    /// The unit may commit: its place in the commit order is decided when it is answered.
    flight: Option<Flight>,
}

impl Pending {
    fn plain(maybe_ignored: bool) -> Pending {
        Pending {
            sent: Instant::now(),
            dual: false,
            shadow: false,
            maybe_ignored,
            inject: Inject::None,
            flight: None,
        }
    }
}

/// Session state shared by the two directions.
pub struct Flow {
    /// Transaction status of the last ReadyForQuery: `I`, `T` or `E`.
    tx_status: AtomicU8,
    /// Queries and Syncs sent whose ReadyForQuery has not reached the client.
    pending: AtomicUsize,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: AtomicBool,
    /// Whether everything written to the client ends on a message boundary.
    client_clean: AtomicBool,
    /// Pending units in order, for latency and for routing outcomes to the secondary.
    queue: Mutex<VecDeque<Pending>>,
    /// Set when the proxy wants the session to end at its next idle point.
    draining: AtomicBool,
    /// The client is gone; the backend's answers are read but not forwarded.
    client_gone: AtomicBool,
    idle: Notify,
    /// The session counts as busy in the cutover gate (a transaction or statements in flight).
    busy: AtomicBool,
    /// The settings epoch this session runs with.
    pub epoch: std::sync::atomic::AtomicU64,
    /// The session's primary is the target (for the commit order's keys).
    pub primary_target: AtomicBool,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            tx_status: AtomicU8::new(b'I'),
            pending: AtomicUsize::new(0),
            unsynced: AtomicBool::new(false),
            client_clean: AtomicBool::new(true),
            queue: Mutex::new(VecDeque::new()),
            draining: AtomicBool::new(false),
            client_gone: AtomicBool::new(false),
            idle: Notify::new(),
            busy: AtomicBool::new(false),
            epoch: std::sync::atomic::AtomicU64::new(0),
            primary_target: AtomicBool::new(false),
        }
    }
}

impl Flow {
    /// No query in flight, no transaction open, nothing half-sent.
    pub fn idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
            && self.tx_status.load(Ordering::Acquire) == b'I'
            && !self.unsynced.load(Ordering::Acquire)
    }

    pub fn client_at_boundary(&self) -> bool {
        self.client_clean.load(Ordering::Acquire)
    }

    /// Leave the cutover gate if this session was counted busy.
    pub fn release(&self, shared: &Shared) {
        if self.busy.swap(false, Ordering::AcqRel) {
            shared.gate.leave();
        }
    }

    fn dual_pending(&self) -> bool {
        self.queue
            .lock()
            .expect("lock poisoned")
            .iter()
            .any(|p| p.dual)
    }
}

/// Relay until one side ends; returns why. With a `secondary`, writes are also queued for it.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ends: Ends<'_>,
    client_buf: &mut BytesMut,
    backend_buf: &mut BytesMut,
    builder: &mut Builder,
    flow: &Flow,
    shared: &Shared,
    secondary: Option<&Secondary>,
) -> End {
    let Ends {
        client_reader,
        client_writer,
        backend_reader,
        backend_writer,
    } = ends;
    let up = client_to_backend(
        client_reader,
        backend_writer,
        client_buf,
        builder,
        flow,
        shared,
        secondary,
    );
    let down = backend_to_client(
        backend_reader,
        client_writer,
        backend_buf,
        flow,
        shared,
        secondary,
    );
    tokio::pin!(up, down);
    let end = tokio::select! {
        end = &mut up => end,
        end = &mut down => return end,
    };
    if matches!(end, End::ClientGone | End::Terminated)
        && secondary.is_some()
        && flow.dual_pending()
    {
        // Writes already sent to the primary: learn their outcome before closing, so the
        // secondary applies (or skips) them exactly as the primary did.
        flow.client_gone.store(true, Ordering::Release);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            tokio::select! {
                _ = &mut down => {}
                _ = async {
                    while flow.dual_pending() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                } => {}
            }
        })
        .await;
    }
    end
}

/// A chunk of client frames with bytes of the proxy's own put in (see `Inject`).
#[derive(Default)]
struct Splice {
    out: Option<BytesMut>,
    /// Bytes of the chunk already in `out`.
    copied: usize,
}

impl Splice {
    /// Put `bytes` at `at` in `chunk`, in place of the `replace` bytes there. Calls come in
    /// increasing `at`.
    fn insert(&mut self, chunk: &[u8], at: usize, bytes: &[u8], replace: usize) {
        let out = self
            .out
            .get_or_insert_with(|| BytesMut::with_capacity(chunk.len() + 128));
        out.extend_from_slice(&chunk[self.copied..at]);
        out.extend_from_slice(bytes);
        self.copied = at + replace;
    }

    fn finish(self, chunk: bytes::Bytes) -> bytes::Bytes {
        match self.out {
            None => chunk,
            Some(mut out) => {
                out.extend_from_slice(&chunk[self.copied..]);
                out.freeze()
            }
        }
    }
}

async fn client_to_backend(
    reader: &mut Reader,
    writer: &mut Writer,
    buf: &mut BytesMut,
    builder: &mut Builder,
    flow: &Flow,
    shared: &Shared,
    secondary: Option<&Secondary>,
) -> End {
    let settings = shared.settings();
    let max = settings.max_message_bytes;
    let shadow_queue = settings.shadow_queue;
    // Not a live setting: a restart applies a change (see `order`).
    let keyed_order = settings.commit_order == CommitOrderMode::Wal;
    drop(settings);
    let m = &shared.metrics;
    // Created once: polling a fresh `cancelled()` per message would register and unregister a
    // waiter on a token every session shares.
    let graceful = shared.graceful.cancelled();
    let kill = shared.kill.cancelled();
    tokio::pin!(graceful, kill);
    let mut graceful_seen = false;
    let mut pending_input = !buf.is_empty();
    // Statements are tracked whenever a live switch to dual-write is possible.
    let track = secondary.is_some() || shared.settings().target.is_some();
    let mut copy = CopyTracker::default();
    let mut ignored_syncs: Vec<bool> = Vec::new();
    let mut frames: Vec<(u8, usize, usize)> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut dual_since_boundary = false;
    // Frames of a unit not yet ended by its Query/Sync were sent (perhaps in an earlier chunk).
    let mut unit_open = false;
    loop {
        if flow.draining.load(Ordering::Acquire) && flow.idle() {
            return End::Shutdown;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        let draining = flow.draining.load(Ordering::Acquire);
        // Bytes kept from before a reconfiguration are processed before reading more.
        let mut waited = false;
        let read = if pending_input {
            pending_input = false;
            Ok(usize::MAX)
        } else {
            let mut read = std::pin::pin!(reader.read_buf(buf));
            let read = std::future::poll_fn(|cx| {
                let r = read.as_mut().poll(cx);
                waited |= r.is_pending();
                r
            });
            tokio::select! {
            biased;
            _ = &mut kill => return End::Shutdown,
            _ = &mut graceful, if !graceful_seen => {
                graceful_seen = true;
                flow.draining.store(true, Ordering::Release);
                continue;
            }
            _ = flow.idle.notified(), if draining => continue,
            r = read => r,
            }
        };
        match read {
            Ok(0) | Err(_) => return End::ClientGone,
            Ok(usize::MAX) => {}
            Ok(n) => m.bytes_in.increment(n as u64),
        }
        if !flow.busy.load(Ordering::Acquire) && flow.idle() {
            // A new transaction (or statement outside one) starts: wait while a cutover is
            // pausing traffic, then adopt changed settings before sending anything.
            shared.gate.enter().await;
            flow.busy.store(true, Ordering::Release);
            if flow.epoch.load(Ordering::Acquire) != shared.gate.epoch() {
                flow.release(shared);
                return End::Reconfigure;
            }
        }
        let mut pos = 0;
        let mut terminate = false;
        frames.clear();
        ignored_syncs.clear();
        let mut sync_index = 0;
        loop {
            let h = match protocol::header(&buf[pos..], max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return End::Protocol(e),
            };
            if !f::is_valid(h.tag) {
                return End::Protocol(FrameError::UnknownType(h.tag as char));
            }
            if buf.len() - pos < h.frame_len {
                break;
            }
            if track && h.tag != f::TERMINATE {
                frames.push((h.tag, pos, h.frame_len));
            }
            let sync_ignored = h.tag == f::SYNC && copy.active();
            if h.tag == f::SYNC && secondary.is_some() {
                ignored_syncs.push(sync_ignored);
            }
            copy.message(h.tag, &buf[pos + 5..pos + h.frame_len]);
            match h.tag {
                f::QUERY | f::FUNCTION_CALL | f::SYNC => {
                    match h.tag {
                        f::QUERY => m.statements_simple.increment(1),
                        f::SYNC => flow.unsynced.store(false, Ordering::Release),
                        _ => {}
                    }
                    if secondary.is_none() {
                        flow.queue
                            .lock()
                            .expect("lock poisoned")
                            .push_back(Pending::plain(sync_ignored));
                    }
                    flow.pending.fetch_add(1, Ordering::AcqRel);
                }
                f::EXECUTE => {
                    m.statements_extended.increment(1);
                    flow.unsynced.store(true, Ordering::Release);
                }
                f::PARSE | f::BIND | f::DESCRIBE | f::CLOSE | f::FLUSH => {
                    flow.unsynced.store(true, Ordering::Release);
                }
                f::TERMINATE => {
                    pos += h.frame_len;
                    terminate = true;
                    break;
                }
                _ => {}
            }
            pos += h.frame_len;
        }
        if pos > 0 {
            let chunk = buf.split_to(pos).freeze();
            // The bytes to send when the proxy adds queries of its own (see `Inject`).
            let mut spliced = Splice::default();
            if secondary.is_some() {
                builder.shadow_rate = shared.shadow.rate();
                let target = flow.primary_target.load(Ordering::Acquire);
                let wal_keys = keyed_order && shared.order.wal_keys(target);
                // Where the unit being read began, when that is in this chunk (nothing of the
                // proxy's own may go in the middle of a unit already partly sent).
                let mut unit_start: Option<usize> = None;
                // Route before forwarding, so each unit's entry is queued before its answer.
                for &(tag, start, len) in &frames {
                    if !unit_open {
                        unit_start = Some(start);
                        unit_open = true;
                    }
                    let frame = chunk.slice(start..start + len);
                    let before = items.len();
                    let boundary = builder.push(tag, &frame, &mut items);
                    // A shadow sample past the queue bound is dropped here, before its
                    // answer is routed to the secondary.
                    let mut shadow = false;
                    if let Some(Item::Unit(u)) = items.last() {
                        if u.shadow && items.len() > before {
                            if shared.shadow.admit(shadow_queue) {
                                shadow = true;
                            } else if let Some(Item::Unit(dropped)) = items.pop() {
                                if dropped.shares_answer {
                                    if let Some(Item::Unit(before)) = items.last_mut() {
                                        before.answer_shared = false;
                                    }
                                }
                            }
                        }
                    }
                    for item in &mut items[before..] {
                        if let Item::Unit(u) = item {
                            if u.copy_in {
                                u.seen = shared.order.acks();
                            }
                        }
                    }
                    dual_since_boundary |=
                        items[before..].iter().any(|i| matches!(i, Item::Unit(_)));
                    if boundary {
                        let maybe_ignored = tag == f::SYNC
                            && ignored_syncs.get(sync_index).copied().unwrap_or(false);
                        if tag == f::SYNC {
                            sync_index += 1;
                        }
                        // The unit may commit: it takes its place in the commit order when
                        // answered, by a key read inside its transaction where one can be.
                        let unit = items[before..].iter().rev().find_map(|i| match i {
                            Item::Unit(u) if !u.shadow => Some(u),
                            _ => None,
                        });
                        let commits = unit.filter(|u| u.effect || u.tx == Some(TxControl::Commit));
                        let flight = commits.map(|_| shared.order.forwarded(target));
                        let mut inject = Inject::None;
                        if let (Some(u), Some(fl)) = (commits, &flight) {
                            if !wal_keys || maybe_ignored || u.copy_in {
                            } else if u.tx == Some(TxControl::Commit) {
                                if let Some(at) = unit_start {
                                    let mut q = BytesMut::new();
                                    protocol::frontend_message(&mut q, f::QUERY, LSN_QUERY);
                                    spliced.insert(&chunk, at, &q, 0);
                                    let mut p = Pending::plain(false);
                                    p.inject = Inject::Separate(fl.id());
                                    flow.queue.lock().expect("lock poisoned").push_back(p);
                                }
                            } else if tag == f::QUERY && u.appendable && u.tx.is_none() {
                                let text = &frame[5..frame.len() - 1];
                                let mut body = Vec::with_capacity(text.len() + LSN_APPENDED.len());
                                body.extend_from_slice(text);
                                body.extend_from_slice(LSN_APPENDED);
                                let mut q = BytesMut::new();
                                protocol::frontend_message(&mut q, f::QUERY, &body);
                                spliced.insert(&chunk, start, &q, len);
                                inject = Inject::Appended;
                            }
                        }
                        flow.queue
                            .lock()
                            .expect("lock poisoned")
                            .push_back(Pending {
                                sent: Instant::now(),
                                dual: dual_since_boundary,
                                shadow,
                                maybe_ignored,
                                inject,
                                flight,
                            });
                        m.routed(dual_since_boundary);
                        dual_since_boundary = false;
                        unit_start = None;
                        unit_open = false;
                    }
                }
            } else if track {
                // Primary-only with a target configured: keep the session's statements known,
                // so that after a live switch to dual-write, statements prepared before it
                // still reach the secondary when executed.
                for &(tag, start, len) in &frames {
                    builder.push(tag, &chunk.slice(start..start + len), &mut items);
                    items.clear();
                }
            }
            let chunk = spliced.finish(chunk);
            if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                return End::BackendGone;
            }
            // Only after the primary has the frames: the secondary's worker waits for the
            // primary's answers, so queueing first could wait on frames not yet sent.
            if let Some(sec) = secondary {
                for item in items.drain(..) {
                    sec.send(item).await;
                }
            }
        }
        if pos > 0 && !waited {
            // The client is streaming (its bytes were there before we read them): let the
            // backend's answers through before reading on. Both directions are polled by one
            // task, and this one would otherwise keep it for as long as tokio's budget lasts,
            // holding back an early error the client would stop sending for.
            tokio::task::yield_now().await;
        }
        if terminate {
            let _ = writer.flush().await;
            return End::Terminated;
        }
    }
}

async fn backend_to_client(
    reader: &mut Reader,
    writer: &mut Writer,
    buf: &mut BytesMut,
    flow: &Flow,
    shared: &Shared,
    secondary: Option<&Secondary>,
) -> End {
    let m = &shared.metrics;
    let mut scanner = Scanner::default();
    let mut collector = Collector::default();
    let mut status = b'I';
    collector.begin(status);
    // Whether the unit being answered is dual-written (its returned rows are digested).
    let with_rows = Cell::new(false);
    // The proxy's own query the unit being answered carries (see `Inject`).
    let inject = Cell::new(Inject::None);
    // The scan stopped before an answer of the proxy's own: it is taken out of the stream.
    let own = Cell::new(false);
    // (dual, shadow, inject) of the unit being answered. With no unit queued, the answer is to
    // a batch whose Sync has not been sent yet (the client sent Flush to get results early):
    // its kind is not known, so its rows are digested and sampled in case it turns out dual or
    // shadowed.
    let unknown = secondary.is_some();
    let front_kind = || {
        flow.queue
            .lock()
            .expect("lock poisoned")
            .front()
            .map(|p| (p.dual, p.shadow, p.inject))
            .unwrap_or((unknown, unknown, Inject::None))
    };
    let (dual, shadow, inj) = front_kind();
    with_rows.set(secondary.is_some() && dual);
    collector.keep_rows(shadow);
    inject.set(inj);
    // The server entered copy-in mode for the unit being answered.
    let mut copy_started = false;
    // No message of the unit being answered has been seen yet: its entry may have been
    // queued after the last ReadyForQuery, so its kind is looked up again before scanning.
    let fresh = Cell::new(true);
    loop {
        if secondary.is_some() && fresh.get() {
            let (dual, shadow, inj) = front_kind();
            with_rows.set(dual);
            collector.keep_rows(shadow);
            inject.set(inj);
        }
        let mut ready = 0usize;
        let mut errors = 0u64;
        let scanned = scanner.scan_until(
            buf,
            i32::MAX as usize,
            |t| {
                t == b'G'
                    || match inject.get() {
                        Inject::Separate(_) => true,
                        Inject::Appended if t == b'T' => true,
                        _ => false,
                    }
                    || if secondary.is_some() {
                        outcome::wanted(t, with_rows.get())
                    } else {
                        t == b::READY_FOR_QUERY || t == b::ERROR_RESPONSE
                    }
            },
            |t, body| {
                match inject.get() {
                    Inject::Separate(_) => {
                        own.set(true);
                        return Ok(false);
                    }
                    Inject::Appended if t == b'T' && is_lsn_column(body) => {
                        own.set(true);
                        return Ok(false);
                    }
                    _ => {}
                }
                fresh.set(false);
                if t == b::ERROR_RESPONSE {
                    errors += 1;
                }
                if t == b'G' {
                    copy_started = true;
                }
                let done = match secondary {
                    Some(_) => collector.message(t, body),
                    None => None,
                };
                if t == b::READY_FOR_QUERY {
                    status = body.first().copied().unwrap_or(b'I');
                    // One ReadyForQuery answers the front unit, and with it the Syncs the
                    // server ignored during a COPY.
                    let mut queue = flow.queue.lock().expect("lock poisoned");
                    let mut front = queue.pop_front();
                    ready += 1;
                    while copy_started && front.as_ref().is_some_and(|p| p.maybe_ignored) {
                        match queue.pop_front() {
                            Some(next) => {
                                ready += 1;
                                let dual = front.as_ref().is_some_and(|p| p.dual) || next.dual;
                                front = Some(Pending { dual, ..next });
                            }
                            None => break,
                        }
                    }
                    drop(queue);
                    copy_started = false;
                    if let Some(p) = &front {
                        m.statement_duration.record(p.sent.elapsed().as_secs_f64());
                    }
                    if let Some(mut p) = front {
                        // Commits acknowledged before this answer, then this one's place.
                        let seen = shared.order.acks();
                        let ticket = p.flight.take().and_then(|f| f.answered(status == b'I'));
                        if let (Some(sec), Some(mut o)) = (secondary, done) {
                            if p.dual {
                                o.elapsed = p.sent.elapsed();
                                o.seen = seen;
                                sec.outcome(o, ticket);
                            }
                        }
                    }
                    collector.begin(status);
                    let (dual, shadow, inj) = front_kind();
                    with_rows.set(secondary.is_some() && dual);
                    collector.keep_rows(shadow);
                    inject.set(inj);
                    fresh.set(true);
                }
                Ok(true)
            },
        );
        let n = match scanned {
            Ok(n) => n,
            Err(_) => return End::BackendGone,
        };
        if n == 0 && !own.get() {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(READ_CHUNK);
            }
            match reader.read_buf(buf).await {
                Ok(0) | Err(_) => return End::BackendGone,
                Ok(n) => m.bytes_out.increment(n as u64),
            }
            continue;
        }
        if n > 0 {
            let chunk = buf.split_to(n);
            if !flow.client_gone.load(Ordering::Acquire) {
                flow.client_clean.store(false, Ordering::Release);
                if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                    flow.client_gone.store(true, Ordering::Release);
                    if secondary.is_none() {
                        return End::ClientGone;
                    }
                }
                if scanner.at_boundary() {
                    flow.client_clean.store(true, Ordering::Release);
                }
            }
        }
        if errors > 0 {
            m.server_errors.increment(errors);
        }
        if ready > 0 {
            // State changes only once the client has the bytes, so a drain that sees the
            // session idle cannot cut off a reply.
            flow.tx_status.store(status, Ordering::Release);
            let _ = flow
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                    Some(p.saturating_sub(ready))
                });
            if flow.draining.load(Ordering::Acquire) {
                flow.idle.notify_one();
            }
            if flow.idle() {
                flow.release(shared);
            }
        }
        if own.replace(false) {
            if let Err(end) = take_own_answer(reader, writer, buf, flow, shared, inject.get()).await
            {
                return end;
            }
            fresh.set(true);
        }
    }
}

/// Whether a RowDescription is the appended statement's (one column named for it).
fn is_lsn_column(body: &[u8]) -> bool {
    body.len() > 2 + LSN_COLUMN.len()
        && body[..2] == [0, 1]
        && body[2..2 + LSN_COLUMN.len()] == *LSN_COLUMN
}

/// The WAL position in a DataRow of one text column.
fn lsn_of(body: &[u8]) -> Option<u64> {
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let value = body.get(6..6 + usize::try_from(len).ok()?)?;
    crate::order::parse_lsn(value)
}

/// Take the answer to the proxy's own query out of the stream (it never reaches the client),
/// noting the WAL position it carries. A notice, notification or parameter change among it
/// still goes to the client.
async fn take_own_answer(
    reader: &mut Reader,
    writer: &mut Writer,
    buf: &mut BytesMut,
    flow: &Flow,
    shared: &Shared,
    inject: Inject,
) -> Result<(), End> {
    let flight = match inject {
        Inject::Separate(id) => Some(id),
        _ => flow
            .queue
            .lock()
            .expect("lock poisoned")
            .front()
            .and_then(|p| p.flight.as_ref().map(|f| f.id())),
    };
    loop {
        let h = loop {
            match protocol::header(buf, i32::MAX as usize) {
                Ok(Some(h)) if buf.len() >= h.frame_len => break h,
                Ok(_) => {
                    if buf.capacity() - buf.len() < 4096 {
                        buf.reserve(READ_CHUNK);
                    }
                    match reader.read_buf(buf).await {
                        Ok(0) | Err(_) => return Err(End::BackendGone),
                        Ok(_) => {}
                    }
                }
                Err(_) => return Err(End::BackendGone),
            }
        };
        let frame = buf.split_to(h.frame_len);
        let body = &frame[5..];
        match h.tag {
            b'A' | b'N' | b'S' if !flow.client_gone.load(Ordering::Acquire) => {
                let _ = writer.write_all(&frame).await;
                let _ = writer.flush().await;
            }
            b'D' => {
                if let (Some(id), Some(lsn)) = (flight, lsn_of(body)) {
                    shared.order.key(id, lsn);
                }
            }
            b::READY_FOR_QUERY if matches!(inject, Inject::Separate(_)) => {
                flow.queue.lock().expect("lock poisoned").pop_front();
                return Ok(());
            }
            b::COMMAND_COMPLETE if inject == Inject::Appended => return Ok(()),
            b::ERROR_RESPONSE if inject == Inject::Appended => {
                // The proxy's statement failed after the client's: the client must see why
                // its transaction did not commit.
                let _ = writer.write_all(&frame).await;
                return Ok(());
            }
            _ => {}
        }
    }
}
