//! The target's network goes silent in the middle of a write load: its packets are dropped, no
//! reset, no refusal (a host that died, a firewall, a cut link). Connections to it stay open
//! and answer nothing, so only the proxy's own timeouts can tell (TCP keepalive and
//! `tcp_user_timeout`, libpq's URL parameters). Clients must keep writing through it: the
//! secondary sessions give up on the silent target, journal what it misses, and once the
//! network is back the journal is replayed and both sides are identical, non-commutative
//! updates included.

use std::time::{Duration, Instant};

use dualwrite_tests::faults::Partition;
use dualwrite_tests::load::Writers;
use dualwrite_tests::proxy::DualWrite;

/// A dual-write proxy that gives up on a silent target within about 2 s (keepalive probes after
/// 1 s, `tcp_user_timeout` 2 s) and reconnects every 200 ms; `secondary` is more of its
/// `[secondary]` section.
async fn quick_to_give_up(secondary: &str) -> DualWrite {
    DualWrite::start_routed(
        "connect_timeout = \"2s\"",
        &format!("[secondary]\nreconnect_backoff = \"200ms\"\n{secondary}"),
        |target| {
            format!(
                "{}&keepalives_idle=1&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=2000",
                target.url("app")
            )
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_target_does_not_stall_clients_and_loses_nothing() {
    // A small lag bound: a secondary session that waited on the silent target without end
    // would hold its client back (backpressure) within a fraction of a second.
    let d = quick_to_give_up("max_lag_bytes = 65536\n").await;
    d.both(
        "CREATE TABLE events (id bigint PRIMARY KEY, writer int);
         CREATE TABLE kv (k int PRIMARY KEY, v text);
         INSERT INTO kv VALUES (1, 'start');
         GRANT ALL ON events, kv TO app",
    );
    let writers = Writers::start(&d, 4, true).await;
    let kv = d.client().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut partition = Partition::of(d.target.port);
    partition.cut();
    let cut_at = Instant::now();
    kv.execute("UPDATE kv SET v = 'x' WHERE k = 1", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    kv.execute("UPDATE kv SET v = 'y' WHERE k = 1", &[])
        .await
        .unwrap();
    let status = d.wait_attached(false, 30).await;
    eprintln!(
        "secondary detached {:.1} s after the cut",
        cut_at.elapsed().as_secs_f64()
    );
    // Well after the silent target was given up, with the network still cut, clients write
    // on: nothing waits for the target any more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = writers.done();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = writers.done() - before;
    assert!(
        during > 50,
        "clients stalled while the target was silent: {during} writes in 3 s; {status}"
    );
    assert!(
        d.status().await["dual_write"]["journal"]["missed"]
            .as_u64()
            .unwrap()
            > 0
    );

    partition.heal();
    let back_at = Instant::now();
    let status = d.wait_attached(true, 90).await;
    eprintln!(
        "re-attached {:.1} s after the network came back",
        back_at.elapsed().as_secs_f64()
    );
    kv.execute("UPDATE kv SET v = 'z' WHERE k = 1", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (written, errors) = writers.finish().await;
    assert_eq!(errors, 0, "clients saw errors");

    let events = d
        .assert_same(
            "SELECT count(*) || ' ' || md5(string_agg(id::text, ',' ORDER BY id)) FROM events",
        )
        .await;
    assert!(
        events.starts_with(&format!("{written} ")),
        "{events} vs {written} written; {status}"
    );
    assert_eq!(d.assert_same("SELECT v FROM kv WHERE k = 1").await, "z");
}

/// A transaction cut off mid-way: its secondary session took a row lock on the target, then
/// the network went silent. The target never learns that the proxy gave that session up (the
/// proxy's reset is dropped with everything else, and the server's keepalive waits two hours
/// by default), so the session lives on there, idle in its transaction, holding the lock; the
/// replay of the journal, which re-applies that very transaction, would wait for it without
/// end. The proxy ends the sessions it lost before it replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cut_off_on_the_target_does_not_block_its_replay() {
    let d = quick_to_give_up("").await;
    d.both(
        "CREATE TABLE kv (k int PRIMARY KEY, v text);
         INSERT INTO kv VALUES (1, 'start');
         GRANT ALL ON kv TO app",
    );
    // Every read is sampled on the target.
    let (code, _) = d
        .proxy
        .admin_post("/config", r#"{"shadow_reads": 1.0}"#)
        .await;
    assert_eq!(code, 200);
    let c = d.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("UPDATE kv SET v = 'x' WHERE k = 1")
        .await
        .unwrap();
    // A transaction's statements go to the secondary at its commit, or ahead of it for a
    // sampled read inside it, which must see them: this read sends the UPDATE ahead.
    c.batch_execute("SELECT v FROM kv WHERE k = 1")
        .await
        .unwrap();
    // The target's session holds the row's lock once its UPDATE ran there.
    let holder = || {
        d.target.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity
              WHERE usename = 'app' AND state = 'idle in transaction'",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder() != "1" {
        assert!(
            Instant::now() < deadline,
            "the target's session never ran the UPDATE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Everything the target sent is acknowledged by now: after the cut it has nothing to
    // retransmit, so nothing will ever draw a reset from the proxy's side.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut partition = Partition::of(d.target.port);
    partition.cut();
    c.execute("UPDATE kv SET v = v || 'y' WHERE k = 1", &[])
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    d.wait_attached(false, 30).await;
    // The secondary gave the session up; the target's end of it is still there, in its
    // transaction, once the network is back (the proxy's end of the connection is long gone by
    // then: nothing tells the server).
    tokio::time::sleep(Duration::from_secs(4)).await;
    partition.heal();
    assert_eq!(
        holder(),
        "1",
        "the target's end of the lost session is gone"
    );
    let back_at = Instant::now();
    let status = d.wait_attached(true, 60).await;
    eprintln!(
        "re-attached {:.1} s after the network came back",
        back_at.elapsed().as_secs_f64()
    );
    assert_eq!(
        status["dual_write"]["journal"]["missed"].as_u64(),
        Some(1),
        "{status}"
    );
    assert_eq!(d.assert_same("SELECT v FROM kv WHERE k = 1").await, "xy");
    assert_eq!(holder(), "0", "a lost session still holds its transaction");
    let metrics = d.proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains("dualwrite_lost_sessions_ended_total{side=\"target\"} 1"),
        "{metrics}"
    );
    c.execute("UPDATE kv SET v = 'z' WHERE k = 1", &[])
        .await
        .unwrap();
    assert_eq!(d.assert_same("SELECT v FROM kv WHERE k = 1").await, "z");
}

/// `ss -tno` lines of the established TCP connections matching `filter`.
fn sockets(filter: &str) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", filter])
        .output()
        .expect("running ss (iproute2)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_backend_connections_are_probed_with_keepalives() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int); GRANT ALL ON t TO app");
    let c = d.client().await;
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    // The proxy's side of the client's connection, and its sessions on both backends (by
    // default probed after 15 s of silence). A socket shows its keepalive timer when no data
    // is in flight, so look until the connections are quiet.
    let filters = [
        format!("( sport = :{} )", d.proxy.port()),
        format!("( dport = :{} )", d.source.port),
        format!("( dport = :{} )", d.target.port),
    ];
    for filter in &filters {
        let mut lines = Vec::new();
        for _ in 0..50 {
            lines = sockets(filter);
            if !lines.is_empty() && lines.iter().all(|l| l.contains("timer:(keepalive")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!lines.is_empty(), "no connection {filter}");
        for line in &lines {
            assert!(line.contains("timer:(keepalive"), "{filter}: {line}");
        }
    }
    assert_eq!(d.assert_same("SELECT count(*) FROM t").await, "1");
}

/// The server process id of `c`'s session.
async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// "1" while process `pid` runs a session on `cluster`, "0" once it has ended.
fn running(cluster: &dualwrite_tests::Cluster, pid: i32) -> String {
    cluster.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
    )
}

/// Wait up to 5 s for process `pid` on `cluster` to end (it ends a moment after it is told).
async fn wait_ended(cluster: &dualwrite_tests::Cluster, pid: i32) {
    for _ in 0..50 {
        if running(cluster, pid) == "0" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running(cluster, pid), "0", "session {pid} still runs");
}

/// Ending lost sessions takes only the lost session itself: its process id, user and
/// database, and a server process started when it was opened. A process id reused by another
/// session (the same user and database) is left alone; a session gone already counts as gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lost_session_itself_is_ended() {
    use dualwrite_proxy::abandoned::{Abandoned, Ended};
    use dualwrite_proxy::config::Side;
    let cluster = dualwrite_tests::Cluster::start(&dualwrite_tests::PgBin::target());
    let admin = dualwrite_tests::proxy::client(&cluster.url("postgres")).await;
    let session = dualwrite_tests::proxy::client(&cluster.url("postgres")).await;
    let opened = Instant::now();
    let pid = backend_pid(&session).await;
    let abandoned = Abandoned::default();

    // A session opened a minute ago under this pid: not the one running now.
    let a_minute_ago = Instant::now() - Duration::from_secs(60);
    abandoned.record(Side::Target, pid, "postgres", "postgres", a_minute_ago);
    // The same process, but another user's session: not it either.
    abandoned.record(Side::Target, pid, "app", "postgres", opened);
    // A pid that runs nothing.
    abandoned.record(Side::Target, i32::MAX, "postgres", "postgres", opened);
    // Lost on the other side: not looked for here.
    abandoned.record(Side::Source, pid, "postgres", "postgres", opened);
    let not_needed =
        |_: String, _: String| async { Err("the superuser sees them all".to_string()) };
    let ended = abandoned
        .end_on(Side::Target, &admin, not_needed)
        .await
        .unwrap();
    assert_eq!(
        ended,
        Ended {
            terminated: 0,
            gone: 3,
            refused: 0
        }
    );
    assert_eq!(running(&cluster, pid), "1");
    assert_eq!(abandoned.pending(Side::Target), 0);
    assert_eq!(abandoned.pending(Side::Source), 1);

    // The session itself: ended.
    abandoned.record(Side::Target, pid, "postgres", "postgres", opened);
    let ended = abandoned
        .end_on(Side::Target, &admin, not_needed)
        .await
        .unwrap();
    assert_eq!(ended.terminated, 1, "{ended:?}");
    wait_ended(&cluster, pid).await;
    assert!(session.query_one("SELECT 1", &[]).await.is_err());
}

/// The proxy's own login on a server may have no right to see or end other users' sessions (a
/// managed service's admin user often has neither). A lost session is then ended by a session
/// of its own user, which always may; if that cannot log in either, it is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_without_the_right_ends_them_as_their_own_user() {
    use dualwrite_proxy::abandoned::Abandoned;
    use dualwrite_proxy::config::Side;
    use dualwrite_tests::proxy::{client, APP_PASSWORD, APP_USER};
    let cluster = dualwrite_tests::Cluster::start(&dualwrite_tests::PgBin::target());
    cluster.create_role(APP_USER, APP_PASSWORD, "");
    cluster.create_role("watcher", "watcher-secret", "");
    cluster.psql("postgres", "CREATE DATABASE app OWNER app");
    let admin = client(&cluster.url_as("watcher", "watcher-secret", "app")).await;
    let session = client(&cluster.url_as(APP_USER, APP_PASSWORD, "app")).await;
    let opened = Instant::now();
    let pid = backend_pid(&session).await;
    let abandoned = Abandoned::default();

    // Its own user cannot log in (here: a wrong password): reported, left alone.
    abandoned.record(Side::Target, pid, APP_USER, "app", opened);
    let ended = abandoned
        .end_on(Side::Target, &admin, |_, _| async {
            Err("password authentication failed".to_string())
        })
        .await
        .unwrap();
    assert_eq!((ended.terminated, ended.refused), (0, 1), "{ended:?}");
    assert_eq!(running(&cluster, pid), "1");

    // As its own user: ended.
    abandoned.record(Side::Target, pid, APP_USER, "app", opened);
    let url = |user: String, db: String| cluster.url_as(&user, APP_PASSWORD, &db);
    let ended = abandoned
        .end_on(Side::Target, &admin, |user, db| {
            let url = url(user, db);
            async move { Ok(client(&url).await) }
        })
        .await
        .unwrap();
    assert_eq!((ended.terminated, ended.refused), (1, 0), "{ended:?}");
    wait_ended(&cluster, pid).await;
}
