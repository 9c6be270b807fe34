//! The HTML report is self-contained and, rendered in headless Chromium, shows the unit where
//! the target is short.

use std::process::Command;

use dualwrite_tests::validator_util::run_on;
use dualwrite_tests::Pair;

fn chromium(args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run chromium ({e}): install it with apt-get install -y chromium (scripts/setup.sh)"));
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn html_report_renders_the_mismatching_unit() {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v chromium"])
            .status()
            .unwrap()
            .success(),
        "chromium is not installed: apt-get install -y chromium (scripts/setup.sh does it)"
    );
    let pair = Pair::start();
    pair.both(
        "CREATE TABLE m (ts timestamptz NOT NULL, v int, s text) PARTITION BY RANGE (ts);
         CREATE TABLE m_jan PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
         CREATE TABLE m_feb PARTITION OF m FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
         CREATE TABLE m_mar PARTITION OF m FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
         INSERT INTO m SELECT '2024-01-01'::timestamptz + i * interval '1 hour', i, '<b>' || i || '</b>'
         FROM generate_series(0, 24 * 90 - 1) i;",
    );
    pair.target.psql(
        &pair.db,
        "DELETE FROM m WHERE ts >= '2024-02-10' AND ts < '2024-02-10 03:00'",
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    let r = run_on(
        &pair,
        "checksum",
        &["--format", "html", "--output", path.to_str().unwrap()],
    )
    .await
    .unwrap();
    assert_eq!(r.exit_code(), 1);
    let common = dualwrite_validator::parse_args([
        "dualwrite-validator",
        "checksum",
        "--source",
        "x",
        "--target",
        "y",
        "--format",
        "html",
        "--output",
        path.to_str().unwrap(),
    ])
    .unwrap();
    dualwrite_validator::write_report(&r, common.command.common()).unwrap();
    let html = std::fs::read_to_string(&path).unwrap();

    // Self-contained: nothing fetched from anywhere.
    for needle in [
        "<link", "<img", "src=", "href=", "@import", "url(", "http://", "https://",
    ] {
        assert!(
            !html.contains(needle),
            "external reference {needle:?} in the report"
        );
    }
    // User data is escaped.
    assert!(html.contains("&lt;b&gt;"));
    assert!(!html.contains("<b>1"));

    let url = format!("file://{}", path.display());
    let dom = String::from_utf8(chromium(&["--dump-dom", &url]).stdout).unwrap();
    // The inline check ran in the browser and found the red cell laid out with a size.
    assert!(dom.contains("data-visible-differing=\"1\""), "{dom}");
    assert!(dom.contains("class=\"cell differ\""), "{dom}");
    assert!(dom.contains("data-unit=\"m_feb\""), "{dom}");
    let differ_row = dom
        .lines()
        .find(|l| l.contains("<tr class=\"differ\">"))
        .expect("a differing unit row");
    assert!(
        differ_row.contains("m_feb") && differ_row.contains("-3"),
        "{differ_row}"
    );
    assert!(dom.contains("missing on target"));

    let shot = dir.path().join("shot.png");
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,900",
        &url,
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG"),
        "no screenshot"
    );
}
