//! `journal replay`: re-apply journaled writes to the secondary, in order, exactly once.
//!
//! Each record runs as the user who wrote it, in its database, after its session state is
//! restored. Records without transaction control run as `BEGIN; <record>; INSERT INTO
//! _dualwrite.journal_applied ...; COMMIT`, so a replay interrupted at any point and run
//! again applies nothing twice. Replay stops at the first record that fails, with its reason,
//! except a record journaled *in doubt* (the secondary's connection died between its commit
//! and the answer): when it fails, the secondary is taken to have applied it before the
//! connection died; it is marked applied, reported, and replay goes on. Not so when the
//! failure is of the moment (a lock timeout, a deadlock, a cancel: see [`transient`]): that
//! says nothing about the record, which stops the replay like any other and is retried.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::abandoned::Abandoned;
use crate::backend;
use crate::config::{Backend, Settings};
use crate::journal::{self, Record, RecordKind};
use crate::outcome::Collector;
use crate::protocol::{self, frontend as f};
use crate::session::read_message;
use crate::tls::{Reader, Writer};

/// Progress, for the CLI.
#[derive(Debug)]
pub enum ReplayEvent {
    Applied {
        seq: u64,
        statements: usize,
    },
    AlreadyApplied {
        seq: u64,
    },
    /// An in-doubt record failed: taken as applied before the connection was lost.
    InDoubtSkipped {
        seq: u64,
        error: String,
    },
    Divergence {
        seq: u64,
        error: String,
    },
    /// A record has run for `waited` without an answer; the sessions it waits for, if any
    /// (`pid`, user, state, for how long, from where).
    Waiting {
        seq: u64,
        waited: Duration,
        blockers: Vec<String>,
    },
}

/// How often a record that runs long says what it waits for.
const WAIT_REPORT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ReplaySummary {
    pub applied: u64,
    pub skipped_already_applied: u64,
    /// In-doubt records that failed on replay and were taken as applied already.
    pub in_doubt_skipped: u64,
    pub divergences_listed: u64,
    /// Missed records not applied (after a stop).
    pub remaining: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("no secondary is configured ([target] is missing)")]
    NoSecondary,
    #[error("cannot prepare the applied-marker table on the {side}: {reason}")]
    Marker { side: &'static str, reason: String },
    #[error("record {seq} ({user}@{database}): {reason}")]
    Connect {
        seq: u64,
        user: String,
        database: String,
        reason: String,
    },
    #[error("replay stopped at record {seq} ({user}@{database}): {code} {message}; {remaining} record(s) not applied")]
    Failed {
        seq: u64,
        user: String,
        database: String,
        code: String,
        message: String,
        remaining: u64,
    },
    #[error("record {seq}: connection lost during replay: {reason}")]
    Lost { seq: u64, reason: String },
}

const MARKER_SQL: &str = "CREATE SCHEMA IF NOT EXISTS _dualwrite;
CREATE TABLE IF NOT EXISTS _dualwrite.journal_applied (
    journal_id text NOT NULL, seq bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journal_id, seq));
GRANT USAGE ON SCHEMA _dualwrite TO PUBLIC;
GRANT SELECT, INSERT ON _dualwrite.journal_applied TO PUBLIC;";

struct Conn {
    reader: Reader,
    writer: Writer,
    buf: BytesMut,
    /// The server's process id for it (BackendKeyData), and when it was ready.
    pid: Option<i32>,
    connected_at: std::time::Instant,
}

fn query(sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    protocol::frontend_message(&mut out, f::QUERY, &body);
    out
}

/// ReadyForQuery answers the messages will get (one per Query and per Sync).
fn answers(messages: &[u8]) -> usize {
    let mut n = 0;
    let mut pos = 0;
    while pos + 5 <= messages.len() {
        let len = u32::from_be_bytes([
            messages[pos + 1],
            messages[pos + 2],
            messages[pos + 3],
            messages[pos + 4],
        ]) as usize;
        if matches!(messages[pos], f::QUERY | f::SYNC) {
            n += 1;
        }
        pos += 1 + len.max(4);
    }
    n
}

/// Send and read `answers` ReadyForQuery; the first error (SQLSTATE, message), if any.
async fn run(
    conn: &mut Conn,
    out: &[u8],
    answers: usize,
) -> Result<Option<(String, String)>, String> {
    conn.writer
        .write_all(out)
        .await
        .map_err(|e| e.to_string())?;
    conn.writer.flush().await.map_err(|e| e.to_string())?;
    let mut first_error = None;
    for _ in 0..answers {
        let mut c = Collector::default();
        c.begin(b'I');
        loop {
            let (tag, body) = read_message(&mut conn.reader, &mut conn.buf, 1 << 30)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(o) = c.message(tag, &body) {
                if first_error.is_none() {
                    first_error = o.error().map(|(c, m)| (c.to_string(), m.to_string()));
                }
                break;
            }
        }
    }
    Ok(first_error)
}

fn password(
    settings: &Settings,
    backend: &Backend,
    user: &str,
) -> Option<dualwrite_common::Secret> {
    settings
        .users
        .get(user)
        .and_then(|u| u.backend_password(backend.side).cloned())
        .or_else(|| {
            (backend.url.user == user)
                .then(|| backend.url.password.clone())
                .flatten()
        })
}

/// A session on `backend` as `user` in `database`, with the password the proxy uses for that
/// user there (for ending that user's lost sessions: see `abandoned`).
pub(crate) async fn connect_as(
    settings: &Settings,
    backend: &Backend,
    user: String,
    database: String,
) -> Result<tokio_postgres::Client, String> {
    let mut url = backend.url.clone();
    url.password = password(settings, backend, &user);
    url.user = user;
    url.dbname = database;
    dualwrite_common::connect(&url, "dualwrite-proxy")
        .await
        .map_err(|e| e.to_string())
}

/// Replay every unapplied `Missed` record to the secondary, in order.
pub async fn replay(
    settings: &Settings,
    abandoned: Option<&Abandoned>,
    report: &mut (dyn FnMut(ReplayEvent) + Send),
) -> Result<ReplaySummary, ReplayError> {
    let secondary = settings
        .secondary_backend()
        .ok_or(ReplayError::NoSecondary)?
        .clone();
    let dir = &settings.journal_dir;
    let (records, _) = journal::read_records(dir)?;
    let mut summary = ReplaySummary::default();
    for r in records.iter().filter(|r| r.kind == RecordKind::Divergence) {
        summary.divergences_listed += 1;
        report(ReplayEvent::Divergence {
            seq: r.seq,
            error: r.error.clone(),
        });
    }
    // Each record goes to the side that missed it (after a forced cutover that may be the
    // primary now); records from before sides were recorded go to the current secondary.
    let side_of = |r: &Record| match r.side.as_deref() {
        Some("source") => Some(settings.source.clone()),
        Some("target") => settings.target.clone(),
        _ => Some(secondary.clone()),
    };
    let mut sides: Vec<Backend> = Vec::new();
    for r in records.iter().filter(|r| r.kind == RecordKind::Missed) {
        let b = side_of(r).ok_or(ReplayError::NoSecondary)?;
        if !sides.iter().any(|s| s.side == b.side) {
            sides.push(b);
        }
    }
    for backend in sides {
        let missed: Vec<&Record> = records
            .iter()
            .filter(|r| r.kind == RecordKind::Missed)
            .filter(|r| side_of(r).is_some_and(|b| b.side == backend.side))
            .collect();
        replay_to(settings, abandoned, &backend, &missed, report, &mut summary).await?;
    }
    Ok(summary)
}

/// Replay `missed` (in order) to `backend`.
async fn replay_to(
    settings: &Settings,
    abandoned: Option<&Abandoned>,
    backend: &Backend,
    missed: &[&Record],
    report: &mut (dyn FnMut(ReplayEvent) + Send),
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let dir = &settings.journal_dir;
    let id = journal::journal_id(dir)?;
    let admin = dualwrite_common::connect(&backend.url, "dualwrite-proxy replay")
        .await
        .map_err(|e| ReplayError::Marker {
            side: backend.side.name(),
            reason: e.to_string(),
        })?;
    // Sessions the proxy lost on this side may live on in the server, holding locks of the very
    // transactions about to be replayed: end them first.
    if let Some(a) = abandoned.filter(|a| a.pending(backend.side) > 0) {
        a.end_on(backend.side, &admin, |user, database| {
            connect_as(settings, backend, user, database)
        })
        .await
        .map_err(|e| ReplayError::Marker {
            side: backend.side.name(),
            reason: format!("ending lost sessions: {e}"),
        })?;
    }
    admin
        .batch_execute(MARKER_SQL)
        .await
        .map_err(|e| ReplayError::Marker {
            side: backend.side.name(),
            reason: e.to_string(),
        })?;
    let done: std::collections::HashSet<i64> = admin
        .query(
            "SELECT seq FROM _dualwrite.journal_applied WHERE journal_id = $1",
            &[&id],
        )
        .await
        .map_err(|e| ReplayError::Marker {
            side: backend.side.name(),
            reason: e.to_string(),
        })?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut conns: HashMap<(String, String), Conn> = HashMap::new();
    let result = apply(
        settings, backend, missed, &id, &done, &mut conns, &admin, report, summary,
    )
    .await;
    match &result {
        // The server may not have seen these connections end (see `abandoned`).
        Err(ReplayError::Lost { .. }) => {
            if let Some(a) = abandoned {
                for ((user, database), c) in &conns {
                    if let Some(pid) = c.pid {
                        a.record(backend.side, pid, user, database, c.connected_at);
                    }
                }
            }
        }
        _ => {
            for c in conns.values_mut() {
                let _ = c.writer.write_all(b"X\0\0\0\x04").await;
            }
        }
    }
    result
}

/// Apply `missed` in order, on one session per user and database (kept in `conns`).
#[allow(clippy::too_many_arguments)]
async fn apply(
    settings: &Settings,
    backend: &Backend,
    missed: &[&Record],
    id: &str,
    done: &std::collections::HashSet<i64>,
    conns: &mut HashMap<(String, String), Conn>,
    admin: &tokio_postgres::Client,
    report: &mut (dyn FnMut(ReplayEvent) + Send),
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let dir = &settings.journal_dir;
    for (i, r) in missed.iter().enumerate() {
        if done.contains(&(r.seq as i64)) {
            summary.skipped_already_applied += 1;
            report(ReplayEvent::AlreadyApplied { seq: r.seq });
            continue;
        }
        let key = (r.user.clone(), r.database.clone());
        if !conns.contains_key(&key) {
            let c = backend::connect(
                backend,
                &r.user,
                &r.database,
                password(settings, backend, &r.user).as_ref(),
                &[],
                settings.connect_timeout,
            )
            .await
            .map_err(|e| ReplayError::Connect {
                seq: r.seq,
                user: r.user.clone(),
                database: r.database.clone(),
                reason: e.to_string(),
            })?;
            conns.insert(
                key.clone(),
                Conn {
                    reader: c.reader,
                    writer: c.writer,
                    buf: c.leftover,
                    pid: c.key.map(|(pid, _)| pid),
                    connected_at: c.connected_at,
                },
            );
        }
        let conn = conns.get_mut(&key).expect("inserted above");
        let lost = |reason: String| ReplayError::Lost { seq: r.seq, reason };
        let remaining = (missed.len() - i) as u64;
        let fail = |(code, message): (String, String)| ReplayError::Failed {
            seq: r.seq,
            user: r.user.clone(),
            database: r.database.clone(),
            code,
            message,
            remaining,
        };
        // Session state first (a fresh session, or one reused for the same user and database).
        let mut prelude = BytesMut::new();
        prelude.extend_from_slice(&query("DISCARD ALL"));
        for stmt in &r.prelude {
            prelude.extend_from_slice(&query(stmt));
        }
        if let Some(e) = run(conn, &prelude, 1 + r.prelude.len())
            .await
            .map_err(lost)?
        {
            return Err(fail(e));
        }
        let marker = format!(
            "INSERT INTO _dualwrite.journal_applied (journal_id, seq) VALUES ({}, {})",
            dualwrite_common::ident::quote_literal(id),
            r.seq
        );
        let mut out = BytesMut::new();
        let mut expected = answers(&r.messages);
        if r.wrap {
            out.extend_from_slice(&query("BEGIN"));
            out.extend_from_slice(&r.messages);
            out.extend_from_slice(&query(&marker));
            expected += 2;
        } else {
            out.extend_from_slice(&r.messages);
        }
        match run_watched(conn, &out, expected, admin, r.seq, report)
            .await
            .map_err(lost)?
        {
            None => {}
            // A failure that says nothing about whether the secondary had the write (a lock
            // or statement timeout, a deadlock, a cancel, a server going down) is not taken
            // as applied: the record is retried like any other.
            Some(e) if r.in_doubt && !transient(&e.0) => {
                run(conn, &query("ROLLBACK"), 1).await.map_err(lost)?;
                if let Some(e) = run(conn, &query(&marker), 1).await.map_err(lost)? {
                    return Err(fail(e));
                }
                let _ = write_applied(dir, r.seq);
                let error = format!("{} {}", e.0, e.1);
                tracing::warn!(seq = r.seq, tables = ?r.tables, error = %error,
                    "in-doubt journal record failed on replay: taken as applied before the connection was lost");
                metrics::counter!("dualwrite_journal_in_doubt_skipped_total").increment(1);
                summary.in_doubt_skipped += 1;
                report(ReplayEvent::InDoubtSkipped { seq: r.seq, error });
                continue;
            }
            Some(e) => {
                let _ = run(conn, &query("ROLLBACK"), 1).await;
                return Err(fail(e));
            }
        }
        let commit = if r.wrap {
            query("COMMIT")
        } else {
            query(&marker)
        };
        if let Some(e) = run(conn, &commit, 1).await.map_err(lost)? {
            return Err(fail(e));
        }
        let _ = write_applied(dir, r.seq);
        summary.applied += 1;
        report(ReplayEvent::Applied {
            seq: r.seq,
            statements: journal::describe(&r.messages).len(),
        });
    }
    Ok(())
}

/// [`run`], saying every [`WAIT_REPORT`] what the record waits for while it runs (in the log
/// and to `report`): a lock held by another session is the usual reason a replay makes no
/// progress, and without this it would wait in silence.
async fn run_watched(
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
async fn blockers(admin: &tokio_postgres::Client, pid: i32) -> Vec<String> {
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

/// SQLSTATEs of failures that depend on the moment, not on the record: connection trouble
/// (08), serialization failures and deadlocks (40), insufficient resources (53), a lock not
/// available (55P03), cancels and shutdowns (57), system errors (58).
fn transient(code: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "55P03"
}

/// The last applied seq, for `journal show` (the target's marker table is authoritative).
pub fn applied(dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(dir.join("applied"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_applied(dir: &std::path::Path, seq: u64) -> std::io::Result<()> {
    if applied(dir) >= seq {
        return Ok(());
    }
    let tmp = dir.join("applied.tmp");
    std::fs::write(&tmp, seq.to_string())?;
    std::fs::rename(tmp, dir.join("applied"))
}
