//! Backend sessions the proxy gave up on, and ending them on their server.
//!
//! When a backend connection is lost without a clean close (a silent network, a timeout), its
//! server may never learn that it ended: the proxy's FIN or reset is dropped with everything
//! else, and the server's own TCP keepalive waits two hours by default. Such a session lives
//! on in the server. Idle, it takes a connection slot; caught inside a transaction, it holds
//! that transaction's row locks, and the replay of the journal (which re-applies the very same
//! transaction) waits on them.
//!
//! So every session lost that way is listed here, with what identifies it on its server (the
//! process id from BackendKeyData, user and database, and how long ago it was lost), and the
//! proxy ends those it can still find with `pg_terminate_backend` as its own login before it
//! replays the journal to that side, and otherwise whenever it can reach the side. A session is
//! only ended if it started before it was lost: the server's own clock decides, against the
//! time elapsed on the proxy's monotonic clock, so a process id reused by a later session is
//! never taken for the lost one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{Backend, Side};

/// Entries kept at most; past it the oldest are forgotten (and said so).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Lost {
    pub side: Side,
    pub pid: i32,
    pub user: String,
    pub database: String,
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
    pub fn record(&self, side: Side, pid: i32, user: &str, database: &str) {
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

    /// End on `backend`'s server the sessions lost there, with `client` (the proxy's own login
    /// on it). Entries it could check are removed; an error reaching the server keeps them all
    /// for the next time.
    pub async fn end_on(
        &self,
        backend: &Backend,
        client: &tokio_postgres::Client,
    ) -> Result<Ended, tokio_postgres::Error> {
        let entries: Vec<Lost> = {
            let lost = self.lost.lock().expect("abandoned sessions lock poisoned");
            lost.iter()
                .filter(|l| l.side == backend.side)
                .cloned()
                .collect()
        };
        let mut ended = Ended::default();
        for l in &entries {
            // A second's slack for the clocks' granularity; a reused pid would have to belong
            // to a session of the same user and database started within it.
            let before = l.at.elapsed().saturating_sub(Duration::from_secs(1));
            let secs = before.as_secs_f64();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&l.pid, &l.user, &l.database, &secs];
            let found = client
                .query(
                    "SELECT pid FROM pg_stat_activity
                      WHERE pid = $1 AND usename = $2 AND datname = $3
                        AND backend_start < now() - make_interval(secs => $4)",
                    &params,
                )
                .await?;
            if found.is_empty() {
                ended.gone += 1;
            } else {
                match client
                    .query_one("SELECT pg_terminate_backend($1)", &[&l.pid])
                    .await
                {
                    Ok(row) if row.get::<_, bool>(0) => {
                        info!(side = backend.side.name(), pid = l.pid, user = %l.user,
                            lost_for = ?l.at.elapsed(),
                            "ended a backend session the proxy had lost (it could hold locks the journal's replay needs)");
                        metrics::counter!("dualwrite_lost_sessions_ended_total", "side" => backend.side.name())
                            .increment(1);
                        ended.terminated += 1;
                    }
                    Ok(_) => ended.gone += 1,
                    Err(e) if e.code().is_some() => {
                        warn!(side = backend.side.name(), pid = l.pid, user = %l.user, error = %e,
                            "a backend session the proxy lost may still hold locks; its login may not end it: run SELECT pg_terminate_backend({}) as a superuser", l.pid);
                        ended.refused += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.forget(l);
        }
        Ok(ended)
    }

    fn forget(&self, entry: &Lost) {
        self.lost
            .lock()
            .expect("abandoned sessions lock poisoned")
            .retain(|l| !(l.side == entry.side && l.pid == entry.pid && l.at == entry.at));
    }
}
