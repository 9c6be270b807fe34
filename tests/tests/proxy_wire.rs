//! Wire fidelity through the proxy, checked with a raw protocol client: the process id a client
//! is given is its backend's, as in every notification and in `pg_backend_pid()` (and what
//! changes after a cutover), a cancel with that key still works after a cutover, and an error
//! reaches a client that is still streaming a long pipeline, so it can stop sending.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dualwrite_tests::proxy::{DualWrite, Passthrough, APP_PASSWORD, APP_USER};
use dualwrite_tests::raw::{self, message, Msg, RawClient};
use tokio::io::AsyncWriteExt;

async fn login(port: u16) -> RawClient {
    RawClient::login_scram(port, APP_USER, APP_PASSWORD, "app").await
}

/// The notification among `msgs`: (sender's pid, channel, payload).
fn notification(msgs: &[Msg]) -> (i32, String, String) {
    msgs.iter()
        .find_map(Msg::notification)
        .unwrap_or_else(|| panic!("no notification in {msgs:?}"))
}

/// Two sessions through the proxy at `port`: each one's BackendKeyData pid is its
/// `pg_backend_pid()`, and is the pid in the notifications it sends, its own included (which
/// is how an application recognises and skips its own).
async fn pids_agree(port: u16) {
    let mut a = login(port).await;
    let mut b = login(port).await;
    let (pid_a, _) = a.backend_key();
    let (pid_b, _) = b.backend_key();
    assert_ne!(pid_a, pid_b);
    assert_eq!(a.value("SELECT pg_backend_pid()").await, pid_a.to_string());
    assert_eq!(b.value("SELECT pg_backend_pid()").await, pid_b.to_string());
    a.simple("LISTEN chan").await;
    let own = a.simple("NOTIFY chan, 'own'").await;
    assert_eq!(notification(&own), (pid_a, "chan".into(), "own".into()));
    b.simple("NOTIFY chan, 'other'").await;
    let got = a.recv().await.expect("the other session's notification");
    assert_eq!(
        got.notification(),
        Some((pid_b, "chan".into(), "other".into())),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gets_its_backends_pid_in_primary_only() {
    let p = Passthrough::start().await;
    pids_agree(p.proxy.port()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gets_its_primary_backends_pid_in_dual_write() {
    let d = DualWrite::start().await;
    pids_agree(d.proxy.port()).await;
}

/// Send a CancelRequest with `key` to the proxy at `port`.
async fn cancel(port: u16, key: &(i32, Vec<u8>)) {
    let mut body = 80877102i32.to_be_bytes().to_vec();
    body.extend_from_slice(&key.0.to_be_bytes());
    body.extend_from_slice(&key.1);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    let mut c = RawClient::connect(port).await;
    c.send(&packet).await;
    assert!(
        c.until_closed().await.is_empty(),
        "a cancel request has no answer"
    );
}

/// After a cutover a session keeps the key it was given (a client cannot learn a new one), but
/// its backend session is now the one on the target: `pg_backend_pid()` and the pid of its own
/// notifications are that session's, no longer the one in its BackendKeyData. A cancel with
/// the key it was given still cancels its query, now on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cutover_the_client_keeps_its_key_and_its_cancel_still_works() {
    let d = DualWrite::start().await;
    let port = d.proxy.port();
    let mut a = login(port).await;
    let key = a.backend_key();
    a.simple("LISTEN chan").await;
    let before = a.simple("NOTIFY chan, 'before'").await;
    assert_eq!(
        notification(&before),
        (key.0, "chan".into(), "before".into())
    );

    let (code, body) = d.proxy.admin_post("/cutover", r#"{"to": "target"}"#).await;
    assert_eq!(code, 200, "{body}");
    let now: i32 = a
        .value("SELECT pg_backend_pid()")
        .await
        .parse()
        .expect("a pid");
    assert_ne!(now, key.0, "the session now runs on the target");
    assert_eq!(
        d.target.psql(
            "app",
            &format!("SELECT usename FROM pg_stat_activity WHERE pid = {now}")
        ),
        "app",
        "pg_backend_pid() is the session's backend on the target"
    );
    // LISTEN lived on both sessions: notifications still come, from the target's sessions.
    let own = a.simple("NOTIFY chan, 'after'").await;
    assert_eq!(notification(&own), (now, "chan".into(), "after".into()));
    let mut b = login(port).await;
    let key_b = b.backend_key();
    assert_eq!(
        b.value("SELECT pg_backend_pid()").await,
        key_b.0.to_string()
    );
    b.simple("NOTIFY chan, 'new session'").await;
    let got = a.recv().await.expect("the new session's notification");
    assert_eq!(
        got.notification(),
        Some((key_b.0, "chan".into(), "new session".into()))
    );

    // Cancel with the key from before the cutover.
    a.send(&raw::query("SELECT pg_sleep(30)")).await;
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {now} AND state = 'active' \
         AND query = 'SELECT pg_sleep(30)'"
    );
    let mut waited = 0;
    while d.target.psql("app", &running) != "1" {
        waited += 1;
        assert!(waited < 200, "the query never started on the target");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel(port, &key).await;
    let msgs = a.until(b'Z').await;
    let err = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("not cancelled: {msgs:?}"));
    assert_eq!(err.sqlstate().as_deref(), Some("57014"), "{err:?}");
    // A wrong secret with the right pid cancels nothing.
    a.send(&raw::query("SELECT pg_sleep(0.5)")).await;
    cancel(port, &(key.0, vec![0, 0, 0, 0])).await;
    let msgs = a.until(b'Z').await;
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
}

/// One Bind/Execute of `INSERT INTO exmany VALUES ($1, $2)` with text parameters.
fn bind_execute(a: &str, b: i32) -> Vec<u8> {
    let b = b.to_string();
    let mut body = b"\0\0\0\0\0\x02".to_vec(); // unnamed portal and statement, no formats
    for v in [a.as_bytes(), b.as_bytes()] {
        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
        body.extend_from_slice(v);
    }
    body.extend_from_slice(b"\0\0"); // result formats
    let mut out = message(b'B', &body);
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out
}

/// The pipeline asyncpg's `executemany` sends: many Bind/Execute of ~32 KiB with one Sync at
/// the end, written four at a time, looking for an error between writes; the second row
/// violates the primary key. Returns how many rows were sent and the messages received.
async fn executemany(port: u16, rows: usize) -> (usize, Vec<Msg>) {
    let mut c = login(port).await;
    c.simple("CREATE TABLE IF NOT EXISTS exmany (a text, b int PRIMARY KEY)")
        .await;
    let parse = b"\0INSERT INTO exmany VALUES ($1, $2)\0\0\0";
    let RawClient { stream, .. } = c;
    let (mut rd, mut wr) = stream.into_split();
    let failed = Arc::new(AtomicBool::new(false));
    let reader = {
        let failed = failed.clone();
        tokio::spawn(async move {
            let mut buf = bytes::BytesMut::new();
            let mut got = Vec::new();
            loop {
                let m = raw::recv(&mut rd, &mut buf)
                    .await
                    .expect("answer to the pipeline");
                if m.tag == b'E' {
                    failed.store(true, Ordering::Release);
                }
                let done = m.tag == b'Z';
                got.push(m);
                if done {
                    return got;
                }
            }
        })
    };
    wr.write_all(&message(b'P', parse)).await.unwrap();
    let long = "a".repeat(32 * 1024);
    let mut row = 0;
    while row < rows && !failed.load(Ordering::Acquire) {
        let mut batch = Vec::new();
        for _ in 0..4 {
            if row < rows {
                batch.extend(if row < 2 {
                    bind_execute("a", 0)
                } else {
                    bind_execute(&long, row as i32)
                });
                row += 1;
            }
        }
        wr.write_all(&batch).await.unwrap();
        tokio::task::yield_now().await;
    }
    wr.write_all(&message(b'S', b"")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the pipeline's answer within 60 s")
        .unwrap();
    (row, got)
}

/// The rows of the pipeline: 512 of 32 KiB, 16 MiB. (asyncpg's own test sends 128, but a
/// client this fast fills the kernel's socket buffers with 4 MiB before the server has read the
/// first row, directly as well.)
const ROWS: usize = 512;

/// The pipeline was answered as PostgreSQL answers it: the first row inserted, the second
/// rejected, nothing after it run, and the client stopped sending long before its end.
fn stopped_early(how: &str, sent: usize, got: &[Msg]) {
    let tags: String = got.iter().map(|m| m.tag as char).collect();
    assert_eq!(tags, "12C2EZ", "{how}: {got:?}");
    assert_eq!(got[4].sqlstate().as_deref(), Some("23505"), "{how}");
    assert_eq!(got[5].body, b"I", "{how}");
    assert!(
        sent < ROWS,
        "{how}: the client sent all {ROWS} rows before it saw the error"
    );
}

/// asyncpg's executemany pattern: the error of the second row reaches the client while it is
/// still streaming the rest, directly and through the proxy alike, so it stops sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_error_reaches_a_client_still_sending_its_pipeline() {
    let p = Passthrough::start().await;
    for round in 0..3 {
        let (sent, got) = executemany(p.cluster.port, ROWS).await;
        stopped_early(&format!("directly, round {round}"), sent, &got);
        let (sent, got) = executemany(p.proxy.port(), ROWS).await;
        stopped_early(&format!("through the proxy, round {round}"), sent, &got);
    }
}

/// The same in dual-write mode; the failed batch reaches neither database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_error_reaches_a_client_still_sending_its_pipeline_in_dual_write() {
    let d = DualWrite::start().await;
    for round in 0..3 {
        let (sent, got) = executemany(d.proxy.port(), ROWS).await;
        stopped_early(&format!("round {round}"), sent, &got);
    }
    assert_eq!(d.assert_same("SELECT count(*) FROM exmany").await, "0");
    let status = d.status().await;
    assert_eq!(status["dual_write"]["journal"]["records"], 0, "{status}");
}
