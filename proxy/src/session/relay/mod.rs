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

use crate::config::CommitOrderMode;
use crate::dual::classify::TxControl;
use crate::dual::copytrack::CopyTracker;
use crate::dual::order::Flight;
use crate::dual::outcome::{self, Collector};
use crate::dual::unit::{Builder, Item};
use crate::session::secondary::Secondary;
use crate::session::shared::Shared;
use crate::wire::protocol::{self, backend as b, frontend as f, FrameError, Scanner};
use crate::wire::tls::{Reader, Writer};

mod downstream;
mod upstream;

use downstream::backend_to_client;
use upstream::client_to_backend;

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
    /// Commits the primary had acknowledged when the unit was sent.
    acks: u64,
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
            acks: 0,
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
    crate::dual::order::parse_lsn(value)
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
