//! Sending units to the secondary: statements it lacks prepared first, commit markers carried,
//! rollback and forgetting statements.

use super::*;

impl Worker {
    /// Send the transaction's units not sent yet, in batches of at most [`BATCH_LIMIT`]
    /// bytes, and read their answers, comparing results. `ending`: the last unit ends the
    /// transaction (a connection lost during the last batch leaves its commit in doubt). A
    /// failure is also noted in `txn_failed`.
    pub(super) async fn send_txn(&mut self, ending: bool) -> Result<(), TxnFailure> {
        self.send_txn_marked(ending, None).await
    }

    /// [`Worker::send_txn`], writing `marker` just before the last unit (its COMMIT).
    pub(super) async fn send_txn_marked(
        &mut self,
        ending: bool,
        marker: Option<&Marker>,
    ) -> Result<(), TxnFailure> {
        let txn = std::mem::take(&mut self.txn);
        let outcomes = std::mem::take(&mut self.txn_outcomes);
        let result = self.send_units(&txn, &outcomes, ending, marker).await;
        self.txn = txn;
        self.txn_outcomes = outcomes;
        if let Err(f) = &result {
            self.txn_failed.get_or_insert_with(|| f.reason.clone());
        }
        result
    }

    pub(super) async fn send_units(
        &mut self,
        txn: &[Unit],
        outcomes: &[Outcome],
        ending: bool,
        marker: Option<&Marker>,
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
            // The marker goes in the transaction, right before the unit that commits it.
            let marker = marker.filter(|_| ending && last);
            let mut out = BytesMut::with_capacity(bytes + 256);
            let mut parsed: Vec<Vec<String>> = Vec::with_capacity(to - from);
            for (i, u) in txn[from..to].iter().enumerate() {
                if let (Some(m), true) = (marker, from + i + 1 == to) {
                    out.extend_from_slice(&simple_query(&m.upsert()));
                }
                parsed.push(self.encode_steps(&u.steps, &mut out));
            }
            let expected = to - from + usize::from(marker.is_some());
            let answers = match self.conn.as_mut() {
                Some(conn) => roundtrips(conn, &out, expected).await,
                None => Err(Lost("not connected".into())),
            };
            let mut answers = match answers {
                Ok(a) => a,
                Err(Lost(why)) => {
                    self.lost(&why);
                    return Err(TxnFailure {
                        reason: format!("secondary connection lost: {why}"),
                        in_doubt: ending && last,
                        statement: None,
                        marker_failed: false,
                    });
                }
            };
            // The marker's own failure (everything before it succeeded) rolled the transaction
            // back: its COMMIT answered ROLLBACK.
            let mut mark_error = marker.and_then(|_| {
                let m = answers.remove(to - from - 1);
                m.error()
                    .map(|(code, message)| format!("commit marker: {code} {message}"))
            });
            let mut marker_failed = false;
            let mut failure = None;
            let mut stale: Vec<String> = Vec::new();
            for (i, sec) in answers.iter().enumerate() {
                self.sec_status = sec.status_after;
                if failure.is_some() {
                    // After a failure the server skipped the rest: their statements may not exist.
                    stale.extend(parsed[i].iter().cloned());
                    continue;
                }
                if i + 1 == answers.len() {
                    if let Some(why) = mark_error.take() {
                        marker_failed = true;
                        failure = Some((why, txn[from + i].text.clone()));
                        continue;
                    }
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
                    statement: (!marker_failed).then_some(statement),
                    marker_failed,
                });
            }
        }
        Ok(())
    }

    /// Close statements a failed batch parsed (they may or may not exist) and forget them.
    pub(super) async fn forget(&mut self, names: Vec<String>) -> Result<(), Lost> {
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

    pub(super) fn detached_reason(&self) -> String {
        if self.lag_detached.load(Ordering::Acquire) {
            "secondary lag bound reached".into()
        } else if !self.shared.dual.attached() {
            "secondary detached until the journal is replayed".into()
        } else {
            "secondary unreachable".into()
        }
    }

    pub(super) async fn rollback(&mut self) {
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
    pub(super) fn encode_steps(&mut self, steps: &[Step], out: &mut BytesMut) -> Vec<String> {
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
    pub(super) async fn send_unit(&mut self, u: &Unit) -> Result<Outcome, Lost> {
        self.send_unit_marked(u, None).await
    }

    /// [`Worker::send_unit`], writing `marker` in the unit's implicit transaction: appended to
    /// a simple Query's text, or executed before an extended batch's Sync.
    pub(super) async fn send_unit_marked(
        &mut self,
        u: &Unit,
        marker: Option<&Marker>,
    ) -> Result<Outcome, Lost> {
        let mut out = BytesMut::with_capacity(u.bytes + 256);
        let parsed = match marker {
            None => self.encode_steps(&u.steps, &mut out),
            Some(m) => match u.steps.as_slice() {
                [Step::Raw(q)] if q.first() == Some(&f::QUERY) => {
                    let text = &q[5..q.len().saturating_sub(1).max(5)];
                    let mut body = Vec::with_capacity(text.len() + 200);
                    body.extend_from_slice(text);
                    body.extend_from_slice(b"\n;");
                    body.extend_from_slice(m.upsert().as_bytes());
                    body.push(0);
                    protocol::frontend_message(&mut out, f::QUERY, &body);
                    Vec::new()
                }
                [steps @ .., Step::Raw(sync)] if sync.first() == Some(&f::SYNC) => {
                    let parsed = self.encode_steps(steps, &mut out);
                    encode_marker(&mut out, m);
                    // The unnamed statement is the marker's now.
                    self.statements.remove("");
                    out.extend_from_slice(sync);
                    parsed
                }
                // Not reached: `carries_marker` said which units take one.
                _ => self.encode_steps(&u.steps, &mut out),
            },
        };
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
}
