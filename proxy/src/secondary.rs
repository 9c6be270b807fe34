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
    outcomes: mpsc::UnboundedSender<Outcome>,
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
            txn_failed: None,
            txn_in_doubt: false,
            deferred: Vec::new(),
            deferred_bytes: 0,
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

    /// The primary's answer to the next unit that has secondary steps.
    pub fn outcome(&self, outcome: Outcome) {
        let _ = self.outcomes.send(outcome);
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

struct CopyState {
    unit: Unit,
    live: bool,
    extended: bool,
    failure: Option<String>,
    data: Vec<Bytes>,
    data_bytes: usize,
}

/// Bytes of a transaction's units held back before they are sent anyway.
const DEFER_LIMIT: usize = 1 << 20;

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
    /// Units of the current transaction, for journaling it whole.
    txn: Vec<Unit>,
    txn_failed: Option<String>,
    /// The connection was lost while the secondary ran the transaction's COMMIT.
    txn_in_doubt: bool,
    /// The primary's outcomes of the transaction's units not yet sent to the secondary (the
    /// last `deferred.len()` units of `txn`): they go in one batch with the unit that ends the
    /// transaction, or before anything that needs the transaction open on the secondary.
    deferred: Vec<Outcome>,
    deferred_bytes: usize,
    prelude: Vec<String>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
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
    /// units, kept for the second.
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
                    Some(o) => self.copy_end(Bytes::new(), o).await,
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
                        self.outcomes.recv().await
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
                    Some(o) => {
                        if u.answer_shared {
                            self.shared_answer = Some(o.clone());
                        }
                        self.unit(u, o).await
                    }
                    None => self.outcome_unknown(&u).await,
                },
                Item::CopyData(d) => self.copy_data(d).await,
                Item::CopyEnd(end) => match self.outcomes.recv().await {
                    Some(o) => self.copy_end(end, o).await,
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
        // The read sees the transaction's writes so far.
        self.flush(false).await;
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
            && self.deferred.is_empty()
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

    async fn unit(&mut self, mut u: Unit, mut o: Outcome) {
        self.session_state |= u.session_state;
        let before = o.status_before;
        let after = o.status_after;
        let primary_error = o.error().is_some();
        if before == b'I' {
            self.txn.clear();
            self.txn_failed = None;
            self.txn_in_doubt = false;
            self.deferred.clear();
            self.deferred_bytes = 0;
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
            // (what the secondary has of it is rolled back below).
            Action::Rollback
        } else {
            Action::Apply
        };
        self.warn_nondeterministic(&u);
        let shared = self.shared.clone();
        let gate = shared.dual.gate.read().await;
        match action {
            Action::Skip => {}
            Action::Rollback => {
                self.txn.clear();
                self.txn_failed = None;
                self.txn_in_doubt = false;
                self.deferred.clear();
                self.deferred_bytes = 0;
            }

            Action::Apply => {
                let in_txn = before != b'I' || after != b'I';
                let bytes = u.bytes;
                if in_txn {
                    // Kept whole for the journal; below, an in-transaction unit needs only
                    // its size.
                    self.txn.push(std::mem::take(&mut u));
                }
                if self.txn_failed.is_some() {
                    // The secondary's transaction already failed: the rest is journaled with it.
                } else if !self.live(before == b'I').await {
                    let reason = self.detached_reason();
                    if in_txn {
                        self.txn_failed = Some(reason);
                    } else {
                        self.journal_units(std::slice::from_ref(&u), &reason).await;
                    }
                } else if in_txn {
                    self.deferred.push(std::mem::take(&mut o));
                    self.deferred_bytes += bytes;
                    if after == b'I' || self.deferred_bytes > DEFER_LIMIT {
                        self.flush(after == b'I').await;
                    }
                } else {
                    match self.send_unit(&u).await {
                        Ok(sec) => {
                            if let Some((code, message)) = sec.error() {
                                let reason = format!("{code} {message}");
                                metrics::counter!("dualwrite_secondary_failures_total", "kind" => "error").increment(1);
                                self.shared
                                    .dual
                                    .secondary_failures
                                    .fetch_add(1, Ordering::Relaxed);
                                info!(error = %reason, statement = %u.text, "secondary failed a statement the primary applied");
                                if in_txn {
                                    self.txn_failed = Some(reason);
                                } else {
                                    self.journal_units(std::slice::from_ref(&u), &reason).await;
                                }
                            } else {
                                self.compare(&u, &o, &sec).await;
                                for t in &u.tables {
                                    self.shared.dual.note_write(t);
                                }
                                if u.session_state && u.tx.is_none() && self.prelude.len() < 100 {
                                    if let Some(Step::Raw(q)) = u.steps.first() {
                                        if q.first() == Some(&f::QUERY) {
                                            self.prelude.push(query_text(q));
                                        }
                                    }
                                }
                            }
                        }
                        Err(Lost(why)) => {
                            self.lost(&why);
                            // A unit that ends idle commits on the secondary: the connection
                            // may have died after that commit and before its answer.
                            let in_doubt = after == b'I';
                            let reason = format!("secondary connection lost: {why}");
                            if in_txn {
                                self.txn_failed = Some(reason);
                                self.txn_in_doubt = in_doubt;
                            } else {
                                self.journal_in_doubt(std::slice::from_ref(&u), &reason, in_doubt)
                                    .await;
                            }
                        }
                    }
                }
                if after == b'I' && before != b'I' {
                    // The primary committed the transaction.
                    if let Some(reason) = self.txn_failed.take() {
                        let units = std::mem::take(&mut self.txn);
                        let in_doubt = std::mem::take(&mut self.txn_in_doubt);
                        self.journal_in_doubt(&units, &reason, in_doubt).await;
                    }
                    self.txn.clear();
                    self.txn_in_doubt = false;
                    self.deferred.clear();
                    self.deferred_bytes = 0;
                }
            }
        }
        drop(gate);
        if after == b'I' && self.sec_status != b'I' {
            self.rollback().await;
        }
    }

    /// Send the transaction's deferred units in one batch and read their answers in order.
    /// `ending`: the batch ends with the unit that commits the transaction.
    async fn flush(&mut self, ending: bool) {
        let outcomes = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        let n = outcomes.len();
        if n == 0 || self.txn_failed.is_some() {
            return;
        }
        if self.conn.is_none() {
            // Nothing is sent: the transaction is journaled whole, not in doubt.
            self.txn_failed = Some(self.detached_reason());
            return;
        }
        // The transaction's units are lent out for the batch and put back after it (the
        // journal may still need them whole).
        let txn = std::mem::take(&mut self.txn);
        self.flush_units(&txn[txn.len() - n..], &outcomes, ending)
            .await;
        self.txn = txn;
    }

    async fn flush_units(&mut self, units: &[Unit], outcomes: &[Outcome], ending: bool) {
        let n = units.len();
        let mut out = BytesMut::new();
        let parsed: Vec<Vec<String>> = units
            .iter()
            .map(|u| self.encode_steps(&u.steps, &mut out))
            .collect();
        let answers = match self.conn.as_mut() {
            Some(conn) => roundtrips(conn, &out, n).await,
            None => Err(Lost("not connected".into())),
        };
        let answers = match answers {
            Ok(a) => a,
            Err(Lost(why)) => {
                self.lost(&why);
                self.txn_failed
                    .get_or_insert_with(|| format!("secondary connection lost: {why}"));
                // The batch held the COMMIT: the secondary may have run it before the end.
                self.txn_in_doubt = ending;
                return;
            }
        };
        let mut stale: Vec<String> = Vec::new();
        for (i, sec) in answers.iter().enumerate() {
            self.sec_status = sec.status_after;
            if self.txn_failed.is_some() {
                // After a failure the server skipped the rest: their statements may not exist.
                stale.extend(parsed[i].iter().cloned());
                continue;
            }
            if let Some((code, message)) = sec.error() {
                let reason = format!("{code} {message}");
                metrics::counter!("dualwrite_secondary_failures_total", "kind" => "error")
                    .increment(1);
                self.shared
                    .dual
                    .secondary_failures
                    .fetch_add(1, Ordering::Relaxed);
                info!(error = %reason, statement = %units[i].text, "secondary failed a statement the primary applied");
                stale.extend(parsed[i].iter().cloned());
                self.txn_failed = Some(reason);
            } else {
                self.compare(&units[i], &outcomes[i], sec).await;
                for t in &units[i].tables {
                    self.shared.dual.note_write(t);
                }
            }
        }
        if self.txn_failed.is_some() {
            if let Err(Lost(why)) = self.forget(stale).await {
                self.lost(&why);
            }
        }
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
        self.flush(false).await;
        let extended =
            !matches!(u.steps.first(), Some(Step::Raw(b)) if b.first() == Some(&f::QUERY));
        let live = self.txn_failed.is_none() && self.live(true).await;
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

    async fn copy_end(&mut self, end: Bytes, o: Outcome) {
        let Some(mut state) = self.copy.take() else {
            return;
        };
        let primary_ok = o.error().is_none();
        let before = o.status_before;
        let after = o.status_after;
        let in_txn = before != b'I' || after != b'I';
        let mut copy_in_doubt = false;
        if state.live {
            let mut out = BytesMut::new();
            if primary_ok {
                out.extend_from_slice(&end);
            } else {
                protocol::frontend_message(&mut out, f::COPY_FAIL, b"the primary's COPY failed\0");
            }
            if state.extended {
                protocol::frontend_message(&mut out, f::SYNC, &[]);
            }
            let conn = self.conn.as_mut().expect("live COPY has a connection");
            match roundtrip(conn, &out).await {
                Ok(sec) => {
                    self.sec_status = sec.status_after;
                    if primary_ok {
                        if let Some((code, message)) = sec.error() {
                            state.failure = Some(format!("{code} {message}"));
                        } else {
                            let unit = state.unit.clone();
                            self.compare(&unit, &o, &sec).await;
                            for t in &unit.tables {
                                self.shared.dual.note_write(t);
                            }
                        }
                    }
                }
                Err(Lost(why)) => {
                    self.lost(&why);
                    copy_in_doubt = after == b'I';
                    state.failure = Some(format!("secondary connection lost: {why}"));
                }
            }
        } else if state.failure.is_none() {
            state.failure = Some(self.detached_reason());
        }
        if primary_ok {
            if let Some(reason) = state.failure.take() {
                metrics::counter!("dualwrite_secondary_failures_total", "kind" => "copy")
                    .increment(1);
                let mut unit = state.unit.clone();
                if state.data_bytes <= COPY_JOURNAL_LIMIT {
                    for d in state.data.drain(..) {
                        unit.steps.push(Step::Raw(d));
                    }
                    unit.steps.push(Step::Raw(end.clone()));
                    if state.extended {
                        let mut s = BytesMut::new();
                        protocol::frontend_message(&mut s, f::SYNC, &[]);
                        unit.steps.push(Step::Raw(s.freeze()));
                    }
                    if in_txn {
                        self.txn.push(unit);
                        self.txn_failed.get_or_insert(reason);
                        self.txn_in_doubt |= copy_in_doubt;
                    } else {
                        self.journal_in_doubt(&[unit], &reason, copy_in_doubt).await;
                    }
                } else {
                    let why = format!("{reason}; COPY of {} bytes into {:?} is too large to journal: re-backfill it", state.data_bytes, unit.tables);
                    self.shared.dual.detach(&why);
                    let record = self.record(RecordKind::Divergence, &[unit], &why);
                    self.append(record).await;
                }
            } else if in_txn {
                self.txn.push(state.unit.clone());
            }
        }
        if after == b'I' && before != b'I' {
            if let Some(reason) = self.txn_failed.take() {
                let units = std::mem::take(&mut self.txn);
                let in_doubt = std::mem::take(&mut self.txn_in_doubt);
                if primary_ok {
                    self.journal_in_doubt(&units, &reason, in_doubt).await;
                }
            }
            self.txn.clear();
            self.txn_in_doubt = false;
        }
        if after == b'I' && self.sec_status != b'I' {
            self.rollback().await;
        }
    }
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
