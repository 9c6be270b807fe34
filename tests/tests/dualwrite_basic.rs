//! Dual-write through the proxy against real servers: every write reaches both databases,
//! reads stay on the primary, failures are journaled, differences are reported.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use dualwrite_tests::proxy::DualWrite;

const READINGS: &str = "CREATE TABLE readings (ts timestamptz NOT NULL, device int NOT NULL, v double precision, note text, PRIMARY KEY (device, ts));
                        GRANT ALL ON readings TO app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_series_writer_lands_identically_on_both() {
    let d = DualWrite::start().await;
    d.both(READINGS);
    let mut c = d.client().await;
    // Single-row inserts, prepared.
    let ins = c
        .prepare("INSERT INTO readings VALUES ($1, $2, $3, $4)")
        .await
        .unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    for i in 0..200i32 {
        let ts = t0 + chrono::Duration::seconds(i as i64);
        c.execute(
            &ins,
            &[&ts, &(i % 4), &(i as f64 * 0.1), &format!("n'{i}\n")],
        )
        .await
        .unwrap();
    }
    // Multi-row insert, simple protocol.
    c.batch_execute("INSERT INTO readings VALUES ('2026-01-02 00:00:00+00', 9, 1.5, 'a'), ('2026-01-02 00:00:01+00', 9, NULL, NULL)").await.unwrap();
    // A transaction rolled back, one committed, one with a savepoint.
    {
        let tx = c.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO readings VALUES ('2026-01-03 00:00:00+00', 1, 0, 'rolled back')",
            &[],
        )
        .await
        .unwrap();
        tx.rollback().await.unwrap();
    }
    {
        let tx = c.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO readings VALUES ('2026-01-03 00:00:00+00', 2, 0, 'committed')",
            &[],
        )
        .await
        .unwrap();
        tx.batch_execute("SAVEPOINT s; INSERT INTO readings VALUES ('2026-01-03 00:00:01+00', 2, 0, 'undone'); ROLLBACK TO SAVEPOINT s").await.unwrap();
        tx.commit().await.unwrap();
    }
    // COPY FROM in text and binary.
    let sink = c.copy_in("COPY readings FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(
        b"2026-01-04 00:00:00+00\t5\t1\tcopied\n2026-01-04 00:00:01+00\t5\t\\N\t\\N\n",
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let sink = c
        .copy_in("COPY readings FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let w = BinaryCopyInWriter::new(
        sink,
        &[Type::TIMESTAMPTZ, Type::INT4, Type::FLOAT8, Type::TEXT],
    );
    futures_util::pin_mut!(w);
    for i in 0..500i32 {
        let ts = t0 + chrono::Duration::days(10) + chrono::Duration::milliseconds(i as i64);
        w.as_mut()
            .write(&[&ts, &7i32, &(i as f64 / 3.0), &"bin"])
            .await
            .unwrap();
    }
    assert_eq!(w.finish().await.unwrap(), 500);
    // A failed COPY on the primary is not applied on the secondary.
    {
        let sink = c
            .copy_in::<_, Bytes>("COPY readings FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"not a timestamp\t1\t1\tx\n"))
            .await
            .unwrap();
        assert!(sink.finish().await.is_err());
    }
    // Reads work and are not sent to the target.
    let n: i64 = c
        .query_one("SELECT count(*) FROM readings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 200 + 2 + 1 + 2 + 500);
    let all = "SELECT md5(string_agg(r::text, '|' ORDER BY device, ts)) || ' ' || count(*) FROM readings r";
    let same = d.assert_same(all).await;
    assert!(same.ends_with(" 705"), "{same}");
    assert_eq!(d.metric("dualwrite_divergences_total", "").await, 0.0);
    let status = d.status().await;
    assert!(status["dual_write"]["started_at"].is_string(), "{status}");
    assert!(
        status["dual_write"]["first_write_per_table"]["readings"].is_string(),
        "{status}"
    );
    assert_eq!(status["dual_write"]["journal"]["records"], 0, "{status}");
    assert!(
        d.metric("dualwrite_units_routed_total", "route=\"primary\"")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_and_sequences_follow_the_client() {
    let d = DualWrite::start().await;
    d.both("CREATE SCHEMA app AUTHORIZATION app; CREATE SEQUENCE app.ids; GRANT ALL ON SEQUENCE app.ids TO app;
            CREATE TABLE app.items (id bigint PRIMARY KEY, name text); GRANT ALL ON app.items TO app");
    let c = d.client().await;
    c.batch_execute("SET search_path = app, public")
        .await
        .unwrap();
    // nextval through a prepared statement, executed several times: both sequences advance.
    let next = c.prepare("SELECT nextval('ids')").await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(c.query_one(&next, &[]).await.unwrap().get::<_, i64>(0));
    }
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    let ins = c
        .prepare("INSERT INTO items VALUES ($1, $2)")
        .await
        .unwrap();
    for id in &ids {
        c.execute(&ins, &[id, &format!("item {id}")]).await.unwrap();
    }
    d.assert_same("SELECT last_value FROM app.ids").await;
    d.assert_same("SELECT string_agg(id || ':' || name, ',' ORDER BY id) FROM app.items")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_error_in_a_transaction_rolls_the_secondary_back() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app");
    let mut c = d.client().await;
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    let err = tx
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    // COMMIT of the aborted transaction: the primary answers ROLLBACK; so does the secondary.
    let _ = tx.commit().await;
    c.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    assert_eq!(
        d.assert_same("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .await,
        "1,3"
    );
    assert_eq!(d.status().await["dual_write"]["journal"]["records"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_only_error_is_journaled_and_invisible_to_the_client() {
    let d = DualWrite::start().await;
    d.source.psql(
        "app",
        "CREATE TABLE only_source (id int); GRANT ALL ON only_source TO app",
    );
    let c = d.client().await;
    c.batch_execute("INSERT INTO only_source VALUES (1)")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM only_source", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let status = d.status_after_missed(1).await;
    assert_eq!(status["dual_write"]["journal"]["missed"], 1, "{status}");
    assert_eq!(
        status["dual_write"]["secondary_attached"], false,
        "{status}"
    );
    assert!(
        d.metric("dualwrite_secondary_failures_total", "kind=\"error\"")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_of_history_the_target_lacks_is_a_divergence() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE m (id int PRIMARY KEY, v text); GRANT ALL ON m TO app");
    // History only the source has (the backfill has not run yet).
    d.source.psql(
        "app",
        "INSERT INTO m SELECT g, 'old' FROM generate_series(1, 10) g",
    );
    let c = d.client().await;
    let n = c
        .execute("UPDATE m SET v = 'new' WHERE id <= 5", &[])
        .await
        .unwrap();
    assert_eq!(n, 5);
    let mut divergences = 0.0;
    for _ in 0..50 {
        divergences = d.metric("dualwrite_divergences_total", "").await;
        if divergences > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(divergences, 1.0);
    // The record reaches the journal's file a moment after it is counted.
    let status = d
        .wait_status(10, "the divergence record in the journal", |s| {
            s["dual_write"]["journal"]["divergences"] == 1
        })
        .await;
    assert_eq!(status["dual_write"]["divergences"], 1, "{status}");
    // A divergence is reported, not a failure: the secondary stays attached.
    assert_eq!(status["dual_write"]["secondary_attached"], true, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_bound_backpressure_never_deadlocks_or_loses() {
    let d = DualWrite::start_with("", "[secondary]\nmax_lag_bytes = 65536\n").await;
    d.both("CREATE TABLE big (id int PRIMARY KEY, payload text); GRANT ALL ON big TO app");
    let c = d.client().await;
    // A COPY far larger than the bound.
    let sink = c.copy_in("COPY big FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = Vec::new();
    for i in 0..20_000 {
        data.extend_from_slice(format!("{i}\t{}\n", "x".repeat(200)).as_bytes());
    }
    for chunk in data.chunks(8192) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 20_000);
    // Thousands of pipelined inserts on one connection.
    let ins = c.prepare("INSERT INTO big VALUES ($1, $2)").await.unwrap();
    let futs = (20_000..23_000i32).map(|i| {
        let (c, ins) = (&c, &ins);
        async move { c.execute(ins, &[&i, &"p"]).await }
    });
    futures_util::future::try_join_all(futs).await.unwrap();
    let same = d
        .assert_same(
            "SELECT count(*) || ' ' || md5(string_agg(id || payload, ',' ORDER BY id)) FROM big",
        )
        .await;
    assert!(same.starts_with("23000 "), "{same}");
    assert_eq!(d.status().await["dual_write"]["journal"]["records"], 0);
}

/// A transaction's writes reach the secondary together with its COMMIT. When the secondary
/// fails one of them, a transaction the client commits is journaled whole; one the client
/// rolls back is neither applied nor journaled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_failing_on_the_secondary_are_journaled_only_when_committed() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app");
    d.source.psql(
        "app",
        "CREATE TABLE only_source (id int); GRANT ALL ON only_source TO app",
    );
    let c = d.client().await;
    // Healthy transactions, simple and extended protocol, a savepoint rolled back inside one.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    let ins = c.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.execute(&ins, &[&3i32]).await.unwrap();
    c.batch_execute("SAVEPOINT s").await.unwrap();
    assert!(
        c.execute(&ins, &[&3i32]).await.is_err(),
        "duplicate key on the primary"
    );
    c.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    c.execute(&ins, &[&4i32]).await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // Rolled back by the client: nothing anywhere.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (5)")
        .await
        .unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    d.assert_same("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
        .await;
    // The secondary fails the second statement; the client rolls back.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (6); INSERT INTO only_source VALUES (1)")
        .await
        .unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = d.status().await;
    assert_eq!(status["dual_write"]["journal"]["missed"], 0, "{status}");
    assert_eq!(status["dual_write"]["secondary_attached"], true, "{status}");
    assert_eq!(
        d.target
            .psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "1,2,3,4"
    );
    // The same, committed: the whole transaction is journaled, in one record.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (7); INSERT INTO only_source VALUES (2); COMMIT")
        .await
        .unwrap();
    let status = d.status_after_missed(1).await;
    assert_eq!(status["dual_write"]["journal"]["missed"], 1, "{status}");
    let (records, _) =
        dualwrite_proxy::journal::read_records(d.journal_dir.path()).expect("journal reads");
    let statements = dualwrite_proxy::journal::describe(&records[0].messages).join("; ");
    assert!(
        statements.contains("INSERT INTO t VALUES (7)")
            && statements.contains("INSERT INTO only_source VALUES (2)"),
        "{statements}"
    );
    // Row 7 is not on the target: its transaction failed there as a whole.
    assert_eq!(
        d.target
            .psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "1,2,3,4"
    );
}
