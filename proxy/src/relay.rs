//! The relay between a client and its backend session: frames are forwarded as the bytes they
//! arrived as, in batches, and decoded only where the proxy needs to know something
//! (ReadyForQuery for transaction state, ErrorResponse for metrics).
//!
//! The two directions run concurrently so that neither can block the other: a client that
//! pipelines many queries without reading, or a backend streaming a large result while the
//! client is still sending, behave exactly as they would with a direct connection.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::protocol::{self, backend as b, frontend as f, FrameError, Scanner};
use crate::server::Shared;
use crate::tls::{Reader, Writer};

/// Read size for each direction.
const READ_CHUNK: usize = 64 * 1024;

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
}

/// The four halves of a session.
pub struct Ends<'a> {
    pub client_reader: &'a mut Reader,
    pub client_writer: &'a mut Writer,
    pub backend_reader: &'a mut Reader,
    pub backend_writer: &'a mut Writer,
}

/// Session state shared by the two directions.
pub struct Flow {
    /// Transaction status of the last ReadyForQuery: `I`, `T` or `E`.
    tx_status: AtomicU8,
    /// Queries and Syncs sent whose ReadyForQuery has not come back.
    pending: AtomicUsize,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: AtomicBool,
    /// Whether everything written to the client ends on a message boundary.
    client_clean: AtomicBool,
    /// When each pending query or Sync was sent, for the latency histogram.
    started: Mutex<VecDeque<Instant>>,
    /// Set when the proxy wants the session to end at its next idle point.
    draining: AtomicBool,
    idle: Notify,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            tx_status: AtomicU8::new(b'I'),
            pending: AtomicUsize::new(0),
            unsynced: AtomicBool::new(false),
            client_clean: AtomicBool::new(true),
            started: Mutex::new(VecDeque::new()),
            draining: AtomicBool::new(false),
            idle: Notify::new(),
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
}

/// Relay until one side ends; returns why.
pub async fn run(
    ends: Ends<'_>,
    client_buf: BytesMut,
    backend_buf: BytesMut,
    flow: &Flow,
    shared: &Shared,
) -> End {
    let Ends {
        client_reader,
        client_writer,
        backend_reader,
        backend_writer,
    } = ends;
    let up = client_to_backend(client_reader, backend_writer, client_buf, flow, shared);
    let down = backend_to_client(backend_reader, client_writer, backend_buf, flow, shared);
    tokio::select! {
        end = up => end,
        end = down => end,
    }
}

async fn client_to_backend(
    reader: &mut Reader,
    writer: &mut Writer,
    mut buf: BytesMut,
    flow: &Flow,
    shared: &Shared,
) -> End {
    let max = shared.settings().max_message_bytes;
    let m = &shared.metrics;
    // Created once: polling a fresh `cancelled()` per message would register and unregister a
    // waiter on a token every session shares.
    let graceful = shared.graceful.cancelled();
    let kill = shared.kill.cancelled();
    tokio::pin!(graceful, kill);
    let mut graceful_seen = false;
    loop {
        if flow.draining.load(Ordering::Acquire) && flow.idle() {
            return End::Shutdown;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        let draining = flow.draining.load(Ordering::Acquire);
        let read = tokio::select! {
            biased;
            _ = &mut kill => return End::Shutdown,
            _ = &mut graceful, if !graceful_seen => {
                graceful_seen = true;
                flow.draining.store(true, Ordering::Release);
                continue;
            }
            _ = flow.idle.notified(), if draining => continue,
            r = reader.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => return End::ClientGone,
            Ok(n) => m.bytes_in.increment(n as u64),
        }
        let mut pos = 0;
        let mut terminate = false;
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
            match h.tag {
                f::QUERY | f::FUNCTION_CALL => {
                    if h.tag == f::QUERY {
                        m.statements_simple.increment(1);
                    }
                    flow.started
                        .lock()
                        .expect("lock poisoned")
                        .push_back(Instant::now());
                    flow.pending.fetch_add(1, Ordering::AcqRel);
                }
                f::SYNC => {
                    flow.started
                        .lock()
                        .expect("lock poisoned")
                        .push_back(Instant::now());
                    flow.pending.fetch_add(1, Ordering::AcqRel);
                    flow.unsynced.store(false, Ordering::Release);
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
            let chunk = buf.split_to(pos);
            if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                return End::BackendGone;
            }
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
    mut buf: BytesMut,
    flow: &Flow,
    shared: &Shared,
) -> End {
    let m = &shared.metrics;
    let mut scanner = Scanner::default();
    loop {
        let mut ready = 0usize;
        let mut last_status = None;
        let mut errors = 0u64;
        let n = match scanner.scan(
            &buf,
            i32::MAX as usize,
            |t| t == b::READY_FOR_QUERY || t == b::ERROR_RESPONSE,
            |t, body| {
                if t == b::READY_FOR_QUERY {
                    ready += 1;
                    last_status = body.first().copied();
                } else {
                    errors += 1;
                }
                Ok(())
            },
        ) {
            Ok(n) => n,
            Err(_) => return End::BackendGone,
        };
        if n == 0 {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(READ_CHUNK);
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return End::BackendGone,
                Ok(n) => m.bytes_out.increment(n as u64),
            }
            continue;
        }
        flow.client_clean.store(false, Ordering::Release);
        let chunk = buf.split_to(n);
        if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
            return End::ClientGone;
        }
        if scanner.at_boundary() {
            flow.client_clean.store(true, Ordering::Release);
        }
        if errors > 0 {
            m.server_errors.increment(errors);
        }
        if ready > 0 {
            // State changes only once the client has the bytes, so a drain that sees the
            // session idle cannot cut off a reply.
            let now = Instant::now();
            {
                let mut started = flow.started.lock().expect("lock poisoned");
                for _ in 0..ready {
                    if let Some(t) = started.pop_front() {
                        m.statement_duration
                            .record(now.duration_since(t).as_secs_f64());
                    }
                }
            }
            if let Some(s) = last_status {
                flow.tx_status.store(s, Ordering::Release);
            }
            let _ = flow
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                    Some(p.saturating_sub(ready))
                });
            if flow.draining.load(Ordering::Acquire) {
                flow.idle.notify_one();
            }
        }
    }
}
