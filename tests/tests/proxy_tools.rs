//! psql and pgbench through the pass-through proxy.

use std::process::Command;

use dualwrite_tests::proxy::{Passthrough, APP_PASSWORD};
use dualwrite_tests::PgBin;

fn tool(name: &str) -> Command {
    let mut c = Command::new(PgBin::source().bin(name));
    c.env("PGPASSWORD", APP_PASSWORD);
    c
}

fn proxy_args(p: &Passthrough) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        p.proxy.port().to_string(),
        "-U".into(),
        "app".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_with_copy() {
    let p = Passthrough::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "id,name\n1,\"Smith, J\"\n2,\"multi\nline\"\n3,\n").unwrap();
    let out_csv = dir.path().join("out.csv");
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        format!(
            "\\set ON_ERROR_STOP 1\n\
             CREATE TABLE people (id int PRIMARY KEY, name text);\n\
             \\copy people FROM '{}' WITH (FORMAT csv, HEADER)\n\
             BEGIN;\nUPDATE people SET name = upper(name) WHERE id = 1;\nCOMMIT;\n\
             \\copy (SELECT * FROM people ORDER BY id) TO '{}' WITH (FORMAT csv)\n\
             SELECT count(*) AS n, count(name) AS named FROM people \\gset\n\
             \\echo rows=:n named=:named\n",
            csv.display(),
            out_csv.display()
        ),
    )
    .unwrap();
    let out = tool("psql")
        .args(proxy_args(&p))
        .args(["-d", "app", "-X", "-q", "-f"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "rows=3 named=2"
    );
    assert_eq!(
        std::fs::read_to_string(&out_csv).unwrap(),
        "1,\"SMITH, J\"\n2,\"multi\nline\"\n3,\n"
    );
}

fn pgbench(p: &Passthrough, args: &[&str]) -> String {
    dualwrite_tests::proxy::pgbench(p.proxy.port(), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_init_and_all_query_modes() {
    let p = Passthrough::start().await;
    pgbench(&p, &["-i", "-s", "2", "-q"]);
    let accounts = p
        .cluster
        .psql("app", "SELECT count(*) FROM pgbench_accounts");
    assert_eq!(accounts, "200000");
    for mode in ["simple", "extended", "prepared"] {
        let text = pgbench(&p, &["-M", mode, "-c", "8", "-j", "2", "-t", "150"]);
        assert!(
            text.contains("number of transactions actually processed: 1200/1200"),
            "{mode}:\n{text}"
        );
        assert!(
            text.contains("number of failed transactions: 0 "),
            "{mode}:\n{text}"
        );
    }
    // pgbench truncates the history before each run (after its VACUUM, also through the proxy).
    let history = p
        .cluster
        .psql("app", "SELECT count(*) FROM pgbench_history");
    assert_eq!(history, "1200");
    // Every session was closed on the backend too.
    p.wait_backend_sessions(0).await;
}
