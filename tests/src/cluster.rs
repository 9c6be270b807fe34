//! One throwaway PostgreSQL cluster.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::pgbin::PgBin;

/// The bootstrap superuser's password in every test cluster.
pub const SUPERUSER_PASSWORD: &str = "postgres";

/// A running cluster; stopped (immediate) and deleted on drop. When the owning test panics,
/// the tail of the server log is printed first.
pub struct Cluster {
    pub bin: PgBin,
    pub port: u16,
    dir: tempfile::TempDir,
    stopped: bool,
}

fn is_root() -> bool {
    // The effective uid is not in std; /proc/self/status says it.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `(uid, gid)` of the `postgres` OS user.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres")).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// A command that runs as the `postgres` OS user when we are root (PostgreSQL refuses root).
pub fn as_postgres(program: &Path) -> Command {
    if is_root() {
        assert!(
            postgres_ids().is_some(),
            "running as root but there is no `postgres` OS user to run PostgreSQL as"
        );
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn give_to_postgres(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids().expect("postgres OS user");
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// Make `dir` and the named files in it usable by the `postgres` OS user (a server key must be
/// owned by the server's user with mode 0600).
pub fn hand_to_postgres(dir: &Path, files: &[&str]) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for f in files {
        let p = dir.join(f);
        give_to_postgres(&p);
        let mode = if f.ends_with(".key") { 0o600 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod file");
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

impl Cluster {
    /// initdb and start a cluster with the given binaries. Panics with the server log when it
    /// cannot start.
    pub fn start(bin: &PgBin) -> Cluster {
        Self::start_with(bin, &[])
    }

    /// As [`Cluster::start`], with extra `postgresql.conf` lines.
    pub fn start_with(bin: &PgBin, extra_conf: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("dwpg-")
            .tempdir_in("/tmp")
            .expect("creating a temp dir under /tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        give_to_postgres(dir.path());
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("write pwfile");
        give_to_postgres(&pwfile);
        run(
            as_postgres(&bin.bin("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );
        let mut cluster = Cluster {
            bin: bin.clone(),
            port: 0,
            dir,
            stopped: true,
        };
        let conf = data.join("postgresql.conf");
        let base = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        let mut last_err = String::new();
        // fsync is off (an OS crash is not simulated), synchronous_commit stays on: a server
        // stopped with `-m immediate` must keep every commit it acknowledged, as in production.
        for _attempt in 0..5 {
            let port = crate::free_port();
            let mut text = base.clone();
            text.push_str(&format!(
                "\n# dualwrite test harness\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{}'\nfsync = off\n\
                 full_page_writes = off\nmax_connections = 300\nshared_buffers = 64MB\n\
                 max_wal_size = 4GB\nlog_min_messages = warning\nlog_line_prefix = '%m [%p] %u@%d '\n\
                 password_encryption = 'scram-sha-256'\n",
                cluster.dir.path().display()
            ));
            for line in extra_conf {
                text.push_str(line);
                text.push('\n');
            }
            std::fs::write(&conf, text).expect("write postgresql.conf");
            let out = as_postgres(&bin.bin("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.log_path())
                .args(["-w", "-t", "60", "start"])
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                cluster.port = port;
                cluster.stopped = false;
                return cluster;
            }
            last_err = format!(
                "{}{}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cluster.log_tail(40)
            );
            if !last_err.contains("already in use") && !last_err.contains("could not bind") {
                break;
            }
        }
        panic!(
            "PostgreSQL {} ({}) could not be started: {last_err}",
            bin.major,
            bin.dir.display()
        );
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// URL of database `db` as the superuser, over TCP, no TLS.
    pub fn url(&self, db: &str) -> String {
        self.url_as("postgres", SUPERUSER_PASSWORD, db)
    }

    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Run SQL with psql as the superuser (ON_ERROR_STOP); returns stdout (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run(&mut self.psql_command(db, sql), "psql");
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// [`Cluster::psql`], returning psql's error output instead of panicking when it fails.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .psql_command(db, sql)
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
        }
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        self.psql_command_url(&self.url(db), sql)
    }

    fn psql_command_url(&self, url: &str, sql: &str) -> Command {
        let mut c = Command::new(self.bin.bin("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(url)
            .arg("-c")
            .arg(sql);
        c
    }

    /// [`Cluster::psql`] logged in as another role (statements such as
    /// `refresh_continuous_aggregate` refuse to run inside the transaction `SET ROLE; ...` makes).
    pub fn psql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> String {
        let out = run(
            &mut self.psql_command_url(&self.url_as(user, password, db), sql),
            "psql",
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Create a database owned by the superuser.
    pub fn create_db(&self, db: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    }

    /// Create a login role with a SCRAM password.
    pub fn create_role(&self, name: &str, password: &str, extra: &str) {
        self.psql(
            "postgres",
            &format!("CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}' {extra}"),
        );
    }

    /// Stop immediately, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&mut self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        self.stopped = true;
    }

    /// Start again after a stop, on the same port.
    pub fn restart(&mut self) {
        let out = as_postgres(&self.bin.bin("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "restart failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(40)
        );
        self.stopped = false;
    }

    fn pg_ctl(&self, args: &[&str]) {
        let _ = as_postgres(&self.bin.bin("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .output();
    }

    /// Wait until the server accepts connections (after `restart`).
    pub fn wait_ready(&self) {
        for _ in 0..100 {
            let ok = Command::new(self.bin.bin("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "server on port {} did not become ready:\n{}",
            self.port,
            self.log_tail(40)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL {} server log (port {}), last lines ---\n{}\n--- end of server log ---",
                self.bin.major,
                self.port,
                self.log_tail(60)
            );
        }
        if !self.stopped {
            self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        }
    }
}
