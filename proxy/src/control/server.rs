//! The listener: accepts clients, hands each to a session task, and shuts down in order
//! (stop accepting, let sessions reach an idle point, then close what is left).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{Mode, Settings};
use crate::dual::facts::DualState;
use crate::dual::journal::Journal;
use crate::metrics::Metrics;
use crate::session::shared::Shared;
use crate::wire::cancel::Cancels;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the journal: {0}")]
    Journal(#[from] crate::dual::journal::JournalError),
}

/// A bound proxy, ready to run. Binding first lets callers (tests, the demo) learn the
/// addresses before traffic starts.
pub struct Proxy {
    listener: TcpListener,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl Proxy {
    pub async fn bind(mut settings: Settings) -> Result<Proxy, ServeError> {
        // A persisted state (an earlier run's cutover or live change) wins over the file.
        let persisted = settings
            .target
            .as_ref()
            .and_then(|_| crate::control::state::load(&settings.journal_dir));
        let state_from = match &persisted {
            Some(state) => {
                info!(mode = ?state.mode, primary = state.primary.name(), saved_at = %state.saved_at,
                    "resuming the state persisted in the journal dir, not the config file's mode/primary");
                crate::control::state::apply(&mut settings, state);
                format!("persisted state saved at {}", state.saved_at)
            }
            None => "config file".to_string(),
        };
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let admin = match settings.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?,
            ),
            None => None,
        };
        let journal = match settings.target {
            Some(_) => Some(
                Journal::open_with(
                    &settings.journal_dir,
                    settings.fsync_interval,
                    settings.max_backlog_bytes,
                )
                .await?,
            ),
            None => None,
        };
        let dual = DualState::default();
        if settings.target.is_some() {
            if let Some(facts) = crate::dual::facts::load_facts(&settings.journal_dir) {
                dual.restore(&facts);
            }
        }
        if settings.mode == Mode::DualWrite {
            dual.mark_started();
        }
        if let Some(j) = &journal {
            if j.stats().missed > 0 {
                // Records from an earlier run may not be replayed yet: journal until they are.
                dual.detach("the journal holds records from an earlier run");
            }
        }
        let gate = crate::session::gate::Gate::default();
        if let Some(state) = persisted {
            gate.set_history(state.history);
        }
        let shared = Arc::new(Shared {
            state_from,
            gate,
            dual,
            journal,
            shadow: crate::shadow::results::Shadow::new(settings.shadow_reads),
            lanes: crate::shadow::lane::Lanes::default(),
            abandoned: crate::dual::abandoned::Abandoned::default(),
            order: Arc::default(),
            connection_slots: Arc::new(Semaphore::new(settings.max_client_connections)),
            settings: RwLock::new(Arc::new(settings)),
            metrics: Metrics::default(),
            cancels: Cancels::default(),
            graceful: CancellationToken::new(),
            kill: CancellationToken::new(),
            abandon_journal: CancellationToken::new(),
            started: Instant::now(),
            markers: crate::dual::marker::Markers::new(),
            next_id: AtomicU64::new(1),
        });
        Ok(Proxy {
            listener,
            admin,
            shared,
        })
    }

    /// The state the admin API works on (for signal handlers and embedding).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serve until `shutdown` fires, then drain.
    pub async fn run(self, shutdown: CancellationToken) {
        let Proxy {
            listener,
            admin,
            shared,
        } = self;
        let tracker = TaskTracker::new();
        let settings = shared.settings();
        info!(
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            mode = ?settings.mode,
            primary = settings.primary.name(),
            source = %settings.source.url,
            "dualwrite-proxy listening"
        );
        if let Some(admin) = admin {
            tracker.spawn(crate::control::admin::serve(
                admin,
                shared.clone(),
                shutdown.clone(),
            ));
        }
        tracker.spawn(end_lost_sessions(shared.clone(), shutdown.clone()));
        if shared.journal.is_some() {
            for backend in [Some(&settings.source), settings.target.as_ref()]
                .into_iter()
                .flatten()
            {
                tracker.spawn(probe_wal_keys(
                    shared.clone(),
                    backend.clone(),
                    shutdown.clone(),
                ));
            }
            tracker.spawn(reattach(shared.clone(), shutdown.clone()));
            tracker.spawn(persist_dual_facts(shared.clone(), shutdown.clone()));
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let id = shared.next_session_id();
                        tracker.spawn(crate::session::client::handle(stream, peer, shared.clone(), id));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
        tracker.close();
        info!(
            sessions = shared.client_connections(),
            "shutting down: waiting for open transactions"
        );
        shared.graceful.cancel();
        let grace = shared.settings().shutdown_timeout;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                sessions = shared.client_connections(),
                "grace period over: closing remaining sessions"
            );
            shared.kill.cancel();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
        }
        if let Some(j) = &shared.journal {
            finish_journal(j, &shared.abandon_journal).await;
        }
        info!("dualwrite-proxy stopped");
    }
}

/// While the secondary is detached, replay the journal and re-attach once it is replayed to
/// its end. The last stretch runs with the gate held exclusively, so no session journals a
/// write between "replayed to the end" and "attached".
/// Persist when dual-writing began (overall and per table) whenever it changes, checked every
/// second, and once more at shutdown.
async fn persist_dual_facts(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
        };
        if let Some(facts) = shared.dual.take_changes() {
            let dir = shared.settings().journal_dir.clone();
            let _ =
                tokio::task::spawn_blocking(move || crate::dual::facts::save_facts(&dir, &facts))
                    .await;
        }
        if stop {
            return;
        }
    }
}

/// At shutdown: every journal record on disk before the proxy stops. While the disk refuses
/// writes the records are only in memory, so the stop waits for the disk (saying so every 10 s)
/// until `abandon` fires (a second stop request), which stops without them.
async fn finish_journal(j: &Journal, abandon: &CancellationToken) {
    let flush = j.flush();
    tokio::pin!(flush);
    loop {
        tokio::select! {
            r = &mut flush => {
                if let Err(e) = r {
                    tracing::error!(error = %e, backlog_bytes = j.backlog_bytes(),
                        "JOURNAL NOT WRITTEN at shutdown: the secondary is missing these writes; \
                         re-backfill the affected time range");
                }
                return;
            }
            _ = abandon.cancelled() => {
                tracing::error!(backlog_bytes = j.backlog_bytes(),
                    "JOURNAL NOT WRITTEN: stopped on a second request while the journal's disk \
                     refused writes; the secondary is missing these writes; re-backfill the \
                     affected time range");
                return;
            }
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                tracing::error!(backlog_bytes = j.backlog_bytes(),
                    "waiting for the journal's disk before stopping: records of writes the \
                     secondary missed are only in memory; free space on it, or send the stop \
                     signal again to stop without them");
            }
        }
    }
}

/// End the backend sessions lost without a clean close that may live on in their server (see
/// `abandoned`): looked for every second on each side that has any, backing off up to 30 s
/// while a side cannot be reached. (Before a replay, the replay ends them itself.)
async fn end_lost_sessions(shared: Arc<Shared>, shutdown: CancellationToken) {
    let first = std::time::Duration::from_secs(1);
    let mut wait = [first, first];
    let mut next = [tokio::time::Instant::now(); 2];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(first) => {}
        }
        let settings = shared.settings();
        for backend in std::iter::once(&settings.source).chain(settings.target.as_ref()) {
            let i = backend.side as usize;
            if shared.abandoned.pending(backend.side) == 0 || tokio::time::Instant::now() < next[i]
            {
                continue;
            }
            let work = async {
                let client = dualwrite_common::connect(&backend.url, "dualwrite-proxy")
                    .await
                    .map_err(|e| e.to_string())?;
                shared
                    .abandoned
                    .end_on(backend.side, &client, |user, database| {
                        crate::dual::replay::connect_as(&settings, backend, user, database)
                    })
                    .await
                    .map_err(|e| e.to_string())
            };
            // Never held up by a side that does not answer, nor holding up a shutdown.
            let limit = settings.connect_timeout + std::time::Duration::from_secs(10);
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(limit, work) => {
                    r.unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
                }
            };
            wait[i] = match result {
                Ok(_) => first,
                Err(e) => {
                    debug!(side = backend.side.name(), error = %e, "lost sessions not ended yet");
                    (wait[i] * 2).min(std::time::Duration::from_secs(30))
                }
            };
            next[i] = tokio::time::Instant::now() + wait[i];
        }
    }
}

/// Check once that the commit order's keys can be read on `backend` (see `order`): the WAL
/// position function answers and every login may call it. Until then, and if it cannot, the
/// order is the order of the primary's acknowledgements.
async fn probe_wal_keys(
    shared: Arc<Shared>,
    backend: crate::config::Backend,
    shutdown: CancellationToken,
) {
    let target = backend.side == crate::config::Side::Target;
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        let probe = async {
            let client = dualwrite_common::connect(&backend.url, "dualwrite-proxy")
                .await
                .map_err(|e| (true, e.to_string()))?;
            let row = client
                .query_one(
                    "SELECT pg_catalog.pg_current_wal_insert_lsn()::text, \
                     pg_catalog.has_function_privilege('public', 'pg_catalog.pg_current_wal_insert_lsn()', 'EXECUTE')",
                    &[],
                )
                .await
                .map_err(|e| (false, e.to_string()))?;
            Ok::<bool, (bool, String)>(row.get(1))
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = probe => r,
        };
        match result {
            Ok(true) => {
                shared.order.set_wal_keys(target, true);
                debug!(
                    side = backend.side.name(),
                    "commit order keyed by WAL positions"
                );
                return;
            }
            Ok(false) => {
                warn!(side = backend.side.name(), "pg_current_wal_insert_lsn() is not executable by every login: the commit order follows the primary's acknowledgements");
                return;
            }
            Err((false, e)) => {
                warn!(side = backend.side.name(), error = %e, "cannot read WAL positions: the commit order follows the primary's acknowledgements");
                return;
            }
            Err((true, _)) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

async fn reattach(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut wait = shared.settings().reconnect_backoff;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if let Some(j) = &shared.journal {
            metrics::gauge!("dualwrite_journal_backlog_bytes").set(j.backlog_bytes() as f64);
        }
        metrics::gauge!("dualwrite_secondary_attached").set(if shared.dual.attached() {
            1.0
        } else {
            0.0
        });
        if shared.dual.attached() {
            wait = shared.settings().reconnect_backoff;
            continue;
        }
        let settings = shared.settings();
        if shared.journal.as_ref().is_some_and(|j| j.failing()) {
            // Records are waiting for the disk: the journal has no end to replay to yet.
            warn!("the journal cannot be written; the secondary stays detached");
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
            continue;
        }
        match crate::dual::replay::replay(&settings, Some(&shared.abandoned), &mut |_| {}).await {
            Ok(_) => {
                let _gate = shared.dual.gate.write().await;
                // Records queued before the gate closed must be on disk before the last replay.
                // Not for long: sessions wait for the gate meanwhile.
                if let Some(j) = &shared.journal {
                    match tokio::time::timeout(std::time::Duration::from_secs(5), j.flush()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            warn!(error = %e, "journal flush failed; staying detached");
                            continue;
                        }
                        Err(_) => {
                            warn!("journal flush too slow; staying detached");
                            continue;
                        }
                    }
                }
                match crate::dual::replay::replay(&settings, Some(&shared.abandoned), &mut |_| {})
                    .await
                {
                    Ok(summary) if summary.remaining == 0 => {
                        info!(applied = summary.applied, "journal replayed");
                        shared.dual.attach();
                        wait = settings.reconnect_backoff;
                        continue;
                    }
                    Ok(summary) => warn!(
                        remaining = summary.remaining,
                        "journal not yet replayed to its end"
                    ),
                    Err(e) => warn!(error = %e, "journal replay stopped"),
                }
            }
            Err(e) => warn!(error = %e, "journal replay stopped; the secondary stays detached"),
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(30));
    }
}
