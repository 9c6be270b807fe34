//! The target goes down in the middle of a write load and comes back: clients see no error,
//! every write the target missed is journaled, and once the journal is replayed (the proxy
//! does it by itself, and `journal replay` finds nothing left) both sides are identical,
//! including non-commutative updates made during the outage.

use std::time::Duration;

use dualwrite_tests::load::Writers;
use dualwrite_tests::proxy::DualWrite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_outage_loses_nothing() {
    let mut d = DualWrite::start_with("", "[secondary]\nreconnect_backoff = \"200ms\"\n").await;
    d.both(
        "CREATE TABLE events (id bigint PRIMARY KEY, writer int, at timestamptz DEFAULT '2026-01-01');
         CREATE TABLE kv (k int PRIMARY KEY, v text);
         INSERT INTO kv VALUES (1, 'start');
         GRANT ALL ON events, kv TO app",
    );
    let writers = Writers::start(&d, 4, true).await;
    let kv = d.client().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    d.target.stop_immediate();
    // Non-commutative updates while the target is down: order matters.
    kv.execute("UPDATE kv SET v = 'x' WHERE k = 1", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    kv.execute("UPDATE kv SET v = 'y' WHERE k = 1", &[])
        .await
        .unwrap();
    let status = d.wait_attached(false, 30).await;
    assert!(
        status["dual_write"]["journal"]["missed"].as_u64().unwrap() > 0,
        "{status}"
    );

    d.target.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // After the target is back, one more update that must land after 'y'.
    kv.execute("UPDATE kv SET v = 'z' WHERE k = 1", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (written, errors) = writers.finish().await;
    assert_eq!(errors, 0, "clients saw errors");
    assert!(written > 100, "only {written} writes");

    let status = d.wait_attached(true, 30).await;
    assert!(
        status["dual_write"]["journal"]["missed"].as_u64().unwrap() > 0,
        "{status}"
    );
    let events = d
        .assert_same(
            "SELECT count(*) || ' ' || md5(string_agg(id::text, ',' ORDER BY id)) FROM events",
        )
        .await;
    assert!(
        events.starts_with(&written.to_string()),
        "{events} vs {written} written"
    );
    assert_eq!(d.assert_same("SELECT v FROM kv WHERE k = 1").await, "z");

    // Replaying again applies nothing twice.
    let settings = dualwrite_proxy::Settings::from_toml(&format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"\"\n{}",
        d.toml
    ))
    .unwrap();
    let summary = dualwrite_proxy::replay::replay(&settings, None, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(summary.applied, 0, "{summary:?}");
    assert_eq!(summary.remaining, 0, "{summary:?}");
    d.assert_same("SELECT count(*) FROM events").await;
}
