//! A real client (tokio-postgres) through the pass-through proxy: everything it can do
//! against Postgres directly must work the same way.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutStream};
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

use dualwrite_tests::proxy::Passthrough;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_multi_statement_and_transactions() {
    let p = Passthrough::start().await;
    let c = p.client().await;
    let msgs = c
        .simple_query("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, NULL); SELECT id, v FROM t ORDER BY id")
        .await
        .unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((r.get(0).map(str::to_string), r.get(1).map(str::to_string)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (Some("1".into()), Some("a".into())),
            (Some("2".into()), None)
        ]
    );
    let tags: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(tags, vec![0, 2, 2]);

    // Rollback, savepoints, and an aborted transaction.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (3, 'x'); ROLLBACK")
        .await
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO t VALUES (4, 'y'); SAVEPOINT s; INSERT INTO t VALUES (5, 'z'); ROLLBACK TO s; COMMIT")
        .await
        .unwrap();
    let err = c
        .batch_execute("BEGIN; INSERT INTO t VALUES (1, 'dup')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    let err = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "25P02", "in failed transaction");
    c.batch_execute("ROLLBACK").await.unwrap();
    let ids: Vec<i32> = c
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_binary_types_and_prepared_statements() {
    let p = Passthrough::start().await;
    let c = p.client().await;
    c.batch_execute(
        "CREATE TABLE ty (i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, b bool, t text, by bytea,
                          ts timestamptz, j jsonb, arr int4[])",
    )
    .await
    .unwrap();
    let ins = c
        .prepare("INSERT INTO ty VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
        .await
        .unwrap();
    let ts = chrono::DateTime::parse_from_rfc3339("2024-02-29T12:34:56.789012Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let json = serde_json::json!({"k": [1, "two", null], "q": "a\"b"});
    for i in 0..5i32 {
        c.execute(
            &ins,
            &[
                &(i as i16),
                &i,
                &(i as i64 * 1_000_000_000_000),
                &(i as f32 / 3.0),
                &(i as f64 / 7.0),
                &(i % 2 == 0),
                &format!("row {i} 'quoted' \n newline"),
                &vec![0u8, 255, i as u8],
                &ts,
                &json,
                &vec![i, i + 1],
            ],
        )
        .await
        .unwrap();
    }
    let sel = c
        .prepare("SELECT i2, i4, i8, f4, f8, b, t, by, ts, j, arr FROM ty WHERE i4 = $1")
        .await
        .unwrap();
    for i in 0..5i32 {
        let r = c.query_one(&sel, &[&i]).await.unwrap();
        assert_eq!(r.get::<_, i16>(0), i as i16);
        assert_eq!(r.get::<_, i64>(2), i as i64 * 1_000_000_000_000);
        assert_eq!(r.get::<_, f32>(3), i as f32 / 3.0);
        assert_eq!(r.get::<_, f64>(4), i as f64 / 7.0);
        assert_eq!(
            r.get::<_, String>(6),
            format!("row {i} 'quoted' \n newline")
        );
        assert_eq!(r.get::<_, Vec<u8>>(7), vec![0u8, 255, i as u8]);
        assert_eq!(r.get::<_, chrono::DateTime<chrono::Utc>>(8), ts);
        assert_eq!(r.get::<_, serde_json::Value>(9), json);
        assert_eq!(r.get::<_, Vec<i32>>(10), vec![i, i + 1]);
    }
    // Describe of a statement: parameter and column types come back.
    assert_eq!(sel.params(), &[Type::INT4]);
    assert_eq!(sel.columns()[9].type_(), &Type::JSONB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_and_portals_with_row_limits() {
    let p = Passthrough::start().await;
    let c = p.client().await;
    c.batch_execute("CREATE TABLE n AS SELECT g AS id FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    let stmt = c.prepare("SELECT id FROM n WHERE id = $1").await.unwrap();
    // Futures polled together are pipelined on one connection (many Executes before the Syncs).
    let futs = (1..=200i32).map(|i| {
        let c = &c;
        let stmt = &stmt;
        async move { c.query_one(stmt, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
    });
    let got: Vec<i32> = futures_util::future::try_join_all(futs).await.unwrap();
    assert_eq!(got, (1..=200).collect::<Vec<_>>());

    // A portal read 300 rows at a time (PortalSuspended between batches).
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    let all = tx.prepare("SELECT id FROM n ORDER BY id").await.unwrap();
    let portal = tx.bind(&all, &[]).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 300).await.unwrap();
        if rows.is_empty() {
            break;
        }
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    tx.commit().await.unwrap();
    assert_eq!(seen, (1..=1000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_text_csv_binary_and_copy_fail() {
    let p = Passthrough::start().await;
    let c = p.client().await;
    c.batch_execute("CREATE TABLE cp (id int, v text)")
        .await
        .unwrap();

    // Text.
    let sink = c.copy_in("COPY cp FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\tone\n2\t\\N\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    // CSV with quotes, commas and newlines.
    let sink = c.copy_in("COPY cp FROM STDIN (FORMAT csv)").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(
        b"3,\"a,b\"\n4,\"line1\nline2 \"\"q\"\"\"\n",
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    // Binary.
    let sink = c
        .copy_in("COPY cp FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
    futures_util::pin_mut!(writer);
    for i in 5..1005i32 {
        writer
            .as_mut()
            .write(&[&i, &format!("b{i}")])
            .await
            .unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 1000);

    // CopyFail: the server aborts the COPY, the session goes on.
    {
        let sink = c.copy_in::<_, Bytes>("COPY cp FROM STDIN").await.unwrap();
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"9999\tnever\n"))
            .await
            .unwrap();
        // Dropping an unfinished sink sends CopyFail.
    }
    let count: i64 = c
        .query_one("SELECT count(*) FROM cp", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1004);

    // Out, text and csv.
    let out: Vec<Bytes> = c
        .copy_out("COPY (SELECT * FROM cp WHERE id <= 4 ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        out.concat(),
        b"1\tone\n2\t\\N\n3\ta,b\n4\tline1\\nline2 \"q\"\n".to_vec()
    );
    let out: Vec<Bytes> = c
        .copy_out("COPY (SELECT * FROM cp WHERE id IN (3, 4) ORDER BY id) TO STDOUT (FORMAT csv)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        out.concat(),
        b"3,\"a,b\"\n4,\"line1\nline2 \"\"q\"\"\"\n".to_vec()
    );
    // Out, binary.
    let stream = c
        .copy_out("COPY (SELECT * FROM cp WHERE id >= 5 ORDER BY id) TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let rows: Vec<_> = BinaryCopyOutStream::new(stream, &[Type::INT4, Type::TEXT])
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[999].get::<String>(1), "b1004");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_reaches_the_listener() {
    let p = Passthrough::start().await;
    let (listener, mut conn) = tokio_postgres::connect(&p.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    listener.batch_execute("LISTEN chan").await.unwrap();
    let notifier = p.client().await;
    notifier
        .batch_execute("NOTIFY chan, 'hello through the proxy'")
        .await
        .unwrap();
    notifier
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'a notice'; END $$")
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Some(AsyncMessage::Notification(n)) = rx.recv().await {
                return n;
            }
        }
    })
    .await
    .expect("notification within 10s");
    assert_eq!(
        (got.channel(), got.payload()),
        ("chan", "hello through the proxy")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_clients_own_query() {
    let p = Passthrough::start().await;
    let c = p.client().await;
    let other = p.client().await;
    let token = c.cancel_token();
    let slow = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await });
    let other_slow = tokio::spawn(async move {
        other
            .query_one("SELECT pg_sleep(1)::text", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014", "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The other session's query was not cancelled.
    other_slow.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_fields_are_preserved() {
    let p = Passthrough::start().await;
    let c = p.client().await;
    let err = c.simple_query("SELECT 1/0").await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22012");
    let err = c
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42P01");
    assert!(
        matches!(
            db.position(),
            Some(tokio_postgres::error::ErrorPosition::Original(15))
        ),
        "{:?}",
        db.position()
    );
    let err = c
        .batch_execute("DO $$ BEGIN RAISE EXCEPTION 'custom' USING DETAIL = 'the detail', HINT = 'the hint', ERRCODE = 'P0042'; END $$")
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(
        (db.code().code(), db.message(), db.detail(), db.hint()),
        ("P0042", "custom", Some("the detail"), Some("the hint"))
    );
    // The session is fine afterwards.
    assert_eq!(
        c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0),
        7
    );
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_million_rows_stream_with_flat_memory() {
    let p = Passthrough::start().await;
    let c = p.client().await;
    // Warm up so allocator pools exist before measuring.
    c.query("SELECT g FROM generate_series(1, 10000) g", &[])
        .await
        .unwrap();
    let before = peak_rss_kib();
    let stream = c
        .query_raw(
            "SELECT g FROM generate_series(1, 10000000) g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut n = 0u64;
    let mut sum = 0i64;
    while let Some(row) = stream.next().await {
        sum += row.unwrap().get::<_, i32>(0) as i64;
        n += 1;
    }
    assert_eq!(n, 10_000_000);
    assert_eq!(sum, 10_000_000 * 10_000_001 / 2);
    let grew = peak_rss_kib().saturating_sub(before);
    // 10M rows are ~190 MB on the wire; the proxy and client hold only buffers.
    assert!(
        grew < 64 * 1024,
        "peak RSS grew by {grew} KiB while streaming"
    );
}

/// libpq 18 can ask for protocol 3.2 (`max_protocol_version=3.2` or `latest`): the proxy, which
/// speaks 3.0, answers NegotiateProtocolVersion as PostgreSQL does and the session goes on in
/// 3.0; a client that insists on 3.2 (`min_protocol_version=3.2`) gets libpq's own refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_clients_are_negotiated_down_to_3_0() {
    let newer = dualwrite_tests::PgBin::newer_required();
    assert!(
        newer.major >= 18,
        "libpq {} cannot ask for protocol 3.2",
        newer.major
    );
    let p = Passthrough::start().await;
    let psql = |options: &str| {
        std::process::Command::new(newer.bin("psql"))
            .env("PGPASSWORD", dualwrite_tests::proxy::APP_PASSWORD)
            .arg(format!(
                "host=127.0.0.1 port={} user=app dbname=app {options}",
                p.proxy.port()
            ))
            .args(["-X", "-A", "-t", "-c", "SELECT 'protocol ok'"])
            .output()
            .unwrap()
    };
    for options in ["max_protocol_version=3.2", "max_protocol_version=latest"] {
        let out = psql(options);
        assert!(
            out.status.success(),
            "{options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "protocol ok");
    }
    let out = psql("min_protocol_version=3.2");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3.0"), "{err}");
}
