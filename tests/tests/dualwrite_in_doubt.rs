//! The secondary's connection dies after the target committed a write and before its answer
//! arrived. The proxy cannot know then whether the target has it: it journals the write *in
//! doubt*, with the commit marker the write's transaction wrote on the target. Replay reads the
//! marker and skips the record the target committed, so even a relative `UPDATE` is not applied
//! twice. A unit that carries no marker (here a whole transaction in one simple Query) keeps the
//! older rule: replay applies it if it can, and when it fails (the key already exists, because
//! the target did commit it) takes it as applied instead of blocking every later record. Either
//! way the target ends with exactly one copy.

use std::time::Duration;

use dualwrite_tests::faults::CutRelay;
use dualwrite_tests::proxy::DualWrite;

/// How long to wait for the secondary to re-attach. The proxy retries a failed replay with a
/// backoff that doubles up to 30 s (a replay can itself meet the relay's cut, or a target
/// still restarting), so the wait covers more than two of the longest pauses.
const REATTACH_SECS: u64 = 75;

/// Wait for the relay's `n`th cut, then for the proxy to journal the `n`th in-doubt record and
/// re-attach. (Waiting only for "attached" could return before the proxy noticed the cut; the
/// test's next armed cut could then meet the replay's connection instead.)
async fn wait_cut(d: &DualWrite, relay: &CutRelay, n: u32) -> serde_json::Value {
    for _ in 0..100 {
        if relay.cuts() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relay.cuts() >= n, "the relay never cut connection {n}");
    for _ in 0..100 {
        if d.metric("dualwrite_journal_in_doubt_total", "").await >= f64::from(n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.wait_attached(true, REATTACH_SECS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_to_commits_are_in_doubt_and_never_block_replay() {
    let mut relay = None;
    let d = DualWrite::start_routed("", "[secondary]\nreconnect_backoff = \"100ms\"\n", |t| {
        let r = CutRelay::start(t.port);
        let url = r.url(t, "app");
        relay = Some(r);
        url
    })
    .await;
    let relay = relay.expect("relay started");
    d.both(
        "CREATE TABLE events (id bigint PRIMARY KEY, note text);
         CREATE TABLE log (note text);
         GRANT ALL ON events, log TO app",
    );
    let mut c = d.client().await;
    c.execute("INSERT INTO events VALUES (1, 'before')", &[])
        .await
        .unwrap();
    d.assert_same("SELECT count(*) FROM events").await;

    // An autocommit write: the target commits it, its answer is lost.
    relay.arm("INSERT");
    c.execute("INSERT INTO events VALUES (2, 'autocommit')", &[])
        .await
        .unwrap();
    wait_cut(&d, &relay, 1).await;

    // A transaction in one simple Query (no marker): the target commits it, the answer to
    // COMMIT is lost.
    relay.arm("COMMIT");
    c.batch_execute(
        "BEGIN; INSERT INTO events VALUES (3, 'txn'); UPDATE events SET note = 'txn-upd' WHERE id = 1; COMMIT",
    )
    .await
    .unwrap();
    wait_cut(&d, &relay, 2).await;

    // A transaction of several messages, nothing in it unique: the target commits it, the
    // answer to COMMIT is lost; applied again, it would succeed a second time.
    relay.arm("COMMIT");
    let t = c.transaction().await.unwrap();
    t.execute("INSERT INTO log VALUES ('messages')", &[])
        .await
        .unwrap();
    t.execute("UPDATE events SET note = note || '+' WHERE id = 2", &[])
        .await
        .unwrap();
    t.commit().await.unwrap();
    wait_cut(&d, &relay, 3).await;

    // Extended protocol with parameters.
    relay.arm("INSERT");
    c.execute("INSERT INTO events VALUES ($1, $2)", &[&4i64, &"extended"])
        .await
        .unwrap();
    let status = wait_cut(&d, &relay, 4).await;

    // Writes after the re-attach go to both again.
    c.execute("INSERT INTO events VALUES (5, 'after')", &[])
        .await
        .unwrap();
    let rows = d
        .assert_same("SELECT id, note FROM events ORDER BY id")
        .await;
    assert_eq!(
        rows, "1|txn-upd\n2|autocommit+\n3|txn\n4|extended\n5|after",
        "{status}"
    );
    let journaled = || {
        let (records, _) =
            dualwrite_proxy::journal::read_records(d.journal_dir.path()).expect("journal reads");
        records
            .iter()
            .map(|r| {
                format!(
                    "{} in_doubt={} {:?} {}",
                    r.seq, r.in_doubt, r.tables, r.error
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        d.metric("dualwrite_journal_in_doubt_total", "").await >= 4.0,
        "{}\njournal:\n{}",
        d.proxy.admin_get("/metrics").await,
        journaled()
    );
    // Three were marked, and their markers said the target had committed them; the one
    // without a marker failed on replay and was taken as applied.
    assert_eq!(
        d.metric("dualwrite_journal_in_doubt_committed_total", "")
            .await,
        3.0,
        "journal:\n{}",
        journaled()
    );
    assert_eq!(
        d.metric("dualwrite_journal_in_doubt_skipped_total", "")
            .await,
        1.0
    );

    // The journal lists the records as in doubt, with their markers.
    let records =
        dualwrite_proxy::journal::read_records(d.journal_dir.path()).expect("journal reads");
    let in_doubt = records.0.iter().filter(|r| r.in_doubt).count();
    assert_eq!(in_doubt, 4, "{:#?}", records.0);
    let marked = records.0.iter().filter(|r| r.marker.is_some()).count();
    assert_eq!(marked, 3, "{:#?}", records.0);
    let shown = dualwrite_proxy::journal::render(&records.0, u64::MAX);
    assert!(shown.contains("in-doubt"), "{shown}");

    // The session goes on writing to both.
    c.execute("INSERT INTO log VALUES ('x')", &[])
        .await
        .unwrap();
    assert_eq!(
        d.assert_same("SELECT string_agg(note, ',' ORDER BY note) FROM log")
            .await,
        "messages,x"
    );
}

/// A journal in a directory of its own holding one record, `INSERT INTO t VALUES (1)` for the
/// target (in doubt or not), and the proxy settings that replay it.
async fn one_record_journal(
    d: &DualWrite,
    in_doubt: bool,
) -> (tempfile::TempDir, dualwrite_proxy::Settings) {
    use dualwrite_proxy::journal::{Journal, Record, RecordKind};
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), Duration::from_millis(1))
        .await
        .unwrap();
    let mut messages = vec![b'Q'];
    let sql = b"INSERT INTO t VALUES (1)\0";
    messages.extend_from_slice(&(4 + sql.len() as u32).to_be_bytes());
    messages.extend_from_slice(sql);
    journal
        .append(Record {
            seq: 0,
            time_micros: 0,
            kind: RecordKind::Missed,
            session: 1,
            user: "app".into(),
            database: "app".into(),
            prelude: vec![],
            messages,
            wrap: true,
            in_doubt,
            marker: None,
            side: Some("target".into()),
            tables: vec!["t".into()],
            error: "secondary connection lost: reset".into(),
            primary_result: None,
            secondary_result: None,
        })
        .await
        .unwrap();
    drop(journal);
    let toml = d.toml.replace(
        &d.journal_dir.path().display().to_string(),
        &dir.path().display().to_string(),
    );
    let settings = dualwrite_proxy::Settings::from_toml(&format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"\"\n{toml}"
    ))
    .unwrap();
    (dir, settings)
}

/// A session on the target holding table `t` locked, inside a transaction it leaves open.
async fn lock_on_target(d: &DualWrite) -> tokio_postgres::Client {
    let blocker = dualwrite_tests::proxy::client(&d.target.url("app")).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    blocker
}

/// An in-doubt record whose replay fails for a reason of the moment (here a lock timeout: a
/// session on the target holds the table) says nothing about whether the target had the
/// write. It must not be taken as applied (the write would be lost for good): replay stops at
/// it and applies it at the next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_doubt_record_that_meets_a_lock_timeout_is_retried_not_skipped() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app");
    d.target
        .psql("postgres", "ALTER ROLE app SET lock_timeout = '200ms'");

    // A journal of its own holding one in-doubt INSERT the target does not have.
    let (_dir, settings) = one_record_journal(&d, true).await;

    let blocker = lock_on_target(&d).await;
    let err = dualwrite_proxy::replay::replay(&settings, None, &mut |_| {})
        .await
        .expect_err("the record cannot be applied while the table is locked");
    assert!(err.to_string().contains("55P03"), "{err}");

    blocker.batch_execute("COMMIT").await.unwrap();
    let summary = dualwrite_proxy::replay::replay(&settings, None, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        (summary.applied, summary.in_doubt_skipped),
        (1, 0),
        "{summary:?}"
    );
    assert_eq!(d.target.psql("app", "SELECT count(*) FROM t"), "1");
}

/// A record that waits (here for a lock another session holds on the target) does not wait in
/// silence: every 10 s replay says which sessions it waits for, then goes on once they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_waiting_for_a_lock_names_the_session_holding_it() {
    use dualwrite_proxy::replay::ReplayEvent;
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app");
    let (_dir, settings) = one_record_journal(&d, false).await;
    let blocker = lock_on_target(&d).await;
    let blocker_pid: i32 = blocker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    let waits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = waits.clone();
    let replay = tokio::spawn(async move {
        dualwrite_proxy::replay::replay(&settings, None, &mut |ev| {
            if let ReplayEvent::Waiting { seq, blockers, .. } = ev {
                seen.lock().unwrap().push((seq, blockers));
            }
        })
        .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while waits.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no word from the waiting replay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (seq, blockers) = waits.lock().unwrap()[0].clone();
    assert_eq!(seq, 1);
    assert_eq!(blockers.len(), 1, "{blockers:?}");
    assert!(
        blockers[0].starts_with(&format!("pid {blocker_pid} (postgres, idle in transaction")),
        "{blockers:?}"
    );
    assert!(!replay.is_finished());

    blocker.batch_execute("COMMIT").await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), replay)
        .await
        .expect("replay went on once the lock was released")
        .unwrap()
        .unwrap();
    assert_eq!(summary.applied, 1, "{summary:?}");
    assert_eq!(d.target.psql("app", "SELECT count(*) FROM t"), "1");
}
