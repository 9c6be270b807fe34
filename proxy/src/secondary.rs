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

use crate::backend;
use crate::classify::TxControl;
use crate::config::{Backend, OnLag};
use crate::journal::{Record, RecordKind};
use crate::order::Ticket;
use crate::outcome::{Collector, Outcome, ResultKind};
use crate::protocol::{self, frontend as f};
use crate::server::Shared;
use crate::session::{read_message, MessageError};
use crate::tls::{Reader, Writer};
use crate::unit::{Item, Step, Unit};

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

    /// The primary's answer to the next unit that has secondary steps, with its place in the
    /// commit order when it ended a transaction (or committed on its own).
    pub fn outcome(&self, outcome: Outcome, ticket: Option<Ticket>) {
        let _ = self.outcomes.send((outcome, ticket));
    }
}

/// A backend session: its halves, bytes read but not yet consumed, and its cancel key.
pub struct Conn {
    pub reader: Reader,
    pub writer: Writer,
    pub buf: BytesMut,
    pub key: Option<(i32, Bytes)>,
    pub connected_at: Instant,
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
    lane: Option<Arc<crate::lane::Lane>>,
    /// The session sent something that changes session state (SET, temporary table, ...):
    /// its reads run in its own secondary session, never on the shared one.
    session_state: bool,
    /// Samples handed to the shared session and not yet answered.
    unsettled: Arc<Unsettled>,
    /// The primary's answer to a batch whose writes and sampled reads were split into two
    /// units, kept for the second (without its place in the commit order).
    shared_answer: Option<Outcome>,
    lag_gauge: metrics::Gauge,
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

    async fn connect(&mut self) {
        if let Some(conn) = self.open_conn().await {
            self.statements.clear();
            self.sec_status = b'I';
            self.backoff = self.shared.settings().reconnect_backoff;
            self.conn = Some(conn);
            debug!("secondary session open");
        }
    }

    /// A new secondary session as the client's user, with the session's state restored.
    async fn open_conn(&mut self) -> Option<Conn> {
        let settings = self.shared.settings();
        let password = settings
            .users
            .get(&self.info.user)
            .and_then(|u| u.backend_password(self.backend.side).cloned())
            .or_else(|| {
                (self.backend.url.user == self.info.user)
                    .then(|| self.backend.url.password.clone())
                    .flatten()
            });
        match backend::connect(
            &self.backend,
            &self.info.user,
            &self.info.database,
            password.as_ref(),
            &self.info.params,
            settings.connect_timeout,
        )
        .await
        {
            Ok(c) => {
                let mut conn = Conn {
                    reader: c.reader,
                    writer: c.writer,
                    buf: c.leftover,
                    key: c.key,
                    connected_at: c.connected_at,
                };
                for stmt in self.prelude.clone() {
                    let mut q = BytesMut::new();
                    let mut body = stmt.into_bytes();
                    body.push(0);
                    protocol::frontend_message(&mut q, f::QUERY, &body);
                    if let Err(e) = roundtrip(&mut conn, &q).await {
                        warn!(error = %e.0, "secondary: restoring session state failed");
                        return None;
                    }
                }
                Some(conn)
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?self.backoff, "secondary unreachable");
                self.next_connect = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                None
            }
        }
    }

    /// Run a shadow-read sample on the secondary and compare it with the primary's answer.
    /// `false` when the sample was handed to the shared session, which finishes it.
    async fn shadow(&mut self, u: Unit, mut primary: Outcome) -> bool {
        use crate::shadow::Context;
        if !self.shared.dual.attached() || self.lag_detached.load(Ordering::Acquire) {
            self.shared.shadow.skip("detached");
            return true;
        }
        if u.shares_answer && u.results.iter().any(|&i| i >= primary.results.len()) {
            // An error earlier in the batch made the primary skip the sampled reads.
            self.shared.shadow.skip("batch_failed");
            return true;
        }
        if primary
            .error()
            .is_some_and(|(code, _)| code.starts_with("57"))
        {
            // The read was cancelled on the primary (by its client, statement_timeout or a
            // shutdown): it has no answer to compare, and the target need not run it.
            self.shared.shadow.skip("canceled");
            return true;
        }
        if primary
            .error()
            .is_some_and(|(code, _)| session_bound_error(code))
        {
            // The read failed on the primary for a reason of that session's own state (a
            // cached plan that DDL invalidated, a statement or cursor it does not have, its
            // transaction already failed): it never ran to a result there, so nothing the
            // target answers can be compared with it. Drivers expect and handle these.
            self.shared.shadow.skip("primary_session_state");
            return true;
        }
        // A read inside a transaction sees the transaction's writes so far: they run on the
        // secondary ahead of its commit (see `run_ahead`).
        if primary.status_before != b'I'
            && !self.txn.is_empty()
            && !self.run_ahead(primary.seen).await
        {
            self.shared.shadow.skip("transaction_not_ahead");
            return true;
        }
        if self.lane_eligible(&primary) {
            match self.shadow_lane(&u, primary).await {
                Ok(()) => return false,
                Err(p) => primary = p,
            }
        }
        if self.conn.is_none()
            && primary.status_before == b'I'
            && Instant::now() >= self.next_connect
        {
            self.connect().await;
        }
        let own = self.conn.is_some() && self.txn_failed.is_none() && self.sec_status != b'E';
        let mut out = BytesMut::with_capacity(u.bytes + 64);
        let started;
        let answer = if own {
            let in_txn = self.sec_status == b'T';
            if in_txn {
                // Under a savepoint, so that a failing read cannot abort the transaction
                // the client's next writes go to.
                if let Err(Lost(why)) = self.simple("SAVEPOINT _dualwrite_shadow").await {
                    self.lost(&why);
                    self.shared.shadow.skip("unreachable");
                    return true;
                }
            }
            let parsed = self.encode_steps(&u.steps, &mut out);
            let conn = self.conn.as_mut().expect("checked above");
            started = Instant::now();
            let answer = roundtrip_sampled(conn, &out, true).await;
            let elapsed = started.elapsed();
            match answer {
                Ok(o) => {
                    self.sec_status = o.status_after;
                    if o.error().is_some() {
                        for name in parsed {
                            self.statements.remove(&name);
                        }
                        self.statements.remove("");
                    }
                    if in_txn {
                        let end = if o.error().is_some() {
                            "ROLLBACK TO SAVEPOINT _dualwrite_shadow; RELEASE SAVEPOINT _dualwrite_shadow"
                        } else {
                            "RELEASE SAVEPOINT _dualwrite_shadow"
                        };
                        if let Err(Lost(why)) = self.simple(end).await {
                            self.lost(&why);
                        }
                    }
                    let ctx = if in_txn {
                        Context::Transaction
                    } else {
                        Context::Session
                    };
                    Some((o, elapsed, ctx))
                }
                Err(Lost(why)) => {
                    // The read may have been in the client's transaction: the secondary lost
                    // it, and the transaction's later writes are journaled.
                    self.lost(&why);
                    if self.sec_status != b'I' || primary.status_before != b'I' {
                        self.txn_failed
                            .get_or_insert_with(|| format!("secondary connection lost: {why}"));
                    }
                    None
                }
            }
        } else {
            self.shadow_separate(&u).await
        };
        let Some((secondary, elapsed, ctx)) = answer else {
            self.shared.shadow.skip("unreachable");
            return true;
        };
        if stale_on_secondary(&primary, &secondary) {
            self.shared.shadow.skip("secondary_session_state");
            return true;
        }
        let log_params = self.shared.settings().shadow_log_params;
        let params = if log_params {
            crate::journal::describe(&out).join("; ")
        } else {
            String::new()
        };
        self.shared.shadow.record(
            &u.text, &u.results, &primary, &secondary, elapsed, ctx, log_params, &params,
        );
        true
    }

    /// A sample can run on the login's shared session: it is outside any transaction, the
    /// session's earlier writes are applied, and the session has no state of its own.
    fn lane_eligible(&self, primary: &Outcome) -> bool {
        primary.status_before == b'I'
            && self.sec_status == b'I'
            && self.txn.is_empty()
            && self.copy.is_none()
            && self.prelude.is_empty()
            && !self.session_state
    }

    /// Hand a sample to the login's shared session (started on first use), which compares
    /// and records it when its answer comes. `Err(primary)` when there is no shared session
    /// to be had: the sample then runs in the session's own.
    async fn shadow_lane(&mut self, u: &Unit, primary: Outcome) -> Result<(), Outcome> {
        if self.lane.is_none() {
            let key = format!(
                "{:?}\0{}\0{}\0{}\0{:?}",
                self.backend.side,
                self.backend.url.endpoint(),
                self.info.user,
                self.info.database,
                self.info.params
            );
            let lane = match self.shared.lanes.get(&key) {
                Some(lane) => lane,
                None if Instant::now() < self.next_connect => return Err(primary),
                None => match self.open_conn().await {
                    Some(conn) => {
                        let gather = self.shared.settings().shadow_batch_wait;
                        self.shared.lanes.start(key, conn, gather)
                    }
                    None => return Err(primary),
                },
            };
            self.lane = Some(lane);
        }
        let Some(lane) = self.lane.as_ref() else {
            return Err(primary);
        };
        let log_params = self.shared.settings().shadow_log_params;
        let params = if log_params {
            let mut sent = BytesMut::new();
            for step in &u.steps {
                match step {
                    Step::Raw(b) | Step::Parse { parse: b, .. } => sent.extend_from_slice(b),
                    Step::Bind { parse, bind, .. } => {
                        sent.extend_from_slice(parse);
                        sent.extend_from_slice(bind);
                    }
                }
            }
            crate::journal::describe(&sent).join("; ")
        } else {
            String::new()
        };
        let settled = Unsettled::add(&self.unsettled);
        let primary = Arc::new(primary);
        let kept = primary.clone();
        let shared = self.shared.clone();
        let (text, results) = (u.text.clone(), u.results.clone());
        let finish: crate::lane::Finish = Box::new(move |answer| {
            match answer {
                Ok((secondary, _)) if stale_on_secondary(&kept, &secondary) => {
                    shared.shadow.skip("secondary_session_state");
                }
                Ok((secondary, elapsed)) => {
                    shared.shadow.record(
                        &text,
                        &results,
                        &kept,
                        &secondary,
                        elapsed,
                        crate::shadow::Context::Shared,
                        log_params,
                        &params,
                    );
                }
                Err(why) => {
                    debug!(error = %why, "shared shadow session could not run a sample");
                    shared.shadow.skip("unreachable");
                }
            }
            shared.shadow.done();
            drop(settled);
        });
        if lane.submit(u.steps.clone(), finish) {
            return Ok(());
        }
        self.lane = None;
        Err(Arc::try_unwrap(primary).unwrap_or_else(|p| (*p).clone()))
    }

    /// Wait until the samples handed to the shared session have run, so that a later write
    /// cannot reach the secondary before a read that came first.
    async fn settle_samples(&mut self) {
        loop {
            let zero = self.unsettled.zero.notified();
            tokio::pin!(zero);
            zero.as_mut().enable();
            if self.unsettled.count.load(Ordering::Acquire) == 0 {
                return;
            }
            zero.await;
        }
    }

    /// A shadow read on the separate session (opened on first use).
    async fn shadow_separate(
        &mut self,
        u: &Unit,
    ) -> Option<(Outcome, Duration, crate::shadow::Context)> {
        if self.side_conn.is_none() {
            let conn = self.open_conn().await?;
            self.side_conn = Some((conn, HashMap::new()));
        }
        let (mut conn, mut statements) = self.side_conn.take()?;
        let mut out = BytesMut::new();
        for step in &u.steps {
            match step {
                Step::Raw(b) => out.extend_from_slice(b),
                Step::Parse {
                    statement,
                    generation,
                    parse,
                }
                | Step::Bind {
                    statement,
                    generation,
                    parse,
                    ..
                } => {
                    if statements.get(statement) != Some(generation) {
                        if !statement.is_empty() && statements.contains_key(statement) {
                            let mut body = vec![b'S'];
                            body.extend_from_slice(statement.as_bytes());
                            body.push(0);
                            protocol::frontend_message(&mut out, f::CLOSE, &body);
                        }
                        out.extend_from_slice(parse);
                        statements.insert(statement.clone(), *generation);
                    }
                    if let Step::Bind { bind, .. } = step {
                        out.extend_from_slice(bind);
                    }
                }
            }
        }
        let started = Instant::now();
        match roundtrip_sampled(&mut conn, &out, true).await {
            Ok(o) => {
                let elapsed = started.elapsed();
                if o.error().is_some() {
                    statements.clear();
                    // Forget what may not exist; a fresh session next time keeps it simple.
                    let _ = conn.writer.write_all(b"X\0\0\0\x04").await;
                } else {
                    self.side_conn = Some((conn, statements));
                }
                Some((o, elapsed, crate::shadow::Context::Separate))
            }
            Err(_) => None,
        }
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

    /// A unit the primary answered. One that commits on its own is applied at its turn in the
    /// commit order; one inside a transaction is kept until the primary commits the
    /// transaction, which is then applied whole at its turn (see `order`).
    async fn unit(&mut self, u: Unit, o: Outcome, ticket: Option<Ticket>) {
        self.session_state |= u.session_state;
        let before = o.status_before;
        let after = o.status_after;
        let primary_error = o.error().is_some();
        if before == b'I' {
            self.reset_txn();
        }
        let action = if primary_error {
            if after == b'I' && before != b'I' {
                Action::Rollback
            } else {
                Action::Skip
            }
        } else if u.tx == Some(TxControl::Commit) && o.tag(0) != Some("COMMIT") {
            Action::Rollback
        } else if before != b'I'
            && after == b'I'
            && matches!(o.results.last().map(|r| &r.kind), Some(ResultKind::Tag(t)) if t == "ROLLBACK")
        {
            // The client rolled the transaction back: nothing of it is applied or journaled
            // (what the secondary ran of it ahead is rolled back below).
            Action::Rollback
        } else {
            Action::Apply
        };
        self.warn_nondeterministic(&u);
        match action {
            Action::Skip | Action::Rollback => drop(ticket),
            Action::Apply if before == b'I' && after == b'I' => self.autocommit(u, o, ticket).await,
            Action::Apply => {
                self.txn.push(u);
                self.txn_outcomes.push(o);
                if after == b'I' {
                    self.commit(ticket).await;
                }
            }
        }
        if after == b'I' {
            self.reset_txn();
            if self.sec_status != b'I' {
                self.rollback().await;
            }
        }
    }

    fn reset_txn(&mut self) {
        self.txn.clear();
        self.txn_outcomes.clear();
        self.sent = 0;
        self.txn_failed = None;
        self.txn_incomplete = None;
        self.txn_no_ahead = false;
    }

    /// A unit that commits on its own (outside a transaction).
    async fn autocommit(&mut self, u: Unit, o: Outcome, ticket: Option<Ticket>) {
        if !u.effect {
            // Session state or nothing at all: no place in the commit order, never journaled.
            drop(ticket);
            self.session_unit(&u).await;
            return;
        }
        self.turn(ticket.as_ref()).await;
        let shared = self.shared.clone();
        let _gate = shared.dual.gate.read().await;
        if !self.live(true).await {
            let reason = self.detached_reason();
            self.journal_units(std::slice::from_ref(&u), &reason).await;
            return;
        }
        match self.send_unit(&u).await {
            Ok(sec) => match sec.error() {
                Some((code, message)) => {
                    let reason = format!("{code} {message}");
                    self.count_failure("error", &reason, &u.text);
                    self.journal_units(std::slice::from_ref(&u), &reason).await;
                }
                None => {
                    self.applied(&u, &o, &sec).await;
                    self.remember_state(&u);
                }
            },
            Err(Lost(why)) => {
                self.lost(&why);
                // It commits on the secondary: the connection may have died after that commit
                // and before its answer.
                let reason = format!("secondary connection lost: {why}");
                self.journal_in_doubt(std::slice::from_ref(&u), &reason, true)
                    .await;
            }
        }
    }

    /// A unit that changes no data outside a transaction (SET, PREPARE, a statement's Parse):
    /// the secondary's session gets it for what follows, but its failure loses no write, so it
    /// is logged, never journaled, and detaches nothing.
    async fn session_unit(&mut self, u: &Unit) {
        if self.conn.is_none() {
            self.live(true).await;
        }
        if self.conn.is_none() {
            // Restored when the session next connects, and carried by journal records.
            self.remember_state(u);
            return;
        }
        match self.send_unit(u).await {
            Ok(sec) => match sec.error() {
                Some((code, message)) => {
                    metrics::counter!("dualwrite_secondary_failures_total", "kind" => "session")
                        .increment(1);
                    warn!(error = %format!("{code} {message}"), statement = %u.text,
                        "secondary failed a statement that changes no data; not journaled");
                }
                None => self.remember_state(u),
            },
            Err(Lost(why)) => {
                self.lost(&why);
                self.remember_state(u);
            }
        }
    }

    /// Keep a session-state statement (SET, ...) to restore it on a new secondary session and
    /// in journal records.
    fn remember_state(&mut self, u: &Unit) {
        if u.session_state && u.tx.is_none() && self.prelude.len() < 100 {
            if let Some(Step::Raw(q)) = u.steps.first() {
                if q.first() == Some(&f::QUERY) {
                    self.prelude.push(query_text(q));
                }
            }
        }
    }

    /// A statement the primary applied failed on the secondary (`kind`: `error`, or `copy`).
    fn count_failure(&self, kind: &'static str, reason: &str, statement: &str) {
        metrics::counter!("dualwrite_secondary_failures_total", "kind" => kind).increment(1);
        self.shared
            .dual
            .secondary_failures
            .fetch_add(1, Ordering::Relaxed);
        info!(error = %reason, statement = %statement, "secondary failed a statement the primary applied");
    }

    /// The secondary applied `u` as the primary did: compare results, note the tables written.
    async fn applied(&mut self, u: &Unit, primary: &Outcome, secondary: &Outcome) {
        self.compare(u, primary, secondary).await;
        for t in &u.tables {
            self.shared.dual.note_write(t);
        }
    }

    /// Wait for this unit's turn in the commit order. While the secondary holds statements of
    /// this transaction run ahead, give way after [`GIVE_WAY`].
    async fn turn(&mut self, ticket: Option<&Ticket>) {
        let Some(t) = ticket else {
            return;
        };
        if self.sent > 0 && self.sec_status != b'I' {
            if t.turn(Some(GIVE_WAY)).await {
                return;
            }
            self.give_way().await;
        }
        let started = Instant::now();
        while !t.turn(Some(ORDER_WAIT_REPORT)).await {
            warn!(position = ?t.pos(), settled = self.shared.order.settled(), waited = ?started.elapsed(),
                "secondary: a commit waits for earlier commits to be applied");
        }
    }

    /// Roll back what the transaction ran ahead on the secondary (its locks may be what an
    /// earlier commit waits for there); it runs whole at its turn, no longer ahead.
    async fn give_way(&mut self) {
        info!("secondary: a transaction run ahead of its commit gives way to earlier commits");
        metrics::counter!("dualwrite_secondary_gave_way_total").increment(1);
        if self.sec_status != b'I' {
            self.rollback().await;
        }
        self.sent = 0;
        self.txn_failed = None;
        self.txn_no_ahead = true;
    }

    /// Run the transaction's units so far on the secondary ahead of its commit, for something
    /// that needs the transaction open there (a sampled read, a COPY). First every commit the
    /// primary acknowledged up to `seen` must be applied, so what runs ahead sees what the
    /// primary's statements saw. `false` when the transaction can't run ahead (detached,
    /// failed, gave way): the caller does without.
    async fn run_ahead(&mut self, seen: u64) -> bool {
        if self.txn_failed.is_some() || self.txn_no_ahead {
            return false;
        }
        let holding = self.sent > 0 && self.sec_status != b'I';
        if !self
            .shared
            .order
            .acks_settled_to(seen, holding.then_some(GIVE_WAY))
            .await
        {
            self.give_way().await;
            return false;
        }
        if self.sent < self.txn.len() {
            if !self.live(self.sent == 0).await {
                return false;
            }
            if self.send_txn(false).await.is_err() {
                return false;
            }
        }
        self.conn.is_some()
    }

    /// The primary committed the transaction: apply it on the secondary at its turn in the
    /// commit order, or journal it whole.
    async fn commit(&mut self, ticket: Option<Ticket>) {
        if !self.txn.iter().any(|u| u.effect) {
            // Reads, locks, prepared statements, session state: nothing to apply or journal
            // and no place in the order. Session state that outlives the transaction (a SET)
            // still reaches the secondary's session when it can; a failure there is logged.
            drop(ticket);
            if self.txn.iter().any(|u| u.session_state) && self.txn_failed.is_none() {
                if self.conn.is_none() && self.sent == 0 {
                    self.live(true).await;
                }
                if self.conn.is_some() {
                    if let Err(f) = self.send_txn(true).await {
                        warn!(error = %f.reason, "secondary failed a transaction that changes no data; not journaled");
                    }
                }
            }
            return;
        }
        self.turn(ticket.as_ref()).await;
        let shared = self.shared.clone();
        let _gate = shared.dual.gate.read().await;
        if let Some(why) = self.txn_failed.take() {
            // It failed while running ahead, perhaps only for being early: run it whole now.
            debug!(error = %why, "secondary: running a transaction again at its turn");
            if self.sec_status != b'I' {
                self.rollback().await;
            }
            self.sent = 0;
        }
        if !self.live(self.sent == 0).await {
            let reason = self.detached_reason();
            self.journal_txn(&reason, false).await;
            return;
        }
        if self.sent == 0 && self.txn_incomplete.is_some() {
            let reason = "the transaction had to run again on the secondary".to_string();
            self.journal_txn(&reason, false).await;
            return;
        }
        if let Err(f) = self.send_txn(true).await {
            if let Some(statement) = &f.statement {
                self.count_failure("error", &f.reason, statement);
            }
            self.journal_txn(&f.reason, f.in_doubt).await;
        }
    }

    /// Journal the transaction whole; one with a unit too large to keep (a huge COPY) is
    /// recorded as a divergence to re-backfill instead.
    async fn journal_txn(&mut self, reason: &str, in_doubt: bool) {
        let units = std::mem::take(&mut self.txn);
        match self.txn_incomplete.clone() {
            None => self.journal_in_doubt(&units, reason, in_doubt).await,
            Some(why) => {
                let why = format!("{reason}; {why}: re-backfill it");
                self.shared.dual.detach(&why);
                let record = self.record(RecordKind::Divergence, &units, &why);
                self.append(record).await;
            }
        }
        self.txn = units;
    }

    /// Send the transaction's units not sent yet, in batches of at most [`BATCH_LIMIT`]
    /// bytes, and read their answers, comparing results. `ending`: the last unit ends the
    /// transaction (a connection lost during the last batch leaves its commit in doubt). A
    /// failure is also noted in `txn_failed`.
    async fn send_txn(&mut self, ending: bool) -> Result<(), TxnFailure> {
        let txn = std::mem::take(&mut self.txn);
        let outcomes = std::mem::take(&mut self.txn_outcomes);
        let result = self.send_units(&txn, &outcomes, ending).await;
        self.txn = txn;
        self.txn_outcomes = outcomes;
        if let Err(f) = &result {
            self.txn_failed.get_or_insert_with(|| f.reason.clone());
        }
        result
    }

    async fn send_units(
        &mut self,
        txn: &[Unit],
        outcomes: &[Outcome],
        ending: bool,
    ) -> Result<(), TxnFailure> {
        while self.sent < txn.len() {
            let from = self.sent;
            let mut to = from;
            let mut bytes = 0;
            while to < txn.len() && (to == from || bytes + txn[to].bytes <= BATCH_LIMIT) {
                bytes += txn[to].bytes;
                to += 1;
            }
            let last = to == txn.len();
            let mut out = BytesMut::with_capacity(bytes + 64);
            let parsed: Vec<Vec<String>> = txn[from..to]
                .iter()
                .map(|u| self.encode_steps(&u.steps, &mut out))
                .collect();
            let answers = match self.conn.as_mut() {
                Some(conn) => roundtrips(conn, &out, to - from).await,
                None => Err(Lost("not connected".into())),
            };
            let answers = match answers {
                Ok(a) => a,
                Err(Lost(why)) => {
                    self.lost(&why);
                    return Err(TxnFailure {
                        reason: format!("secondary connection lost: {why}"),
                        in_doubt: ending && last,
                        statement: None,
                    });
                }
            };
            let mut failure = None;
            let mut stale: Vec<String> = Vec::new();
            for (i, sec) in answers.iter().enumerate() {
                self.sec_status = sec.status_after;
                if failure.is_some() {
                    // After a failure the server skipped the rest: their statements may not exist.
                    stale.extend(parsed[i].iter().cloned());
                    continue;
                }
                if let Some((code, message)) = sec.error() {
                    stale.extend(parsed[i].iter().cloned());
                    failure = Some((format!("{code} {message}"), txn[from + i].text.clone()));
                } else {
                    self.applied(&txn[from + i], &outcomes[from + i], sec).await;
                }
            }
            self.sent = to;
            if let Some((reason, statement)) = failure {
                if let Err(Lost(why)) = self.forget(stale).await {
                    self.lost(&why);
                }
                return Err(TxnFailure {
                    reason,
                    in_doubt: false,
                    statement: Some(statement),
                });
            }
        }
        Ok(())
    }

    /// Close statements a failed batch parsed (they may or may not exist) and forget them.
    async fn forget(&mut self, names: Vec<String>) -> Result<(), Lost> {
        self.statements.remove("");
        let mut close = BytesMut::new();
        for name in names.iter().filter(|n| !n.is_empty()) {
            let mut body = vec![b'S'];
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            protocol::frontend_message(&mut close, f::CLOSE, &body);
            self.statements.remove(name);
        }
        if close.is_empty() {
            return Ok(());
        }
        protocol::frontend_message(&mut close, f::SYNC, &[]);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Lost("not connected".into()))?;
        self.sec_status = roundtrip(conn, &close).await?.status_after;
        Ok(())
    }

    fn detached_reason(&self) -> String {
        if self.lag_detached.load(Ordering::Acquire) {
            "secondary lag bound reached".into()
        } else if !self.shared.dual.attached() {
            "secondary detached until the journal is replayed".into()
        } else {
            "secondary unreachable".into()
        }
    }

    async fn rollback(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            let mut q = BytesMut::new();
            protocol::frontend_message(&mut q, f::QUERY, b"ROLLBACK\0");
            match roundtrip(conn, &q).await {
                Ok(o) => self.sec_status = o.status_after,
                Err(Lost(why)) => self.lost(&why),
            }
        }
    }

    /// Append a unit's steps to `out`, preparing first each statement the secondary lacks;
    /// returns the statements prepared here.
    fn encode_steps(&mut self, steps: &[Step], out: &mut BytesMut) -> Vec<String> {
        let mut parsed = Vec::new();
        for step in steps {
            let (statement, generation, parse, bind) = match step {
                Step::Raw(b) => {
                    out.extend_from_slice(b);
                    continue;
                }
                Step::Parse {
                    statement,
                    generation,
                    parse,
                } => (statement, generation, parse, None),
                Step::Bind {
                    statement,
                    generation,
                    parse,
                    bind,
                } => (statement, generation, parse, Some(bind)),
            };
            if self.statements.get(statement) != Some(generation) {
                out.extend_from_slice(parse);
                self.statements.insert(statement.clone(), *generation);
                parsed.push(statement.clone());
            }
            if let Some(bind) = bind {
                out.extend_from_slice(bind);
            }
        }
        parsed
    }

    /// Send a unit's steps and read the secondary's answer.
    async fn send_unit(&mut self, u: &Unit) -> Result<Outcome, Lost> {
        let mut out = BytesMut::with_capacity(u.bytes + 64);
        let parsed = self.encode_steps(&u.steps, &mut out);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Lost("not connected".into()))?;
        let outcome = roundtrip(conn, &out).await?;
        self.sec_status = outcome.status_after;
        if outcome.error().is_some() {
            // Statements parsed in a failed batch may not exist: forget (and close) them.
            self.forget(parsed).await?;
        }
        Ok(outcome)
    }

    async fn compare(&mut self, u: &Unit, primary: &Outcome, secondary: &Outcome) {
        for (i, &pi) in u.results.iter().enumerate() {
            let (Some(p), Some(s)) = (primary.results.get(pi), secondary.results.get(i)) else {
                continue;
            };
            if !p.same_write(s) {
                self.shared.dual.divergences.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dualwrite_divergences_total").increment(1);
                let (pd, sd) = (p.describe(), s.describe());
                warn!(primary = %pd, secondary = %sd, statement = %u.text, "write divergence");
                let record = self.record(
                    RecordKind::Divergence,
                    std::slice::from_ref(u),
                    "results differ",
                );
                let record = Record {
                    primary_result: Some(pd),
                    secondary_result: Some(sd),
                    ..record
                };
                self.append(record).await;
            }
        }
    }

    fn warn_nondeterministic(&self, u: &Unit) {
        if u.nondeterministic.is_empty() {
            return;
        }
        for func in &u.nondeterministic {
            metrics::counter!("dualwrite_nondeterministic_statements_total", "function" => *func)
                .increment(1);
        }
        if self.shared.dual.first_sighting(&u.text) {
            warn!(functions = ?u.nondeterministic, statement = %u.text,
                "write calls non-deterministic functions: each database computes its own value");
        }
    }

    /// A unit whose primary answer never came (the primary connection ended first): it may or
    /// may not have been applied there, so it is reported, not replayed.
    async fn outcome_unknown(&mut self, u: &Unit) {
        let record = self.record(
            RecordKind::Divergence,
            std::slice::from_ref(u),
            "the primary's answer was lost (connection ended); not replayed",
        );
        self.append(record).await;
    }

    fn record(&self, kind: RecordKind, units: &[Unit], error: &str) -> Record {
        let mut messages = Vec::new();
        let mut parsed = std::collections::HashSet::new();
        let mut tables = Vec::new();
        let mut wrap = true;
        for u in units {
            // Transaction control around the journaled statements is the replayer's job.
            if units.len() > 1 && matches!(u.tx, Some(TxControl::Begin) | Some(TxControl::Commit)) {
                continue;
            }
            wrap &= u.wrap_ok;
            for t in &u.tables {
                if !tables.contains(t) {
                    tables.push(t.clone());
                }
            }
            for step in &u.steps {
                match step {
                    Step::Raw(b) => messages.extend_from_slice(b),
                    Step::Parse {
                        statement,
                        generation,
                        parse,
                    } => {
                        if parsed.insert((statement.clone(), *generation)) {
                            messages.extend_from_slice(parse);
                        }
                    }
                    Step::Bind {
                        statement,
                        generation,
                        parse,
                        bind,
                    } => {
                        if statement.is_empty() || parsed.insert((statement.clone(), *generation)) {
                            messages.extend_from_slice(parse);
                        }
                        messages.extend_from_slice(bind);
                    }
                }
            }
        }
        Record {
            seq: 0,
            time_micros: 0,
            kind,
            session: self.info.id,
            user: self.info.user.clone(),
            database: self.info.database.clone(),
            prelude: self.prelude.clone(),
            messages,
            wrap,
            in_doubt: false,
            side: Some(self.backend.side.name().to_string()),
            tables,
            error: error.to_string(),
            primary_result: None,
            secondary_result: None,
        }
    }

    async fn journal_units(&mut self, units: &[Unit], reason: &str) {
        self.journal_in_doubt(units, reason, false).await
    }

    /// Journal units the secondary missed; `in_doubt` when it may have applied them after all.
    async fn journal_in_doubt(&mut self, units: &[Unit], reason: &str, in_doubt: bool) {
        // Statements only prepared, never executed, change nothing: not worth a record.
        let prepare_only = |u: &Unit| {
            u.steps.iter().all(|s| match s {
                Step::Parse { .. } => true,
                Step::Raw(b) => b.first() == Some(&f::SYNC),
                Step::Bind { .. } => false,
            })
        };
        if units.iter().all(prepare_only) {
            return;
        }
        let mut record = self.record(RecordKind::Missed, units, reason);
        if record.messages.is_empty() {
            return;
        }
        if in_doubt {
            metrics::counter!("dualwrite_journal_in_doubt_total").increment(1);
            warn!(statement = %units.last().map(|u| u.text.as_str()).unwrap_or(""),
                "secondary connection lost before the answer to a commit: journaled as in doubt");
            record.in_doubt = true;
        }
        self.shared.dual.detach(reason);
        self.append(record).await;
    }

    async fn append(&mut self, record: Record) {
        append(self.shared.clone(), record).await
    }

    async fn copy_start(&mut self, u: Unit) {
        let extended =
            !matches!(u.steps.first(), Some(Step::Raw(b)) if b.first() == Some(&f::QUERY));
        // The COPY runs on the secondary as its data arrives, ahead of its commit: first every
        // commit the primary acknowledged before it began is applied there.
        let seen = u.seen;
        let live = if !self.txn.is_empty() {
            self.run_ahead(seen).await
        } else {
            self.shared.order.acks_settled_to(seen, None).await;
            self.live(true).await
        };
        let mut state = CopyState {
            unit: u,
            live: false,
            extended,
            failure: None,
            data: Vec::new(),
            data_bytes: 0,
        };
        if live {
            let mut out = BytesMut::new();
            let steps = std::mem::take(&mut state.unit.steps);
            self.encode_steps(&steps, &mut out);
            state.unit.steps = steps;
            if extended {
                protocol::frontend_message(&mut out, f::FLUSH, &[]);
            }
            let conn = self.conn.as_mut().expect("live() checked the connection");
            let started = async {
                conn.writer
                    .write_all(&out)
                    .await
                    .map_err(|e| Lost(e.to_string()))?;
                let mut c = Collector::default();
                c.begin(b'I');
                loop {
                    let (tag, body) = read_message(&mut conn.reader, &mut conn.buf, 1 << 30)
                        .await
                        .map_err(|e| Lost(e.to_string()))?;
                    if tag == b'G' {
                        return Ok(None);
                    }
                    if let Some(o) = c.message(tag, &body) {
                        return Ok(Some(o));
                    }
                    if tag == b'E' && extended {
                        // The error ends the batch; ask for its ReadyForQuery.
                        let mut s = BytesMut::new();
                        protocol::frontend_message(&mut s, f::SYNC, &[]);
                        conn.writer
                            .write_all(&s)
                            .await
                            .map_err(|e| Lost(e.to_string()))?;
                    }
                }
            };
            match started.await {
                Ok(None) => state.live = true,
                Ok(Some(o)) => {
                    self.sec_status = o.status_after;
                    state.failure = Some(
                        o.error()
                            .map(|(c, m)| format!("{c} {m}"))
                            .unwrap_or_else(|| "COPY did not start".into()),
                    );
                }
                Err(Lost(why)) => {
                    self.lost(&why);
                    state.failure = Some(format!("secondary connection lost: {why}"));
                }
            }
        }
        self.copy = Some(state);
    }

    async fn copy_data(&mut self, d: Bytes) {
        let Some(state) = self.copy.as_mut() else {
            return;
        };
        if state.data_bytes <= COPY_JOURNAL_LIMIT {
            state.data_bytes += d.len();
            state.data.push(d.clone());
        }
        if state.live {
            if let Some(conn) = self.conn.as_mut() {
                if let Err(e) = conn.writer.write_all(&d).await {
                    state.live = false;
                    state.failure = Some(format!("secondary connection lost: {e}"));
                    self.lost(&e.to_string());
                }
            }
        }
    }

    /// End the COPY streaming on the secondary: CopyDone when `done`, else CopyFail (the
    /// primary's COPY failed, or this one gives way). Reads its answer.
    async fn finish_copy(
        &mut self,
        state: &mut CopyState,
        end: &Bytes,
        done: bool,
    ) -> Result<Outcome, Lost> {
        state.live = false;
        let mut out = BytesMut::new();
        if done {
            out.extend_from_slice(end);
        } else {
            protocol::frontend_message(&mut out, f::COPY_FAIL, b"the primary's COPY failed\0");
        }
        if state.extended {
            protocol::frontend_message(&mut out, f::SYNC, &[]);
        }
        let answer = match self.conn.as_mut() {
            Some(conn) => roundtrip(conn, &out).await,
            None => Err(Lost("not connected".into())),
        };
        match answer {
            Ok(sec) => {
                self.sec_status = sec.status_after;
                Ok(sec)
            }
            Err(Lost(why)) => {
                self.lost(&why);
                Err(Lost(why))
            }
        }
    }

    async fn copy_end(&mut self, end: Bytes, o: Outcome, ticket: Option<Ticket>) {
        let Some(mut state) = self.copy.take() else {
            return;
        };
        let (before, after) = (o.status_before, o.status_after);
        if o.error().is_some() {
            // Nothing of it is applied: the COPY is ended on the secondary too.
            drop(ticket);
            if state.live {
                let _ = self.finish_copy(&mut state, &end, false).await;
            }
            if after == b'I' && self.sec_status != b'I' {
                self.rollback().await;
            }
            return;
        }
        // The whole unit, data included, to run again or journal, when it is not too large.
        let complete = state.data_bytes <= COPY_JOURNAL_LIMIT;
        let mut whole = state.unit.clone();
        if complete {
            for d in state.data.drain(..) {
                whole.steps.push(Step::Raw(d));
            }
            whole.steps.push(Step::Raw(end.clone()));
            if state.extended {
                let mut s = BytesMut::new();
                protocol::frontend_message(&mut s, f::SYNC, &[]);
                whole.steps.push(Step::Raw(s.freeze()));
            }
        }
        let too_large = format!(
            "COPY of {} bytes into {:?} is too large to journal",
            state.data_bytes, state.unit.tables
        );
        if before != b'I' || after != b'I' {
            // Inside a transaction: it commits with the transaction, at its turn.
            if !complete {
                self.txn_incomplete.get_or_insert(too_large);
            }
            if state.live {
                match self.finish_copy(&mut state, &end, true).await {
                    Ok(sec) => match sec.error() {
                        Some((code, message)) => {
                            self.txn_failed.get_or_insert(format!("{code} {message}"));
                        }
                        None => self.applied(&state.unit, &o, &sec).await,
                    },
                    Err(Lost(why)) => {
                        self.txn_failed
                            .get_or_insert(format!("secondary connection lost: {why}"));
                    }
                }
                self.txn.push(whole);
                self.txn_outcomes.push(o);
                self.sent = self.txn.len();
            } else {
                if let Some(why) = state.failure.take() {
                    self.txn_failed.get_or_insert(why);
                }
                self.txn.push(whole);
                self.txn_outcomes.push(o);
            }
            return;
        }
        // A COPY that commits on its own.
        if state.live {
            if let Some(t) = &ticket {
                if !t.turn(Some(GIVE_WAY)).await {
                    // Its rows (and locks) may be what an earlier commit waits for: give way,
                    // and run it whole at its turn.
                    metrics::counter!("dualwrite_secondary_gave_way_total").increment(1);
                    let _ = self.finish_copy(&mut state, &end, false).await;
                    if self.sec_status != b'I' {
                        self.rollback().await;
                    }
                }
            }
        }
        self.turn(ticket.as_ref()).await;
        let shared = self.shared.clone();
        let _gate = shared.dual.gate.read().await;
        let mut failure = state.failure.take();
        if state.live {
            match self.finish_copy(&mut state, &end, true).await {
                Ok(sec) => match sec.error() {
                    None => {
                        self.applied(&state.unit, &o, &sec).await;
                        return;
                    }
                    Some((code, message)) => {
                        let reason = format!("{code} {message}");
                        self.count_failure("copy", &reason, &state.unit.text);
                        self.copy_missed(whole, complete, &reason, false, too_large.clone())
                            .await;
                        return;
                    }
                },
                Err(Lost(why)) => {
                    let reason = format!("secondary connection lost: {why}");
                    self.copy_missed(whole, complete, &reason, true, too_large.clone())
                        .await;
                    return;
                }
            }
        }
        // Not streamed, given way, or failed before its turn (perhaps only for being early):
        // run it whole now, when it can be.
        if !complete || !self.live(true).await {
            let reason = failure.take().unwrap_or_else(|| self.detached_reason());
            self.copy_missed(whole, complete, &reason, false, too_large.clone())
                .await;
            return;
        }
        match self.send_unit(&whole).await {
            Ok(sec) => match sec.error() {
                None => self.applied(&state.unit, &o, &sec).await,
                Some((code, message)) => {
                    let reason = format!("{code} {message}");
                    self.count_failure("copy", &reason, &state.unit.text);
                    self.copy_missed(whole, true, &reason, false, String::new())
                        .await;
                }
            },
            Err(Lost(why)) => {
                self.lost(&why);
                let reason = format!("secondary connection lost: {why}");
                self.copy_missed(whole, true, &reason, true, String::new())
                    .await;
            }
        }
    }

    /// A COPY that commits on its own and that the secondary missed: journaled with its data,
    /// or, too large for that, recorded as a divergence to re-backfill.
    async fn copy_missed(
        &mut self,
        whole: Unit,
        complete: bool,
        reason: &str,
        in_doubt: bool,
        too_large: String,
    ) {
        if complete {
            self.journal_in_doubt(&[whole], reason, in_doubt).await;
        } else {
            let why = format!("{reason}; {too_large}: re-backfill it");
            self.shared.dual.detach(&why);
            let record = self.record(RecordKind::Divergence, &[whole], &why);
            self.append(record).await;
        }
    }
}

/// Errors a read gets from its own session's state rather than from the data: `0A000`
/// (cached plan must not change result type), `25P02` (the transaction already failed),
/// `26000` (no such prepared statement), `34000` (no such cursor), `42P03` (cursor exists),
/// `08P01` (protocol violation).
/// The secondary's session failed the sample for a reason of its own state (a statement it
/// kept went stale) where the primary answered: no difference of data.
fn stale_on_secondary(primary: &Outcome, secondary: &Outcome) -> bool {
    primary.error().is_none()
        && secondary
            .error()
            .is_some_and(|(code, _)| session_bound_error(code))
}

pub(crate) fn session_bound_error(code: &str) -> bool {
    matches!(
        code,
        "0A000" | "25P02" | "26000" | "34000" | "42P03" | "08P01"
    )
}

/// Queue a record for the journal without waiting for its fsync (records keep their order,
/// and many sessions' records share one group commit). A failed write is retried by the
/// journal itself; only a stopped journal loses a record, and that is logged loudly.
async fn append(shared: Arc<Shared>, record: Record) {
    match &shared.journal {
        Some(j) => {
            // While the disk refuses writes, records wait in memory up to a bound; past it the
            // session waits here (and its client at `max_lag_bytes`) rather than lose one.
            j.room().await;
            let done = j.enqueue(record);
            tokio::spawn(async move {
                match done.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "JOURNAL WRITE FAILED: a write the secondary missed could not be recorded");
                        metrics::counter!("dualwrite_errors_total", "kind" => "journal").increment(1);
                    }
                    Err(_) => tracing::error!("JOURNAL WRITER STOPPED: a write the secondary missed could not be recorded"),
                }
            });
        }
        None => {
            tracing::error!("no journal open: a write the secondary missed could not be recorded")
        }
    }
}

fn query_text(q: &[u8]) -> String {
    let body = &q[5..];
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Write `out` (a batch of `n` units) and read the `n` answers, each up to its ReadyForQuery.
async fn roundtrips(conn: &mut Conn, out: &[u8], n: usize) -> Result<Vec<Outcome>, Lost> {
    send(conn, out).await?;
    let mut answers = Vec::with_capacity(n);
    while answers.len() < n {
        answers.push(read_outcome(&mut conn.reader, &mut conn.buf, false).await?);
    }
    Ok(answers)
}

/// Write `out` and read the answer up to ReadyForQuery.
async fn roundtrip(conn: &mut Conn, out: &[u8]) -> Result<Outcome, Lost> {
    roundtrip_sampled(conn, out, false).await
}

/// [`roundtrip`], keeping the first rows of the answer when `keep` (shadow reads).
async fn roundtrip_sampled(conn: &mut Conn, out: &[u8], keep: bool) -> Result<Outcome, Lost> {
    send(conn, out).await?;
    Ok(read_outcome(&mut conn.reader, &mut conn.buf, keep).await?)
}

async fn send(conn: &mut Conn, out: &[u8]) -> Result<(), Lost> {
    conn.writer
        .write_all(out)
        .await
        .map_err(|e| Lost(e.to_string()))?;
    conn.writer.flush().await.map_err(|e| Lost(e.to_string()))
}

/// Read a backend's answer to one unit, up to its ReadyForQuery, keeping the first rows when
/// `keep` (shadow reads).
pub async fn read_outcome(
    reader: &mut Reader,
    buf: &mut BytesMut,
    keep: bool,
) -> Result<Outcome, MessageError> {
    let mut c = Collector::default();
    c.begin(b'I');
    c.keep_rows(keep);
    loop {
        let (tag, body) = read_message(reader, buf, 1 << 30).await?;
        if let Some(o) = c.message(tag, &body) {
            return Ok(o);
        }
    }
}

impl From<MessageError> for Lost {
    fn from(e: MessageError) -> Lost {
        Lost(e.to_string())
    }
}
