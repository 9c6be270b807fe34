//! The network between the proxy and its primary goes silent in the middle of a client's
//! transaction. The client gets an error once the proxy gives the connection up, but the
//! primary never learns that its session ended (the proxy's reset is dropped with everything
//! else, and the server's own keepalive waits two hours by default): the session lives on
//! there, idle in the client's transaction, holding its row locks, and every retry of the
//! application would wait for them. Once the network is back the proxy ends the sessions it
//! lost, so the application's retry goes through.

use std::time::{Duration, Instant};

use dualwrite_tests::faults::Partition;
use dualwrite_tests::proxy::{client, passthrough_toml, ProxyHandle, APP_PASSWORD, APP_USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cut_off_on_the_primary_does_not_hold_its_locks() {
    let cluster = dualwrite_tests::Cluster::start(&dualwrite_tests::PgBin::source());
    cluster.create_role(APP_USER, APP_PASSWORD, "");
    cluster.psql("postgres", "CREATE DATABASE app OWNER app");
    cluster.psql(
        "app",
        "CREATE TABLE kv (k int PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'start');
         GRANT ALL ON kv TO app",
    );
    let url = format!(
        "{}&keepalives_idle=1&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=2000",
        cluster.url("app")
    );
    let proxy = ProxyHandle::start(&format!(
        "connect_timeout = \"2s\"\n{}",
        passthrough_toml(&url, APP_USER, APP_PASSWORD)
    ))
    .await;
    let through = proxy.url(APP_USER, APP_PASSWORD, "app");
    let holders = || {
        cluster.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity
              WHERE usename = 'app' AND state = 'idle in transaction'",
        )
    };

    let c = client(&through).await;
    c.batch_execute("BEGIN; UPDATE kv SET v = 'x' WHERE k = 1")
        .await
        .unwrap();
    assert_eq!(holders(), "1");
    // Everything the server sent is acknowledged by now: after the cut it has nothing to
    // retransmit, so nothing will draw a reset from the proxy's side.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut partition = Partition::of(cluster.port);
    partition.cut();
    let err = c
        .execute("UPDATE kv SET v = 'y' WHERE k = 1", &[])
        .await
        .expect_err("the primary is unreachable");
    let told = err.as_db_error().expect("an error from the proxy");
    assert_eq!(told.code().code(), "08006", "{told:?}");
    eprintln!("the client was told: {}", told.message());
    let status: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/status").await).unwrap();
    assert_eq!(status["lost_sessions"]["source"], 1, "{status}");
    partition.heal();
    let back_at = Instant::now();
    assert_eq!(
        holders(),
        "1",
        "the server's end of the lost session is already gone"
    );

    // The lost session is ended once the primary answers again.
    while holders() != "0" {
        assert!(
            back_at.elapsed() < Duration::from_secs(20),
            "the lost session still holds its transaction"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "ended {:.1} s after the network came back",
        back_at.elapsed().as_secs_f64()
    );
    // The application's retry, on a new connection, is not held up.
    let c = client(&through).await;
    c.batch_execute("SET lock_timeout = '5s'; UPDATE kv SET v = 'z' WHERE k = 1")
        .await
        .unwrap();
    assert_eq!(cluster.psql("app", "SELECT v FROM kv WHERE k = 1"), "z");
    // Listed no more once ended (the list is updated just after the session is ended).
    let mut status = serde_json::Value::Null;
    for _ in 0..50 {
        status = serde_json::from_str(&proxy.admin_get("/status").await).unwrap();
        if status["lost_sessions"]["source"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["lost_sessions"]["source"], 0, "{status}");
    let metrics = proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains("dualwrite_lost_sessions_ended_total{side=\"source\"} 1"),
        "{metrics}"
    );
}
