//! A record that makes no progress is watched: what it waits for is said while it runs.

use super::*;

/// [`run`], saying every [`WAIT_REPORT`] what the record waits for while it runs (in the log
/// and to `report`): a lock held by another session is the usual reason a replay makes no
/// progress, and without this it would wait in silence.
pub(super) async fn run_watched(
    conn: &mut Conn,
    out: &[u8],
    answers: usize,
    admin: &tokio_postgres::Client,
    seq: u64,
    report: &mut (dyn FnMut(ReplayEvent) + Send),
) -> Result<Option<(String, String)>, String> {
    let pid = conn.pid;
    let started = tokio::time::Instant::now();
    let fut = run(conn, out, answers);
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(started + WAIT_REPORT, WAIT_REPORT);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = tick.tick() => {
                let blockers = match pid {
                    Some(pid) => blockers(admin, pid).await,
                    None => vec![],
                };
                let waited = started.elapsed();
                tracing::warn!(seq, waited = ?waited, blockers = ?blockers,
                    "journal replay: a record is still running; it waits for the sessions listed");
                report(ReplayEvent::Waiting { seq, waited, blockers });
            }
        }
    }
}

/// The sessions backend `pid` waits for, described for a person.
pub(super) async fn blockers(admin: &tokio_postgres::Client, pid: i32) -> Vec<String> {
    let rows = admin
        .query(
            "SELECT format('pid %s (%s, %s for %s s, from %s)', pid, usename, state,
                           coalesce(round(extract(epoch FROM now() - coalesce(xact_start, state_change)))::text, '?'),
                           coalesce(client_addr::text || ':' || client_port, 'local'))
               FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids($1)) ORDER BY pid",
            &[&pid],
        )
        .await;
    match rows {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => vec![format!("(could not look: {e})")],
    }
}
