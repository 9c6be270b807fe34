//! pgbench's tpcb-like load (prepared statements, several clients) through the dual-writing
//! proxy while the target fails at random points: stopped at once (`pg_ctl -m immediate`) and
//! started again, or cut off the network (every packet dropped) and let back. A secondary
//! session whose connection dies between the target's commit and its answer leaves a write in
//! doubt; replay must not apply it a second time (a relative `UPDATE ... SET abalance =
//! abalance + d` would succeed twice). After every replay each pgbench table is identical on
//! both sides, row by row, and every in-doubt record was settled by its commit marker, never
//! by the fallback that takes a failing record as applied.

use std::time::Duration;

use dualwrite_tests::faults::Partition;
use dualwrite_tests::proxy::{pgbench, DualWrite};

/// Iterations per test.
const ROUNDS: usize = 50;

/// How long to wait for the secondary to re-attach after a fault.
const REATTACH_SECS: u64 = 120;

/// A small pseudo-random source (xorshift), seeded from the clock; the seed is printed so that
/// a failing run can be told apart.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        eprintln!("random seed {seed}");
        Rng(seed)
    }

    /// A duration between `lo` and `hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo + 1))
    }
}

/// pgbench's tables loaded the same on both sides, directly.
fn load(d: &DualWrite) {
    pgbench(d.source.port, &["-i", "-s", "1", "-q"]);
    pgbench(d.target.port, &["-i", "-s", "1", "-q"]);
}

/// A tpcb-like run of `secs` seconds through the proxy, on a thread of its own.
fn run_load(port: u16, secs: u64) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        pgbench(
            port,
            &[
                "-M",
                "prepared",
                "-c",
                "4",
                "-j",
                "2",
                "-T",
                &secs.to_string(),
                "-n",
            ],
        )
    })
}

/// Once every commit is applied on the target or journaled, and the journal replayed.
async fn settle(d: &DualWrite) {
    d.wait_status(REATTACH_SECS, "every commit applied or journaled", |s| {
        let o = &s["dual_write"]["commit_order"];
        o["assigned"].as_u64().is_some() && o["assigned"] == o["settled"]
    })
    .await;
    d.wait_attached(true, REATTACH_SECS).await;
}

/// Every pgbench table identical on both sides, row by row (history without `mtime`, which
/// each side takes from its own clock).
async fn assert_tables_same(d: &DualWrite, round: usize) {
    for (table, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
    ] {
        d.assert_same(&format!(
            "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY {key})) FROM {table} t"
        ))
        .await;
    }
    let history = d
        .assert_same(
            "SELECT count(*) || ' ' || md5(string_agg(format('%s,%s,%s,%s', tid, bid, aid, delta), '|' \
             ORDER BY tid, bid, aid, delta)) FROM pgbench_history",
        )
        .await;
    eprintln!("round {round}: history {history}");
}

/// The in-doubt records so far, and how many of them carry a commit marker.
fn in_doubt_records(d: &DualWrite) -> (usize, usize) {
    let (records, _) =
        dualwrite_proxy::journal::read_records(d.journal_dir.path()).expect("journal reads");
    let in_doubt: Vec<_> = records.iter().filter(|r| r.in_doubt).collect();
    let marked = in_doubt.iter().filter(|r| r.marker.is_some()).count();
    (in_doubt.len(), marked)
}

/// After the last round: every in-doubt record carried a marker, and replay settled each by
/// it (committed already, or applied), never by taking a failing record as applied.
async fn assert_settled_by_markers(d: &DualWrite) {
    let (in_doubt, marked) = in_doubt_records(d);
    let committed = d
        .metric("dualwrite_journal_in_doubt_committed_total", "")
        .await as u64;
    let skipped = d
        .metric("dualwrite_journal_in_doubt_skipped_total", "")
        .await;
    eprintln!(
        "{in_doubt} in-doubt record(s), {marked} with a commit marker; {committed} found committed on the target"
    );
    assert_eq!(marked, in_doubt, "an in-doubt pgbench write went unmarked");
    assert_eq!(
        skipped, 0.0,
        "an in-doubt record was settled by the fallback"
    );
    assert!(committed <= in_doubt as u64);
    let status = d.status().await;
    assert_eq!(status["dual_write"]["secondary_attached"], true, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_stopped_at_random_points_of_pgbench_gets_every_write_once() {
    let mut d = DualWrite::start_with("", "[secondary]\nreconnect_backoff = \"100ms\"\n").await;
    load(&d);
    let mut rng = Rng::new();
    for round in 0..ROUNDS {
        let load = run_load(d.proxy.port(), 1);
        tokio::time::sleep(rng.ms(50, 950)).await;
        d.target.stop_immediate();
        tokio::time::sleep(rng.ms(0, 400)).await;
        d.target.restart();
        let text = tokio::task::spawn_blocking(move || load.join())
            .await
            .expect("join")
            .expect("pgbench thread");
        assert!(
            text.contains("number of failed transactions: 0 "),
            "round {round}:\n{text}"
        );
        settle(&d).await;
        assert_tables_same(&d, round).await;
    }
    assert_settled_by_markers(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_cut_off_at_random_points_of_pgbench_gets_every_write_once() {
    // Gives up on a silent target within about 2 s (keepalive probes after 1 s,
    // `tcp_user_timeout` 2 s) and tries again every 100 ms.
    let d = DualWrite::start_routed(
        "connect_timeout = \"2s\"",
        "[secondary]\nreconnect_backoff = \"100ms\"\n",
        |target| {
            format!(
                "{}&keepalives_idle=1&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=2000",
                target.url("app")
            )
        },
    )
    .await;
    load(&d);
    let mut rng = Rng::new();
    let mut partition = Partition::of(d.target.port);
    for round in 0..ROUNDS {
        let load = run_load(d.proxy.port(), 2);
        tokio::time::sleep(rng.ms(50, 1000)).await;
        partition.cut();
        // Shorter than the proxy's timeouts (connections live on) or longer (given up).
        tokio::time::sleep(rng.ms(300, 2600)).await;
        partition.heal();
        let text = tokio::task::spawn_blocking(move || load.join())
            .await
            .expect("join")
            .expect("pgbench thread");
        assert!(
            text.contains("number of failed transactions: 0 "),
            "round {round}:\n{text}"
        );
        settle(&d).await;
        assert_tables_same(&d, round).await;
    }
    assert_settled_by_markers(&d).await;
}
