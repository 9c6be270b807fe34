//! The README's main command, short: the demo runs against real clusters and its final
//! validation comes out equal.

use dualwrite_tests::bins::binary;

#[test]
fn short_demo_ends_equal() {
    let demo = binary("dualwrite-tests", "dualwrite-demo");
    let out = std::process::Command::new(demo)
        .args(["--seconds", "4"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "demo failed:\n{text}");
    assert!(text.contains("final validation EQUAL"), "{text}");
    assert!(text.contains(", 0 failed transactions"), "{text}");
}
