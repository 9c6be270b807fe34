//! `dualwrite-proxy` in-process, on free loopback ports.

use std::net::SocketAddr;

use dualwrite_proxy::{Proxy, Settings};
use tokio_util::sync::CancellationToken;

/// A running proxy; shut down (gracefully) on drop.
pub struct ProxyHandle {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProxyHandle {
    /// Start a proxy from TOML. `listen` and `admin_listen` default to free loopback ports
    /// unless the TOML sets them. Must be called inside a tokio runtime.
    pub async fn start(toml: &str) -> ProxyHandle {
        let mut text = String::new();
        if !toml.contains("\nlisten") && !toml.starts_with("listen") {
            text.push_str("listen = \"127.0.0.1:0\"\n");
        }
        if !toml.contains("admin_listen") {
            text.push_str("admin_listen = \"127.0.0.1:0\"\n");
        }
        text.push_str(toml);
        let settings =
            Settings::from_toml(&text).unwrap_or_else(|e| panic!("proxy config: {e}\n{text}"));
        let proxy = Proxy::bind(settings).await.expect("binding the proxy");
        let addr = proxy.local_addr();
        let admin = proxy.admin_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(proxy.run(shutdown.clone()));
        ProxyHandle {
            addr,
            admin,
            shutdown,
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A URL that reaches `db` through the proxy as `user`.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.addr.port()
        )
    }

    /// Stop accepting and wait for the proxy to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// `POST` JSON to an admin path; returns (status code, body).
    pub async fn admin_post(&self, path: &str, json: &str) -> (u16, String) {
        let addr = self.admin.expect("admin_listen is set");
        dualwrite_proxy::admin_client::request(addr, "POST", path, Some(json))
            .await
            .expect("admin request")
    }

    /// `GET` an admin path, returning the body (which must come with 200).
    pub async fn admin_get(&self, path: &str) -> String {
        let addr = self.admin.expect("admin_listen is set");
        let (code, body) = dualwrite_proxy::admin_client::request(addr, "GET", path, None)
            .await
            .expect("admin request");
        assert_eq!(code, 200, "admin {path}: {body}");
        body
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// TOML for a pass-through proxy in front of `source_url` with one SCRAM user that logs in to
/// the backend with the same name and password.
pub fn passthrough_toml(source_url: &str, user: &str, password: &str) -> String {
    format!(
        "mode = \"primary-only\"\nprimary = \"source\"\n[source]\nurl = \"{source_url}\"\n\
         [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"{user}\", password = \"{password}\" }}]\n"
    )
}

/// A tokio-postgres client for `url` (no TLS); its connection is driven on a task.
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connecting through the proxy");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Run pgbench as `app` against `port` (database `app`); panics with its output on failure.
pub fn pgbench(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new(crate::PgBin::source().bin("pgbench"))
        .env("PGPASSWORD", APP_PASSWORD)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", APP_USER])
        .args(args)
        .arg("app")
        .output()
        .expect("running pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

/// A cluster with database `app` owned by login role `app` (password `app-secret`), and a
/// pass-through proxy in front of it.
pub struct Passthrough {
    pub cluster: crate::Cluster,
    pub proxy: ProxyHandle,
}

pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";

impl Passthrough {
    pub async fn start() -> Passthrough {
        Self::start_with("scram-sha-256", "").await
    }

    /// `method` is the proxy's `auth.method`; `extra` is appended to the TOML (top-level keys
    /// must come before any section, so pass sections only, or use `top`).
    pub async fn start_with(method: &str, extra: &str) -> Passthrough {
        Self::start_full(method, "", extra).await
    }

    pub async fn start_full(method: &str, top: &str, extra: &str) -> Passthrough {
        let cluster = crate::Cluster::start(&crate::PgBin::source());
        cluster.create_role(APP_USER, APP_PASSWORD, "");
        cluster.psql("postgres", "CREATE DATABASE app OWNER app");
        let toml = format!(
            "{top}\nmode = \"primary-only\"\n[source]\nurl = \"{}\"\n[auth]\nmethod = \"{method}\"\n\
             users = [{{ name = \"{APP_USER}\", password = \"{APP_PASSWORD}\" }}]\n{extra}",
            cluster.url("app")
        );
        let proxy = ProxyHandle::start(&toml).await;
        Passthrough { cluster, proxy }
    }

    pub fn url(&self) -> String {
        self.proxy.url(APP_USER, APP_PASSWORD, "app")
    }

    /// A tokio-postgres client through the proxy; its connection is driven on a task.
    pub async fn client(&self) -> tokio_postgres::Client {
        client(&self.url()).await
    }

    /// Sessions of `app` on the backend (to find leaked backend connections).
    pub fn backend_sessions(&self) -> usize {
        self.cluster
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
            )
            .parse()
            .expect("a count")
    }

    /// Wait until the backend has `n` sessions of `app` (they end asynchronously).
    pub async fn wait_backend_sessions(&self, n: usize) {
        for _ in 0..100 {
            if self.backend_sessions() == n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "backend still has {} sessions of app, expected {n}",
            self.backend_sessions()
        );
    }
}

/// A source and a target (each with database `app` owned by role `app`) and a proxy in
/// `dual-write` mode in front of them, journaling into a temp dir.
pub struct DualWrite {
    pub source: crate::Cluster,
    pub target: crate::Cluster,
    pub proxy: ProxyHandle,
    pub journal_dir: tempfile::TempDir,
    pub toml: String,
}

impl DualWrite {
    pub async fn start() -> DualWrite {
        Self::start_with("", "").await
    }

    /// `top` holds top-level keys, `extra` whole sections.
    pub async fn start_with(top: &str, extra: &str) -> DualWrite {
        Self::start_routed(top, extra, |target| target.url("app")).await
    }

    /// Like [`DualWrite::start_with`], with the proxy reaching the target at the URL
    /// `target_url` gives (e.g. through a [`crate::faults::CutRelay`] in front of it).
    pub async fn start_routed(
        top: &str,
        extra: &str,
        target_url: impl FnOnce(&crate::Cluster) -> String,
    ) -> DualWrite {
        Self::start_full(top, extra, target_url, None).await
    }

    /// [`DualWrite::start_routed`] with the journal's directory made inside `journal_parent`
    /// (e.g. a [`crate::faults::TinyDisk`]). `extra` starts inside the `[journal]` section.
    pub async fn start_full(
        top: &str,
        extra: &str,
        target_url: impl FnOnce(&crate::Cluster) -> String,
        journal_parent: Option<&std::path::Path>,
    ) -> DualWrite {
        let (sb, tb) = (crate::PgBin::source(), crate::PgBin::target());
        let handle = std::thread::spawn(move || crate::Cluster::start(&tb));
        let source = crate::Cluster::start(&sb);
        let target = handle
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        for c in [&source, &target] {
            c.create_role(APP_USER, APP_PASSWORD, "");
            c.psql("postgres", "CREATE DATABASE app OWNER app");
        }
        let mut journal_dir = tempfile::Builder::new();
        journal_dir.prefix("dwjournal-");
        let journal_dir = match journal_parent {
            Some(parent) => journal_dir.tempdir_in(parent),
            None => journal_dir.tempdir(),
        }
        .expect("journal temp dir");
        let toml = format!(
            "{top}\nmode = \"dual-write\"\nprimary = \"source\"\n[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n\
             [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"{APP_USER}\", password = \"{APP_PASSWORD}\" }}]\n\
             [journal]\ndir = \"{}\"\n{extra}",
            source.url("app"),
            target_url(&target),
            journal_dir.path().display()
        );
        let proxy = ProxyHandle::start(&toml).await;
        DualWrite {
            source,
            target,
            proxy,
            journal_dir,
            toml,
        }
    }

    /// Run the same SQL directly on both databases (schema set-up), as the superuser.
    pub fn both(&self, sql: &str) {
        self.source.psql("app", sql);
        self.target.psql("app", sql);
    }

    pub fn url(&self) -> String {
        self.proxy.url(APP_USER, APP_PASSWORD, "app")
    }

    /// A tokio-postgres client through the proxy; its connection is driven on a task.
    pub async fn client(&self) -> tokio_postgres::Client {
        client(&self.url()).await
    }

    /// The proxy's `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.proxy.admin_get("/status").await).expect("status is JSON")
    }

    /// `/status` once `pred` holds on it, polled every 100 ms; panics naming `what` after
    /// `secs` seconds.
    pub async fn wait_status(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} not seen in {secs} s: {s}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `/status` once `secondary_attached` is `want`, or panic after `secs` seconds.
    pub async fn wait_attached(&self, want: bool, secs: u64) -> serde_json::Value {
        self.wait_status(secs, &format!("secondary_attached = {want}"), |s| {
            s["dual_write"]["secondary_attached"] == want
        })
        .await
    }

    /// `/status` once the journal holds `n` missed records (or after 5 s, for the caller to
    /// assert on).
    pub async fn status_after_missed(&self, n: u64) -> serde_json::Value {
        let mut status = self.status().await;
        for _ in 0..50 {
            if status["dual_write"]["journal"]["missed"] == n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            status = self.status().await;
        }
        status
    }

    /// Sum of a Prometheus metric's samples whose line contains `filter`.
    pub async fn metric(&self, name: &str, filter: &str) -> f64 {
        let text = self.proxy.admin_get("/metrics").await;
        text.lines()
            .filter(|l| {
                l.starts_with(name)
                    && (l.as_bytes().get(name.len()) == Some(&b'{')
                        || l.as_bytes().get(name.len()) == Some(&b' '))
            })
            .filter(|l| l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    /// The same query's output on source and target, retried until equal (the secondary
    /// applies writes a moment after the primary: even the table may not be there yet) or
    /// 20 s have passed. The source must answer.
    pub async fn assert_same(&self, sql: &str) -> String {
        let mut last = (String::new(), Ok(String::new()));
        for _ in 0..100 {
            let s = self.source.psql("app", sql);
            let t = self.target.try_psql("app", sql);
            if t.as_ref() == Ok(&s) {
                return s;
            }
            last = (s, t);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        panic!(
            "source and target differ for {sql}:\nsource: {}\ntarget: {:?}",
            last.0, last.1
        );
    }
}
