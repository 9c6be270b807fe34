//! Applying one unit: inside a transaction it is kept for the commit; outside one it runs at its
//! turn; session state is replayed as is.

use super::*;

impl Worker {
    /// A unit the primary answered. One that commits on its own is applied at its turn in the
    /// commit order; one inside a transaction is kept until the primary commits the
    /// transaction, which is then applied whole at its turn (see `order`).
    pub(super) async fn unit(&mut self, u: Unit, o: Outcome, ticket: Option<Ticket>) {
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

    pub(super) fn reset_txn(&mut self) {
        self.txn.clear();
        self.txn_outcomes.clear();
        self.sent = 0;
        self.txn_failed = None;
        self.txn_incomplete = None;
        self.txn_no_ahead = false;
    }

    /// A unit that commits on its own (outside a transaction).
    pub(super) async fn autocommit(&mut self, u: Unit, o: Outcome, ticket: Option<Ticket>) {
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
        // In its own implicit transaction, the unit also writes its commit marker (when every
        // statement of it may run in a transaction block), so replay can tell if it committed.
        let mut marker = if u.appendable && carries_marker(&u) {
            self.next_marker().await
        } else {
            None
        };
        let mut answer = self.send_unit_marked(&u, marker.as_ref()).await;
        if let Ok(sec) = &answer {
            if let Some(why) = marker_failure(u.results.len(), sec) {
                // The marker failed, not the unit (which was rolled back with it): run it again
                // unmarked.
                self.stop_marking(&why);
                marker = None;
                answer = self.send_unit(&u).await;
            }
        }
        match answer {
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
                self.journal_marked(std::slice::from_ref(&u), &reason, true, marker)
                    .await;
            }
        }
    }

    /// A unit that changes no data outside a transaction (SET, PREPARE, a statement's Parse):
    /// the secondary's session gets it for what follows, but its failure loses no write, so it
    /// is logged, never journaled, and detaches nothing.
    pub(super) async fn session_unit(&mut self, u: &Unit) {
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
    pub(super) fn remember_state(&mut self, u: &Unit) {
        if u.session_state && u.tx.is_none() && self.prelude.len() < 100 {
            if let Some(Step::Raw(q)) = u.steps.first() {
                if q.first() == Some(&f::QUERY) {
                    self.prelude.push(query_text(q));
                }
            }
        }
    }

    /// A statement the primary applied failed on the secondary (`kind`: `error`, or `copy`).
    pub(super) fn count_failure(&self, kind: &'static str, reason: &str, statement: &str) {
        metrics::counter!("dualwrite_secondary_failures_total", "kind" => kind).increment(1);
        self.shared
            .dual
            .secondary_failures
            .fetch_add(1, Ordering::Relaxed);
        info!(error = %reason, statement = %statement, "secondary failed a statement the primary applied");
    }

    /// The secondary applied `u` as the primary did: compare results, note the tables written.
    pub(super) async fn applied(&mut self, u: &Unit, primary: &Outcome, secondary: &Outcome) {
        self.compare(u, primary, secondary).await;
        for t in &u.tables {
            self.shared.dual.note_write(t);
        }
    }
}
