//! The README's main command, short: the demo runs against real clusters and its final
//! validation comes out equal.

use dualwrite_tests::bins::binary;

#[test]
fn short_demo_ends_equal() {
    let demo = binary("dualwrite-tests", "dualwrite-demo");
    let out = std::process::Command::new(demo)
        .args(["--rows", "50000", "--days", "20", "--seconds", "2"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "demo failed:\n{text}");
    assert!(text.contains("final validation EQUAL"), "{text}");
    assert!(text.contains("(0 failed)"), "{text}");
    assert!(text.contains("shadow mismatches 0"), "{text}");
    for n in 1..=10 {
        assert!(
            text.contains(&format!("== step {n}/10:")),
            "step {n} missing:\n{text}"
        );
    }
}

#[test]
fn timescaledb_demo_ends_equal() {
    let demo = binary("dualwrite-tests", "dualwrite-demo");
    let out = std::process::Command::new(demo)
        .args(["--timescaledb", "--seconds", "1"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "demo failed:\n{text}");
    assert!(text.contains("final validation EQUAL"), "{text}");
    for n in 1..=8 {
        assert!(
            text.contains(&format!("== step {n}/8:")),
            "step {n} missing:\n{text}"
        );
    }
    for fact in [
        "app.metrics_daily below T (built on metrics_hourly): same on both sides",
        "chunks and their compression: same on both sides",
        "jobs: owner, scheduled, next start: same on both sides",
        "every chunk as on the source",
    ] {
        assert!(text.contains(fact), "{fact:?} missing:\n{text}");
    }
}
