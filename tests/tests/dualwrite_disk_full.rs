//! The proxy's journal disk fills up while the target is down, so the writes the target misses
//! cannot be journaled. Nothing may be lost: the journal keeps the records in memory and
//! writes them again (the file stays well-formed, no half record left in it), clients go on
//! while that backlog is small and wait once it reaches `[journal] max_backlog_bytes`, and
//! once the disk has room again everything is on disk, replayed, and both sides are identical.

use std::time::{Duration, Instant};

use dualwrite_tests::faults::TinyDisk;
use dualwrite_tests::load::Writers;
use dualwrite_tests::proxy::DualWrite;

async fn journal(d: &DualWrite) -> serde_json::Value {
    d.status().await["dual_write"]["journal"].clone()
}

/// The journal's part of `/status` once `pred` holds on it, or panic after `secs`.
async fn wait_journal(
    d: &DualWrite,
    secs: u64,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    d.wait_status(secs, what, |s| pred(&s["dual_write"]["journal"]))
        .await["dual_write"]["journal"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_disk_loses_no_write() {
    let disk = TinyDisk::mount(64 << 20);
    let max_backlog = 256 * 1024u64;
    let mut d = DualWrite::start_full(
        "",
        &format!("max_backlog_bytes = {max_backlog}\n[secondary]\nreconnect_backoff = \"200ms\"\nmax_lag_bytes = 65536\n"),
        |target| target.url("app"),
        Some(disk.path()),
    )
    .await;
    d.both(
        "CREATE TABLE events (id bigint PRIMARY KEY, writer int, note text DEFAULT repeat('n', 200));
         GRANT ALL ON events TO app",
    );
    let writers = Writers::start(&d, 2, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The target goes down: its writes are journaled.
    d.target.stop_immediate();
    wait_journal(&d, 30, "journaled writes", |j| {
        j["missed"].as_u64() > Some(0)
    })
    .await;

    // Then the journal's disk is full.
    disk.fill();
    let j = wait_journal(&d, 30, "a failing journal write", |j| {
        j["write_failing"] == true
    })
    .await;
    let missed_when_full = j["missed"].as_u64().unwrap();
    // A small backlog: clients go on.
    let before = writers.done();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        writers.done() > before,
        "clients stopped at once when the journal's disk filled: {j}"
    );
    // What got on disk before it filled is whole: the failed writes were cut back.
    let (on_disk, report) =
        dualwrite_proxy::journal::read_records(d.journal_dir.path()).expect("journal reads");
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(on_disk.len() as u64, missed_when_full);

    // Past the backlog bound, sessions wait for the disk, and their clients once their queue
    // to the secondary is full (`max_lag_bytes`): clients wait instead of losing writes.
    let j = wait_journal(&d, 60, "the backlog bound", |j| {
        j["backlog_bytes"].as_u64() > Some(max_backlog)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stalled = writers.done();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = writers.done();
        if now == stalled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clients kept writing past the backlog bound while nothing could be journaled: {j}"
        );
        stalled = now;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writers.done(), stalled, "{j}");
    let j = journal(&d).await;
    assert_eq!(j["write_failing"], true, "{j}");

    // Room again: the held records reach the disk, in order, and clients go on.
    disk.free();
    let j = wait_journal(&d, 30, "the backlog written", |j| {
        j["write_failing"] == false && j["backlog_bytes"] == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(writers.done() > stalled, "clients did not resume: {j}");
    let (records, report) =
        dualwrite_proxy::journal::read_records(d.journal_dir.path()).expect("journal reads");
    assert_eq!(report.torn_tail_bytes, 0);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>());
    assert!(
        records.len() as u64 > missed_when_full + 100,
        "{} records",
        records.len()
    );

    // The target comes back: the journal is replayed and both sides hold every write.
    d.target.restart();
    d.wait_attached(true, 90).await;
    let (written, errors) = writers.finish().await;
    assert_eq!(errors, 0, "clients saw errors");
    let events = d
        .assert_same(
            "SELECT count(*) || ' ' || md5(string_agg(id::text || note, ',' ORDER BY id)) FROM events",
        )
        .await;
    assert!(
        events.starts_with(&format!("{written} ")),
        "{events} vs {written}"
    );
}

/// Stopping the proxy while its journal's disk refuses writes: the records of what the target
/// missed are only in memory, so the stop waits for the disk (past its grace period) instead
/// of dropping them, and ends by itself once they are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_the_journal_disk() {
    let disk = TinyDisk::mount(16 << 20);
    let mut d = DualWrite::start_full(
        "shutdown_timeout = \"1s\"",
        "[secondary]\nreconnect_backoff = \"200ms\"\n",
        |target| target.url("app"),
        Some(disk.path()),
    )
    .await;
    d.both("CREATE TABLE events (id int PRIMARY KEY); GRANT ALL ON events TO app");
    d.target.stop_immediate();
    disk.fill();
    let c = d.client().await;
    for i in 0..20 {
        c.execute("INSERT INTO events VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    let j = wait_journal(&d, 30, "a failing journal write", |j| {
        j["write_failing"] == true && j["backlog_bytes"].as_u64() > Some(0)
    })
    .await;
    drop(c);

    let stopping = tokio::spawn(d.proxy.stop());
    // Past the grace period and the sessions' forced end: still waiting for the disk.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        !stopping.is_finished(),
        "the proxy stopped with journal records only in memory: {j}"
    );
    disk.free();
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("the proxy did not stop once the disk had room")
        .unwrap();
    let (records, report) =
        dualwrite_proxy::journal::read_records(d.journal_dir.path()).expect("journal reads");
    assert_eq!(report.torn_tail_bytes, 0);
    // Each INSERT, and the client's Close of its statement (tokio-postgres closes them).
    let inserts = records
        .iter()
        .filter(|r| r.kind == dualwrite_proxy::journal::RecordKind::Missed)
        .filter(|r| r.tables == ["events"])
        .count();
    assert_eq!(inserts, 20, "{} records", records.len());
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>());
}
