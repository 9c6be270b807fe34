//! The commit order: a transaction waits for its turn in the primary's commit order (or runs
//! ahead and gives way), then commits, or is journaled whole.

use super::*;

impl Worker {
    /// Wait for this unit's turn in the commit order. While the secondary holds statements of
    /// this transaction run ahead, give way after [`GIVE_WAY`].
    pub(super) async fn turn(&mut self, ticket: Option<&Ticket>) {
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
    pub(super) async fn give_way(&mut self) {
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
    pub(super) async fn run_ahead(&mut self, seen: u64) -> bool {
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
    pub(super) async fn commit(&mut self, ticket: Option<Ticket>) {
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
            self.journal_txn(&reason, false, None).await;
            return;
        }
        if self.sent == 0 && self.txn_incomplete.is_some() {
            let reason = "the transaction had to run again on the secondary".to_string();
            self.journal_txn(&reason, false, None).await;
            return;
        }
        // The transaction writes its commit marker just before its COMMIT (when it ends with
        // exactly one: not a PREPARE TRANSACTION, nor a batch that goes on after it).
        let ends_with_commit = self
            .txn
            .last()
            .is_some_and(|u| u.tx == Some(TxControl::Commit));
        let mut marker = if ends_with_commit {
            self.next_marker().await
        } else {
            None
        };
        let mut result = self.send_txn_marked(true, marker.as_ref()).await;
        if let Err(f) = &result {
            if f.marker_failed {
                // Rolled back with the marker that failed: run it again whole, unmarked.
                let why = f.reason.clone();
                self.stop_marking(&why);
                marker = None;
                if self.sec_status != b'I' {
                    self.rollback().await;
                }
                self.sent = 0;
                self.txn_failed = None;
                result = if self.conn.is_some() {
                    self.send_txn(true).await
                } else {
                    Err(TxnFailure {
                        reason: "secondary connection lost".into(),
                        in_doubt: false,
                        statement: None,
                        marker_failed: false,
                    })
                };
            }
        }
        if let Err(f) = result {
            if let Some(statement) = &f.statement {
                self.count_failure("error", &f.reason, statement);
            }
            let marker = if f.in_doubt { marker } else { None };
            self.journal_txn(&f.reason, f.in_doubt, marker).await;
        }
    }

    /// Journal the transaction whole; one with a unit too large to keep (a huge COPY) is
    /// recorded as a divergence to re-backfill instead.
    pub(super) async fn journal_txn(
        &mut self,
        reason: &str,
        in_doubt: bool,
        marker: Option<Marker>,
    ) {
        let units = std::mem::take(&mut self.txn);
        match self.txn_incomplete.clone() {
            None => self.journal_marked(&units, reason, in_doubt, marker).await,
            Some(why) => {
                let why = format!("{reason}; {why}: re-backfill it");
                self.shared.dual.detach(&why);
                let record = self.record(RecordKind::Divergence, &units, &why);
                self.append(record).await;
            }
        }
        self.txn = units;
    }
}
