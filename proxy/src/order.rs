//! The primary's commit order, and the secondary's progress through it.
//!
//! Every unit that ends a transaction on the primary (a COMMIT, or a statement that commits on
//! its own) takes a position when its ReadyForQuery is read from the primary, before the client
//! sees it: positions are the order in which the primary acknowledged commits. The secondary
//! commits in that order: a session's worker waits for its turn (every earlier position
//! settled) before it sends the commit, or journals the unit, and settles its position when
//! done. So the secondary, and the journal, see commits in the primary's order, whichever
//! session they came from.
//!
//! A position is settled when its unit was applied, journaled, or found to have no effect; a
//! [`Ticket`] settles its position when dropped, so no path can leave a hole that stops the
//! order.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// The commit order of one proxy.
pub struct CommitOrder {
    inner: Mutex<Inner>,
    /// Every position up to this one is settled.
    settled: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    /// The last position handed out.
    assigned: u64,
    /// Every position up to this one is settled.
    settled: u64,
    /// Positions settled past a gap.
    ahead: BTreeSet<u64>,
}

impl Default for CommitOrder {
    fn default() -> Self {
        CommitOrder {
            inner: Mutex::new(Inner::default()),
            settled: watch::channel(0).0,
        }
    }
}

/// A place in the commit order; settles it when dropped.
pub struct Ticket {
    pos: u64,
    order: Arc<CommitOrder>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({})", self.pos)
    }
}

impl Ticket {
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Wait until every earlier position is settled. `limit` bounds the wait: `false` when it
    /// ran out first.
    pub async fn turn(&self, limit: Option<Duration>) -> bool {
        self.order.settled_to(self.pos - 1, limit).await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.order.settle(self.pos);
    }
}

impl CommitOrder {
    /// The next position, for a commit the primary has just acknowledged.
    pub fn assign(self: &Arc<Self>) -> Ticket {
        let mut inner = self.inner.lock().expect("commit order lock poisoned");
        inner.assigned += 1;
        Ticket {
            pos: inner.assigned,
            order: self.clone(),
        }
    }

    /// The last position handed out: every commit the primary acknowledged so far.
    pub fn assigned(&self) -> u64 {
        self.inner
            .lock()
            .expect("commit order lock poisoned")
            .assigned
    }

    /// Every position up to this one is settled (applied on the secondary or journaled).
    pub fn settled(&self) -> u64 {
        *self.settled.borrow()
    }

    fn settle(&self, pos: u64) {
        let mut inner = self.inner.lock().expect("commit order lock poisoned");
        if pos != inner.settled + 1 {
            inner.ahead.insert(pos);
            return;
        }
        inner.settled = pos;
        loop {
            let next = inner.settled + 1;
            if !inner.ahead.remove(&next) {
                break;
            }
            inner.settled = next;
        }
        let settled = inner.settled;
        drop(inner);
        self.settled.send_replace(settled);
    }

    /// Wait until every position up to `pos` is settled; `false` when `limit` ran out first.
    pub async fn settled_to(&self, pos: u64, limit: Option<Duration>) -> bool {
        let mut rx = self.settled.subscribe();
        let wait = rx.wait_for(|s| *s >= pos);
        match limit {
            None => wait.await.is_ok(),
            Some(limit) => matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn positions_settle_in_order_whatever_order_tickets_drop_in() {
        let order = Arc::new(CommitOrder::default());
        let a = order.assign();
        let b = order.assign();
        let c = order.assign();
        assert_eq!((a.pos(), b.pos(), c.pos()), (1, 2, 3));
        assert!(a.turn(None).await);
        assert!(!c.turn(Some(Duration::from_millis(20))).await);
        drop(c);
        assert_eq!(order.settled(), 0, "3 settled but 1 and 2 are not");
        drop(a);
        assert_eq!(order.settled(), 1);
        assert!(b.turn(Some(Duration::from_millis(20))).await);
        drop(b);
        assert_eq!(order.settled(), 3);
        assert_eq!(order.assigned(), 3);
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_its_turn_comes() {
        let order = Arc::new(CommitOrder::default());
        let first = order.assign();
        let second = order.assign();
        let waiter = tokio::spawn(async move {
            let ok = second.turn(None).await;
            (ok, second.pos())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(waiter.await.unwrap(), (true, 2));
        assert_eq!(order.settled(), 2);
    }
}
