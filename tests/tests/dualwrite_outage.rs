//! The target goes down in the middle of a write load and comes back: clients see no error,
//! every write the target missed is journaled, and once the journal is replayed (the proxy
//! does it by itself, and `journal replay` finds nothing left) both sides are identical,
//! including non-commutative updates made during the outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dualwrite_tests::proxy::DualWrite;

async fn wait_attached(d: &DualWrite, want: bool) -> serde_json::Value {
    for _ in 0..300 {
        let s = d.status().await;
        if s["dual_write"]["secondary_attached"] == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "secondary_attached never became {want}: {}",
        d.status().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_outage_loses_nothing() {
    let mut d = DualWrite::start_with("", "[secondary]\nreconnect_backoff = \"200ms\"\n").await;
    d.both(
        "CREATE TABLE events (id bigint PRIMARY KEY, writer int, at timestamptz DEFAULT '2026-01-01');
         CREATE TABLE kv (k int PRIMARY KEY, v text);
         INSERT INTO kv VALUES (1, 'start');
         GRANT ALL ON events, kv TO app",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let c = d.client().await;
        let (stop, errors) = (stop.clone(), errors.clone());
        writers.push(tokio::spawn(async move {
            let ins = c
                .prepare("INSERT INTO events (id, writer) VALUES ($1, $2)")
                .await
                .unwrap();
            let mut i = 0i64;
            while !stop.load(Ordering::Acquire) {
                let id = w * 1_000_000 + i;
                let r = if i % 10 == 9 {
                    // Every tenth write in an explicit transaction.
                    c.batch_execute(&format!(
                        "BEGIN; INSERT INTO events (id, writer) VALUES ({id}, {w}); COMMIT"
                    ))
                    .await
                } else {
                    c.execute(&ins, &[&id, &(w as i32)]).await.map(|_| ())
                };
                if r.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            i
        }));
    }
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
    let status = wait_attached(&d, false).await;
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
    stop.store(true, Ordering::Release);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "clients saw errors");
    assert!(written > 100, "only {written} writes");

    let status = wait_attached(&d, true).await;
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
    let summary = dualwrite_proxy::replay::replay(&settings, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(summary.applied, 0, "{summary:?}");
    assert_eq!(summary.remaining, 0, "{summary:?}");
    d.assert_same("SELECT count(*) FROM events").await;
}
