//! COPY FROM STDIN: data streamed to the secondary as it comes, kept for the journal up to a bound.

use super::*;

impl Worker {
    pub(super) async fn copy_start(&mut self, u: Unit) {
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

    pub(super) async fn copy_data(&mut self, d: Bytes) {
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
    pub(super) async fn finish_copy(
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

    pub(super) async fn copy_end(&mut self, end: Bytes, o: Outcome, ticket: Option<Ticket>) {
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
    pub(super) async fn copy_missed(
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
