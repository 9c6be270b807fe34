//! pgbench's tpcb-like load through the proxy in dual-write mode, in all three query modes:
//! afterwards every pgbench table is identical on source and target.

use dualwrite_tests::proxy::{pgbench, DualWrite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_in_all_modes_leaves_identical_tables() {
    let d = DualWrite::start().await;
    // The same deterministic initial data on both sides, loaded directly.
    pgbench(d.source.port, &["-i", "-s", "1", "-q"]);
    pgbench(d.target.port, &["-i", "-s", "1", "-q"]);
    for mode in ["simple", "extended", "prepared"] {
        let text = pgbench(
            d.proxy.port(),
            &["-M", mode, "-c", "8", "-j", "2", "-t", "100", "-n"],
        );
        assert!(
            text.contains("number of transactions actually processed: 800/800"),
            "{mode}:\n{text}"
        );
        assert!(
            text.contains("number of failed transactions: 0 "),
            "{mode}:\n{text}"
        );
    }
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
    // History: the same rows but for mtime, which each side takes from its own clock.
    d.assert_same("SELECT count(*) || ' ' || md5(string_agg(format('%s,%s,%s,%s', tid, bid, aid, delta), '|' ORDER BY tid, bid, aid, delta)) FROM pgbench_history").await;
    let times = |c: &dualwrite_tests::Cluster| -> Vec<f64> {
        c.psql("app", "SELECT extract(epoch FROM mtime) FROM pgbench_history ORDER BY tid, bid, aid, delta, mtime")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let (s, t) = (times(&d.source), times(&d.target));
    assert_eq!(s.len(), 2400);
    let worst = s
        .iter()
        .zip(&t)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 30.0, "mtime differs by up to {worst}s");
    // The INSERT's CURRENT_TIMESTAMP was flagged as non-deterministic.
    assert!(
        d.metric(
            "dualwrite_nondeterministic_statements_total",
            "current_timestamp"
        )
        .await
            >= 1.0
    );
    assert_eq!(d.status().await["dual_write"]["journal"]["records"], 0);
}
