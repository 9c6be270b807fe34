//! `journal replay`: re-apply journaled writes to the secondary, in order, exactly once.
//!
//! Each record runs as the user who wrote it, in its database, after its session state is
//! restored. Records without transaction control run as `BEGIN; <record>; INSERT INTO
//! _dualwrite.journal_applied ...; COMMIT`, so a replay interrupted at any point and run
//! again applies nothing twice. Replay stops at the first record that fails, with its reason.
//!
//! A record journaled *in doubt* (the secondary's connection died between its commit and the
//! answer) carries the commit marker its transaction wrote (see `marker`): replay claims the
//! marker first, in the transaction that applies the record. If the secondary's transaction
//! committed, the marker says so and the record is skipped as applied (counted and reported);
//! if not, the record is applied, and the claimed marker fences off the lost session should it
//! still try to commit. An in-doubt record without a marker (a unit that cannot run in a
//! transaction block, a login that may not write the marker) keeps the older rule: when it
//! fails, the secondary is taken to have applied it; it is marked applied, reported, and replay
//! goes on. Not so when the failure is of the moment (a lock timeout, a deadlock, a cancel: see
//! [`transient`](crate::dual::outcome::transient)): that says nothing about the record, which stops the replay like any other
//! and is retried.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::config::{Backend, Settings};
use crate::dual::abandoned::Abandoned;
use crate::dual::journal::{self, Record, RecordKind};
use crate::dual::outcome::{transient, Collector};
use crate::wire::backend;
use crate::wire::protocol::{self, frontend as f};
use crate::wire::read::read_message;
use crate::wire::tls::{Reader, Writer};

mod watch;

use watch::run_watched;

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
    /// An in-doubt record whose transaction the secondary had committed (its commit marker
    /// says so): skipped as applied.
    InDoubtCommitted {
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
    /// In-doubt records the secondary had committed (by their commit marker): not applied again.
    pub in_doubt_committed: u64,
    /// In-doubt records without a commit marker that failed on replay and were taken as
    /// applied already.
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

/// Send one Query and read its answer, with its rows: (outcome, DataRow bodies).
async fn run_one(conn: &mut Conn, sql: &str) -> Result<crate::dual::outcome::Outcome, String> {
    conn.writer
        .write_all(&query(sql))
        .await
        .map_err(|e| e.to_string())?;
    conn.writer.flush().await.map_err(|e| e.to_string())?;
    let mut c = Collector::default();
    c.begin(b'I');
    c.keep_rows(true);
    loop {
        let (tag, body) = read_message(&mut conn.reader, &mut conn.buf, 1 << 30)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(o) = c.message(tag, &body) {
            return Ok(o);
        }
    }
}

/// The first column of a DataRow body, as text (`None` for NULL or a malformed row).
fn first_column(row: &[u8]) -> Option<String> {
    let len = i32::from_be_bytes(row.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    let value = row.get(6..6 + len)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

/// What the commit marker says about an in-doubt record.
enum Fate {
    /// The secondary committed it.
    Committed,
    /// It did not; for a wrapped record, its transaction is open and holds the claimed marker.
    NotCommitted,
}

/// Ask the marker whether the secondary committed `r` (which carries `m`). A wrapped record's
/// transaction is begun here with the claim (see `Marker::claim`); one that runs its own
/// transaction control is read.
async fn fate(
    conn: &mut Conn,
    r: &Record,
    m: &crate::dual::marker::Marker,
) -> Result<Result<Fate, (String, String)>, String> {
    if r.wrap {
        let o = run_one(conn, &format!("BEGIN;\n{}", m.claim())).await?;
        if let Some((code, message)) = o.error() {
            let e = (code.to_string(), message.to_string());
            run(conn, &query("ROLLBACK"), 1).await?;
            return Ok(Err(e));
        }
        return Ok(Ok(match o.tag(1) {
            Some("INSERT 0 0") => {
                run(conn, &query("ROLLBACK"), 1).await?;
                Fate::Committed
            }
            _ => Fate::NotCommitted,
        }));
    }
    let o = run_one(conn, &m.read()).await?;
    if let Some((code, message)) = o.error() {
        return Ok(Err((code.to_string(), message.to_string())));
    }
    let seq = o
        .sample
        .first()
        .and_then(|row| first_column(row))
        .and_then(|v| v.parse::<u64>().ok());
    Ok(Ok(match seq {
        Some(s) if s >= m.seq => Fate::Committed,
        _ => Fate::NotCommitted,
    }))
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
        .batch_execute(crate::dual::marker::SCHEMA_SQL)
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
        // An in-doubt record with a commit marker: the marker says whether it committed.
        let mut begun = false;
        if let (true, Some(m)) = (r.in_doubt, r.marker.as_ref()) {
            match fate(conn, r, m).await.map_err(lost)? {
                Err(e) => return Err(fail(e)),
                Ok(Fate::NotCommitted) => begun = r.wrap,
                Ok(Fate::Committed) => {
                    if let Some(e) = run(conn, &query(&marker), 1).await.map_err(lost)? {
                        return Err(fail(e));
                    }
                    let _ = write_applied(dir, r.seq);
                    tracing::info!(seq = r.seq, tables = ?r.tables,
                        "in-doubt journal record: the secondary had committed it (its commit marker says so); not applied again");
                    metrics::counter!("dualwrite_journal_in_doubt_committed_total").increment(1);
                    summary.in_doubt_committed += 1;
                    report(ReplayEvent::InDoubtCommitted { seq: r.seq });
                    continue;
                }
            }
        }
        let mut out = BytesMut::new();
        let mut expected = answers(&r.messages);
        if r.wrap {
            if !begun {
                out.extend_from_slice(&query("BEGIN"));
                expected += 1;
            }
            out.extend_from_slice(&r.messages);
            out.extend_from_slice(&query(&marker));
            expected += 1;
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
            Some(e) if r.in_doubt && r.marker.is_none() && !transient(&e.0) => {
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
