//! Shadow reads: sampled reads also run on the target and are compared, off the client's path.
//! Identical data gives zero mismatches; each injected difference is reported against the
//! right statement with the right kind; the client's results are the primary's, unchanged.

use std::time::Duration;

use dualwrite_proxy::shadow::ShadowReport;
use dualwrite_tests::proxy::DualWrite;

async fn report(d: &DualWrite) -> ShadowReport {
    serde_json::from_str(&d.proxy.admin_get("/shadow").await).expect("/shadow is a report")
}

/// Wait until `n` samples have been compared (the comparison runs after the client's answer).
async fn settled(d: &DualWrite, n: u64) -> ShadowReport {
    for _ in 0..200 {
        let r = report(d).await;
        if r.executions >= n && r.in_flight == 0 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("shadow samples never reached {n}: {:#?}", report(d).await);
}

fn statement<'a>(r: &'a ShadowReport, text: &str) -> &'a dualwrite_proxy::shadow::StatementReport {
    r.statements
        .iter()
        .find(|s| s.statement == text)
        .unwrap_or_else(|| panic!("no statement {text:?} in {r:#?}"))
}

fn kinds(s: &dualwrite_proxy::shadow::StatementReport) -> Vec<&str> {
    s.mismatches.iter().map(|(k, _)| k.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reads_find_each_kind_of_difference_and_nothing_else() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE items (id int PRIMARY KEY, v text, g int NOT NULL DEFAULT 0);
         INSERT INTO items (id, v) SELECT i, 'v' || i FROM generate_series(1, 100) i;
         CREATE TABLE piles (id int, g int NOT NULL DEFAULT 0);
         GRANT ALL ON items, piles TO app",
    );
    // Same rows, stored in opposite orders: a plain scan returns them in different orders.
    d.source.psql(
        "app",
        "INSERT INTO piles (id) SELECT i FROM generate_series(1, 10) i",
    );
    d.target.psql(
        "app",
        "INSERT INTO piles (id) SELECT i FROM generate_series(10, 1, -1) i",
    );
    let c = d.client().await;

    // Identical data: simple and extended protocol, in and out of transactions.
    let by_id = c
        .prepare("SELECT v FROM items WHERE id = $1")
        .await
        .unwrap();
    for id in 1..=40 {
        let row = c.query_one(&by_id, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("v{id}"));
    }
    c.simple_query("SELECT count(*) FROM items").await.unwrap();
    c.batch_execute("BEGIN; INSERT INTO items (id, v) VALUES (101, 'in txn')")
        .await
        .unwrap();
    // Inside the transaction the target's session sees the transaction's own write.
    let n: i64 = c
        .query_one("SELECT count(*) FROM items WHERE id > 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    c.batch_execute("COMMIT").await.unwrap();
    let r = settled(&d, 42).await;
    assert_eq!(r.mismatches, vec![], "{r:#?}");
    let s = statement(&r, "SELECT v FROM items WHERE id = $1");
    assert_eq!(s.executions, 40);
    assert!(s.primary_ms.p50 > 0.0 && s.secondary_ms.p99 > 0.0, "{s:#?}");

    // Same rows in another order: fine without ORDER BY, a mismatch with it.
    let plain = c.query("SELECT id FROM piles", &[]).await.unwrap();
    assert_eq!(plain.len(), 10);
    c.query("SELECT id FROM piles ORDER BY g", &[])
        .await
        .unwrap();
    // A row only the source has.
    d.source.psql(
        "app",
        "INSERT INTO items (id, v) VALUES (1000, 'source only')",
    );
    let rows = c
        .query("SELECT id, v FROM items WHERE id >= 1000", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the client gets the primary's answer");
    c.simple_query("SELECT sum(id) FROM items").await.unwrap();
    // A table only the source has: an error on the target only.
    d.source.psql(
        "app",
        "CREATE TABLE only_here (x int); GRANT ALL ON only_here TO app",
    );
    c.simple_query("SELECT * FROM only_here").await.unwrap();
    // Different column types.
    d.source.psql(
        "app",
        "CREATE TABLE typed (x bigint); GRANT ALL ON typed TO app",
    );
    d.target.psql(
        "app",
        "CREATE TABLE typed (x int); GRANT ALL ON typed TO app",
    );
    c.simple_query("SELECT x FROM typed").await.unwrap();
    // Each server has its own backend pid: a difference the data doesn't prove.
    c.simple_query("SELECT pg_backend_pid()").await.unwrap();

    let r = settled(&d, 48).await;
    assert_eq!(r.skips, [("nondeterministic".to_string(), 1)], "{r:#?}");
    let plain = statement(&r, "SELECT id FROM piles");
    let ordered = statement(&r, "SELECT id FROM piles ORDER BY g");
    assert_eq!(kinds(ordered), ["order"], "{r:#?}");
    assert_eq!(plain.mismatched, 0, "{r:#?}");
    assert_eq!(plain.same_rows_other_order, 1);
    assert_eq!(
        kinds(statement(&r, "SELECT id, v FROM items WHERE id >= ?")),
        ["row_count"]
    );
    assert_eq!(kinds(statement(&r, "SELECT sum(id) FROM items")), ["rows"]);
    assert_eq!(kinds(statement(&r, "SELECT * FROM only_here")), ["error"]);
    assert_eq!(kinds(statement(&r, "SELECT x FROM typed")), ["types"]);
    assert_eq!(
        d.metric("dualwrite_shadow_mismatches_total", "kind=\"row_count\"")
            .await,
        1.0
    );
    // The CLI's table lists the statements with their kinds.
    let table = dualwrite_proxy::shadow::render(&r);
    assert!(
        table.contains("row_count=1") && table.contains("SELECT x FROM typed"),
        "{table}"
    );

    // Switched off live: nothing more is sampled.
    let (code, body) = d
        .proxy
        .admin_post("/config", r#"{"shadow_reads": 0.0}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    for id in 1..=10 {
        c.query_one(&by_id, &[&id]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(report(&d).await.executions, r.executions);
    // Writes kept flowing to both all along.
    d.assert_same("SELECT count(*) FROM items WHERE id <= 101")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shadow_queue_drops_samples_and_never_changes_answers() {
    let d = DualWrite::start_with("shadow_reads = 1.0\nshadow_queue = 1", "").await;
    d.both(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 1000) i;
         GRANT ALL ON t TO app",
    );
    let c = d.client().await;
    let stmt = c.prepare("SELECT v FROM t WHERE id = $1").await.unwrap();
    // 300 pipelined reads: far more samples at once than the queue holds.
    let futures: Vec<_> = (1..=300)
        .map(|id: i32| {
            let c = &c;
            let stmt = &stmt;
            async move {
                c.query_one(stmt, &[&id])
                    .await
                    .map(|r| r.get::<_, String>(0))
            }
        })
        .collect();
    let answers = futures_util::future::join_all(futures).await;
    let direct = dualwrite_tests::proxy::client(&d.source.url("app")).await;
    for (i, a) in answers.into_iter().enumerate() {
        let want: String = direct
            .query_one("SELECT v FROM t WHERE id = $1", &[&(i as i32 + 1)])
            .await
            .unwrap()
            .get(0);
        assert_eq!(a.unwrap(), want);
    }
    let mut r = report(&d).await;
    for _ in 0..100 {
        if r.in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = report(&d).await;
    }
    assert!(r.dropped > 0, "{r:#?}");
    assert_eq!(r.executions + r.dropped, 300, "{r:#?}");
    assert_eq!(r.mismatches, vec![], "{r:#?}");
    assert!(
        d.metric("dualwrite_shadow_dropped_total", "queue_full")
            .await
            > 0.0
    );
}

/// The app user's sessions on the target (the proxy's secondary sessions).
fn target_sessions(d: &DualWrite) -> usize {
    d.target
        .psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = 'app'",
        )
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_sessions_without_state_share_one_target_session() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL);
         INSERT INTO kv SELECT i, 0 FROM generate_series(1, 10) i;
         GRANT ALL ON kv TO app",
    );
    // Four sessions that only read: their samples run on one shared target session.
    let mut readers = Vec::new();
    for _ in 0..4 {
        readers.push(d.client().await);
    }
    for c in &readers {
        let by_key = c.prepare("SELECT v FROM kv WHERE k = $1").await.unwrap();
        for k in 1..=10 {
            c.query_one(&by_key, &[&k]).await.unwrap();
        }
    }
    // Other sessions' samples run whenever the shared session gets to them: let these finish
    // before the writes below change what they read.
    settled(&d, 40).await;
    // A session that reads its own writes: each sample runs after the write before it was
    // applied on the target and before the write after it.
    let w = d.client().await;
    for i in 1..=30 {
        w.execute("UPDATE kv SET v = $1 WHERE k = 1", &[&i])
            .await
            .unwrap();
        let v: i32 = w
            .query_one("SELECT v AS now FROM kv WHERE k = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, i);
    }
    // A session with state of its own reads in its own target session.
    let s = d.client().await;
    s.batch_execute("SET search_path = public").await.unwrap();
    s.simple_query("SELECT v AS mine FROM kv WHERE k = 2")
        .await
        .unwrap();

    let r = settled(&d, 40 + 30 + 1).await;
    assert_eq!(r.mismatches, vec![], "{r:#?}");
    let shared = statement(&r, "SELECT v FROM kv WHERE k = $1");
    assert_eq!((shared.executions, shared.shared_connection), (40, 40));
    let own_writes = statement(&r, "SELECT v AS now FROM kv WHERE k = ?");
    assert_eq!(
        (own_writes.executions, own_writes.shared_connection),
        (30, 30)
    );
    let stateful = statement(&r, "SELECT v AS mine FROM kv WHERE k = ?");
    assert_eq!((stateful.executions, stateful.shared_connection), (1, 0));
    // Each client session has its own target session (its named statements are prepared on
    // both sides, ready for a cutover), and there is one shared session besides.
    assert_eq!(target_sessions(&d), 6 + 1);

    // The shared session closes once the last session using it has ended.
    drop(readers);
    drop(w);
    drop(s);
    let mut left = target_sessions(&d);
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = target_sessions(&d);
    }
    assert_eq!(left, 0, "target sessions left behind");
    d.assert_same("SELECT v FROM kv ORDER BY k").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sample_costs_the_samples_sharing_its_sync_nothing() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both(
        "CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL);
         INSERT INTO kv SELECT i, i * 10 FROM generate_series(1, 10) i;
         GRANT ALL ON kv TO app",
    );
    // The same answers on both sides, except that the target fails for key 7.
    d.source.psql(
        "app",
        "CREATE VIEW checked AS SELECT k, v / 1 AS q FROM kv; GRANT SELECT ON checked TO app",
    );
    d.target.psql(
        "app",
        "CREATE VIEW checked AS SELECT k, v / CASE WHEN k = 7 THEN 0 ELSE 1 END AS q FROM kv;
         GRANT SELECT ON checked TO app",
    );
    // Each client pipelines its reads, so that its samples reach the shared target session
    // together and go out sharing one Sync.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(d.client().await);
    }
    let mut runs = Vec::new();
    for c in clients {
        runs.push(tokio::spawn(async move {
            let by_key = c
                .prepare("SELECT q FROM checked WHERE k = $1")
                .await
                .unwrap();
            for _ in 0..5 {
                let keys: Vec<i32> = (1..=10).collect();
                let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
                    keys.iter().map(|k| [k as _]).collect();
                let answers =
                    futures_util::future::join_all(params.iter().map(|p| c.query_one(&by_key, p)))
                        .await;
                for (k, row) in keys.iter().zip(answers) {
                    let q: i32 = row.unwrap().get(0);
                    assert_eq!(q, k * 10, "the client gets the primary's answer");
                }
            }
        }));
    }
    for run in runs {
        run.await.unwrap();
    }

    let r = settled(&d, 150).await;
    let s = statement(&r, "SELECT q FROM checked WHERE k = $1");
    assert_eq!(s.executions, 150, "{r:#?}");
    assert_eq!(s.shared_connection, 150, "{r:#?}");
    // Only key 7's samples differ; those that shared a Sync with a failing one were sent
    // again on their own and compared equal.
    assert_eq!(s.mismatches, vec![("error".to_string(), 15)], "{r:#?}");
    assert_eq!((r.skipped, r.dropped), (0, 0), "{r:#?}");
    assert!(
        d.metric("dualwrite_shadow_resent_total", "").await > 0.0,
        "no sample shared a Sync with a failing one"
    );
}

/// A read cancelled on the primary (here by its client's cancel request) has no answer to
/// compare: the sample is skipped, not reported as a mismatch, and the target never runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cancelled_on_the_primary_is_skipped_not_run_on_the_target() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    let c = std::sync::Arc::new(d.client().await);
    let token = c.cancel_token();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    // The next read is compared as usual, after the cancelled one was dealt with.
    c.simple_query("SELECT 1").await.unwrap();
    let r = settled(&d, 1).await;
    assert_eq!(r.executions, 1, "{r:#?}");
    assert_eq!(r.skipped, 1, "{r:#?}");
    assert!(r.mismatches.is_empty(), "{r:#?}");
    let sleeping = d.target.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'",
    );
    assert_eq!(sleeping.trim(), "0", "the target ran the cancelled read");
}

/// asyncpg's `test_prepare_cache_invalidation_in_pool`: after an ALTER TABLE, a statement
/// prepared before it fails on the primary with `0A000 cached plan must not change result type`
/// (the driver expects it and prepares again). The target would run the read fresh and return
/// a row: that is no difference of data, so the sample is skipped with its reason, not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_failing_on_the_primarys_session_state_is_skipped_not_a_mismatch() {
    let d = DualWrite::start_with("shadow_reads = 1.0", "").await;
    d.both("CREATE TABLE cached (id int PRIMARY KEY, v text); INSERT INTO cached VALUES (1, 'a'); ALTER TABLE cached OWNER TO app");
    let c = d.client().await;
    let stmt = c
        .prepare("SELECT * FROM cached WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(c.query(&stmt, &[&1i32]).await.unwrap().len(), 1);
    c.batch_execute("ALTER TABLE cached ADD COLUMN w int")
        .await
        .unwrap();
    let err = c.query(&stmt, &[&1i32]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "0A000", "{err}");
    // A fresh statement reads the new shape. The target's shared session kept the same text
    // prepared from before the ALTER: its plan went stale there too, so that sample is skipped
    // as well and the statement prepared again; the next read is compared as usual.
    for _ in 0..2 {
        let rows = c
            .query("SELECT * FROM cached WHERE id = $1", &[&1i32])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
    }
    let r = settled(&d, 2).await;
    assert!(r.mismatches.is_empty(), "{r:#?}");
    assert_eq!(
        d.metric("dualwrite_shadow_dropped_total", "primary_session_state")
            .await,
        1.0
    );
}
