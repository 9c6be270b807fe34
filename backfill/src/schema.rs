//! `schema`: roles, schema and relational data to the target (runbook step 3).
//!
//! Checks first and writes nothing when the target doesn't fit. Then: dump (roles, schema with
//! the relational tables' data, grants) into the workdir with the newest `pg_dump`; restore with
//! `psql` (`ON_ERROR_STOP`, one transaction, TimescaleDB's pre/post restore included); re-apply grants with
//! `--privileges`. The time-series tables' data is left out of the dump: `copy` backfills it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dualwrite_common::catalog::{self, CatalogError, TableKind, TimeSeriesTable};
use dualwrite_common::ident::quote_ident;
use tokio_postgres::Client;

use crate::cli::SchemaArgs;
use crate::pg::{self, PgError, ServerInfo, Side};
use crate::pgtools::{self, PgTools};
use crate::privileges;
use crate::roles::{self, RoleContext};
use crate::timescale;
use crate::Error;

/// Run `schema`.
pub async fn run(args: SchemaArgs) -> crate::Result<ExitCode> {
    let source_url = pg::parse_url(&args.source.source, Side::Source).map_err(input)?;
    let target_url = pg::parse_url(&args.target.target, Side::Target).map_err(input)?;
    let source = pg::open(&source_url, Side::Source).await.map_err(input)?;
    let target = pg::open(&target_url, Side::Target).await.map_err(input)?;
    let s = ServerInfo::read(&source, Side::Source).await?;
    let t = ServerInfo::read(&target, Side::Target).await?;
    let tools = PgTools::find(args.pg_bin.as_deref(), s.major, t.major).map_err(Error::Input)?;
    let tsdb = check(&tools, &s, &t, &target).await?;
    let series = time_series(&source, &args, &s).await?;
    let job_owner = args.job_owner.clone().unwrap_or_else(|| t.user.clone());

    println!(
        "source: PostgreSQL {} (database {}{}); target: PostgreSQL {} (database {}{})",
        s.version,
        s.database,
        s.timescaledb
            .as_deref()
            .map(|v| format!(", TimescaleDB {v}"))
            .unwrap_or_default(),
        t.version,
        t.database,
        t.timescaledb
            .as_deref()
            .map(|v| format!(", TimescaleDB {v}"))
            .unwrap_or_default(),
    );
    println!("tools: {} ({})", tools.dir.display(), tools.version);
    let workdir = make_workdir(args.workdir.as_deref())?;
    println!("workdir: {}", workdir.display());
    // A failures file from an earlier run would be mistaken for this run's.
    let _ = std::fs::remove_file(workdir.join("privileges-failed.sql"));
    if tsdb.is_some() {
        println!("data left for `copy`: every TimescaleDB chunk (_timescaledb_internal.*)");
    }
    for ts in series.iter().filter(|ts| ts.kind != TableKind::Hypertable) {
        println!(
            "data left for `copy`: {} ({}{})",
            ts.table,
            match ts.kind {
                TableKind::Partitioned => format!("{} partitions, ", ts.chunks.len()),
                _ => String::new(),
            },
            format_args!("time column {}", ts.time_column)
        );
    }

    // 1. Dumps.
    let roles_raw = workdir.join("roles.pg_dumpall.sql");
    if args.roles {
        let mut cmd = tools.command("pg_dumpall", &source_url);
        cmd.args(["--roles-only", "--quote-all-identifiers", "-l"])
            .arg(&s.database)
            .arg("-f")
            .arg(&roles_raw);
        if !s.is_superuser {
            // pg_authid (the passwords) is readable by superusers only.
            cmd.arg("--no-role-passwords");
            println!(
                "roles: the source login {} is not a superuser: passwords are not copied",
                s.user
            );
        }
        let out = tools.run("pg_dumpall", &mut cmd).await.map_err(other)?;
        keep_log(&workdir.join("roles.pg_dumpall.log"), &out.stderr)?;
    }
    let dump = workdir.join("dump.sql");
    let mut cmd = tools.command("pg_dump", &source_url);
    cmd.args([
        "--format=plain",
        "--quote-all-identifiers",
        "--no-tablespaces",
        "--no-owner",
        "--no-privileges",
        // The proxy's bookkeeping (journal replay and commit markers), never the application's.
        "--exclude-schema=_dualwrite",
    ]);
    for pattern in exclude_data_patterns(tsdb.is_some(), &series) {
        cmd.arg(format!("--exclude-table-data={pattern}"));
    }
    cmd.arg("-f").arg(&dump);
    let out = tools.run("pg_dump", &mut cmd).await.map_err(other)?;
    keep_log(&workdir.join("dump.pg_dump.log"), &out.stderr)?;
    let grants_raw = workdir.join("privileges.pg_dump.sql");
    let mut cmd = tools.command("pg_dump", &source_url);
    cmd.args([
        "--schema-only",
        "--quote-all-identifiers",
        "--no-tablespaces",
        "-f",
    ])
    .arg(&grants_raw);
    tools.run("pg_dump", &mut cmd).await.map_err(other)?;
    println!(
        "dumped: {}dump.sql, privileges.pg_dump.sql",
        if args.roles {
            "roles.pg_dumpall.sql, "
        } else {
            ""
        }
    );

    // 2. Roles.
    if args.roles {
        let raw = read(&roles_raw)?;
        let ctx = role_context(&s, &t, &target).await?;
        let clean = roles::sanitise(&raw, &ctx);
        let path = workdir.join("roles.sql");
        write(&path, &clean.script)?;
        println!(
            "roles: sanitised for a target without superuser into roles.sql ({} changes):",
            clean.changes.len()
        );
        for c in &clean.changes {
            println!("  - {c}");
        }
        pgtools::restore(&tools, &target_url, &workdir, "roles", &[&path]).await?;
        println!("roles: restored");
    }

    // 3. The runbook's manual edits of the dump (TimescaleDB).
    let mut privileges_script = privileges::extract(&read(&grants_raw)?, &[&s.bootstrap_superuser]);
    if tsdb.is_some() {
        privileges_script = fit_timescale_owners(&source, &privileges_script).await?;
    }
    if let Some(tsdb) = &tsdb {
        let edited = edit_timescale_dump(&dump, &source, &target, &t, tsdb, &job_owner).await?;
        if let Some((from, to, members)) = edited {
            privileges_script =
                timescale::rewrite_extension_schema(&privileges_script, &from, &to, &members).0;
        }
    }
    let privileges_path = workdir.join("privileges.sql");
    write(&privileges_path, &privileges_script)?;

    // 4. Schema and relational data.
    match &tsdb {
        None => {
            pgtools::restore(&tools, &target_url, &workdir, "schema", &[&dump]).await?;
        }
        Some(ts) => {
            // One transaction from CREATE EXTENSION to post_restore: a failure anywhere rolls
            // the target back to what it was (TimescaleDB's restore runs in a transaction).
            let mut pre_sql = String::new();
            if t.timescaledb.is_none() {
                pre_sql.push_str(&timescale::create_extension_sql(
                    &ts.version,
                    &ts.target_schema,
                ));
                pre_sql.push('\n');
            }
            pre_sql.push_str(&timescale::pre_restore_sql(&ts.target_schema));
            let pre = workdir.join("pre_restore.sql");
            let post = workdir.join("post_restore.sql");
            write(&pre, &pre_sql)?;
            let source_jobs = source_jobs(&source).await?;
            write(
                &post,
                &format!(
                    "{}{}",
                    timescale::record_source_jobs_sql(&source_jobs),
                    timescale::post_restore_sql(&ts.target_schema)
                ),
            )?;
            let restored = pgtools::restore(
                &tools,
                &target_url,
                &workdir,
                "schema",
                &[&pre, &dump, &post],
            )
            .await;
            if let Err(e) = restored {
                if t.timescaledb.is_some() {
                    // pre_restore stopped the background workers outside the transaction.
                    if let Err(w) = target
                        .batch_execute("SELECT _timescaledb_functions.start_background_workers()")
                        .await
                    {
                        eprintln!(
                            "timescaledb: could not restart the background workers after the failed restore ({}): run SELECT _timescaledb_functions.start_background_workers() on the target",
                            pg::describe(&w)
                        );
                    }
                }
                if args.roles {
                    eprintln!("roles: the roles restored before the schema stay on the target (roles belong to the server, not the database); running `schema` again reuses them");
                }
                return Err(e);
            }
            if t.timescaledb.is_none() {
                println!(
                    "timescaledb: created the extension {} in schema {} on the target",
                    ts.version, ts.target_schema
                );
            }
            println!(
                "timescaledb: post_restore done; background jobs (id >= {}) disabled: `dualwrite-backfill jobs enable` turns them on after the backfill",
                timescale::FIRST_USER_JOB
            );
        }
    }
    println!("schema: restored dump.sql");

    // 5. Privileges.
    let statements = privileges::statements(&privileges_script);
    if !args.privileges {
        println!(
            "privileges: {} GRANT/REVOKE/OWNER statements written to privileges.sql, not applied (--privileges applies them)",
            statements.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let failed = privileges::apply(&target, &statements).await?;
    println!(
        "privileges: {} of {} statements applied",
        statements.len() - failed.len(),
        statements.len()
    );
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let failed_path = workdir.join("privileges-failed.sql");
    write(&failed_path, &privileges::failures_script(&failed))?;
    println!(
        "privileges: {} statements failed on the target, written to {} for review:",
        failed.len(),
        failed_path.display()
    );
    for f in &failed {
        println!("  - {}  -- {}", f.statement, f.error);
    }
    Ok(ExitCode::from(1))
}

/// TimescaleDB on the source: its version and where it lives on each side.
#[derive(Clone, Debug)]
struct Tsdb {
    version: String,
    source_schema: String,
    target_schema: String,
}

/// Refuse (exit 2, nothing written) when the target can't take the source's dump.
async fn check(
    tools: &PgTools,
    s: &ServerInfo,
    t: &ServerInfo,
    target: &Client,
) -> crate::Result<Option<Tsdb>> {
    if t.major < s.major {
        return Err(Error::Input(format!(
            "the target runs PostgreSQL {} and the source {}: the target must be the same major version or newer",
            t.version, s.version
        )));
    }
    if tools.major < s.major {
        return Err(Error::Input(format!(
            "{} is {}, older than the source (PostgreSQL {}): install the client tools of PostgreSQL {} or newer, or pass --pg-bin",
            tools.dir.join("pg_dump").display(),
            tools.version,
            s.version,
            s.major
        )));
    }
    let rows = target
        .query(
            "SELECT n.nspname::text || '.' || c.relname::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_dualwrite_backfill', '_dualwrite')
                AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT LIKE '\\_timescaledb%'
                AND n.nspname NOT LIKE 'timescaledb\\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                  AND d.objid = c.oid AND d.deptype = 'e')
              ORDER BY 1 LIMIT 6",
            &[],
        )
        .await
        .map_err(PgError::query(Side::Target))?;
    if !rows.is_empty() {
        let names: Vec<String> = rows.iter().take(5).map(|r| r.get(0)).collect();
        return Err(Error::Input(format!(
            "the target database {} is not empty (it has {}{}): `schema` restores into an empty database; use a new one",
            t.database,
            names.join(", "),
            if rows.len() > 5 { ", ..." } else { "" }
        )));
    }
    let Some(version) = s.timescaledb.clone() else {
        return Ok(None);
    };
    let source_schema = s
        .timescaledb_schema
        .clone()
        .unwrap_or_else(|| "public".into());
    match &t.timescaledb {
        Some(tv) if *tv != version => {
            return Err(Error::Input(format!(
                "TimescaleDB {version} on the source and {tv} on the target: they must be the same version"
            )))
        }
        Some(_) => {}
        None => {
            let available = target
                .query_opt(
                    "SELECT 1 FROM pg_available_extension_versions WHERE name = 'timescaledb' AND version = $1",
                    &[&version],
                )
                .await
                .map_err(PgError::query(Side::Target))?;
            if available.is_none() {
                return Err(Error::Input(format!(
                    "the source uses TimescaleDB {version}, which is not installed on the target server: install that version there"
                )));
            }
        }
    }
    Ok(Some(Tsdb {
        version,
        // A fresh target gets the extension in the source's schema: references to it are
        // stored as text in TimescaleDB's catalog (continuous aggregates' bucket functions).
        target_schema: t
            .timescaledb_schema
            .clone()
            .unwrap_or_else(|| source_schema.clone()),
        source_schema,
    }))
}

/// Every hypertable and range-partitioned table with a time key, plus the `--table` ones.
async fn time_series(
    source: &Client,
    args: &SchemaArgs,
    s: &ServerInfo,
) -> crate::Result<Vec<TimeSeriesTable>> {
    let catalog_err = |e: CatalogError| match e {
        CatalogError::Query(q) => Error::from(PgError::Query {
            side: Side::Source,
            source: q,
        }),
        other => Error::Input(format!("source database {}: {other}", s.database)),
    };
    let mut all = catalog::discover(source, &[]).await.map_err(catalog_err)?;
    if !args.tables.is_empty() {
        for t in catalog::discover(source, &args.tables)
            .await
            .map_err(catalog_err)?
        {
            if !all.iter().any(|a| a.table == t.table) {
                all.push(t);
            }
        }
    }
    Ok(all)
}

/// `--exclude-table-data` patterns: TimescaleDB's chunks, and each other time-series table with
/// its partitions (exact names, quoted so pattern characters are literal).
pub fn exclude_data_patterns(tsdb: bool, series: &[TimeSeriesTable]) -> Vec<String> {
    let mut out = Vec::new();
    if tsdb {
        out.push("_timescaledb_internal.*".to_string());
    }
    let mut seen = BTreeSet::new();
    for ts in series.iter().filter(|t| t.kind != TableKind::Hypertable) {
        for rel in std::iter::once(&ts.table).chain(ts.chunks.iter().map(|c| &c.relation)) {
            if seen.insert(rel.clone()) {
                out.push(format!(
                    "{}.{}",
                    quote_ident(&rel.schema),
                    quote_ident(&rel.name)
                ));
            }
        }
    }
    out
}

async fn role_context(
    s: &ServerInfo,
    t: &ServerInfo,
    target: &Client,
) -> crate::Result<RoleContext> {
    let rows = target
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(PgError::query(Side::Target))?;
    let existing: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let createdb: bool = target
        .query_one(
            "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(PgError::query(Side::Target))?
        .get(0);
    let mut reserved = vec![(
        s.bootstrap_superuser.clone(),
        "the source's bootstrap superuser".to_string(),
    )];
    if t.bootstrap_superuser != s.bootstrap_superuser {
        reserved.push((
            t.bootstrap_superuser.clone(),
            "the target's bootstrap superuser".to_string(),
        ));
    }
    if !reserved.iter().any(|(r, _)| *r == t.user) {
        reserved.push((t.user.clone(), "the target's login role".to_string()));
    }
    // PostgreSQL 16+: a non-superuser needs ADMIN OPTION on a role to alter it or grant it.
    let no_admin = if t.is_superuser || t.major < 16 {
        BTreeSet::new()
    } else {
        target
            .query(
                "SELECT rolname::text FROM pg_roles
                  WHERE rolname <> current_user
                    AND NOT pg_has_role(current_user, oid, 'MEMBER WITH ADMIN OPTION')",
                &[],
            )
            .await
            .map_err(PgError::query(Side::Target))?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    Ok(RoleContext {
        reserved,
        existing,
        no_admin,
        strip_also: RoleContext::attributes_not_settable(t.is_superuser, createdb),
    })
}

/// Move the extension to the target's schema and give jobs to a role the target can assign.
/// Returns the schema move made, if any, so the grants get it too.
async fn edit_timescale_dump(
    dump: &Path,
    source: &Client,
    target: &Client,
    t: &ServerInfo,
    ts: &Tsdb,
    job_owner: &str,
) -> crate::Result<Option<(String, String, BTreeSet<String>)>> {
    let original = read(dump)?;
    let mut script = original.clone();
    let mut moved = None;
    if ts.source_schema != ts.target_schema {
        let rows = source
            .query(timescale::EXTENSION_MEMBERS_SQL, &[])
            .await
            .map_err(PgError::query(Side::Source))?;
        let members: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let (edited, n) = timescale::rewrite_extension_schema(
            &script,
            &ts.source_schema,
            &ts.target_schema,
            &members,
        );
        println!(
            "timescaledb: installed in schema {} on the source, restored into {} on the target ({n} references rewritten; function bodies are not)",
            ts.source_schema, ts.target_schema
        );
        script = edited;
        moved = Some((ts.source_schema.clone(), ts.target_schema.clone(), members));
    }
    // The extension's schema exists before the dump runs: created with the extension, or
    // already there with an extension installed beforehand.
    let (edited, changed) = timescale::tolerate_existing_schema(&script, &ts.target_schema);
    if changed {
        script = edited;
    }
    // Extensions that exist on the target owned by another role (a managed service's): their
    // COMMENT ON EXTENSION would stop the restore.
    if !t.is_superuser {
        let rows = target
            .query(
                "SELECT extname::text FROM pg_extension WHERE extowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)",
                &[],
            )
            .await
            .map_err(PgError::query(Side::Target))?;
        let foreign: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let (edited, dropped) = timescale::drop_extension_comments(&script, &foreign);
        for ext in dropped {
            println!("extension {ext}: exists on the target owned by another role; its COMMENT ON EXTENSION is left out");
        }
        script = edited;
    }
    // Job owners the target's login role cannot assign go to --job-owner.
    let mut reassign = BTreeSet::new();
    for owner in timescale::job_owners(&script) {
        let row = target
            .query_opt(
                "SELECT rolsuper, pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1",
                &[&owner],
            )
            .await
            .map_err(PgError::query(Side::Target))?;
        let assignable = match row {
            Some(r) => t.is_superuser || (!r.get::<_, bool>(0) && r.get::<_, bool>(1)),
            None => false,
        };
        if !assignable {
            reassign.insert(owner);
        }
    }
    if !reassign.is_empty() {
        let (edited, changed) = timescale::rewrite_job_owners(&script, &reassign, job_owner);
        for (job, old) in &changed {
            println!("timescaledb: job {job} owned by {old} on the source is given to {job_owner}");
        }
        script = edited;
    }
    if script != original {
        write(&dump.with_extension("pg_dump.sql"), &original)?;
        write(dump, &script)?;
        println!("timescaledb: dump.sql edited (pg_dump's output kept as dump.pg_dump.sql)");
    }
    Ok(moved)
}

/// Ownership statements TimescaleDB takes: aggregates are altered as materialized views, and
/// chunks and the aggregates' internals follow their owners.
async fn fit_timescale_owners(source: &Client, script: &str) -> crate::Result<String> {
    let pairs = |sql: &'static str| async move {
        source
            .query(sql, &[])
            .await
            .map_err(PgError::query(Side::Source))
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                    .collect::<BTreeSet<(String, String)>>()
            })
    };
    let caggs = pairs(timescale::CONTINUOUS_AGGREGATES_SQL).await?;
    let follows = pairs(timescale::OWNER_FOLLOWS_SQL).await?;
    let (script, dropped, rewritten) = timescale::fit_owner_statements(script, &caggs, &follows);
    if dropped + rewritten > 0 {
        println!(
            "timescaledb: ownership: {rewritten} continuous aggregates given to their owners with ALTER MATERIALIZED VIEW; {dropped} statements on chunks and aggregate internals left out (they follow their hypertable's or aggregate's owner)"
        );
    }
    Ok(script)
}

/// The source's user jobs and their schedules, recorded on the target for `jobs enable`.
pub async fn source_jobs(source: &Client) -> crate::Result<Vec<timescale::SourceJob>> {
    let rows = source
        .query(timescale::SOURCE_JOBS_SQL, &[])
        .await
        .map_err(PgError::query(Side::Source))?;
    Ok(rows
        .iter()
        .map(|r| timescale::SourceJob {
            id: r.get(0),
            scheduled: r.get(1),
            next_start: r.get(2),
        })
        .collect())
}

fn make_workdir(dir: Option<&Path>) -> crate::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from(format!(
            "dualwrite-schema-{}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S")
        )),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Input(format!("cannot create workdir {}: {e}", dir.display())))?;
    Ok(dir)
}

fn read(path: &Path) -> crate::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot read {}: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> crate::Result<()> {
    std::fs::write(path, text)
        .map_err(|e| Error::Other(anyhow::anyhow!("cannot write {}: {e}", path.display())))
}

/// Keep a tool's warnings (e.g. TimescaleDB's circular foreign keys, harmless) in the workdir.
fn keep_log(path: &Path, stderr: &[u8]) -> crate::Result<()> {
    if stderr.is_empty() {
        return Ok(());
    }
    write(path, &String::from_utf8_lossy(stderr))?;
    println!("  (warnings in {})", path.display());
    Ok(())
}

fn input(e: PgError) -> Error {
    match e {
        PgError::Query { .. } => Error::from(e),
        other => Error::Input(other.to_string()),
    }
}

fn other(message: String) -> Error {
    Error::Other(anyhow::anyhow!(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dualwrite_common::catalog::{Chunk, TimeType};
    use dualwrite_common::ident::QualifiedName;

    #[test]
    fn exclusion_patterns() {
        let chunk = |n: &str| Chunk {
            relation: QualifiedName::new("public", n),
            start: None,
            end: None,
            is_compressed: false,
            is_default: false,
            slices: Vec::new(),
        };
        let series = vec![
            TimeSeriesTable {
                table: QualifiedName::new("public", "ev"),
                time_column: "at".into(),
                time_type: TimeType::Timestamptz,
                kind: TableKind::Partitioned,
                chunks: vec![chunk("ev_1"), chunk("ev*2")],
            },
            TimeSeriesTable {
                table: QualifiedName::new("My\"S", "log"),
                time_column: "at".into(),
                time_type: TimeType::Timestamptz,
                kind: TableKind::Plain,
                chunks: vec![],
            },
            TimeSeriesTable {
                table: QualifiedName::new("public", "hyper"),
                time_column: "at".into(),
                time_type: TimeType::Timestamptz,
                kind: TableKind::Hypertable,
                chunks: vec![],
            },
        ];
        assert_eq!(
            exclude_data_patterns(true, &series),
            vec![
                "_timescaledb_internal.*",
                "\"public\".\"ev\"",
                "\"public\".\"ev_1\"",
                "\"public\".\"ev*2\"",
                "\"My\"\"S\".\"log\"",
            ]
        );
    }
}
