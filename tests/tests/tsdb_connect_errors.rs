//! A connection the server refuses shows the server's message and SQLSTATE (a wrong database
//! name, a wrong password); "unreachable" is said only when the network did not reach it.
//! Against TimescaleDB servers, as the runbook runs.

use std::process::Command;

use dualwrite_tests::backfill_util::outcome;
use dualwrite_tests::{bins, free_port, Pair};

fn validator(args: &[&str]) -> (i32, String) {
    let out = Command::new(bins::binary("dualwrite-validator", "dualwrite-validator"))
        .args(args)
        .env_remove("DUALWRITE_SOURCE_URL")
        .env_remove("DUALWRITE_TARGET_URL")
        .output()
        .expect("running dualwrite-validator");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn connection_errors_show_the_servers_message_and_sqlstate() {
    let pair = Pair::start_timescaledb();
    pair.both("CREATE EXTENSION timescaledb");
    let good = pair.target_url();
    let no_db = pair.source.url("no_such_db");
    let bad_pw = pair
        .source
        .url_as("postgres", "wrong-pw-not-shown", &pair.db);
    let dead = format!(
        "postgres://postgres:dead-pw-not-shown@127.0.0.1:{}/app?sslmode=disable&connect_timeout=5",
        free_port()
    );

    let cases: [(&str, &[&str], bool); 3] = [
        (
            &no_db,
            &["database \"no_such_db\" does not exist", "SQLSTATE 3D000"],
            false,
        ),
        (
            &bad_pw,
            &[
                "password authentication failed for user \"postgres\"",
                "SQLSTATE 28P01",
            ],
            false,
        ),
        (&dead, &["source unreachable", "127.0.0.1"], true),
    ];
    for (source, wanted, network) in cases {
        let runs = [
            {
                let (code, out, err) = outcome(&[
                    "copy",
                    "--source",
                    source,
                    "--target",
                    &good,
                    "--until",
                    "2024-01-01",
                    "--dry-run",
                ]);
                (code, format!("{out}{err}"))
            },
            {
                let (code, out, err) = outcome(&[
                    "schema",
                    "--source",
                    source,
                    "--target",
                    &good,
                    "--workdir",
                    "/tmp/dw-connect-errors-unused",
                ]);
                (code, format!("{out}{err}"))
            },
            validator(&["counts", "--source", source, "--target", &good, "-q"]),
        ];
        for (code, text) in runs {
            assert_eq!(code, 2, "{text}");
            for w in wanted {
                assert!(text.contains(w), "expected {w:?} in: {text}");
            }
            assert!(!text.contains("db error"), "{text}");
            if !network {
                assert!(!text.contains("unreachable"), "{text}");
            }
            assert!(
                !text.contains("pw-not-shown"),
                "a password was printed: {text}"
            );
        }
    }
    // jobs enable talks to the target only.
    let bad_target = pair
        .target
        .url_as("postgres", "wrong-pw-not-shown", &pair.db);
    let (code, out, err) = outcome(&["jobs", "enable", "--target", &bad_target]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("SQLSTATE 28P01"), "{err}");
    assert!(err.contains("target: "), "{err}");
    assert!(
        !err.contains("unreachable") && !err.contains("pw-not-shown"),
        "{err}"
    );
}
