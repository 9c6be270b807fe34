//! The client drivers the tests run through the proxy (installed by `scripts/setup.sh` under
//! `/opt/dualwrite-clients`, or `DW_CLIENTS_DIR`) and their applications in `tests/clients/`.
//! A missing driver fails the test with that hint.

use std::path::PathBuf;
use std::time::Duration;

/// Where the drivers are installed.
pub fn dir() -> PathBuf {
    std::env::var_os("DW_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/dualwrite-clients"))
}

/// An application under `tests/clients/`.
pub fn app(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// `path`, asserting that it exists (`what` names the driver it belongs to).
pub fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed ({} is missing): run scripts/setup.sh",
        path.display()
    );
    path
}

/// `python3 APP` with the drivers' directory on its path (checking that each of `packages`,
/// `(directory, name)`, is there).
pub fn python(packages: &[(&str, &str)], script: &str) -> tokio::process::Command {
    let lib = dir().join("python");
    for (package, what) in packages {
        require(lib.join(package), what);
    }
    let mut c = tokio::process::Command::new("python3");
    c.arg(app(script)).env("PYTHONPATH", lib);
    c
}

/// `node APP` with node-postgres on its module path.
pub fn node(script: &str) -> tokio::process::Command {
    let lib = dir().join("node/node_modules");
    require(lib.join("pg"), "node-postgres");
    let mut c = tokio::process::Command::new("node");
    c.arg(app(script)).env("NODE_PATH", lib);
    c
}

/// `java APP.java` (a single source file) with pgjdbc on its class path.
pub fn java(source: &str) -> tokio::process::Command {
    let jar = require(
        PathBuf::from("/usr/share/java/postgresql.jar"),
        "pgjdbc (Debian package libpostgresql-jdbc-java)",
    );
    let mut c = tokio::process::Command::new("java");
    c.arg("-cp").arg(jar).arg(app(source));
    c
}

/// PostgreSQL 18's psql running `script` against `DW_HOST`/`DW_PORT`/`DW_USER`/`DW_DB`
/// (password `DW_PASSWORD`). Errors are part of the output (psql writes them to stderr); a
/// notification's sender PID and `\watch`'s clock, which differ from run to run, are masked.
/// The output is not buffered on its way, so a `READY` line (see [`run`]) arrives at once.
pub fn psql18(script: &str) -> tokio::process::Command {
    let newer = crate::PgBin::newer_required();
    assert!(
        newer.major >= 18,
        "psql {} has no pipeline commands",
        newer.major
    );
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(r#"PGPASSWORD="$DW_PASSWORD" "$0" -X -f "$1" "host=$DW_HOST port=$DW_PORT user=$DW_USER dbname=$DW_DB" 2>&1 | sed -u -E -e 's/with PID [0-9]+/with PID (pid)/' -e 's/^[A-Z][a-z]{2} [A-Z][a-z]{2} +[0-9]+ [0-9:]{8} [0-9]{4} \(every/(time) (every/'"#)
        .arg(newer.bin("psql"))
        .arg(app(script));
    c
}

/// The line an application prints when it waits for one line on its standard input before
/// going on (the applications do so when `DW_PROBE_ID` is set; see [`run`]).
pub const READY: &str = "READY";

/// Run an application to its end (at most 120 s) and return its standard output; it must end
/// in success (`what` names it in failures). When it prints a line [`READY`], `on_ready` runs
/// and then the application gets a line on its standard input, once.
pub async fn run<F: std::future::Future<Output = ()>>(
    mut c: tokio::process::Command,
    what: &str,
    on_ready: impl FnOnce() -> F,
) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {what} application: {e}"));
    let mut stdin = child.stdin.take();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut stderr = child.stderr.take().expect("piped stderr");
    let mut on_ready = Some(on_ready);
    let talk = async {
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            if stdout
                .read_until(b'\n', &mut line)
                .await
                .expect("reading stdout")
                == 0
            {
                break;
            }
            if line.strip_suffix(b"\n") == Some(READY.as_bytes()) {
                if let (Some(f), Some(mut s)) = (on_ready.take(), stdin.take()) {
                    f().await;
                    s.write_all(b"go\n").await.expect("writing to stdin");
                }
            }
            out.extend_from_slice(&line);
        }
        out
    };
    let mut err = Vec::new();
    let (out, _, status) = tokio::time::timeout(Duration::from_secs(120), async {
        let (out, e) = tokio::join!(talk, stderr.read_to_end(&mut err));
        (out, e, child.wait().await)
    })
    .await
    .unwrap_or_else(|_| panic!("the {what} application did not finish in 120 s"));
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = status.expect("waiting for the application");
    assert!(
        status.success(),
        "the {what} application failed ({status}):\n{out}\n{}",
        String::from_utf8_lossy(&err)
    );
    out
}
