//! Client to backend: frames forwarded as they come, writes and sampled reads handed to the secondary.

use super::*;

pub(super) async fn client_to_backend(
    reader: &mut Reader,
    writer: &mut Writer,
    buf: &mut BytesMut,
    builder: &mut Builder,
    flow: &Flow,
    shared: &Shared,
    secondary: Option<&Secondary>,
) -> End {
    let settings = shared.settings();
    let max = settings.max_message_bytes;
    let shadow_queue = settings.shadow_queue;
    // Whose commits these are, for the shadow samples of this session (see `order`).
    let session = secondary.map_or(0, Secondary::session);
    // Not a live setting: a restart applies a change (see `order`).
    let keyed_order = settings.commit_order == CommitOrderMode::Wal;
    drop(settings);
    let m = &shared.metrics;
    // Created once: polling a fresh `cancelled()` per message would register and unregister a
    // waiter on a token every session shares.
    let graceful = shared.graceful.cancelled();
    let kill = shared.kill.cancelled();
    tokio::pin!(graceful, kill);
    let mut graceful_seen = false;
    let mut pending_input = !buf.is_empty();
    // Statements are tracked whenever a live switch to dual-write is possible.
    let track = secondary.is_some() || shared.settings().target.is_some();
    let mut copy = CopyTracker::default();
    let mut ignored_syncs: Vec<bool> = Vec::new();
    let mut frames: Vec<(u8, usize, usize)> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut dual_since_boundary = false;
    // Frames of a unit not yet ended by its Query/Sync were sent (perhaps in an earlier chunk).
    let mut unit_open = false;
    // The tables written since the last commit or rollback went out (`None`: not all known),
    // for the commit that ends them (see `order::Touch`).
    let mut writes: Option<Vec<String>> = Some(Vec::new());
    loop {
        if flow.draining.load(Ordering::Acquire) && flow.idle() {
            return End::Shutdown;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        let draining = flow.draining.load(Ordering::Acquire);
        // Bytes kept from before a reconfiguration are processed before reading more.
        let mut waited = false;
        let read = if pending_input {
            pending_input = false;
            Ok(usize::MAX)
        } else {
            let mut read = std::pin::pin!(reader.read_buf(buf));
            let read = std::future::poll_fn(|cx| {
                let r = read.as_mut().poll(cx);
                waited |= r.is_pending();
                r
            });
            tokio::select! {
            biased;
            _ = &mut kill => return End::Shutdown,
            _ = &mut graceful, if !graceful_seen => {
                graceful_seen = true;
                flow.draining.store(true, Ordering::Release);
                continue;
            }
            _ = flow.idle.notified(), if draining => continue,
            r = read => r,
            }
        };
        match read {
            Ok(0) | Err(_) => return End::ClientGone,
            Ok(usize::MAX) => {}
            Ok(n) => m.bytes_in.increment(n as u64),
        }
        if !flow.busy.load(Ordering::Acquire) && flow.idle() {
            // A new transaction (or statement outside one) starts: wait while a cutover is
            // pausing traffic, then adopt changed settings before sending anything.
            shared.gate.enter().await;
            flow.busy.store(true, Ordering::Release);
            if flow.epoch.load(Ordering::Acquire) != shared.gate.epoch() {
                flow.release(shared);
                return End::Reconfigure;
            }
        }
        let mut pos = 0;
        let mut terminate = false;
        frames.clear();
        ignored_syncs.clear();
        let mut sync_index = 0;
        loop {
            let h = match protocol::header(&buf[pos..], max) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return End::Protocol(e),
            };
            if !f::is_valid(h.tag) {
                return End::Protocol(FrameError::UnknownType(h.tag as char));
            }
            if buf.len() - pos < h.frame_len {
                break;
            }
            if track && h.tag != f::TERMINATE {
                frames.push((h.tag, pos, h.frame_len));
            }
            let sync_ignored = h.tag == f::SYNC && copy.active();
            if h.tag == f::SYNC && secondary.is_some() {
                ignored_syncs.push(sync_ignored);
            }
            copy.message(h.tag, &buf[pos + 5..pos + h.frame_len]);
            match h.tag {
                f::QUERY | f::FUNCTION_CALL | f::SYNC => {
                    match h.tag {
                        f::QUERY => m.statements_simple.increment(1),
                        f::SYNC => flow.unsynced.store(false, Ordering::Release),
                        _ => {}
                    }
                    if secondary.is_none() {
                        flow.queue
                            .lock()
                            .expect("lock poisoned")
                            .push_back(Pending::plain(sync_ignored));
                    }
                    flow.pending.fetch_add(1, Ordering::AcqRel);
                }
                f::EXECUTE => {
                    m.statements_extended.increment(1);
                    flow.unsynced.store(true, Ordering::Release);
                }
                f::PARSE | f::BIND | f::DESCRIBE | f::CLOSE | f::FLUSH => {
                    flow.unsynced.store(true, Ordering::Release);
                }
                f::TERMINATE => {
                    pos += h.frame_len;
                    terminate = true;
                    break;
                }
                _ => {}
            }
            pos += h.frame_len;
        }
        if pos > 0 {
            let chunk = buf.split_to(pos).freeze();
            // The bytes to send when the proxy adds queries of its own (see `Inject`).
            let mut spliced = Splice::default();
            if secondary.is_some() {
                builder.shadow_rate = shared.shadow.rate();
                let target = flow.primary_target.load(Ordering::Acquire);
                let wal_keys = keyed_order && shared.order.wal_keys(target);
                // Where the unit being read began, when that is in this chunk (nothing of the
                // proxy's own may go in the middle of a unit already partly sent).
                let mut unit_start: Option<usize> = None;
                // Route before forwarding, so each unit's entry is queued before its answer.
                for &(tag, start, len) in &frames {
                    if !unit_open {
                        unit_start = Some(start);
                        unit_open = true;
                    }
                    let frame = chunk.slice(start..start + len);
                    let before = items.len();
                    let boundary = builder.push(tag, &frame, &mut items);
                    // A shadow sample past the queue bound is dropped here, before its
                    // answer is routed to the secondary.
                    let mut shadow = false;
                    if let Some(Item::Unit(u)) = items.last() {
                        if u.shadow && items.len() > before {
                            if shared.shadow.admit(shadow_queue) {
                                shadow = true;
                            } else if let Some(Item::Unit(dropped)) = items.pop() {
                                if dropped.shares_answer {
                                    if let Some(Item::Unit(before)) = items.last_mut() {
                                        before.answer_shared = false;
                                    }
                                }
                            }
                        }
                    }
                    for item in &mut items[before..] {
                        if let Item::Unit(u) = item {
                            if u.copy_in {
                                u.seen = shared.order.acks();
                            }
                            if u.effect && !u.shadow {
                                match (&mut writes, u.tables.is_empty()) {
                                    (Some(w), false) => {
                                        for t in &u.tables {
                                            if !w.contains(t) {
                                                w.push(t.clone());
                                            }
                                        }
                                    }
                                    _ => writes = None,
                                }
                            }
                        }
                    }
                    dual_since_boundary |=
                        items[before..].iter().any(|i| matches!(i, Item::Unit(_)));
                    if boundary {
                        let maybe_ignored = tag == f::SYNC
                            && ignored_syncs.get(sync_index).copied().unwrap_or(false);
                        if tag == f::SYNC {
                            sync_index += 1;
                        }
                        // The unit may commit: it takes its place in the commit order when
                        // answered, by a key read inside its transaction where one can be.
                        let unit = items[before..].iter().rev().find_map(|i| match i {
                            Item::Unit(u) if !u.shadow => Some(u),
                            _ => None,
                        });
                        let commits = unit.filter(|u| u.effect || u.tx == Some(TxControl::Commit));
                        let ends = unit.is_some_and(|u| {
                            matches!(u.tx, Some(TxControl::Commit) | Some(TxControl::Rollback))
                        });
                        let flight = commits.map(|_| {
                            let touch = writes.take().map(Into::into);
                            shared.order.forwarded(target, session, touch)
                        });
                        if flight.is_some() || ends {
                            writes = Some(Vec::new());
                        }
                        let mut inject = Inject::None;
                        if let (Some(u), Some(fl)) = (commits, &flight) {
                            if !wal_keys || maybe_ignored || u.copy_in {
                            } else if u.tx == Some(TxControl::Commit) {
                                if let Some(at) = unit_start {
                                    let mut q = BytesMut::new();
                                    protocol::frontend_message(&mut q, f::QUERY, LSN_QUERY);
                                    spliced.insert(&chunk, at, &q, 0);
                                    let mut p = Pending::plain(false);
                                    p.inject = Inject::Separate(fl.id());
                                    flow.queue.lock().expect("lock poisoned").push_back(p);
                                }
                            } else if tag == f::QUERY && u.appendable && u.tx.is_none() {
                                let text = &frame[5..frame.len() - 1];
                                let mut body = Vec::with_capacity(text.len() + LSN_APPENDED.len());
                                body.extend_from_slice(text);
                                body.extend_from_slice(LSN_APPENDED);
                                let mut q = BytesMut::new();
                                protocol::frontend_message(&mut q, f::QUERY, &body);
                                spliced.insert(&chunk, start, &q, len);
                                inject = Inject::Appended;
                            }
                        }
                        flow.queue
                            .lock()
                            .expect("lock poisoned")
                            .push_back(Pending {
                                sent: Instant::now(),
                                acks: if shadow { shared.order.acks() } else { 0 },
                                dual: dual_since_boundary,
                                shadow,
                                maybe_ignored,
                                inject,
                                flight,
                            });
                        m.routed(dual_since_boundary);
                        dual_since_boundary = false;
                        unit_start = None;
                        unit_open = false;
                    }
                }
            } else if track {
                // Primary-only with a target configured: keep the session's statements known,
                // so that after a live switch to dual-write, statements prepared before it
                // still reach the secondary when executed.
                for &(tag, start, len) in &frames {
                    builder.push(tag, &chunk.slice(start..start + len), &mut items);
                    items.clear();
                }
            }
            let chunk = spliced.finish(chunk);
            if writer.write_all(&chunk).await.is_err() || writer.flush().await.is_err() {
                return End::BackendGone;
            }
            // Only after the primary has the frames: the secondary's worker waits for the
            // primary's answers, so queueing first could wait on frames not yet sent.
            if let Some(sec) = secondary {
                for item in items.drain(..) {
                    sec.send(item).await;
                }
            }
        }
        if pos > 0 && !waited {
            // The client is streaming (its bytes were there before we read them): let the
            // backend's answers through before reading on. Both directions are polled by one
            // task, and this one would otherwise keep it for as long as tokio's budget lasts,
            // holding back an early error the client would stop sending for.
            tokio::task::yield_now().await;
        }
        if terminate {
            let _ = writer.flush().await;
            return End::Terminated;
        }
    }
}
