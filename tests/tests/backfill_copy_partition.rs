//! The target goes silent in the middle of a `copy` (its packets dropped: a dead host, a cut
//! link) and stays silent: the backfill must not hang on a connection that will never answer.
//! TCP keepalives and `tcp_user_timeout` (libpq's URL parameters) end its connections, the
//! process exits non-zero with the reason, and once the network is back a rerun completes
//! with identical rows.

use std::time::{Duration, Instant};

use dualwrite_tests::backfill_util::{assert_same_below_t, code, command, copy, setup, T};
use dualwrite_tests::faults::Partition;
use dualwrite_tests::Pair;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_target_ends_the_copy_and_a_rerun_completes() {
    let pair = Pair::start();
    setup(&pair, 300_000);
    let source = pair.source_url();
    let target = format!(
        "{}&connect_timeout=2&keepalives_idle=1&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=2000",
        pair.target_url()
    );
    // Throttled so that the copy is still running when the network is cut.
    let mut child = command()
        .args([
            "copy",
            "--source",
            &source,
            "--target",
            &target,
            "--until",
            T,
            "-q",
            "--table",
            "public.readings",
            "--table",
            "public.events:at",
            "--attempts",
            "2",
            "--max-rows-per-second",
            "40000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting dualwrite-backfill");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the copy ended before the network was cut"
    );
    let mut partition = Partition::of(pair.target.port);
    partition.cut();
    let cut_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if cut_at.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the copy still hangs 120 s after its target went silent");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "copy ended {:.1} s after the cut: {status}\n{stderr}",
        cut_at.elapsed().as_secs_f64()
    );
    assert!(
        !status.success(),
        "a copy whose target went silent reported success"
    );
    assert!(!stderr.trim().is_empty(), "no reason given");
    assert!(
        !stderr.contains("postgres:postgres") && !stderr.contains("secret"),
        "{stderr}"
    );

    partition.heal();
    // The server ended the sessions of the vanished copy (the backfill asks it to probe its
    // side too), so their claims on units are free again.
    let c = copy(
        &pair,
        &["--table", "public.readings", "--table", "public.events:at"],
    )
    .await;
    assert_eq!(code(c), code(std::process::ExitCode::SUCCESS));
    assert_same_below_t(&pair);
}
