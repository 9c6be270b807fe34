//! Shadow reads tell the truth: each side's latency is the server's time on the statement (the
//! wait for the sample's turn is reported apart), a sample runs on the target only after the
//! commits its read saw there were applied, and a difference the data does not prove (another
//! session's commit to the table read reached one side and not the other) is not reported as
//! a mismatch, while a real difference is, every time.

use std::time::Duration;

use dualwrite_proxy::shadow::{ShadowReport, StatementReport};
use dualwrite_tests::proxy::DualWrite;

async fn report(d: &DualWrite) -> ShadowReport {
    serde_json::from_str(&d.proxy.admin_get("/shadow").await).expect("/shadow is a report")
}

/// Poll the report every `every`, `tries` times, until `done(report)` counts `n` samples and
/// none is in flight.
async fn until(
    d: &DualWrite,
    n: u64,
    done: fn(&ShadowReport) -> u64,
    every: Duration,
    tries: u32,
) -> ShadowReport {
    for _ in 0..tries {
        let r = report(d).await;
        if done(&r) >= n && r.in_flight == 0 {
            return r;
        }
        tokio::time::sleep(every).await;
    }
    panic!("shadow samples never reached {n}: {:#?}", report(d).await);
}

/// Wait until `n` samples were compared or skipped.
async fn settled(d: &DualWrite, n: u64) -> ShadowReport {
    until(
        d,
        n,
        |r| r.executions + r.skipped,
        Duration::from_millis(50),
        600,
    )
    .await
}

/// [`settled`], polling fast (between two steps of a loop).
async fn settled_quietly(d: &DualWrite, n: u64) {
    until(
        d,
        n,
        |r| r.executions + r.skipped,
        Duration::from_millis(2),
        5000,
    )
    .await;
}

/// Wait until `n` samples were compared, skipped or dropped.
async fn settled_or_dropped(d: &DualWrite, n: u64) -> ShadowReport {
    let counted = |r: &ShadowReport| r.executions + r.skipped + r.dropped;
    until(d, n, counted, Duration::from_millis(50), 600).await
}

fn statement<'a>(r: &'a ShadowReport, text: &str) -> &'a StatementReport {
    r.statements
        .iter()
        .find(|s| s.statement == text)
        .unwrap_or_else(|| panic!("no statement {text:?} in {r:#?}"))
}

/// Every skip is counted under a reason, and the reasons add up to the total.
fn skips_have_reasons(r: &ShadowReport) {
    let total: u64 = r.skips.iter().map(|(_, n)| n).sum();
    assert_eq!(total, r.skipped, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_latency_is_the_servers_time_on_the_statement_not_its_wait() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 100) i;
         GRANT ALL ON items TO app",
    );
    // The same view on both sides, 50 ms slower on the target only.
    d.source.psql(
        "app",
        "CREATE VIEW slow_items AS SELECT id, v FROM items; GRANT SELECT ON slow_items TO app",
    );
    d.target.psql(
        "app",
        "CREATE VIEW slow_items AS SELECT id, v FROM items
         WHERE (SELECT true FROM pg_catalog.pg_sleep(0.05));
         GRANT SELECT ON slow_items TO app",
    );
    // One session reads through the slow function while three others read fast by key:
    // sessions without state of their own share one target session, so fast samples queue
    // behind slow ones there.
    let slow = d.client().await;
    let slow_reads = tokio::spawn(async move {
        for i in 0..30 {
            let id = 1 + i % 100;
            let r = slow
                .query_one("SELECT v FROM slow_items WHERE id = $1", &[&id])
                .await
                .unwrap();
            assert_eq!(r.get::<_, String>(0), format!("v{id}"));
        }
    });
    let mut fast = Vec::new();
    for _ in 0..3 {
        let c = d.client().await;
        fast.push(tokio::spawn(async move {
            let by_id = c
                .prepare("SELECT v FROM items WHERE id = $1")
                .await
                .unwrap();
            for i in 0..60 {
                let id = 1 + i % 100;
                let r = c.query_one(&by_id, &[&id]).await.unwrap();
                assert_eq!(r.get::<_, String>(0), format!("v{id}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    slow_reads.await.unwrap();
    for f in fast {
        f.await.unwrap();
    }
    let r = settled(&d, 30 + 180).await;
    assert_eq!(r.mismatches, vec![], "{r:#?}");
    skips_have_reasons(&r);
    let s = statement(&r, "SELECT v FROM slow_items WHERE id = $1");
    let f = statement(&r, "SELECT v FROM items WHERE id = $1");
    assert!(s.executions > 0 && f.executions > 0, "{r:#?}");
    // The slow statement is ~50 ms slower on the target, not on the primary.
    assert!(s.secondary_ms.p50 >= 50.0, "{s:#?}");
    assert!(
        s.primary_ms.p50 < 25.0,
        "the primary's time on the view: {s:#?}"
    );
    // The fast statement is fast on the target too, though its samples ran on the session
    // the slow ones held: the time they waited there is reported as their wait.
    assert!(f.shared_connection > 0, "{f:#?}");
    assert!(
        f.secondary_ms.p50 < 25.0,
        "the target's time on the fast read includes waiting: {f:#?}"
    );
    assert!(
        f.secondary_wait_ms.p99 >= f.secondary_ms.p99,
        "no fast sample waited behind a slow one: {f:#?}"
    );
    // The CLI's table shows the wait apart.
    let table = dualwrite_proxy::shadow::render(&r);
    assert!(table.contains("wait p50/p99 ms"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_another_sessions_commit_is_compared_once_the_target_has_it() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);
         INSERT INTO counters VALUES (1, 0), (2, 0);
         GRANT ALL ON counters TO app",
    );
    let writer = d.client().await;
    let reader = d.client().await;
    let read = reader
        .prepare("SELECT n FROM counters WHERE id = $1")
        .await
        .unwrap();
    // One session writes, another reads what it wrote as soon as the write is acknowledged:
    // the read's sample must wait on the target for the other session's commit. (The next
    // write waits for the sample: one that reached the target before the sample ran would
    // make the target newer than the read, a race the next tests cover.)
    for i in 1..=1000 {
        writer
            .execute("UPDATE counters SET n = $1 WHERE id = 1", &[&i])
            .await
            .unwrap();
        let n: i32 = reader.query_one(&read, &[&1]).await.unwrap().get(0);
        assert_eq!(n, i);
        settled_quietly(&d, i as u64).await;
    }
    let r = settled(&d, 1000).await;
    assert_eq!(r.mismatches, vec![], "{r:#?}");
    skips_have_reasons(&r);
    // Nothing was in doubt: every sample was compared, none skipped.
    assert_eq!(r.executions, 1000, "{r:#?}");
    assert_eq!(r.skipped, 0, "{r:#?}");
    assert_eq!(
        statement(&r, "SELECT n FROM counters WHERE id = $1").mismatched,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_writes_to_the_same_rows_report_no_mismatch() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL);
         INSERT INTO counters SELECT i, 0 FROM generate_series(1, 5) i;
         GRANT ALL ON counters TO app",
    );
    // Two sessions write the rows, two read them, at once, 1000 times each.
    let mut tasks = Vec::new();
    for w in 0..2 {
        let c = d.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..1000 {
                let id = 1 + (i + w) % 5;
                c.execute("UPDATE counters SET n = n + 1 WHERE id = $1", &[&id])
                    .await
                    .unwrap();
            }
        }));
    }
    for _ in 0..2 {
        let c = d.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..1000 {
                let id = 1 + i % 5;
                c.query("SELECT id, n FROM counters WHERE id = $1", &[&id])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = settled_or_dropped(&d, 2000).await;
    assert_eq!(r.mismatches, vec![], "{r:#?}");
    skips_have_reasons(&r);
    // A sample is compared, skipped or dropped (the shadow queue is bounded), and a skip here
    // is only ever a read that raced a commit to its table.
    assert_eq!(r.executions + r.skipped + r.dropped, 2000, "{r:#?}");
    for (reason, _) in &r.skips {
        assert_eq!(reason, "concurrent_write", "{r:#?}");
    }
    assert!(r.executions > 0, "{r:#?}");
    d.assert_same("SELECT * FROM counters ORDER BY id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_changed_on_the_target_only_is_found_every_time_under_a_write_load() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 100) i;
         CREATE TABLE events (id bigserial PRIMARY KEY, note text);
         GRANT ALL ON items, events TO app;
         GRANT ALL ON SEQUENCE events_id_seq TO app",
    );
    d.target
        .psql("app", "UPDATE items SET v = 'changed' WHERE id = 7");
    // Another session writes another table all along.
    let writer = d.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let load = tokio::spawn(async move {
        let mut n = 0u64;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            writer
                .execute("INSERT INTO events (note) VALUES ('x')", &[])
                .await
                .unwrap();
            n += 1;
        }
        n
    });
    let c = d.client().await;
    for _ in 0..20 {
        let v: String = c
            .query_one("SELECT v FROM items WHERE id = $1", &[&7])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, "v7", "the client gets the primary's answer");
        c.simple_query("SELECT id, v FROM items WHERE id = 7")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = load.await.unwrap();
    assert!(written > 0);
    let r = settled(&d, 40).await;
    skips_have_reasons(&r);
    for text in [
        "SELECT v FROM items WHERE id = $1",
        "SELECT id, v FROM items WHERE id = ?",
    ] {
        let s = statement(&r, text);
        assert_eq!(s.executions, 20, "{s:#?}");
        assert_eq!(s.mismatched, 20, "{s:#?}");
        assert_eq!(s.mismatches, vec![("rows".to_string(), 20)], "{s:#?}");
    }
}
