//! Sampled reads: run on the session's own secondary session, a shared lane, or a separate one,
//! in the session's order, and compared with the primary's answer.

use super::*;

impl Worker {
    /// Run a shadow-read sample on the secondary and compare it with the primary's answer.
    /// `false` when the sample was handed to the shared session, which finishes it.
    pub(super) async fn shadow(&mut self, u: Unit, mut primary: Outcome) -> bool {
        use crate::shadow::compare::Context;
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
        // A sample on the shared session waits for its watermark there (see `lane`).
        if self.lane_eligible(&primary) {
            match self.shadow_lane(&u, primary).await {
                Ok(()) => return false,
                Err(p) => primary = p,
            }
        }
        // The watermark: every commit the primary acknowledged before the read was sent is
        // visible to the read; the sample runs once each of them is settled on the secondary.
        if !self
            .shared
            .order
            .acks_settled_to(
                primary.seen_at_send,
                Some(crate::shadow::lane::WATERMARK_WAIT),
            )
            .await
        {
            self.shared.shadow.skip("watermark_timeout");
            return true;
        }
        if !self.shared.dual.attached() || self.lag_detached.load(Ordering::Acquire) {
            // Settled by being journaled: the secondary does not have them.
            self.shared.shadow.skip("journaled");
            return true;
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
                    let span = crate::shadow::compare::Span {
                        started,
                        took: Some(elapsed),
                    };
                    Some((o, span, ctx))
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
        let Some((secondary, span, ctx)) = answer else {
            self.shared.shadow.skip("unreachable");
            return true;
        };
        if stale_on_secondary(&primary, &secondary) {
            self.shared.shadow.skip("secondary_session_state");
            return true;
        }
        let log_params = self.shared.settings().shadow_log_params;
        let params = if log_params {
            crate::dual::journal::describe(&out).join("; ")
        } else {
            String::new()
        };
        let order = &self.shared.order;
        let session = self.info.id;
        let unproven = || {
            if crate::shadow::compare::concurrent(
                &order.touched_since(primary.seen_at_send, session),
                &u.text,
            ) {
                Some("concurrent_write")
            } else {
                (!u.nondeterministic.is_empty()).then_some("nondeterministic")
            }
        };
        self.shared.shadow.record(
            &u.text, &u.results, &primary, &secondary, span, unproven, ctx, log_params, &params,
        );
        true
    }

    /// A sample can run on the login's shared session: it is outside any transaction, the
    /// session's earlier writes are applied, and the session has no state of its own.
    pub(super) fn lane_eligible(&self, primary: &Outcome) -> bool {
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
    pub(super) async fn shadow_lane(&mut self, u: &Unit, primary: Outcome) -> Result<(), Outcome> {
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
                        self.shared
                            .lanes
                            .start(key, conn, gather, self.shared.order.clone())
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
            crate::dual::journal::describe(&sent).join("; ")
        } else {
            String::new()
        };
        let settled = Unsettled::add(&self.unsettled);
        let primary = Arc::new(primary);
        let kept = primary.clone();
        let shared = self.shared.clone();
        let (text, results) = (u.text.clone(), u.results.clone());
        let mark = primary.seen_at_send;
        let nondeterministic = !u.nondeterministic.is_empty();
        let session = self.info.id;
        let finish: crate::shadow::lane::Finish = Box::new(move |answer| {
            match answer {
                Ok(_) if !shared.dual.attached() => {
                    // The commits before it may have been settled by being journaled.
                    shared.shadow.skip("journaled");
                }
                Ok((secondary, _)) if stale_on_secondary(&kept, &secondary) => {
                    shared.shadow.skip("secondary_session_state");
                }
                Ok((secondary, span)) => {
                    let order = &shared.order;
                    let unproven = || {
                        if crate::shadow::compare::concurrent(
                            &order.touched_since(kept.seen_at_send, session),
                            &text,
                        ) {
                            Some("concurrent_write")
                        } else {
                            nondeterministic.then_some("nondeterministic")
                        }
                    };
                    shared.shadow.record(
                        &text,
                        &results,
                        &kept,
                        &secondary,
                        span,
                        unproven,
                        crate::shadow::compare::Context::Shared,
                        log_params,
                        &params,
                    );
                }
                Err(crate::shadow::lane::NotRun::Watermark) => {
                    shared.shadow.skip("watermark_timeout");
                }
                Err(crate::shadow::lane::NotRun::Failed(why)) => {
                    debug!(error = %why, "shared shadow session could not run a sample");
                    shared.shadow.skip("unreachable");
                }
            }
            shared.shadow.done();
            drop(settled);
        });
        if lane.submit(u.steps.clone(), mark, finish) {
            return Ok(());
        }
        self.lane = None;
        Err(Arc::try_unwrap(primary).unwrap_or_else(|p| (*p).clone()))
    }

    /// Wait until the samples handed to the shared session have run, so that a later write
    /// cannot reach the secondary before a read that came first.
    pub(super) async fn settle_samples(&mut self) {
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
    pub(super) async fn shadow_separate(
        &mut self,
        u: &Unit,
    ) -> Option<(
        Outcome,
        crate::shadow::compare::Span,
        crate::shadow::compare::Context,
    )> {
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
                let span = crate::shadow::compare::Span {
                    started,
                    took: Some(elapsed),
                };
                Some((o, span, crate::shadow::compare::Context::Separate))
            }
            Err(_) => None,
        }
    }
}
