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
