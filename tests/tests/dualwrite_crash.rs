//! The proxy is killed with SIGKILL while writes are being journaled (the target is down): the
//! journal reopens cleanly, with no record lost or duplicated, and `journal show`/`replay`
//! bring the target level with the source.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dualwrite_tests::bins::binary;
use dualwrite_tests::proxy::{APP_PASSWORD, APP_USER};
use dualwrite_tests::{free_port, Cluster, PgBin};

fn start_proxy(bin: &std::path::Path, cfg: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.with_extension("log"))
        .unwrap();
    Command::new(bin)
        .args(["run", "--config"])
        .arg(cfg)
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

async fn connect(port: u16, cfg: &std::path::Path) -> tokio_postgres::Client {
    let url = format!("postgres://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{port}/app?sslmode=disable");
    for _ in 0..100 {
        if let Ok((c, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "proxy on {port} did not accept connections; its log:\n{}",
        std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default()
    );
}

fn journal_seqs(bin: &std::path::Path, cfg: &std::path::Path) -> Vec<u64> {
    let out = Command::new(bin)
        .args(["journal", "show", "--json", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

/// The secondary lag bound: writes the client has had answered but the session has not yet
/// handed to the journal are at most this many bytes per session.
const LAG: usize = 65536;
/// Bytes a unit of `INSERT INTO w VALUES ($1)` counts against the lag bound, at least: its
/// statement's Parse (40), Bind (31), Execute (10) and Sync (5).
const MIN_UNIT: usize = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_and_duplicates_no_record() {
    let bin = binary("dualwrite-proxy", "dualwrite-proxy");
    let source = Cluster::start(&PgBin::source());
    let mut target = Cluster::start(&PgBin::target());
    for c in [&source, &target] {
        c.create_role(APP_USER, APP_PASSWORD, "");
        c.psql("postgres", "CREATE DATABASE app OWNER app");
        c.psql(
            "app",
            "CREATE TABLE w (id bigint PRIMARY KEY); GRANT ALL ON w TO app",
        );
    }
    target.stop_immediate();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"\"\nmode = \"dual-write\"\n[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n\
             [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"{APP_USER}\", password = \"{APP_PASSWORD}\" }}]\n\
             [journal]\ndir = \"{}\"\nfsync_interval = \"1ms\"\n[secondary]\nreconnect_backoff = \"60s\"\nmax_lag_bytes = {LAG}\n",
            source.url("app"),
            target.url("app"),
            dir.path().join("journal").display()
        ),
    )
    .unwrap();
    let mut next_id = 0i64;
    for round in 0..3 {
        let mut proxy = start_proxy(&bin, &cfg);
        let c = connect(port, &cfg).await;
        let ins = c.prepare("INSERT INTO w VALUES ($1)").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(400 + 300 * round);
        while tokio::time::Instant::now() < deadline {
            c.execute(&ins, &[&next_id]).await.unwrap();
            next_id += 1;
        }
        // Kill while writes are still being journaled.
        Command::new("kill")
            .args(["-KILL", &proxy.id().to_string()])
            .status()
            .unwrap();
        let _ = proxy.wait();
        let seqs = journal_seqs(&bin, &cfg);
        assert!(!seqs.is_empty(), "round {round}: nothing journaled");
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "round {round}: seqs not contiguous"
        );
    }
    // Every journaled insert is distinct: no record was written twice.
    let out = Command::new(&bin)
        .args(["journal", "show", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut statements: Vec<String> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "missed")
        .map(|r| r["statements"].to_string())
        .collect();
    let n = statements.len();
    statements.sort();
    statements.dedup();
    assert_eq!(statements.len(), n, "a record appears twice");
    // Bring the target back and replay: every journaled row lands once; a second replay is a no-op.
    target.restart();
    let replay = |expect: &str| {
        let out = Command::new(&bin)
            .args(["journal", "replay", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(expect), "{text}");
    };
    replay(&format!("{n} applied"));
    replay("0 applied");
    let on_target: i64 = target
        .psql("app", "SELECT count(*) FROM w")
        .parse()
        .unwrap();
    let on_source: i64 = source
        .psql("app", "SELECT count(*) FROM w")
        .parse()
        .unwrap();
    assert_eq!(on_source, next_id);
    assert_eq!(
        on_target as usize, n,
        "target holds exactly the journaled rows"
    );
    // Writes acknowledged to the client in the instant before a kill may not have reached the
    // journal yet: at most the lag bound's worth per kill (documented); everything that did is
    // applied exactly once.
    let bound = 3 * (LAG / MIN_UNIT + 1);
    assert!(
        (on_source - on_target) as usize <= bound,
        "more writes missing than the lag bound allows: {on_source} vs {on_target} (bound {bound})"
    );
}
