//! Round trips on the secondary session and the small messages the worker writes itself.

use super::*;

/// The secondary's session failed the sample for a reason of its own state (a statement it
/// kept went stale) where the primary answered: no difference of data.
pub(super) fn stale_on_secondary(primary: &Outcome, secondary: &Outcome) -> bool {
    primary.error().is_none()
        && secondary
            .error()
            .is_some_and(|(code, _)| session_bound_error(code))
}

/// Queue a record for the journal without waiting for its fsync (records keep their order,
/// and many sessions' records share one group commit). A failed write is retried by the
/// journal itself; only a stopped journal loses a record, and that is logged loudly.
pub(super) async fn append(shared: Arc<Shared>, record: Record) {
    match &shared.journal {
        Some(j) => {
            // While the disk refuses writes, records wait in memory up to a bound; past it the
            // session waits here (and its client at `max_lag_bytes`) rather than lose one.
            j.room().await;
            let done = j.enqueue(record);
            tokio::spawn(async move {
                match done.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "JOURNAL WRITE FAILED: a write the secondary missed could not be recorded");
                        metrics::counter!("dualwrite_errors_total", "kind" => "journal").increment(1);
                    }
                    Err(_) => tracing::error!("JOURNAL WRITER STOPPED: a write the secondary missed could not be recorded"),
                }
            });
        }
        None => {
            tracing::error!("no journal open: a write the secondary missed could not be recorded")
        }
    }
}

/// How long a session that ends waits for its marker row to be removed.
pub(super) const FORGET_WAIT: Duration = Duration::from_secs(5);

pub(super) fn simple_query(sql: &str) -> BytesMut {
    let mut q = BytesMut::new();
    let mut body = Vec::with_capacity(sql.len() + 1);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    protocol::frontend_message(&mut q, f::QUERY, &body);
    q
}

/// Parse (unnamed), Bind and Execute of the marker's upsert, for an extended batch.
pub(super) fn encode_marker(out: &mut BytesMut, m: &Marker) {
    let mut parse = vec![0u8];
    parse.extend_from_slice(m.upsert().as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    protocol::frontend_message(out, f::PARSE, &parse);
    // Unnamed portal and statement, no parameters, no result formats.
    protocol::frontend_message(out, f::BIND, &[0, 0, 0, 0, 0, 0, 0, 0]);
    protocol::frontend_message(out, f::EXECUTE, &[0, 0, 0, 0, 0]);
}

/// A unit outside a transaction that a marker can be added to: a simple Query, or an
/// extended batch ending in its Sync (see `send_unit_marked`).
pub(super) fn carries_marker(u: &Unit) -> bool {
    match u.steps.as_slice() {
        [Step::Raw(q)] => q.first() == Some(&f::QUERY),
        [.., Step::Raw(sync)] => sync.first() == Some(&f::SYNC),
        _ => false,
    }
}

/// The secondary's answer to a marked unit of `results` statements failed at the marker
/// itself (every statement of the unit succeeded): why.
pub(super) fn marker_failure(results: usize, sec: &Outcome) -> Option<String> {
    let at = sec
        .results
        .iter()
        .position(|r| matches!(r.kind, ResultKind::Error { .. }))?;
    if at < results {
        return None;
    }
    sec.error()
        .map(|(code, message)| format!("{code} {message}"))
}

pub(super) fn query_text(q: &[u8]) -> String {
    let body = &q[5..];
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Write `out` (a batch of `n` units) and read the `n` answers, each up to its ReadyForQuery.
pub(super) async fn roundtrips(
    conn: &mut Conn,
    out: &[u8],
    n: usize,
) -> Result<Vec<Outcome>, Lost> {
    send(conn, out).await?;
    let mut answers = Vec::with_capacity(n);
    while answers.len() < n {
        answers.push(read_outcome(&mut conn.reader, &mut conn.buf, false).await?);
    }
    Ok(answers)
}

/// Write `out` and read the answer up to ReadyForQuery.
pub(super) async fn roundtrip(conn: &mut Conn, out: &[u8]) -> Result<Outcome, Lost> {
    roundtrip_sampled(conn, out, false).await
}

/// [`roundtrip`], keeping the first rows of the answer when `keep` (shadow reads).
pub(super) async fn roundtrip_sampled(
    conn: &mut Conn,
    out: &[u8],
    keep: bool,
) -> Result<Outcome, Lost> {
    send(conn, out).await?;
    Ok(read_outcome(&mut conn.reader, &mut conn.buf, keep).await?)
}

pub(super) async fn send(conn: &mut Conn, out: &[u8]) -> Result<(), Lost> {
    conn.writer
        .write_all(out)
        .await
        .map_err(|e| Lost(e.to_string()))?;
    conn.writer.flush().await.map_err(|e| Lost(e.to_string()))
}

impl From<MessageError> for Lost {
    fn from(e: MessageError) -> Lost {
        Lost(e.to_string())
    }
}
