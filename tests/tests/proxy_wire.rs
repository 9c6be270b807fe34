//! Wire fidelity through the proxy, checked with a raw protocol client: the process id a client
//! is given is its backend's, as in every notification and in `pg_backend_pid()` (and what
//! changes after a cutover), and a cancel with that key still works after a cutover.

use std::time::Duration;

use dualwrite_tests::proxy::{DualWrite, Passthrough, APP_PASSWORD, APP_USER};
use dualwrite_tests::raw::{self, Msg, RawClient};

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
