//! Opening the secondary session: reconnect backoff, and whether its login writes commit markers.

use super::*;

impl Worker {
    pub(super) async fn connect(&mut self) {
        if let Some(conn) = self.open_conn().await {
            self.statements.clear();
            self.sec_status = b'I';
            self.backoff = self.shared.settings().reconnect_backoff;
            self.conn = Some(conn);
            self.marking = self.can_mark().await;
            debug!(marking = ?self.marking, "secondary session open");
        }
    }

    /// Whether this session's login can write commit markers on its secondary (see `marker`).
    pub(super) async fn can_mark(&mut self) -> Option<bool> {
        let shared = self.shared.clone();
        let timeout = shared.settings().connect_timeout;
        shared
            .markers
            .usable(&self.backend, &self.info.user, &self.info.database, timeout)
            .await
    }

    /// The marker for the next unit that commits on the secondary, when this login writes them.
    pub(super) async fn next_marker(&mut self) -> Option<Marker> {
        if self.marking.is_none() && self.conn.is_some() {
            self.marking = self.can_mark().await;
        }
        if self.marking != Some(true) {
            return None;
        }
        self.marker_seq += 1;
        Some(Marker {
            session: self.marker_key.clone(),
            seq: self.marker_seq,
        })
    }

    /// The commit marker itself failed (not the unit): this login cannot write it after all.
    /// Its units go unmarked from now on.
    pub(super) fn stop_marking(&mut self, why: &str) {
        warn!(error = why, user = %self.info.user, database = %self.info.database,
            "secondary: the commit marker cannot be written; this login's writes go unmarked");
        self.marking = Some(false);
        self.shared
            .markers
            .refuse(&self.backend, &self.info.user, &self.info.database);
    }

    /// A new secondary session as the client's user, with the session's state restored.
    pub(super) async fn open_conn(&mut self) -> Option<Conn> {
        let settings = self.shared.settings();
        let password = settings
            .users
            .get(&self.info.user)
            .and_then(|u| u.backend_password(self.backend.side).cloned())
            .or_else(|| {
                (self.backend.url.user == self.info.user)
                    .then(|| self.backend.url.password.clone())
                    .flatten()
            });
        match backend::connect(
            &self.backend,
            &self.info.user,
            &self.info.database,
            password.as_ref(),
            &self.info.params,
            settings.connect_timeout,
        )
        .await
        {
            Ok(c) => {
                let mut conn = Conn {
                    reader: c.reader,
                    writer: c.writer,
                    buf: c.leftover,
                    key: c.key,
                    connected_at: c.connected_at,
                };
                for stmt in self.prelude.clone() {
                    let mut q = BytesMut::new();
                    let mut body = stmt.into_bytes();
                    body.push(0);
                    protocol::frontend_message(&mut q, f::QUERY, &body);
                    if let Err(e) = roundtrip(&mut conn, &q).await {
                        warn!(error = %e.0, "secondary: restoring session state failed");
                        return None;
                    }
                }
                Some(conn)
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?self.backoff, "secondary unreachable");
                self.next_connect = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                None
            }
        }
    }
}
