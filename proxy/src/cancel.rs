//! Cancel keys: each client gets the proxy's own BackendKeyData, mapped to its backend
//! session's key, so a client's CancelRequest reaches exactly its own backend query.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use rand::Rng;

use crate::backend;
use crate::config::Backend;
use crate::metrics::Metrics;

struct Target {
    secret: i32,
    backend: Backend,
    backend_pid: i32,
    backend_secret: Bytes,
}

/// Live cancel keys by the pid the client was given.
#[derive(Default)]
pub struct Cancels {
    keys: Arc<DashMap<i32, Target>>,
}

/// Removes the key when the session ends.
pub struct CancelGuard {
    pub pid: i32,
    pub secret: i32,
    keys: Arc<DashMap<i32, Target>>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.keys.remove(&self.pid);
    }
}

impl Cancels {
    pub fn register(
        &self,
        backend: Backend,
        backend_pid: i32,
        backend_secret: Bytes,
    ) -> CancelGuard {
        let mut rng = rand::rng();
        loop {
            let pid = rng.random_range(1..i32::MAX);
            let secret = rng.random();
            if let dashmap::Entry::Vacant(v) = self.keys.entry(pid) {
                v.insert(Target {
                    secret,
                    backend,
                    backend_pid,
                    backend_secret,
                });
                return CancelGuard {
                    pid,
                    secret,
                    keys: self.keys.clone(),
                };
            }
        }
    }

    /// Point a client's key at another backend session (after a cutover swapped them).
    pub fn retarget(&self, pid: i32, backend: Backend, backend_pid: i32, backend_secret: Bytes) {
        if let Some(mut t) = self.keys.get_mut(&pid) {
            t.backend = backend;
            t.backend_pid = backend_pid;
            t.backend_secret = backend_secret;
        }
    }

    /// Forward a CancelRequest if the key matches a live session; otherwise ignore it, as
    /// Postgres does.
    pub async fn cancel(&self, pid: i32, secret: &[u8], metrics: &Metrics, timeout: Duration) {
        let target = self.keys.get(&pid).and_then(|t| {
            (secret == t.secret.to_be_bytes())
                .then(|| (t.backend.clone(), t.backend_pid, t.backend_secret.clone()))
        });
        let Some((backend, bpid, bsecret)) = target else {
            metrics.cancel("unknown_key");
            return;
        };
        metrics.cancel("forwarded");
        if let Err(e) = backend::cancel(&backend, bpid, &bsecret, timeout).await {
            tracing::warn!(error = %e, "forwarding cancel request failed");
        }
    }
}
