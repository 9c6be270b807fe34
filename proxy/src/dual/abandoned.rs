//! Backend sessions the proxy gave up on, and ending them on their server.
//!
//! When a backend connection is lost without a clean close (a silent network, a timeout), its
//! server may never learn that it ended: the proxy's FIN or reset is dropped with everything
//! else, and the server's own TCP keepalive waits two hours by default. Such a session lives
//! on in the server. Idle, it takes a connection slot; caught inside a transaction, it holds
//! that transaction's row locks: on the secondary the replay of the journal (which re-applies
//! the very same transaction) waits on them, on the primary every retry of the application.
//!
//! So every session lost that way (a secondary session, or a client's primary session) is
//! listed here, with what identifies it on its server (the process id from BackendKeyData,
//! user and database, and when it was opened), and the proxy ends those it can still find
//! with `pg_terminate_backend` as its own login before it replays the journal to that side,
//! and otherwise as soon as it can reach the side (checked every second). A session is only
//! ended if its server process started when the proxy opened it: the server's own clock
//! decides (`backend_start`), against the time elapsed since on the proxy's monotonic clock,
//! so a process id reused by a later session is never taken for the lost one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::Side;

/// Entries kept at most; past it the oldest are forgotten (and said so).
const MAX_ENTRIES: usize = 10_000;

/// How far a lost session's `backend_start` may be from when the proxy had it ready: the
/// server starts the process, then authentication and the greeting take their time (at most
/// `connect_timeout`, well under this in practice). A reused process id would have to belong
/// to a session of the same user and database started within this window of the lost one,
/// while the lost one was still running under that id: not possible.
const STARTED_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Lost {
    pub side: Side,
    pub pid: i32,
    pub user: String,
    pub database: String,
    /// When the proxy had the session ready.
    pub connected_at: Instant,
    /// When it was lost (entries are listed in this order).
    pub at: Instant,
}

/// The sessions lost and not yet ended.
#[derive(Default)]
pub struct Abandoned {
    lost: Mutex<Vec<Lost>>,
}

/// What ending the lost sessions on one side did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// Still alive in the server, and ended now.
    pub terminated: usize,
    /// No longer in the server (it noticed the loss itself, or the session ended).
    pub gone: usize,
    /// The proxy's login may not end them (they stay listed in the log).
    pub refused: usize,
}

impl Abandoned {
    /// List a session the proxy lost: `pid` on `side`'s server, logged in as `user` to
    /// `database`, ready at `connected_at`.
    pub fn record(&self, side: Side, pid: i32, user: &str, database: &str, connected_at: Instant) {
        let mut lost = self.lost.lock().expect("abandoned sessions lock poisoned");
        if lost.len() >= MAX_ENTRIES {
            let old = lost.remove(0);
            warn!(side = old.side.name(), pid = old.pid, user = %old.user,
                "too many lost backend sessions listed; forgetting the oldest (end it by hand if it still exists)");
        }
        lost.push(Lost {
            side,
            pid,
            user: user.to_string(),
            database: database.to_string(),
            connected_at,
            at: Instant::now(),
        });
    }

    pub fn pending(&self, side: Side) -> usize {
        self.lost
            .lock()
            .expect("abandoned sessions lock poisoned")
            .iter()
            .filter(|l| l.side == side)
            .count()
    }

    /// End on `side`'s server the sessions lost there, with `admin` (the proxy's own login on
    /// it). Sessions that login may not see or end (not a superuser, nor a member of
    /// `pg_read_all_stats` / `pg_signal_backend`) are ended by a session of their own user,
    /// which always may: `as_user(user, database)` opens one. Entries it could check are
    /// removed; an error reaching the server keeps them all for the next time.
    pub async fn end_on<F, Fut>(
        &self,
        side: Side,
        admin: &tokio_postgres::Client,
        as_user: F,
    ) -> Result<Ended, tokio_postgres::Error>
    where
        F: Fn(String, String) -> Fut,
        Fut: std::future::Future<Output = Result<tokio_postgres::Client, String>>,
    {
        let entries: Vec<Lost> = {
            let lost = self.lost.lock().expect("abandoned sessions lock poisoned");
            lost.iter().filter(|l| l.side == side).cloned().collect()
        };
        if entries.is_empty() {
            return Ok(Ended::default());
        }
        let mut ended = Ended::default();
        let mut rest = end_with(side, admin, &entries, &mut ended).await?;
        while let Some(first) = rest.first().cloned() {
            let (theirs, others): (Vec<Lost>, Vec<Lost>) = rest
                .into_iter()
                .partition(|l| l.user == first.user && l.database == first.database);
            rest = others;
            let left = match as_user(first.user.clone(), first.database.clone()).await {
                Ok(own) => end_with(side, &own, &theirs, &mut ended).await?,
                Err(e) => {
                    warn!(side = side.name(), user = %first.user, error = %e,
                        "cannot log in as the user of lost backend sessions to end them");
                    theirs
                }
            };
            for l in left {
                warn!(side = side.name(), pid = l.pid, user = %l.user,
                    "a backend session the proxy lost may still hold locks and cannot be ended from here: run SELECT pg_terminate_backend({}) as a superuser", l.pid);
                ended.refused += 1;
            }
        }
        // Every entry has been looked at: forget them. Entries are listed in the order they
        // were lost, so those that came meanwhile are the later ones.
        let last = entries.iter().map(|l| l.at).max();
        self.lost
            .lock()
            .expect("abandoned sessions lock poisoned")
            .retain(|l| l.side != side || Some(l.at) > last);
        Ok(ended)
    }
}

/// End, with `client`, those of `entries` still running; count them in `ended`. Returns the
/// entries `client`'s login can neither see nor end.
async fn end_with(
    side: Side,
    client: &tokio_postgres::Client,
    entries: &[Lost],
    ended: &mut Ended,
) -> Result<Vec<Lost>, tokio_postgres::Error> {
    // Which of them still run, in one look: the same process id, user and database, and a
    // process started when the proxy opened the session (see STARTED_WITHIN). A session of
    // another user shows no `backend_start` to a login without the right to see it.
    let pids: Vec<i32> = entries.iter().map(|l| l.pid).collect();
    let users: Vec<&str> = entries.iter().map(|l| l.user.as_str()).collect();
    let databases: Vec<&str> = entries.iter().map(|l| l.database.as_str()).collect();
    let opened_secs_ago: Vec<f64> = entries
        .iter()
        .map(|l| l.connected_at.elapsed().as_secs_f64())
        .collect();
    let rows = client
        .query(
            "SELECT l.pid, a.backend_start IS NOT NULL,
                    a.usename = l.usename AND a.datname = l.datname
                    AND a.backend_start BETWEEN now() - make_interval(secs => l.opened_secs_ago + $5)
                                            AND now() - make_interval(secs => l.opened_secs_ago - 1)
               FROM unnest($1::int4[], $2::text[], $3::text[], $4::float8[])
                    AS l (pid, usename, datname, opened_secs_ago)
               JOIN pg_stat_activity a USING (pid)
              WHERE a.usename = l.usename",
            &[&pids, &users, &databases, &opened_secs_ago, &STARTED_WITHIN.as_secs_f64()],
        )
        .await?;
    let mut rest = Vec::new();
    for l in entries {
        let row = rows.iter().find(|r| r.get::<_, i32>(0) == l.pid);
        let (visible, same) = match row {
            Some(r) => (
                r.get::<_, bool>(1),
                r.get::<_, Option<bool>>(2) == Some(true),
            ),
            None => (true, false),
        };
        if !visible {
            rest.push(l.clone());
            continue;
        }
        if !same {
            ended.gone += 1;
            continue;
        }
        match client
            .query_one("SELECT pg_terminate_backend($1)", &[&l.pid])
            .await
        {
            Ok(row) if row.get::<_, bool>(0) => {
                info!(side = side.name(), pid = l.pid, user = %l.user,
                    lost_for = ?l.at.elapsed(),
                    "ended a backend session the proxy had lost (it could hold locks others wait for)");
                metrics::counter!("dualwrite_lost_sessions_ended_total", "side" => side.name())
                    .increment(1);
                ended.terminated += 1;
            }
            Ok(_) => ended.gone += 1,
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                rest.push(l.clone())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(rest)
}
