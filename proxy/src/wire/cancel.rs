//! Cancel keys. A client gets the primary backend session's real process id in BackendKeyData
//! (so it matches `pg_backend_pid()` and the pid in notifications), with a secret key of the
//! proxy's own: a CancelRequest therefore comes to the proxy, which forwards it with the backend
//! session's real key. Keys live by (pid, secret): pids of the two databases can coincide, and
//! a session keeps its pid after a cutover while the other side may hand the same pid to a new
//! session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use rand::Rng;

use crate::config::Backend;
use crate::metrics::Metrics;
use crate::wire::backend;

/// The key a client was given: the pid it saw, and the proxy's secret.
type Key = (i32, i32);

struct Target {
    backend: Backend,
    backend_pid: i32,
    backend_secret: Bytes,
}

/// Live cancel keys by the key the client was given.
#[derive(Default)]
pub struct Cancels {
    keys: Arc<DashMap<Key, Target>>,
}

/// The key a client was given; removed when the session ends.
pub struct CancelGuard {
    pub pid: i32,
    pub secret: i32,
    keys: Arc<DashMap<Key, Target>>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.keys.remove(&(self.pid, self.secret));
    }
}

impl Cancels {
    /// A key for a client whose backend session is `(backend_pid, backend_secret)` on
    /// `backend`: the same pid, a fresh random secret.
    pub fn register(
        &self,
        backend: Backend,
        backend_pid: i32,
        backend_secret: Bytes,
    ) -> CancelGuard {
        let mut rng = rand::rng();
        loop {
            let secret = rng.random();
            if let dashmap::Entry::Vacant(v) = self.keys.entry((backend_pid, secret)) {
                v.insert(Target {
                    backend,
                    backend_pid,
                    backend_secret,
                });
                return CancelGuard {
                    pid: backend_pid,
                    secret,
                    keys: self.keys.clone(),
                };
            }
        }
    }

    /// Point a client's key at another backend session (after a cutover swapped them); the
    /// client keeps the key it was given.
    pub fn retarget(
        &self,
        guard: &CancelGuard,
        backend: Backend,
        backend_pid: i32,
        backend_secret: Bytes,
    ) {
        if let Some(mut t) = self.keys.get_mut(&(guard.pid, guard.secret)) {
            t.backend = backend;
            t.backend_pid = backend_pid;
            t.backend_secret = backend_secret;
        }
    }

    /// Forward a CancelRequest if the key matches a live session; otherwise ignore it, as
    /// Postgres does.
    pub async fn cancel(&self, pid: i32, secret: &[u8], metrics: &Metrics, timeout: Duration) {
        let target = <[u8; 4]>::try_from(secret)
            .ok()
            .map(i32::from_be_bytes)
            .and_then(|secret| self.keys.get(&(pid, secret)))
            .map(|t| (t.backend.clone(), t.backend_pid, t.backend_secret.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Backend {
        crate::config::Settings::from_toml(
            "admin_listen = \"\"\n[source]\nurl = \"postgres://u:p@127.0.0.1:1/db?sslmode=disable\"\n\
             [auth]\nmethod = \"trust\"\n",
        )
        .expect("settings")
        .primary_backend()
        .clone()
    }

    #[test]
    fn a_client_keeps_the_backend_pid_and_gets_its_own_secret() {
        let cancels = Cancels::default();
        let g = cancels.register(backend(), 4242, Bytes::from_static(b"\0\0\0\x07"));
        assert_eq!(g.pid, 4242);
        let t = cancels.keys.get(&(4242, g.secret)).expect("registered");
        assert_eq!(t.backend_pid, 4242);
        assert_eq!(&t.backend_secret[..], b"\0\0\0\x07");
    }

    #[test]
    fn the_same_pid_twice_gets_two_keys() {
        // A session that kept its pid through a cutover, and a new one the other side gave the
        // same pid.
        let cancels = Cancels::default();
        let a = cancels.register(backend(), 100, Bytes::from_static(b"aaaa"));
        let b = cancels.register(backend(), 100, Bytes::from_static(b"bbbb"));
        assert_ne!(a.secret, b.secret);
        cancels.retarget(&a, backend(), 555, Bytes::from_static(b"cccc"));
        assert_eq!(cancels.keys.get(&(100, a.secret)).unwrap().backend_pid, 555);
        assert_eq!(cancels.keys.get(&(100, b.secret)).unwrap().backend_pid, 100);
        drop(a);
        assert!(cancels.keys.get(&(100, b.secret)).is_some());
        assert_eq!(cancels.keys.len(), 1);
    }
}
