//! Bad input: a clear error naming what is wrong, exit code 2, never a password.

use std::process::Command;

use dualwrite_tests::{bins, Cluster, PgBin};

fn run(args: &[&str]) -> (i32, String) {
    let bin = bins::binary("dualwrite-validator", "dualwrite-validator");
    let out = Command::new(bin)
        .args(args)
        .env_remove("DUALWRITE_SOURCE_URL")
        .env_remove("DUALWRITE_TARGET_URL")
        .output()
        .unwrap();
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
fn bad_input_exits_2_with_a_clear_error() {
    let c = Cluster::start(&PgBin::source());
    c.create_db("app");
    c.psql(
        "app",
        "CREATE TABLE t (ts timestamptz NOT NULL, label text);",
    );
    let url = c.url("app");

    let (code, out) = run(&[
        "counts",
        "--source",
        &url,
        "--target",
        &url,
        "--table",
        "nope.missing:ts",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("nope.missing does not exist"), "{out}");

    let (code, out) = run(&[
        "checksum",
        "--source",
        &url,
        "--target",
        &url,
        "--table",
        "public.t:label",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("label") && out.contains("not a time type"),
        "{out}"
    );

    let (code, out) = run(&[
        "counts", "--source", &url, "--target", &url, "--table", "public.t",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("name its time column"), "{out}");

    let unreachable =
        "postgres://postgres:s3cretpw@127.0.0.1:1/app?sslmode=disable&connect_timeout=3";
    let (code, out) = run(&[
        "counts",
        "--source",
        &url,
        "--target",
        unreachable,
        "--table",
        "t:ts",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("target") && out.contains("127.0.0.1:1"),
        "{out}"
    );
    assert!(!out.contains("s3cretpw"), "password printed: {out}");

    let (code, out) = run(&["counts", "--source", "not a url", "--target", &url]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--source"), "{out}");

    let (code, out) = run(&[
        "counts",
        "--source",
        &url,
        "--target",
        &url,
        "--table",
        "t:ts",
        "--bucket",
        "sometimes",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("sometimes"), "{out}");

    let (code, out) = run(&[
        "counts",
        "--source",
        &url,
        "--target",
        &url,
        "--table",
        "t:ts",
        "--from",
        "yesterday-ish",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("--from") && out.contains("yesterday-ish"),
        "{out}"
    );

    let (code, out) = run(&[
        "counts", "--source", &url, "--target", &url, "--jobs", "many",
    ]);
    assert_eq!(code, 2, "{out}");

    // No time-series table at all: say how to name one.
    let (code, out) = run(&["counts", "--source", &url, "--target", &url]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--table"), "{out}");
}
