//! Live changes through POST /config: primary-only -> dual-write without a restart (sessions
//! adopt it at their next transaction), and a change the proxy cannot apply is refused.

use dualwrite_tests::proxy::{DualWrite, ProxyHandle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_changes_apply_live() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app");
    // The same source and target behind a proxy that starts primary-only.
    let toml = d
        .toml
        .replace("mode = \"dual-write\"", "mode = \"primary-only\"");
    let proxy = ProxyHandle::start(&toml.replace(
        &d.journal_dir.path().display().to_string(),
        &format!("{}/live", d.journal_dir.path().display()),
    ))
    .await;
    let c = dualwrite_tests::proxy::client(&proxy.url("app", "app-secret", "app")).await;
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let ins = c.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    assert_eq!(
        d.target.psql("app", "SELECT count(*) FROM t"),
        "0",
        "primary-only writes the source only"
    );
    let (code, body) = proxy
        .admin_post("/config", r#"{"mode": "dual-write"}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    // The same session, at its next statement, dual-writes.
    c.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    // A statement prepared while primary-only reaches the secondary when executed now.
    assert_eq!(c.execute(&ins, &[&4i32]).await.unwrap(), 1);
    let mut on_target = String::new();
    for _ in 0..50 {
        on_target = d
            .target
            .psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t");
        if on_target == "2,4" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(on_target, "2,4");
    let status: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/status").await).unwrap();
    assert_eq!(status["mode"], "dual-write", "{status}");
    // Shadow rate applies live; an out-of-range rate and an unknown key are refused.
    let (code, body) = proxy
        .admin_post("/config", r#"{"shadow_reads": 0.5}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    let shadow: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/shadow").await).unwrap();
    assert_eq!(shadow["sample_rate"], 0.5, "{shadow}");
    let (code, body) = proxy
        .admin_post("/config", r#"{"shadow_reads": 1.5}"#)
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("shadow_reads"), "{body}");
    let (code, _) = proxy
        .admin_post("/config", r#"{"listen": "0.0.0.0:1"}"#)
        .await;
    assert!(code >= 400, "unknown live key accepted");
    // Back to primary-only: the next write reaches the source only.
    let (code, body) = proxy
        .admin_post("/config", r#"{"mode": "primary-only"}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    c.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        d.source
            .psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "1,2,3,4"
    );
    assert_eq!(
        d.target
            .psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "2,4"
    );
}
