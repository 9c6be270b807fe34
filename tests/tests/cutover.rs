//! Staged cutover under load: flip the primary to the target and back while pgbench runs,
//! with no failed transaction, no dropped connection, and identical data afterwards.

use std::process::Command;
use std::time::Duration;

use dualwrite_tests::proxy::{DualWrite, ProxyHandle, APP_PASSWORD};
use dualwrite_tests::PgBin;

fn pgbench_cmd(port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(PgBin::source().bin("pgbench"));
    c.env("PGPASSWORD", APP_PASSWORD)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg("app");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_there_and_back_under_pgbench() {
    let d = DualWrite::start().await;
    for port in [d.source.port, d.target.port] {
        assert!(pgbench_cmd(port, &["-i", "-s", "1", "-q"])
            .status()
            .unwrap()
            .success());
    }
    let load = pgbench_cmd(
        d.proxy.port(),
        &["-M", "prepared", "-c", "8", "-j", "2", "-T", "8", "-n"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = d
        .proxy
        .admin_post("/cutover", r#"{"to": "target", "timeout": "5s"}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pause = report["pause_ms"].as_f64().unwrap();
    eprintln!("cutover to target: pause {pause:.1} ms");
    assert_eq!(d.status().await["primary"], "target");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = d.proxy.admin_post("/cutover", r#"{"to": "source"}"#).await;
    assert_eq!(code, 200, "{body}");
    let out = load.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pgbench failed:\n{text}");
    assert!(text.contains("number of failed transactions: 0 "), "{text}");
    assert!(!text.contains("aborted"), "a client was dropped:\n{text}");
    for (table, key) in [
        ("pgbench_accounts", "aid"),
        ("pgbench_branches", "bid"),
        ("pgbench_tellers", "tid"),
    ] {
        d.assert_same(&format!(
            "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY {key})) FROM {table} t"
        ))
        .await;
    }
    d.assert_same("SELECT count(*) || ' ' || sum(delta) FROM pgbench_history")
        .await;
    let status = d.status().await;
    assert_eq!(status["cutovers"].as_array().unwrap().len(), 2, "{status}");
    assert_eq!(status["dual_write"]["journal"]["records"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transaction_aborts_the_cutover_and_traffic_goes_on() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int); GRANT ALL ON t TO app");
    let mut holder = d.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    let (code, body) = d
        .proxy
        .admin_post("/cutover", r#"{"to": "target", "timeout": "500ms"}"#)
        .await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("still in a transaction"), "{body}");
    assert_eq!(d.status().await["primary"], "source");
    // Traffic continues on the old primary.
    tx.commit().await.unwrap();
    let other = d.client().await;
    other
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap();
    assert_eq!(
        d.assert_same("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .await,
        "1,2"
    );
    let status = d.status().await;
    assert_eq!(status["cutovers"][0]["outcome"], "aborted", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_cutover_resumes_with_target_as_primary() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int); GRANT ALL ON t TO app");
    let c = d.client().await;
    let ins = c.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    c.execute(&ins, &[&1i32]).await.unwrap();
    let (code, body) = d.proxy.admin_post("/cutover", r#"{"to": "target"}"#).await;
    assert_eq!(code, 200, "{body}");
    // The statement prepared before the flip works after it (it lives on both sides).
    c.execute(&ins, &[&2i32]).await.unwrap();
    let who: String = c
        .query_one("SELECT current_setting('port')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        who,
        d.target.port.to_string(),
        "reads now come from the target"
    );
    drop(c);
    let before = d.status().await;
    // A new proxy on the same journal dir starts with the target as primary.
    let DualWrite {
        source,
        target,
        proxy,
        journal_dir,
        toml,
    } = d;
    proxy.stop().await;
    let proxy = ProxyHandle::start(&toml).await;
    let d = DualWrite {
        source,
        target,
        proxy,
        journal_dir,
        toml,
    };
    let status = d.status().await;
    assert_eq!(status["primary"], "target", "{status}");
    // When dual-writing began (the evidence for T) survives the restart.
    assert_eq!(
        status["dual_write"]["started_at"], before["dual_write"]["started_at"],
        "{status}"
    );
    assert_eq!(
        status["dual_write"]["first_write_per_table"],
        before["dual_write"]["first_write_per_table"],
        "{status}"
    );
    assert!(
        before["dual_write"]["first_write_per_table"]["t"].is_string(),
        "{before}"
    );
    assert!(
        status["state_from"]
            .as_str()
            .unwrap()
            .starts_with("persisted"),
        "{status}"
    );
    let c = d.client().await;
    let port: String = c
        .query_one("SELECT current_setting('port')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(port, d.target.port.to_string());
    c.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    assert_eq!(
        d.assert_same("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .await,
        "1,2,3"
    );
}

/// A forced cutover with writes still journaled for the target: the journal is replayed to
/// the side that missed the writes (the target, now the primary), never to the source that
/// already has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_cutover_replays_the_journal_to_the_side_that_missed_it() {
    let d = DualWrite::start_with("", "[secondary]\nreconnect_backoff = \"100ms\"\n").await;
    d.both("CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app");
    d.source.psql(
        "app",
        "CREATE TABLE late (id int PRIMARY KEY); GRANT ALL ON late TO app",
    );
    let c = d.client().await;
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    // The target lacks `late`: this write is journaled for the target, which is detached.
    c.execute("INSERT INTO late VALUES (1)", &[]).await.unwrap();
    let status = d.status_after_missed(1).await;
    assert_eq!(
        status["dual_write"]["secondary_attached"], false,
        "{status}"
    );
    let (code, body) = d.proxy.admin_post("/cutover", r#"{"to": "target"}"#).await;
    assert_ne!(
        code, 200,
        "refused while the journal is not replayed: {body}"
    );
    let (code, body) = d
        .proxy
        .admin_post("/cutover", r#"{"to": "target", "force": true}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    // Once the target can take the record, it lands there, once; the source keeps its row.
    d.target.psql(
        "app",
        "CREATE TABLE late (id int PRIMARY KEY); GRANT ALL ON late TO app",
    );
    let mut on_target = String::new();
    for _ in 0..100 {
        on_target = d.target.psql("app", "SELECT count(*) FROM late");
        if on_target == "1" && d.status().await["dual_write"]["secondary_attached"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(on_target, "1", "{}", d.status().await);
    assert_eq!(d.source.psql("app", "SELECT count(*) FROM late"), "1");
    // Writes flow to both again, the target answering.
    c.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    d.assert_same("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
        .await;
}

/// A session's state lives on both backend sessions, so it is all there after a flip: SET
/// parameters, a temporary table and its rows, a SQL-level PREPARE and protocol-level prepared
/// statements (a write and a read), there and back again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_survives_the_flip_and_back() {
    let d = DualWrite::start().await;
    d.both("CREATE TABLE t (id int PRIMARY KEY, v text); GRANT ALL ON t TO app");
    let c = d.client().await;
    c.batch_execute(
        "SET search_path = public; SET TIME ZONE 'Asia/Kolkata'; SET application_name = 'flipper';
         CREATE TEMP TABLE scratch (k int, note text); INSERT INTO scratch VALUES (0, 'before');
         PREPARE bump(int) AS INSERT INTO t VALUES ($1, 'prepared')",
    )
    .await
    .unwrap();
    let ins = c.prepare("INSERT INTO t VALUES ($1, $2)").await.unwrap();
    let count = c.prepare("SELECT count(*) FROM t").await.unwrap();
    c.execute(&ins, &[&0i32, &"before"]).await.unwrap();
    let mut notes = vec!["before".to_string()];
    let mut rows = 1i64;
    for (n, to, port) in [
        (1i32, "target", d.target.port),
        (2, "source", d.source.port),
    ] {
        let (code, body) = d
            .proxy
            .admin_post("/cutover", &format!(r#"{{"to": "{to}"}}"#))
            .await;
        assert_eq!(code, 200, "{body}");
        let s = c
            .query_one(
                "SELECT current_setting('port'), current_setting('TimeZone'),
                        current_setting('application_name'), current_setting('search_path')",
                &[],
            )
            .await
            .unwrap();
        let got: Vec<String> = (0..4).map(|i| s.get(i)).collect();
        assert_eq!(
            got,
            [&port.to_string(), "Asia/Kolkata", "flipper", "public"],
            "after the flip to the {to}"
        );
        c.execute("INSERT INTO scratch VALUES ($1, $2)", &[&n, &to])
            .await
            .unwrap();
        notes.push(to.to_string());
        let seen: Vec<String> = c
            .query("SELECT note FROM scratch ORDER BY k", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(seen, notes, "the temporary table on the {to}");
        c.batch_execute(&format!("EXECUTE bump({})", 100 + n))
            .await
            .unwrap();
        c.execute(&ins, &[&n, &to]).await.unwrap();
        rows += 2;
        let counted: i64 = c.query_one(&count, &[]).await.unwrap().get(0);
        assert_eq!(counted, rows, "rows seen on the {to}");
    }
    d.assert_same("SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t")
        .await;
    let status = d.status().await;
    assert_eq!(status["dual_write"]["journal"]["records"], 0, "{status}");
}

/// A cutover or mode change the proxy cannot persist (its state directory's disk is full) does
/// not happen: a restart would come back with the old primary, and in primary-only that would
/// split the writes between two databases. Once the disk has room it goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_persisted_is_not_made() {
    let disk = dualwrite_tests::faults::TinyDisk::mount(16 << 20);
    let d = DualWrite::start_full("", "", |t| t.url("app"), Some(disk.path())).await;
    d.both("CREATE TABLE t (id int); GRANT ALL ON t TO app");
    let c = d.client().await;
    c.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();

    disk.fill();
    let (code, body) = d.proxy.admin_post("/cutover", r#"{"to": "target"}"#).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cannot persist the new state"), "{body}");
    assert!(body.contains("resumed on the source"), "{body}");
    let (code, body) = d
        .proxy
        .admin_post("/config", r#"{"mode": "primary-only"}"#)
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("nothing changed"), "{body}");
    let status = d.status().await;
    assert_eq!(status["primary"], "source", "{status}");
    assert_eq!(status["mode"], "dual-write", "{status}");
    assert_eq!(status["cutovers"][0]["outcome"], "aborted", "{status}");
    c.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();

    disk.free();
    let (code, body) = d.proxy.admin_post("/cutover", r#"{"to": "target"}"#).await;
    assert_eq!(code, 200, "{body}");
    c.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    let saved = dualwrite_proxy::state::load(d.journal_dir.path()).expect("state.json");
    assert_eq!(saved.primary, dualwrite_proxy::config::Side::Target);
    assert_eq!(
        d.assert_same("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .await,
        "1,2,3"
    );
}
