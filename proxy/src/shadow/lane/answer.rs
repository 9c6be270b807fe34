//! Reading the lane's answers: each sample's result handed to its finish, failed groups sent again.

use super::*;

pub(super) async fn answer(a: Answering) {
    let Answering {
        mut reader,
        mut buf,
        mut flights,
        retry,
        statements,
        broken,
        pending,
    } = a;
    // When the server finished the previous answer: a sample written behind others starts
    // then, not when it was written.
    let mut last_end = Instant::now();
    while let Some(flight) = flights.recv().await {
        // Part of its answer came in with the one before: when the server started on it is
        // not seen (it finished the one before while this task was busy), so its time isn't.
        let coalesced = !buf.is_empty();
        let answer = match flight.shares_sync {
            None => read_outcome(&mut reader, &mut buf, true).await,
            Some(executes) => read_results(&mut reader, &mut buf, executes).await,
        };
        match answer.map_err(|e| e.to_string()) {
            Ok(o) => {
                let failed = o.error().is_some();
                if failed {
                    let mut st = statements.lock().expect("lock poisoned");
                    if o.error().is_some_and(|(code, _)| session_bound_error(code)) {
                        // A statement it keeps went stale (DDL changed its result type): the
                        // next sample prepares it again.
                        st.names.clear();
                    } else {
                        st.forget(flight.parsed);
                    }
                }
                // A read leaves no transaction open; if one is, the session is no longer
                // clean and takes no more samples.
                if flight.shares_sync.is_none() && o.status_after != b'I' {
                    broken.store(true, Ordering::Release);
                }
                let rest_skipped = failed && flight.shares_sync.is_some();
                let now = Instant::now();
                let started = flight.sent.max(last_end);
                last_end = now;
                let span = crate::shadow::compare::Span {
                    started,
                    took: (!coalesced).then(|| now.duration_since(started)),
                };
                (flight.finish)(Ok((o, span)));
                pending.done();
                if rest_skipped {
                    // The server skipped the rest of the group up to its Sync: those samples
                    // go again, each on its own, and whatever they prepared is gone.
                    let mut end = false;
                    while !end {
                        let Some(skipped) = flights.recv().await else {
                            return;
                        };
                        end = skipped.shares_sync.is_none();
                        statements
                            .lock()
                            .expect("lock poisoned")
                            .forget(skipped.parsed);
                        metrics::counter!("dualwrite_shadow_resent_total").increment(1);
                        let again = Request {
                            mark: 0,
                            steps: skipped.steps,
                            finish: skipped.finish,
                            alone: true,
                        };
                        if let Err(mpsc::error::SendError(r)) = retry.send(again) {
                            (r.finish)(Err(NotRun::Failed(
                                "shared shadow connection closed".into(),
                            )));
                        }
                        pending.done();
                    }
                    let end = read_outcome(&mut reader, &mut buf, false).await;
                    last_end = Instant::now();
                    match end {
                        Ok(o) if o.status_after == b'I' => {}
                        Ok(_) => broken.store(true, Ordering::Release),
                        Err(e) => {
                            lost(&mut flights, e.to_string(), &broken, &pending).await;
                            return;
                        }
                    }
                }
                // Answers already buffered are read without waiting: let the sessions'
                // relaying run between comparisons.
                tokio::task::consume_budget().await;
            }
            Err(e) => {
                (flight.finish)(Err(NotRun::Failed(e.clone())));
                pending.done();
                lost(&mut flights, e, &broken, &pending).await;
                return;
            }
        }
    }
}

/// The lane's connection broke: every sample still waiting gets the reason.
pub(super) async fn lost(
    flights: &mut mpsc::UnboundedReceiver<InFlight>,
    e: String,
    broken: &AtomicBool,
    pending: &Pending,
) {
    debug!(error = %e, "shared shadow connection lost");
    broken.store(true, Ordering::Release);
    flights.close();
    while let Some(f) = flights.recv().await {
        (f.finish)(Err(NotRun::Failed(e.clone())));
        pending.done();
    }
}

/// Read the answer of a sample whose Sync is shared with later samples: its `executes`
/// results, or up to its first error (after which the server skips to the Sync). Its outcome
/// ends as if at a ReadyForQuery outside a transaction.
pub(super) async fn read_results(
    reader: &mut Reader,
    buf: &mut BytesMut,
    executes: usize,
) -> Result<Outcome, crate::wire::read::MessageError> {
    let mut c = Collector::default();
    c.begin(b'I');
    c.keep_rows(true);
    loop {
        let (tag, body) = read_message(reader, buf, 1 << 30).await?;
        if tag == b::READY_FOR_QUERY {
            // The group ended before this sample's results: the answers are out of step
            // with the samples, and the lane cannot go on.
            return Err(crate::wire::read::MessageError::Io(std::io::Error::other(
                "ReadyForQuery before the end of a shared shadow sample",
            )));
        }
        let _ = c.message(tag, &body);
        let results = c.results();
        let failed =
            matches!(results.last(), Some(r) if matches!(r.kind, ResultKind::Error { .. }));
        if results.len() >= executes || failed {
            return Ok(c.message(b::READY_FOR_QUERY, b"I").unwrap_or_default());
        }
    }
}
