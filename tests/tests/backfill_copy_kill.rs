//! `copy` killed with SIGKILL at random points, several times, then rerun to completion:
//! source and target are identical below T, and no unit was committed twice. Ctrl-C once
//! finishes the running units and stops; twice rolls them back; a rerun resumes.

use std::time::{Duration, Instant};

use dualwrite_tests::backfill_util::{assert_same_below_t, command, process, setup, T};
use dualwrite_tests::Pair;
use rand::Rng;

fn copy_args(pair: &Pair) -> Vec<String> {
    [
        "copy",
        "--source",
        &pair.source_url(),
        "--target",
        &pair.target_url(),
        "--until",
        T,
        "--table",
        "public.readings",
        "--table",
        "public.events:at",
        "--rows-per-unit",
        "2000",
        "--jobs",
        "2",
        "--max-rows-per-second",
        "25000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn units_state(pair: &Pair) -> String {
    pair.target.psql(
        &pair.db,
        "SELECT count(*) FILTER (WHERE state = 'done') || '/' || count(*) FROM _dualwrite_backfill.unit",
    )
}

#[test]
fn sigkill_at_random_points_then_rerun_gives_identical_rows() {
    let pair = Pair::start();
    setup(&pair, 300_000);
    let mut args = copy_args(&pair);
    let mut rng = rand::rng();
    let mut kills = 0;
    for round in 0..4 {
        let mut child = command()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn copy");
        let wait = Duration::from_millis(rng.random_range(500..2500));
        std::thread::sleep(wait);
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
        eprintln!(
            "round {round}: killed after {wait:?}, units done {}",
            units_state(&pair)
        );
    }
    assert!(kills >= 3, "the copy finished too early to be killed");

    let n = args.len();
    args[n - 1] = "100000000".into();
    let out = command().args(&args).output().expect("rerun");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_below_t(&pair);
    assert_eq!(
        pair.target.psql(
            &pair.db,
            &format!("SELECT count(*) FROM readings WHERE ts >= '{T}'")
        ),
        "0"
    );
    let book = pair.target.psql(
        &pair.db,
        "SELECT count(*) FILTER (WHERE state <> 'done'), max(copies), max(attempts) FROM _dualwrite_backfill.unit",
    );
    let cols: Vec<&str> = book.split('|').collect();
    assert_eq!(cols[0], "0", "{book}");
    assert_eq!(cols[1], "1", "a unit was committed twice: {book}");
    assert!(
        cols[2].parse::<i32>().unwrap() >= 2,
        "units left running by a killed process were claimed again: {book}"
    );
}

#[test]
fn ctrl_c_finishes_running_units_and_a_rerun_resumes() {
    let t0 = Instant::now();
    let pair = Pair::start();
    setup(&pair, 200_000);
    eprintln!("set up after {:?}", t0.elapsed());
    let mut args = copy_args(&pair);
    // Slow enough that the copy is still running when interrupted.
    let n = args.len();
    args[n - 1] = "40000".into();
    let bin = command();
    eprintln!("binary ready after {:?}", t0.elapsed());
    let child = std::process::Command::new(bin.get_program())
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn copy");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        let s = pair.target.psql(
            &pair.db,
            "SELECT count(*) FROM pg_namespace WHERE nspname = '_dualwrite_backfill'",
        );
        if s == "1" && units_state(&pair).split('/').next() != Some("0") {
            break;
        }
    }
    // status, from another terminal, shows the plan part done and the units being copied.
    let out = process(&["status", "--target", &pair.target_url()]);
    let status_text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status_text}");
    assert!(status_text.contains("units done"), "{status_text}");
    assert!(
        status_text
            .lines()
            .any(|l| l.contains(" running ") && l.contains("public.readings")),
        "{status_text}"
    );
    eprintln!("interrupting after {:?}", t0.elapsed());
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("interrupted copy:\n{stderr}\n{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("interrupted"), "{stdout}\n{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    // The running units were finished, not abandoned.
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT count(*) FROM _dualwrite_backfill.unit WHERE state NOT IN ('done', 'pending')"
        ),
        "0"
    );
    let state = units_state(&pair);
    let (done, total) = state.split_once('/').unwrap();
    assert!(done != "0" && done != total, "stopped part way: {state}");

    // Ctrl-C twice: the running units are rolled back and handed back at once.
    let n = args.len();
    args[n - 1] = "20000".into();
    let child = std::process::Command::new(command().get_program())
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn copy");
    let before = units_state(&pair);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        let running = pair.target.psql(
            &pair.db,
            "SELECT count(*) FROM _dualwrite_backfill.unit WHERE state = 'running'",
        );
        if running != "0" {
            break;
        }
    }
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill -INT");
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rolling back"), "{stderr}");
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT count(*) FROM _dualwrite_backfill.unit WHERE state NOT IN ('done', 'pending')"
        ),
        "0"
    );
    eprintln!("units done {before} before, {} after", units_state(&pair));

    eprintln!("rerun after {:?}", t0.elapsed());
    let n = args.len();
    args[n - 1] = "100000000".into();
    let out = command().args(&args).output().expect("rerun");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming plan"));
    assert_same_below_t(&pair);
}
