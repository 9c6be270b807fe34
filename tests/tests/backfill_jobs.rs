//! `jobs enable|disable` on a target without TimescaleDB: a clear message that there is nothing
//! to do, exit 0. (The TimescaleDB SQL is unit-tested in `backfill/src/timescale.rs`.)

use dualwrite_tests::backfill_util::outcome as backfill;
use dualwrite_tests::{free_port, Cluster, PgBin};

#[test]
fn without_timescaledb_there_is_nothing_to_do() {
    let target = Cluster::start(&PgBin::target());
    target.create_db("app");
    let url = target.url("app");
    for action in ["disable", "enable"] {
        let (code, out, err) = backfill(&["jobs", action, "--target", &url, "--run-now"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!(
                "TimescaleDB is not installed in the target database app: there are no background jobs to {action}"
            )) && out.contains("nothing to do"),
            "{out}"
        );
    }
    // Nothing was created on the target.
    assert_eq!(
        target.psql(
            "app",
            "SELECT count(*) FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('public', 'information_schema')"
        ),
        "0"
    );

    // An unreachable target is bad input (exit 2), its password never shown.
    let nowhere = format!(
        "postgres://postgres:pw-not-shown@127.0.0.1:{}/app?sslmode=disable",
        free_port()
    );
    let (code, out, err) = backfill(&["jobs", "enable", "--target", &nowhere]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("target unreachable"), "{err}");
    assert!(!err.contains("pw-not-shown") && !out.contains("pw-not-shown"));
}
