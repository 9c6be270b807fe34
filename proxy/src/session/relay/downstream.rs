//! Backend to client: answers forwarded as they come, commit order and outcomes taken on the way.

use super::*;

pub(super) async fn backend_to_client(
    reader: &mut Reader,
    writer: &mut Writer,
    buf: &mut BytesMut,
    flow: &Flow,
    shared: &Shared,
    secondary: Option<&Secondary>,
) -> End {
    let m = &shared.metrics;
    let mut scanner = Scanner::default();
    let mut collector = Collector::default();
    let mut status = b'I';
    collector.begin(status);
    // Whether the unit being answered is dual-written (its returned rows are digested).
    let with_rows = Cell::new(false);
    // The proxy's own query the unit being answered carries (see `Inject`).
    let inject = Cell::new(Inject::None);
    // The scan stopped before an answer of the proxy's own: it is taken out of the stream.
    let own = Cell::new(false);
    // (dual, shadow, inject) of the unit being answered. With no unit queued, the answer is to
    // a batch whose Sync has not been sent yet (the client sent Flush to get results early):
    // its kind is not known, so its rows are digested and sampled in case it turns out dual or
    // shadowed.
    let unknown = secondary.is_some();
    let front_kind = || {
        flow.queue
            .lock()
            .expect("lock poisoned")
            .front()
            .map(|p| (p.dual, p.shadow, p.inject))
            .unwrap_or((unknown, unknown, Inject::None))
    };
    let (dual, shadow, inj) = front_kind();
    with_rows.set(secondary.is_some() && dual);
    collector.keep_rows(shadow);
    inject.set(inj);
    // The server entered copy-in mode for the unit being answered.
    let mut copy_started = false;
    // When the last ReadyForQuery arrived: a unit sent before it waited behind another.
    let mut last_ready = Instant::now();
    // No message of the unit being answered has been seen yet: its entry may have been
    // queued after the last ReadyForQuery, so its kind is looked up again before scanning.
    let fresh = Cell::new(true);
    loop {
        if secondary.is_some() && fresh.get() {
            let (dual, shadow, inj) = front_kind();
            with_rows.set(dual);
            collector.keep_rows(shadow);
            inject.set(inj);
        }
        let mut ready = 0usize;
        let mut errors = 0u64;
        let scanned = scanner.scan_until(
            buf,
            i32::MAX as usize,
            |t| {
                t == b'G'
                    || match inject.get() {
                        Inject::Separate(_) => true,
                        Inject::Appended if t == b'T' => true,
                        _ => false,
                    }
                    || if secondary.is_some() {
                        outcome::wanted(t, with_rows.get())
                    } else {
                        t == b::READY_FOR_QUERY || t == b::ERROR_RESPONSE
                    }
            },
            |t, body| {
                match inject.get() {
                    Inject::Separate(_) => {
                        own.set(true);
                        return Ok(false);
                    }
                    Inject::Appended if t == b'T' && is_lsn_column(body) => {
                        own.set(true);
                        return Ok(false);
                    }
                    _ => {}
                }
                fresh.set(false);
                if t == b::ERROR_RESPONSE {
                    errors += 1;
                }
                if t == b'G' {
                    copy_started = true;
                }
                let done = match secondary {
                    Some(_) => collector.message(t, body),
                    None => None,
                };
                if t == b::READY_FOR_QUERY {
                    status = body.first().copied().unwrap_or(b'I');
                    // One ReadyForQuery answers the front unit, and with it the Syncs the
                    // server ignored during a COPY.
                    let mut queue = flow.queue.lock().expect("lock poisoned");
                    let mut front = queue.pop_front();
                    ready += 1;
                    while copy_started && front.as_ref().is_some_and(|p| p.maybe_ignored) {
                        match queue.pop_front() {
                            Some(next) => {
                                ready += 1;
                                let dual = front.as_ref().is_some_and(|p| p.dual) || next.dual;
                                front = Some(Pending { dual, ..next });
                            }
                            None => break,
                        }
                    }
                    drop(queue);
                    copy_started = false;
                    let now = Instant::now();
                    if let Some(p) = &front {
                        m.statement_duration.record(p.sent.elapsed().as_secs_f64());
                    }
                    if let Some(mut p) = front {
                        // Commits acknowledged before this answer, then this one's place.
                        let seen = shared.order.acks();
                        let ticket = p.flight.take().and_then(|f| f.answered(status == b'I'));
                        if let (Some(sec), Some(mut o)) = (secondary, done) {
                            if p.dual {
                                // Sent behind earlier units of the session: the backend
                                // started on it when it answered the one before.
                                o.elapsed = now.duration_since(p.sent.max(last_ready));
                                o.answered = Some(now);
                                // A sample sharing a committing unit's answer saw that
                                // commit too.
                                o.seen_at_send = p.acks + ticket.is_some() as u64;
                                o.seen = seen;
                                sec.outcome(o, ticket);
                            }
                        }
                    }
                    last_ready = now;
                    collector.begin(status);
                    let (dual, shadow, inj) = front_kind();
                    with_rows.set(secondary.is_some() && dual);
                    collector.keep_rows(shadow);
                    inject.set(inj);
                    fresh.set(true);
                }
                Ok(true)
            },
        );
        let n = match scanned {
            Ok(n) => n,
            Err(_) => return End::BackendGone,
        };
        if n == 0 && !own.get() {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(READ_CHUNK);
            }
            match reader.read_buf(buf).await {
                Ok(0) | Err(_) => return End::BackendGone,
                Ok(n) => m.bytes_out.increment(n as u64),
            }
            continue;
        }
        if n > 0 {
            let chunk = buf.split_to(n);
            if !flow.client_gone.load(Ordering::Acquire) {
                flow.client_clean.store(false, Ordering::Release);
                if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                    flow.client_gone.store(true, Ordering::Release);
                    if secondary.is_none() {
                        return End::ClientGone;
                    }
                }
                if scanner.at_boundary() {
                    flow.client_clean.store(true, Ordering::Release);
                }
            }
        }
        if errors > 0 {
            m.server_errors.increment(errors);
        }
        if ready > 0 {
            // State changes only once the client has the bytes, so a drain that sees the
            // session idle cannot cut off a reply.
            flow.tx_status.store(status, Ordering::Release);
            let _ = flow
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                    Some(p.saturating_sub(ready))
                });
            if flow.draining.load(Ordering::Acquire) {
                flow.idle.notify_one();
            }
            if flow.idle() {
                flow.release(shared);
            }
        }
        if own.replace(false) {
            if let Err(end) = take_own_answer(reader, writer, buf, flow, shared, inject.get()).await
            {
                return end;
            }
            fresh.set(true);
        }
    }
}
