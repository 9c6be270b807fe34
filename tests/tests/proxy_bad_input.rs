//! Bad input and failures: each gets a clear error where the protocol allows one, no backend
//! session leaks, and the proxy keeps serving everyone else.

use dualwrite_tests::proxy::Passthrough;
use dualwrite_tests::raw::{message, query, startup_packet, RawClient};
use dualwrite_tests::{Cluster, PgBin, ProxyHandle};

async fn trust() -> Passthrough {
    Passthrough::start_with("trust", "").await
}

/// The proxy still serves a normal client.
async fn still_serves(p: &Passthrough) {
    let c = p.client().await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_startup_and_unsupported_protocol() {
    let p = trust().await;
    // An HTTP request instead of a startup packet: its "length" is absurd.
    let mut c = RawClient::connect(p.proxy.port()).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let msgs = c.until_closed().await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("08P01"));
    // Protocol 2.0.
    let mut c = RawClient::connect(p.proxy.port()).await;
    c.send(&[0, 0, 0, 8, 0, 2, 0, 0]).await;
    let msgs = c.until_closed().await;
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("0A000"), "{msgs:?}");
    assert!(msgs[0]
        .field(b'M')
        .unwrap()
        .contains("unsupported frontend protocol 2.0"));
    // A startup packet with an unterminated parameter.
    let mut c = RawClient::connect(p.proxy.port()).await;
    c.send(&[0, 0, 0, 13, 0, 3, 0, 0, b'u', b's', b'e', b'r', 0])
        .await;
    let msgs = c.until_closed().await;
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("08P01"), "{msgs:?}");
    // No user name.
    let mut c = RawClient::connect(p.proxy.port()).await;
    c.send(&startup_packet(&[("database", "app")])).await;
    let msgs = c.until_closed().await;
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("28000"), "{msgs:?}");
    // Protocol 3.2 is negotiated down to 3.0 and the session works.
    let mut c = RawClient::connect(p.proxy.port()).await;
    let mut pkt = startup_packet(&[("user", "app"), ("database", "app"), ("_pq_.future", "1")]);
    pkt[7] = 2;
    c.send(&pkt).await;
    let msgs = c.until(b'Z').await;
    assert_eq!(
        msgs[0].tag, b'v',
        "NegotiateProtocolVersion first: {msgs:?}"
    );
    // Protocol 3.0 (196608, as PostgreSQL writes it), and the one option it does not know.
    let mut body = 196608i32.to_be_bytes().to_vec();
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(b"_pq_.future\0");
    assert_eq!(msgs[0].body, body, "{msgs:?}");
    c.send(&query("SELECT 1")).await;
    assert!(c.until(b'Z').await.iter().any(|m| m.tag == b'D'));
    still_serves(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_unknown_messages_are_protocol_violations() {
    let p = trust().await;
    let mut c = RawClient::login(p.proxy.port(), "app", "app").await;
    c.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff]).await;
    let msgs = c.until_closed().await;
    assert_eq!(
        msgs.last().and_then(|m| m.sqlstate()).as_deref(),
        Some("08P01"),
        "{msgs:?}"
    );
    assert!(msgs
        .last()
        .unwrap()
        .field(b'M')
        .unwrap()
        .contains("exceeds the maximum"));

    let mut c = RawClient::login(p.proxy.port(), "app", "app").await;
    c.send(&message(b'Z', b"I")).await;
    let msgs = c.until_closed().await;
    assert_eq!(
        msgs.last().and_then(|m| m.sqlstate()).as_deref(),
        Some("08P01"),
        "{msgs:?}"
    );

    let mut c = RawClient::login(p.proxy.port(), "app", "app").await;
    c.send(&[b'Q', 0, 0, 0, 2]).await;
    let msgs = c.until_closed().await;
    assert_eq!(
        msgs.last().and_then(|m| m.sqlstate()).as_deref(),
        Some("08P01"),
        "{msgs:?}"
    );

    p.wait_backend_sessions(0).await;
    still_serves(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query_and_mid_copy_leaks_nothing() {
    let p = trust().await;
    p.cluster
        .psql("app", "CREATE TABLE c (v text); GRANT ALL ON c TO app");
    // Mid-query.
    let mut c = RawClient::login(p.proxy.port(), "app", "app").await;
    c.send(&query("SELECT pg_sleep(1)")).await;
    drop(c);
    // Mid-COPY, with half a message sent.
    let mut c = RawClient::login(p.proxy.port(), "app", "app").await;
    c.send(&query("COPY c FROM STDIN")).await;
    c.until(b'G').await;
    c.send(&message(b'd', b"a row\n")).await;
    c.send(&[b'd', 0, 0, 0, 100, b'x']).await;
    drop(c);
    p.wait_backend_sessions(0).await;
    assert_eq!(
        p.cluster.psql("app", "SELECT count(*) FROM c"),
        "0",
        "an unfinished COPY commits nothing"
    );
    still_serves(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_query_gives_an_error_and_the_proxy_survives() {
    let p = trust().await;
    let victim = p.client().await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let running = tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    p.cluster
        .psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    let err = running.await.unwrap().unwrap_err();
    assert!(
        err.code().is_some_and(|c| c.code() == "57P01") || err.is_closed(),
        "{err}"
    );
    still_serves(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crash_then_restart_and_starting_with_backend_down() {
    let mut p = trust().await;
    let c = p.client().await;
    let running = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    p.cluster.stop_immediate();
    let err = running.await.unwrap().unwrap_err();
    assert!(err.as_db_error().is_some() || err.is_closed(), "{err}");
    // While the backend is down, new clients get 08001 and the admin API answers.
    let err = tokio_postgres::connect(&p.url(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("backend down");
    assert_eq!(err.code().map(|c| c.code()), Some("08001"), "{err}");
    assert!(p.proxy.admin_get("/status").await.contains("primary-only"));
    p.cluster.restart();
    still_serves(&p).await;

    // A proxy started while its backend is down starts and answers.
    let down = Cluster::start(&PgBin::source());
    let url = down.url("app");
    let mut down = down;
    down.stop_immediate();
    let proxy = ProxyHandle::start(&format!(
        "[source]\nurl = \"{url}\"\n[auth]\nmethod = \"trust\"\n"
    ))
    .await;
    let err = tokio_postgres::connect(&proxy.url("app", "x", "app"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("backend down");
    assert_eq!(err.code().map(|c| c.code()), Some("08001"), "{err}");
    assert!(proxy
        .admin_get("/metrics")
        .await
        .contains("dualwrite_errors_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_transactions_finish() {
    let p = trust().await;
    p.cluster
        .psql("app", "CREATE TABLE g (v int); GRANT ALL ON g TO app");
    let mut c = p.client().await;
    let idle = p.client().await;
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO g VALUES (1)", &[]).await.unwrap();
    let Passthrough { cluster, proxy } = p;
    let stopping = tokio::spawn(proxy.stop());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The idle session is closed with 57P01; the open transaction may still commit.
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed() || err.code().is_some_and(|c| c.code() == "57P01"),
        "{err}"
    );
    tx.execute("INSERT INTO g VALUES (2)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), stopping)
        .await
        .expect("proxy stops once idle")
        .unwrap();
    assert_eq!(cluster.psql("app", "SELECT count(*) FROM g"), "2");
}
