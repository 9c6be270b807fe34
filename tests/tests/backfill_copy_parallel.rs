//! Two `copy` processes on one plan (as on two machines) finish it together: each unit is
//! committed once, by one of them, and both did part of the work.

use dualwrite_tests::backfill_util::{assert_same_below_t, command, setup, T};
use dualwrite_tests::Pair;

#[test]
fn two_processes_share_one_plan_without_copying_a_unit_twice() {
    let pair = Pair::start();
    setup(&pair, 300_000);
    let (s, t) = (pair.source_url(), pair.target_url());
    let args = [
        "copy",
        "--source",
        &s,
        "--target",
        &t,
        "--until",
        T,
        "--table",
        "public.readings",
        "--table",
        "public.events:at",
        "--rows-per-unit",
        "1000",
        "--jobs",
        "2",
        "--max-rows-per-second",
        "100000",
    ];
    let spawn = || {
        command()
            .args(args)
            .arg("--quiet")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn copy")
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().expect("copy process");
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_same_below_t(&pair);
    let book = pair.target.psql(
        &pair.db,
        "SELECT count(*), count(*) FILTER (WHERE state = 'done'), min(copies), max(copies),
                count(DISTINCT split_part(owner, '/', 1)), (SELECT count(*) FROM _dualwrite_backfill.plan)
         FROM _dualwrite_backfill.unit",
    );
    let cols: Vec<&str> = book.split('|').collect();
    assert_eq!(cols[0], cols[1], "every unit done: {book}");
    assert_eq!(
        (cols[2], cols[3]),
        ("1", "1"),
        "each unit committed once: {book}"
    );
    assert_eq!(cols[4], "2", "both processes copied units: {book}");
    assert_eq!(cols[5], "1", "one plan: {book}");
}
