//! The `dualwrite-proxy` binary: `check` and `run` with signals.

use std::process::{Command, Stdio};
use std::time::Duration;

use dualwrite_tests::bins::binary;
use dualwrite_tests::{free_port, Cluster, PgBin};

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_names_bad_keys_and_tests_backends() {
    let proxy = binary("dualwrite-proxy", "dualwrite-proxy");
    let c = Cluster::start(&PgBin::source());
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "listen = \"127.0.0.1:{}\"\n[source]\nurl = \"{}\"\n[auth]\nmethod = \"trust\"\n",
        free_port(),
        c.url("postgres")
    );
    let run = |text: &str, env: &[(&str, &str)]| {
        let cfg = write_config(dir.path(), text);
        let out = Command::new(&proxy)
            .args(["check", "--config"])
            .arg(&cfg)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&good, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("source: postgres://postgres:***@127.0.0.1"),
        "{text}"
    );
    assert!(
        !text.contains("postgres:postgres"),
        "password shown: {text}"
    );

    let (code, text) = run(&format!("{good}\nmax_clients = 5\n"), &[]);
    assert_eq!(code, Some(2));
    assert!(text.contains("max_clients"), "{text}");
    let (code, text) = run(&good.replace("trust", "kerberos"), &[]);
    assert_eq!(code, Some(2));
    assert!(text.contains("kerberos"), "{text}");
    // An environment override that breaks a key is named too.
    let (code, text) = run(&good, &[("DUALWRITE__LISTEN", "not-an-address")]);
    assert_eq!(code, Some(2));
    assert!(text.contains("`listen`"), "{text}");
    // A backend that is down: exit 1, the backend named, no password.
    let down = good.replace(&format!(":{}/", c.port), &format!(":{}/", free_port()));
    let (code, text) = run(&down, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("source") && !text.contains("postgres:postgres"),
        "{text}"
    );
    let (code, text) = run("", &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("source"), "missing [source] is named: {text}");
}

#[test]
fn run_serves_and_stops_on_sigterm() {
    let proxy = binary("dualwrite-proxy", "dualwrite-proxy");
    let c = Cluster::start(&PgBin::source());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{}\"\n[source]\nurl = \"{}\"\n\
             [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"postgres\", password = \"pw\", source_password_env = \"SRC_PW\" }}]\n",
            free_port(),
            c.url("postgres")
        ),
    );
    let mut child = Command::new(&proxy)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&cfg)
        .env("SRC_PW", "postgres")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..50 {
        let out = Command::new(PgBin::source().bin("psql"))
            .env("PGPASSWORD", "pw")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT 'up'",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "up");
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "proxy did not answer");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("dualwrite-proxy stopped"), "{log}");
    assert!(
        !log.contains("\"pw\"") && !log.contains("postgres:postgres"),
        "secret in log: {log}"
    );
    assert!(
        log.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('{')),
        "json log lines: {log}"
    );
}
