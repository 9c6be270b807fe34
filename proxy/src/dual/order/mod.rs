//! The primary's commit order, and the secondary's progress through it.
//!
//! Every unit that commits on the primary (a COMMIT, or a statement outside a transaction)
//! gets a position, and the secondary commits in position order: a session's worker waits for
//! its turn (every earlier position settled) before it sends the commit, or journals the unit,
//! and settles its position when done. So the secondary, and the journal, see commits in the
//! primary's order, whichever session they came from.
//!
//! # Keys: the primary's own order
//! The order in which the proxy reads the primary's acknowledgements is not always the order
//! of the commits: a transaction that waited for another's lock commits right after it, and
//! the two acknowledgements race to the proxy. So each committing unit carries a key read from
//! the primary *inside* its transaction, after its last statement: the WAL insert position
//! (`pg_current_wal_insert_lsn()`; see `relay` for how it is asked). If transaction B saw
//! transaction A's commit (waited for its lock, or read what it wrote), B's key was read after
//! A's commit record was written, and A's before: key(A) < key(B). Positions are handed out in
//! key order. A unit acknowledged with key K is positioned once no unit still in flight can
//! have a smaller key: one whose key is known and smaller is waited for (it is committing right
//! now), one whose key is not known yet is waited for at most [`CommitOrder::bound`] (a unit
//! that has not answered by then did not commit before K was read). Units without a key
//! (where none can be asked for) take the largest key seen so far: the order of
//! acknowledgements.
//!
//! A position is settled when its unit was applied, journaled, or found to have no effect; a
//! [`Ticket`] settles its position when dropped, so no path can leave a hole that stops the
//! order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

/// A commit's place in the key order: the primary's generation (a cutover starts a new one:
/// keys of different primaries are not comparable, and a cutover drains every queue first),
/// then the WAL position.
pub type Key = (u64, u64);

/// The tables a committing unit wrote (its transaction's, for a COMMIT), as the classifier
/// names them; `None` when they are not all known (DDL, a function call, DO, ...).
pub type Touch = Option<Arc<[String]>>;

/// What commits acknowledged after a mark, and units still in flight, wrote: for telling
/// whether a shadow-read sample could have seen one side's data and not the other's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    Nothing,
    Tables(Vec<String>),
    /// Something not known (or acknowledged too long ago to be remembered).
    Unknown,
}

/// Touches of this many of the latest commits are remembered.
const RECENT: usize = 4096;

/// The commit order of one proxy.
pub struct CommitOrder {
    inner: Mutex<Inner>,
    /// Every position up to this one is settled.
    settled: watch::Sender<u64>,
    /// Every acknowledgement number up to this one is settled.
    acks_settled: watch::Sender<u64>,
    /// How long an acknowledged unit waits for units in flight whose key is not known yet.
    bound: Duration,
    /// Keys can be read on the source, on the target (checked at start: see `server`).
    wal_keys: [AtomicBool; 2],
}

#[derive(Default)]
struct Inner {
    next_flight: u64,
    in_flight: HashMap<u64, InFlight>,
    /// The primary keys were last read on (`true`: the target), and its generation.
    side: Option<bool>,
    generation: u64,
    /// The largest key read from the primary.
    last_key: Key,
    /// Acknowledgements of commits handed out.
    acks: u64,
    /// Of them, ordered by a WAL position read inside the transaction.
    keyed: u64,
    /// Acknowledged, not positioned yet, by (key, acknowledgement number).
    waiting: BTreeMap<(Key, u64), Arc<Slot>>,
    /// The last position handed out.
    positions: u64,
    settled: u64,
    ahead: BTreeSet<u64>,
    acks_settled: u64,
    acks_ahead: BTreeSet<u64>,
    /// A retry of the positioning is scheduled for then.
    retry_at: Option<Instant>,
    /// What the latest commits wrote, by acknowledgement number, with their session.
    recent: std::collections::VecDeque<(u64, u64, Touch)>,
}

/// A unit sent to the primary that may commit.
struct InFlight {
    generation: u64,
    key: Option<Key>,
    /// Its key, when it comes, is at least this.
    floor: Key,
    /// The client session it came from, and what it writes.
    session: u64,
    touch: Touch,
}

struct Slot {
    ack: u64,
    acked_at: Instant,
    state: Mutex<SlotState>,
    positioned: Notify,
}

#[derive(Default)]
struct SlotState {
    pos: Option<u64>,
    /// The ticket was dropped before it had a position: settle it as soon as it gets one.
    dropped: bool,
}

/// A unit in flight on the primary that may commit; forgotten when dropped unanswered.
pub struct Flight {
    id: u64,
    order: Arc<CommitOrder>,
    done: bool,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flight({})", self.id)
    }
}

impl Flight {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The primary answered; when it committed, the unit's place in the order.
    pub fn answered(mut self, committed: bool) -> Option<Ticket> {
        self.done = true;
        self.order.answered(self.id, committed)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.done {
            self.order.answered(self.id, false);
        }
    }
}

impl Default for CommitOrder {
    fn default() -> Self {
        CommitOrder::new(Duration::from_secs(1))
    }
}

/// A place in the commit order; settles it when dropped.
pub struct Ticket {
    slot: Arc<Slot>,
    order: Arc<CommitOrder>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket(ack {})", self.slot.ack)
    }
}

impl Ticket {
    /// Its acknowledgement's number (the value of [`CommitOrder::acks`] it made).
    pub fn ack(&self) -> u64 {
        self.slot.ack
    }

    /// The position, once it has one.
    pub fn pos(&self) -> Option<u64> {
        self.slot.state.lock().expect("slot lock poisoned").pos
    }

    /// Wait until the ticket has a position and every earlier position is settled. `limit`
    /// bounds the wait: `false` when it ran out first.
    pub async fn turn(&self, limit: Option<Duration>) -> bool {
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let pos = loop {
            let positioned = self.slot.positioned.notified();
            tokio::pin!(positioned);
            positioned.as_mut().enable();
            if let Some(p) = self.pos() {
                break p;
            }
            match deadline {
                None => positioned.await,
                Some(d) => {
                    if tokio::time::timeout_at(d, positioned).await.is_err() {
                        return false;
                    }
                }
            }
        };
        let rest = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        wait_for(&self.order.settled, pos - 1, rest).await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let pos = {
            let mut st = self.slot.state.lock().expect("slot lock poisoned");
            if st.pos.is_none() {
                st.dropped = true;
            }
            st.pos
        };
        if let Some(pos) = pos {
            let mut inner = self.order.inner.lock().expect("commit order lock poisoned");
            self.order.settle(&mut inner, pos, self.slot.ack);
        }
    }
}

async fn wait_for(tx: &watch::Sender<u64>, upto: u64, limit: Option<Duration>) -> bool {
    let mut rx = tx.subscribe();
    let wait = rx.wait_for(|s| *s >= upto);
    match limit {
        None => wait.await.is_ok(),
        Some(limit) => matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_))),
    }
}

impl CommitOrder {
    pub fn new(bound: Duration) -> CommitOrder {
        CommitOrder {
            inner: Mutex::new(Inner::default()),
            settled: watch::channel(0).0,
            acks_settled: watch::channel(0).0,
            bound,
            wal_keys: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    /// Whether keys can be read on the primary (`target`: the target is the primary).
    pub fn wal_keys(&self, target: bool) -> bool {
        self.wal_keys[target as usize].load(Ordering::Relaxed)
    }

    pub fn set_wal_keys(&self, target: bool, ok: bool) {
        self.wal_keys[target as usize].store(ok, Ordering::Relaxed);
    }

    /// A unit that may commit was sent to the primary (`target`: the target is the primary)
    /// by client session `session`; `touch`: what it writes.
    pub fn forwarded(self: &Arc<Self>, target: bool, session: u64, touch: Touch) -> Flight {
        let id = self.fly_touching(target, session, touch);
        Flight {
            id,
            order: self.clone(),
            done: false,
        }
    }

    #[cfg(test)]
    fn fly(&self, target: bool) -> u64 {
        self.fly_touching(target, 0, None)
    }

    fn fly_touching(&self, target: bool, session: u64, touch: Touch) -> u64 {
        let mut inner = self.inner.lock().expect("commit order lock poisoned");
        if inner.side != Some(target) {
            // A cutover: the new primary's WAL positions start a generation of their own.
            inner.side = Some(target);
            inner.generation += 1;
        }
        inner.next_flight += 1;
        let id = inner.next_flight;
        let generation = inner.generation;
        let floor = inner.last_key.max((generation, 0));
        inner.in_flight.insert(
            id,
            InFlight {
                generation,
                key: None,
                floor,
                session,
                touch,
            },
        );
        id
    }

    /// The primary's WAL position, read inside flight `id`'s transaction.
    pub fn key(self: &Arc<Self>, id: u64, lsn: u64) {
        let mut inner = self.inner.lock().expect("commit order lock poisoned");
        let Some(generation) = inner.in_flight.get(&id).map(|f| f.generation) else {
            return;
        };
        let key = (generation, lsn);
        if key > inner.last_key {
            inner.last_key = key;
        }
        if let Some(f) = inner.in_flight.get_mut(&id) {
            f.key = Some(key);
        }
        self.assign(&mut inner);
    }

    /// Flight `id` was answered. When it committed, the ticket for its place in the order.
    fn answered(self: &Arc<Self>, id: u64, committed: bool) -> Option<Ticket> {
        let mut inner = self.inner.lock().expect("commit order lock poisoned");
        let flight = inner.in_flight.remove(&id);
        let ticket = committed.then(|| {
            if flight.as_ref().is_some_and(|f| f.key.is_some()) {
                inner.keyed += 1;
            }
            let (session, touch) = flight
                .as_ref()
                .map_or((0, None), |f| (f.session, f.touch.clone()));
            let key = match flight {
                Some(InFlight { key: Some(k), .. }) => k,
                Some(f) => f.floor.max(inner.last_key),
                None => inner.last_key,
            };
            inner.acks += 1;
            let ack = inner.acks;
            if inner.recent.len() == RECENT {
                inner.recent.pop_front();
            }
            inner.recent.push_back((ack, session, touch));
            let slot = Arc::new(Slot {
                ack: inner.acks,
                acked_at: Instant::now(),
                state: Mutex::new(SlotState::default()),
                positioned: Notify::new(),
            });
            inner.waiting.insert((key, slot.ack), slot.clone());
            Ticket {
                slot,
                order: self.clone(),
            }
        });
        self.assign(&mut inner);
        ticket
    }

    /// Commits acknowledged so far: a mark for [`CommitOrder::acks_settled_to`].
    pub fn acks(&self) -> u64 {
        self.inner.lock().expect("commit order lock poisoned").acks
    }

    /// What the commits acknowledged after mark `acks` wrote, with the units still in flight,
    /// leaving out those of client session `session` (its secondary worker applies them in
    /// the session's own order: those sent before a read ahead of its sample, the later ones
    /// after it).
    pub fn touched_since(&self, acks: u64, session: u64) -> Touched {
        let inner = self.inner.lock().expect("commit order lock poisoned");
        if inner.acks == acks && inner.in_flight.is_empty() {
            return Touched::Nothing;
        }
        if inner.recent.front().is_some_and(|(a, _, _)| *a > acks + 1) {
            return Touched::Unknown;
        }
        let mut tables: Vec<String> = Vec::new();
        let since = inner
            .recent
            .iter()
            .rev()
            .take_while(|(a, _, _)| *a > acks)
            .filter(|(_, s, _)| *s != session)
            .map(|(_, _, t)| t);
        let flying = inner
            .in_flight
            .values()
            .filter(|f| f.session != session)
            .map(|f| &f.touch);
        for touch in since.chain(flying) {
            match touch {
                None => return Touched::Unknown,
                Some(t) => {
                    for name in t.iter() {
                        if !tables.contains(name) {
                            tables.push(name.clone());
                        }
                    }
                }
            }
        }
        if tables.is_empty() {
            Touched::Nothing
        } else {
            Touched::Tables(tables)
        }
    }

    /// Commits ordered by a WAL position read inside their transaction (the others by their
    /// acknowledgement).
    pub fn keyed(&self) -> u64 {
        self.inner.lock().expect("commit order lock poisoned").keyed
    }

    /// The last position handed out.
    pub fn positions(&self) -> u64 {
        self.inner
            .lock()
            .expect("commit order lock poisoned")
            .positions
    }

    /// Every position up to this one is settled (applied on the secondary or journaled).
    pub fn settled(&self) -> u64 {
        *self.settled.borrow()
    }

    /// Every acknowledgement number up to this one is settled.
    pub fn acks_settled(&self) -> u64 {
        *self.acks_settled.borrow()
    }

    /// Wait until every commit acknowledged up to mark `acks` is settled; `false` when
    /// `limit` ran out first.
    pub async fn acks_settled_to(&self, acks: u64, limit: Option<Duration>) -> bool {
        wait_for(&self.acks_settled, acks, limit).await
    }

    /// Hand out positions to acknowledged units no unit in flight can precede.
    fn assign(self: &Arc<Self>, inner: &mut Inner) {
        let now = Instant::now();
        let mut retry: Option<Instant> = None;
        while let Some((&(key, ack), slot)) = inner.waiting.first_key_value() {
            let deadline = slot.acked_at + self.bound;
            // A unit sent after a key at least this one's was known reads a larger key.
            let blocked = inner.in_flight.values().any(|f| match f.key {
                Some(k) => k < key,
                None => f.floor < key && now < deadline,
            });
            if blocked {
                if inner
                    .in_flight
                    .values()
                    .any(|f| f.key.is_none() && f.floor < key)
                    && now < deadline
                {
                    retry = Some(deadline);
                }
                break;
            }
            let slot = inner
                .waiting
                .remove(&(key, ack))
                .expect("the first entry exists");
            inner.positions += 1;
            let pos = inner.positions;
            let dropped = {
                let mut st = slot.state.lock().expect("slot lock poisoned");
                st.pos = Some(pos);
                st.dropped
            };
            slot.positioned.notify_waiters();
            if dropped {
                self.settle(inner, pos, slot.ack);
            }
        }
        if let Some(at) = retry {
            if inner.retry_at.is_none_or(|r| r > at || r <= now) {
                inner.retry_at = Some(at);
                let order = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    let mut inner = order.inner.lock().expect("commit order lock poisoned");
                    if inner.retry_at == Some(at) {
                        inner.retry_at = None;
                    }
                    order.assign(&mut inner);
                });
            }
        }
    }

    fn settle(&self, inner: &mut Inner, pos: u64, ack: u64) {
        if advance(&mut inner.settled, &mut inner.ahead, pos) {
            self.settled.send_replace(inner.settled);
        }
        if advance(&mut inner.acks_settled, &mut inner.acks_ahead, ack) {
            self.acks_settled.send_replace(inner.acks_settled);
        }
    }
}

/// Mark `n` done; true when the contiguous prefix `upto` moved.
fn advance(upto: &mut u64, ahead: &mut BTreeSet<u64>, n: u64) -> bool {
    if n != *upto + 1 {
        ahead.insert(n);
        return false;
    }
    *upto = n;
    loop {
        let next = *upto + 1;
        if !ahead.remove(&next) {
            break;
        }
        *upto = next;
    }
    true
}

/// Parse a `pg_lsn` in its text form (`16/B374D848`).
pub fn parse_lsn(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

#[cfg(test)]
mod tests;
