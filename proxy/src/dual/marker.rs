//! The commit marker: how replay learns whether the secondary committed a write whose answer
//! was lost.
//!
//! Each secondary session has a key (this proxy run's id and the session's number) and counts
//! the units it commits there. Inside the very transaction of a unit it sends, just before the
//! COMMIT (or, for a unit outside a transaction, in its implicit transaction), it upserts its
//! row of `_dualwrite.commit_marker` to the unit's number. The row commits if and only if the
//! unit does. A unit whose answer is lost is journaled *in doubt* with its key and number;
//! replay reads the row: a number at least the unit's means it committed (skipped, counted),
//! a smaller one or none means it did not (applied).
//!
//! The upsert is also a fence: it fails (NOT NULL violation, so the transaction rolls back)
//! when the row already holds the unit's number or a larger one. Replay sets the row to the
//! record's number in the transaction that applies it, so a lost session that lives on in the
//! server and only now gets its COMMIT cannot commit the same writes a second time.
//!
//! The schema is made by the proxy's own login on the side, in each database sessions use,
//! and everyone may write it (`GRANT ... TO PUBLIC`). Where it can't be made or a login can't
//! write it, that login's units go unmarked and an in-doubt one falls back to the older rule
//! (see `replay`).

use std::collections::HashMap;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Backend;

/// The bookkeeping schema on a side: replay's record of applied journal records, and the
/// sessions' commit markers (a row per session, updated in place).
pub const SCHEMA_SQL: &str = "CREATE SCHEMA IF NOT EXISTS _dualwrite;
CREATE TABLE IF NOT EXISTS _dualwrite.journal_applied (
    journal_id text NOT NULL, seq bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (journal_id, seq));
CREATE TABLE IF NOT EXISTS _dualwrite.commit_marker (
    session text PRIMARY KEY, seq bigint NOT NULL) WITH (fillfactor = 50);
GRANT USAGE ON SCHEMA _dualwrite TO PUBLIC;
GRANT SELECT, INSERT ON _dualwrite.journal_applied TO PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON _dualwrite.commit_marker TO PUBLIC;";

/// What a login must be allowed to do for its units to be marked.
const CAN_MARK_SQL: &str = "SELECT has_schema_privilege($1, '_dualwrite', 'USAGE')
    AND has_table_privilege($1, '_dualwrite.commit_marker', 'SELECT, INSERT, UPDATE')";

/// A unit's marker: its session's key and its number in that session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    pub session: String,
    pub seq: u64,
}

impl Marker {
    /// The statement a session runs inside the unit's transaction: sets its row to `seq`, and
    /// fails (23502) when the row already has `seq` or more (replay got there first).
    pub fn upsert(&self) -> String {
        format!(
            "INSERT INTO _dualwrite.commit_marker AS m (session, seq) VALUES ('{}', {}) \
             ON CONFLICT (session) DO UPDATE SET seq = CASE WHEN m.seq < EXCLUDED.seq THEN EXCLUDED.seq END",
            self.session, self.seq
        )
    }

    /// Replay's statement, first in the transaction that applies an in-doubt record: `INSERT 0
    /// 1` when the unit did not commit (the row now holds its number and is locked until this
    /// transaction ends), `INSERT 0 0` when it did. It waits for a session still holding the row.
    pub fn claim(&self) -> String {
        format!(
            "INSERT INTO _dualwrite.commit_marker AS m (session, seq) VALUES ('{}', {}) \
             ON CONFLICT (session) DO UPDATE SET seq = EXCLUDED.seq WHERE m.seq < EXCLUDED.seq",
            self.session, self.seq
        )
    }

    /// The session's number on the side, if any: a read for records that run their own
    /// transaction control (they cannot begin with [`Marker::claim`]).
    pub fn read(&self) -> String {
        format!(
            "SELECT seq FROM _dualwrite.commit_marker WHERE session = '{}'",
            self.session
        )
    }

    /// Removes the session's row when it ends with nothing left in doubt.
    pub fn forget(session: &str) -> String {
        format!("DELETE FROM _dualwrite.commit_marker WHERE session = '{session}'")
    }
}

/// This run's marker keys, and which logins can write markers where.
pub struct Markers {
    /// Names this proxy run in marker keys: random, so keys never repeat across restarts.
    run: String,
    /// (side, database, user) -> whether that login's units are marked.
    usable: std::sync::Mutex<HashMap<Login, bool>>,
    /// Held while a schema is made: one at a time.
    making: tokio::sync::Mutex<()>,
}

type Login = (&'static str, String, String);

impl Default for Markers {
    fn default() -> Self {
        Self::new()
    }
}

impl Markers {
    pub fn new() -> Markers {
        use rand::RngCore;
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        Markers {
            run: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            usable: std::sync::Mutex::new(HashMap::new()),
            making: tokio::sync::Mutex::new(()),
        }
    }

    /// The marker key of session `id` (only hex digits, `-` and digits: safe in a literal).
    pub fn key(&self, id: u64) -> String {
        format!("{}-{id}", self.run)
    }

    /// Whether `user`'s units in `database` on `backend` can be marked: the schema is made
    /// there once (by the proxy's own login) and the login's rights checked, then remembered.
    /// `None` when the side could not tell now (unreachable, going down): not remembered.
    pub async fn usable(
        &self,
        backend: &Backend,
        user: &str,
        database: &str,
        timeout: Duration,
    ) -> Option<bool> {
        let key = (backend.side.name(), database.to_string(), user.to_string());
        if let Some(ok) = self.known(&key) {
            return Some(ok);
        }
        let _making = self.making.lock().await;
        if let Some(ok) = self.known(&key) {
            return Some(ok);
        }
        let mut url = backend.url.clone();
        url.dbname = database.to_string();
        let connected =
            tokio::time::timeout(timeout, dualwrite_common::connect(&url, "dualwrite-proxy")).await;
        let client = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                warn!(error = %e, side = backend.side.name(), database, "cannot reach the side to prepare commit markers; units go unmarked for now");
                return None;
            }
            Err(_) => {
                warn!(
                    side = backend.side.name(),
                    database, "timed out preparing commit markers; units go unmarked for now"
                );
                return None;
            }
        };
        let mut made = client.batch_execute(SCHEMA_SQL).await;
        if made.as_ref().is_err_and(|e| !of_the_moment(e)) {
            // Another proxy (or replay) may have been making it at the same moment.
            made = client.batch_execute(SCHEMA_SQL).await;
        }
        let checked = match made {
            Ok(()) => client
                .query_one(CAN_MARK_SQL, &[&user])
                .await
                .map(|row| row.get::<_, bool>(0)),
            Err(e) => Err(e),
        };
        let ok = match checked {
            Ok(true) => true,
            Ok(false) => {
                warn!(user, side = backend.side.name(), database,
                    "this login may not write _dualwrite.commit_marker: its in-doubt writes cannot be told apart from applied ones");
                false
            }
            Err(e) if of_the_moment(&e) => {
                // The side went away meanwhile: nothing learnt, asked again at the next connect.
                warn!(error = %dualwrite_common::connect::describe_error(&e), side = backend.side.name(), database,
                    "lost the side while preparing commit markers; units go unmarked for now");
                return None;
            }
            Err(e) => {
                warn!(error = %dualwrite_common::connect::describe_error(&e), user, side = backend.side.name(), database,
                    "cannot make the commit-marker table or check the login's rights on it: in-doubt writes in this database cannot be told apart from applied ones");
                false
            }
        };
        if ok {
            info!(
                user,
                side = backend.side.name(),
                database,
                "commit markers ready"
            );
        }
        self.usable
            .lock()
            .expect("marker lock poisoned")
            .insert(key, ok);
        Some(ok)
    }

    fn known(&self, key: &Login) -> Option<bool> {
        self.usable
            .lock()
            .expect("marker lock poisoned")
            .get(key)
            .copied()
    }

    /// A login's marker failed although it looked usable: its units go unmarked from now on.
    pub fn refuse(&self, backend: &Backend, user: &str, database: &str) {
        let key = (backend.side.name(), database.to_string(), user.to_string());
        self.usable
            .lock()
            .expect("marker lock poisoned")
            .insert(key, false);
    }
}

/// An error that says nothing about the schema or the login's rights: the connection went (or
/// the server is going) away, a lock or resources were short (see `outcome::transient`).
fn of_the_moment(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => crate::dual::outcome::transient(db.code().code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_per_run_and_session_and_safe_in_literals() {
        let (a, b) = (Markers::new(), Markers::new());
        assert_ne!(a.key(1), b.key(1));
        assert_ne!(a.key(1), a.key(2));
        assert!(a
            .key(u64::MAX)
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-'));
    }

    #[test]
    fn statements_name_the_session_and_number() {
        let m = Marker {
            session: "ab-7".into(),
            seq: 42,
        };
        assert!(m.upsert().contains("VALUES ('ab-7', 42)"));
        assert!(m.upsert().contains("THEN EXCLUDED.seq END"));
        assert!(m.claim().ends_with("WHERE m.seq < EXCLUDED.seq"));
        assert!(m.read().ends_with("session = 'ab-7'"));
    }
}
