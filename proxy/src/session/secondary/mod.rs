//! A session's secondary: its own backend session on the secondary database that replays the
//! client's writes in the client's order, each unit only once the primary has answered it.
//!
//! - A unit the primary failed outside a transaction is not replayed.
//! - A COMMIT the primary turned into a rollback (or failed) becomes ROLLBACK here, so the
//!   secondary commits a transaction only after the primary did.
//! - COPY data streams as it arrives; the CopyDone waits for the primary's answer.
//! - When the secondary fails a unit, or is unreachable, the unit (or the whole transaction it
//!   belonged to, once the primary committed it) goes to the journal, and the proxy detaches
//!   the secondary until the journal is replayed.
//! - Command tags and returned rows are compared; a difference is a divergence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::config::{Backend, OnLag};
use crate::dual::classify::TxControl;
use crate::dual::journal::{Record, RecordKind};
use crate::dual::marker::Marker;
use crate::dual::order::Ticket;
use crate::dual::outcome::{read_outcome, session_bound_error, Collector, Outcome, ResultKind};
use crate::dual::unit::{Item, Step, Unit};
use crate::session::shared::Shared;
use crate::wire::backend::{self, Conn};
use crate::wire::protocol::{self, frontend as f};
use crate::wire::read::{read_message, MessageError};

mod apply;
mod commit;
mod connect;
mod copy;
mod io;
mod record;
mod sample;
mod send;

use io::*;

/// Who the session is, for the secondary login and journal records.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub params: Vec<(String, String)>,
}

struct Queued {
    item: Item,
    _permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

/// The session's side of its secondary: a bounded queue of items and the primary's outcomes.
pub struct Secondary {
    items: mpsc::UnboundedSender<Queued>,
    swaps: mpsc::UnboundedSender<SwapRequest>,
    outcomes: mpsc::UnboundedSender<Answer>,
    lag: Arc<Semaphore>,
    max_lag: usize,
    on_lag: OnLag,
    lag_detached: Arc<AtomicBool>,
    queued_bytes: Arc<AtomicU64>,
    dual_queue: Arc<Shared>,
    /// `dualwrite_secondary_lag_bytes`, looked up once.
    lag_gauge: metrics::Gauge,
    session: u64,
}

impl Secondary {
    /// Start the worker for one client session.
    pub fn spawn(shared: Arc<Shared>, backend: Backend, info: SessionInfo) -> Secondary {
        let settings = shared.settings();
        let (items_tx, items_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (swap_tx, swap_rx) = mpsc::unbounded_channel();
        let lag = Arc::new(Semaphore::new(settings.max_lag_bytes));
        let lag_detached = Arc::new(AtomicBool::new(false));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let session = info.id;
        let marker_key = shared.markers.key(info.id);
        let worker = Worker {
            backoff: settings.reconnect_backoff,
            shared,
            backend,
            info,
            conn: None,
            statements: HashMap::new(),
            sec_status: b'I',
            txn: Vec::new(),
            txn_outcomes: Vec::new(),
            sent: 0,
            txn_failed: None,
            txn_incomplete: None,
            txn_no_ahead: false,
            prelude: Vec::new(),
            outcomes: out_rx,
            lag_detached: lag_detached.clone(),
            next_connect: Instant::now(),
            copy: None,
            queued_bytes: queued_bytes.clone(),
            side_conn: None,
            lane: None,
            session_state: false,
            unsettled: Arc::new(Unsettled::default()),
            shared_answer: None,
            lag_gauge: metrics::gauge!("dualwrite_secondary_lag_bytes"),
            marker_key,
            marker_seq: 0,
            marking: None,
            kept_in_doubt: false,
        };
        let dual_queue = worker.shared.clone();
        tokio::spawn(worker.run(items_rx, swap_rx));
        Secondary {
            swaps: swap_tx,
            dual_queue,
            items: items_tx,
            outcomes: out_tx,
            lag,
            max_lag: settings.max_lag_bytes,
            on_lag: settings.on_lag,
            lag_detached,
            queued_bytes,
            lag_gauge: metrics::gauge!("dualwrite_secondary_lag_bytes"),
            session,
        }
    }

    /// Queue an item. At the lag bound the caller waits (backpressure), or with
    /// `on_lag = "journal"` the session's secondary is detached and its writes journaled.
    pub async fn send(&self, item: Item) {
        let bytes = match &item {
            Item::Unit(u) => u.bytes,
            Item::CopyData(b) | Item::CopyEnd(b) => b.len(),
        };
        let want = bytes.clamp(1, self.max_lag) as u32;
        let permit = match self.on_lag {
            // Shadow samples are bounded by the shadow queue, never by the lag bound: they
            // must not hold the client.
            _ if matches!(&item, Item::Unit(u) if u.shadow) => None,
            OnLag::Backpressure => self.lag.clone().acquire_many_owned(want).await.ok(),
            OnLag::Journal => match self.lag.clone().try_acquire_many_owned(want) {
                Ok(p) => Some(p),
                Err(_) => {
                    if !self.lag_detached.swap(true, Ordering::AcqRel) {
                        warn!("secondary lag bound reached: journaling this session's writes");
                    }
                    None
                }
            },
        };
        self.queued_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.dual_queue.dual.queue_add();
        self.lag_gauge.increment(bytes as f64);
        let _ = self.items.send(Queued {
            item,
            _permit: permit,
            bytes,
        });
    }

    /// Give the worker `conn` (the primary's session, which becomes the secondary's) and take
    /// its secondary session (which becomes the primary's). `statements` are the named
    /// statements `conn` has. On failure `conn` comes back with the reason.
    pub async fn swap(
        &self,
        conn: Conn,
        backend: Backend,
        statements: HashMap<String, u64>,
    ) -> Result<(Conn, Backend), SwapError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Err(e) = self.swaps.send(SwapRequest {
            conn,
            backend,
            statements,
            reply: tx,
        }) {
            return Err(SwapError {
                conn: Some(Box::new(e.0.conn)),
                reason: "the secondary worker has stopped".into(),
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(SwapError {
                conn: None,
                reason: "the secondary worker stopped during the swap".into(),
            })
        })
    }

    /// The client session's id (`SessionInfo::id`).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The primary's answer to the next unit that has secondary steps, with its place in the
    /// commit order when it ended a transaction (or committed on its own).
    pub fn outcome(&self, outcome: Outcome, ticket: Option<Ticket>) {
        let _ = self.outcomes.send((outcome, ticket));
    }
}

/// Exchange of backend sessions at a cutover: the session gives its primary's, the worker
/// gives its secondary's.
struct SwapRequest {
    conn: Conn,
    backend: Backend,
    statements: HashMap<String, u64>,
    reply: tokio::sync::oneshot::Sender<Result<(Conn, Backend), SwapError>>,
}

/// A swap that did not happen; `conn` is the caller's own session back, when it still exists.
pub struct SwapError {
    pub conn: Option<Box<Conn>>,
    pub reason: String,
}

#[derive(Debug)]
struct Lost(String);

/// Why the secondary did not apply a transaction's units.
struct TxnFailure {
    reason: String,
    /// The connection was lost while the batch holding the commit ran.
    in_doubt: bool,
    /// The statement that failed (none when the connection was lost).
    statement: Option<String>,
    /// Only the commit marker failed (the login may not write it): the transaction can run
    /// again unmarked.
    marker_failed: bool,
}

/// The primary's answer to a unit, and the unit's place in the commit order.
type Answer = (Outcome, Option<Ticket>);

struct CopyState {
    unit: Unit,
    live: bool,
    extended: bool,
    failure: Option<String>,
    data: Vec<Bytes>,
    data_bytes: usize,
}

/// Bytes of a transaction's units sent to the secondary in one write before their answers are
/// read (a larger transaction goes in several batches: the server's answers must not fill the
/// socket while the proxy is still writing).
const BATCH_LIMIT: usize = 1 << 20;

/// How long a transaction that holds statements on the secondary ahead of its commit waits
/// for an earlier commit before it gives way: it rolls back what it ran there (its locks
/// could be what the earlier one waits for) and runs again whole at its turn.
const GIVE_WAY: Duration = Duration::from_secs(1);

/// A wait in the commit order longer than this is logged.
const ORDER_WAIT_REPORT: Duration = Duration::from_secs(10);

/// COPY data kept for the journal in case the secondary fails; past this, the record says
/// which table needs a re-backfill instead.
const COPY_JOURNAL_LIMIT: usize = 64 * 1024 * 1024;

struct Worker {
    shared: Arc<Shared>,
    backend: Backend,
    info: SessionInfo,
    conn: Option<Conn>,
    /// Statements the secondary has: name -> generation.
    statements: HashMap<String, u64>,
    sec_status: u8,
    /// Units of the current transaction (COPY units with their data), for applying it at its
    /// turn in the commit order, re-running it, or journaling it whole.
    txn: Vec<Unit>,
    /// The primary's outcomes of `txn`, for comparing results.
    txn_outcomes: Vec<Outcome>,
    /// How many units of `txn` the secondary's open transaction has run already (ahead of the
    /// commit: for a shadow read or a COPY inside the transaction).
    sent: usize,
    /// The secondary's open transaction failed while running ahead (an error, a lost
    /// connection): it is rolled back and run whole again at its turn.
    txn_failed: Option<String>,
    /// A unit of the transaction cannot be run again (a COPY too large to keep): why.
    txn_incomplete: Option<String>,
    /// The transaction gave way once (see [`GIVE_WAY`]): it no longer runs ahead.
    txn_no_ahead: bool,
    prelude: Vec<String>,
    outcomes: mpsc::UnboundedReceiver<Answer>,
    lag_detached: Arc<AtomicBool>,
    backoff: Duration,
    next_connect: Instant,
    copy: Option<CopyState>,
    queued_bytes: Arc<AtomicU64>,
    /// A separate secondary session for shadow reads the session's own can't run, with the
    /// statements it has.
    side_conn: Option<(Conn, HashMap<String, u64>)>,
    /// The login's shared session for shadow reads, once used (see `lane`).
    lane: Option<Arc<crate::shadow::lane::Lane>>,
    /// The session sent something that changes session state (SET, temporary table, ...):
    /// its reads run in its own secondary session, never on the shared one.
    session_state: bool,
    /// Samples handed to the shared session and not yet answered.
    unsettled: Arc<Unsettled>,
    /// The primary's answer to a batch whose writes and sampled reads were split into two
    /// units, kept for the second (without its place in the commit order).
    shared_answer: Option<Outcome>,
    lag_gauge: metrics::Gauge,
    /// This session's commit-marker key (see `marker`) and the number of its last marked unit.
    marker_key: String,
    marker_seq: u64,
    /// The current secondary connection's login writes commit markers (`None`: not known
    /// yet, the side could not tell when asked).
    marking: Option<bool>,
    /// A unit of this session was journaled in doubt: its marker row must outlive the session.
    kept_in_doubt: bool,
}

/// A session's samples on the shared session not answered yet: counted, so that a session
/// that only reads keeps nothing per sample.
#[derive(Default)]
struct Unsettled {
    count: AtomicUsize,
    /// Notified when `count` falls to zero.
    zero: tokio::sync::Notify,
}

/// One sample counted in [`Unsettled`] until dropped: answered, refused, or never handed over.
struct Settles(Arc<Unsettled>);

impl Unsettled {
    fn add(this: &Arc<Unsettled>) -> Settles {
        this.count.fetch_add(1, Ordering::AcqRel);
        Settles(this.clone())
    }
}

impl Drop for Settles {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

enum Action {
    Skip,
    Apply,
    Rollback,
}

impl Worker {
    async fn run(
        mut self,
        mut items: mpsc::UnboundedReceiver<Queued>,
        mut swaps: mpsc::UnboundedReceiver<SwapRequest>,
    ) {
        loop {
            let q = tokio::select! {
                biased;
                q = items.recv() => match q {
                    Some(q) => q,
                    None => break,
                },
                Some(req) = swaps.recv() => {
                    self.swap(req).await;
                    continue;
                }
            };
            if self.copy.is_some() && matches!(q.item, Item::Unit(_)) {
                // The COPY never started on the primary (it refused it): close ours.
                match self.outcomes.recv().await {
                    Some((o, ticket)) => self.copy_end(Bytes::new(), o, ticket).await,
                    None => self.copy = None,
                }
            }
            if self.unsettled.count.load(Ordering::Acquire) != 0
                && !matches!(&q.item, Item::Unit(u) if u.shadow)
            {
                self.settle_samples().await;
            }
            match q.item {
                Item::Unit(u) if u.shadow => {
                    let answer = if u.shares_answer {
                        self.shared_answer.take()
                    } else {
                        // A read has no place of its own in the commit order: its position
                        // (when it ended a transaction of reads) is settled now.
                        self.outcomes.recv().await.map(|(o, _)| o)
                    };
                    let finished = match answer {
                        Some(o) => self.shadow(u, o).await,
                        None => true,
                    };
                    if finished {
                        self.shared.shadow.done();
                    }
                }
                Item::Unit(u) if u.copy_in => self.copy_start(u).await,
                Item::Unit(u) => match self.outcomes.recv().await {
                    Some((o, ticket)) => {
                        if u.answer_shared {
                            self.shared_answer = Some(o.clone());
                        }
                        self.unit(u, o, ticket).await
                    }
                    None => self.outcome_unknown(&u).await,
                },
                Item::CopyData(d) => self.copy_data(d).await,
                Item::CopyEnd(end) => match self.outcomes.recv().await {
                    Some((o, ticket)) => self.copy_end(end, o, ticket).await,
                    None => {
                        if let Some(c) = self.copy.take() {
                            self.outcome_unknown(&c.unit).await;
                        }
                    }
                },
            }
            self.queued_bytes
                .fetch_sub(q.bytes as u64, Ordering::Relaxed);
            self.shared.dual.queue_done();
            self.lag_gauge.decrement(q.bytes as f64);
        }
        // The session ended. A transaction still open on the primary was rolled back with it.
        if let Some(mut c) = self.conn.take() {
            if self.marking == Some(true)
                && self.marker_seq > 0
                && !self.kept_in_doubt
                && self.sec_status == b'I'
            {
                // Nothing of this session is in doubt: its marker row is not needed any more.
                let q = simple_query(&Marker::forget(&self.marker_key));
                let _ = tokio::time::timeout(FORGET_WAIT, roundtrip(&mut c, &q)).await;
            }
            let _ = c.writer.write_all(b"X\0\0\0\x04").await;
        }
    }

    async fn swap(&mut self, req: SwapRequest) {
        if self.conn.is_none() {
            self.connect().await;
        }
        match self.conn.take() {
            Some(mine) => {
                let old = std::mem::replace(&mut self.backend, req.backend);
                self.lane = None;
                self.conn = Some(req.conn);
                self.statements = req.statements;
                self.sec_status = b'I';
                let _ = req.reply.send(Ok((mine, old)));
                self.marking = self.can_mark().await;
            }
            None => {
                let reason = format!("the {} is unreachable", self.backend.side.name());
                let _ = req.reply.send(Err(SwapError {
                    conn: Some(Box::new(req.conn)),
                    reason,
                }));
            }
        }
    }

    /// Whether units go live to the secondary now (connecting if due).
    async fn live(&mut self, at_boundary: bool) -> bool {
        if !self.shared.dual.attached() || self.lag_detached.load(Ordering::Acquire) {
            return false;
        }
        if self.conn.is_none() && at_boundary && Instant::now() >= self.next_connect {
            self.connect().await;
        }
        self.conn.is_some()
    }

    /// Run one simple query on the session's secondary connection.
    async fn simple(&mut self, sql: &str) -> Result<Outcome, Lost> {
        let mut q = BytesMut::new();
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        protocol::frontend_message(&mut q, f::QUERY, &body);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Lost("not connected".into()))?;
        let o = roundtrip(conn, &q).await?;
        self.sec_status = o.status_after;
        Ok(o)
    }

    fn lost(&mut self, why: &str) {
        warn!(error = why, "secondary session lost");
        metrics::counter!("dualwrite_secondary_failures_total", "kind" => "connection")
            .increment(1);
        if let Some(c) = self.conn.take() {
            if let Some((pid, _)) = c.key {
                self.shared.abandoned.record(
                    self.backend.side,
                    pid,
                    &self.info.user,
                    &self.info.database,
                    c.connected_at,
                );
            }
        }
        self.statements.clear();
        self.sec_status = b'I';
        self.next_connect = Instant::now() + self.backoff;
    }
}
