//! `dualwrite-validator`: proves the target holds what the source holds, chunk by chunk and
//! down to the row, and suggests the consistency time T.
//!
//! # Layout
//! - `cli`: command-line arguments (clap derive); main.rs parses them and calls [`run_cli`].
//! - `session`: connections to both servers with canonical output settings, a small pool each.
//! - `units`: which chunks, partitions and time buckets are compared, with what SQL per side.
//! - `range`: arithmetic on time ranges with unbounded ends.
//! - `sql`: SQL fragments: time buckets, time as integers, conditions.
//! - `schema`: a table's columns and key, canonical-text and typed-hash row expressions.
//! - `measure`: one count or digest query on both sides, whole or grouped, paired by group.
//! - `counts`: exact counts and catalog estimates per unit.
//! - `checksum`: digests per unit, digest choice, differing rows of differing units.
//! - `bisect`: narrowing a differing unit by time, then by key hash, to small regions.
//! - `diff`: fetching a region's rows from both sides and pairing them by key.
//! - `suggest`: suggest-t, the earliest time from which every bucket agrees.
//! - `progress`: the progress bar (units, rows, rows/s).
//! - `report`: the result model and its `text`, `json` and `html` renderings.

pub mod bisect;
pub mod checksum;
pub mod cli;
pub mod counts;
pub mod diff;
pub mod measure;
pub mod progress;
pub mod range;
pub mod report;
pub mod schema;
pub mod session;
pub mod sql;
pub mod suggest;
pub mod units;

use std::io::Write;
use std::time::Instant;

use dualwrite_common::PgUrl;

use crate::cli::{Cli, Command, Common};
use crate::counts::CountOptions;
use crate::progress::Progress;
use crate::report::{CommandKind, Report, Status, Summary};
use crate::session::Sides;
use crate::units::Selection;

/// Exit code when everything agrees.
pub const EXIT_EQUAL: i32 = 0;
/// Exit code when something differs (or suggest-t has no candidate).
pub const EXIT_DIFFER: i32 = 1;
/// Exit code on any error.
pub const EXIT_ERROR: i32 = 2;

/// Anything that stops a run; each names the side, table or argument at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--{side}: {source}")]
    Url {
        side: &'static str,
        source: dualwrite_common::pgurl::UrlError,
    },
    #[error("--jobs must be at least 1")]
    Jobs,
    #[error(transparent)]
    Session(#[from] session::SessionError),
    #[error(transparent)]
    Plan(#[from] units::PlanError),
    #[error(transparent)]
    Count(#[from] counts::CountError),
    #[error(transparent)]
    Checksum(#[from] checksum::ChecksumError),
    #[error(transparent)]
    Suggest(#[from] suggest::SuggestError),
    #[error("writing the report to {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Parse a command line (program name first), as main.rs does; for tests and embedding.
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    <Cli as clap::Parser>::try_parse_from(args)
}

fn selection(c: &Common) -> Selection {
    Selection {
        tables: c.tables.clone(),
        all: c.all,
        from: c.from.clone(),
        until: c.until.clone(),
        bucket: c.bucket.clone(),
    }
}

/// Run a command and return its report (nothing printed but the progress bar).
pub async fn execute(command: &Command) -> Result<Report, Error> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let common = command.common();
    let source: PgUrl = common.source.parse().map_err(|source| Error::Url {
        side: "source",
        source,
    })?;
    let target: PgUrl = common.target.parse().map_err(|source| Error::Url {
        side: "target",
        source,
    })?;
    if common.jobs == 0 {
        return Err(Error::Jobs);
    }
    let sides = Sides::open(&source, &target, common.jobs).await?;
    let sel = selection(common);
    let estimate = matches!(command, Command::Counts(a) if a.estimate);
    let plans = units::plan(&sides, &sel, estimate).await?;
    let scans: u64 = plans.iter().map(|p| p.scans.len() as u64).sum();
    let progress = Progress::new(scans, !common.quiet);
    let mut notes = Vec::new();
    let (kind, mode, digest, tolerance, tables) = match command {
        Command::Counts(a) => {
            let opts = CountOptions {
                estimate: a.estimate,
                analyze: !a.no_analyze,
                tolerance: a.tolerance,
                jobs: common.jobs,
            };
            if a.estimate {
                let t = counts::estimate(&sides, &plans, opts, &progress).await?;
                (CommandKind::Counts, "estimate", None, Some(a.tolerance), t)
            } else {
                let t = counts::exact(&sides, &plans, common.jobs, &progress).await?;
                (CommandKind::Counts, "exact", None, None, t)
            }
        }
        Command::Checksum(a) => {
            let (kind, note) = checksum::choose_digest(&sides, a.digest).await?;
            notes.extend(note);
            let opts = checksum::ChecksumOptions {
                key: a.key.clone(),
                digest: a.digest,
                bisect_rows: a.bisect_rows.max(1),
                max_rows: a.max_rows,
                jobs: common.jobs,
            };
            let t = checksum::run(&sides, &plans, kind, &opts, &progress).await?;
            (CommandKind::Checksum, "checksum", Some(kind), None, t)
        }
        Command::SuggestT(a) => {
            let (kind, note) = checksum::choose_digest(&sides, a.digest).await?;
            notes.extend(note);
            let t = suggest::run(&sides, &plans, common.bucket.as_ref(), kind, &a.key).await?;
            (CommandKind::SuggestT, "suggest-t", Some(kind), None, t)
        }
    };
    progress.finish();
    let mut report = Report {
        schema_version: 1,
        command: kind,
        mode: mode.to_string(),
        digest: digest.map(|d| match d {
            measure::DigestKind::Typed => "typed".to_string(),
            measure::DigestKind::Text => "text".to_string(),
        }),
        tolerance,
        source: sides.source.display.clone(),
        target: sides.target.display.clone(),
        from: common.from.clone(),
        until: common.until.clone(),
        started_at,
        elapsed_seconds: 0.0,
        summary: Summary {
            status: Status::Equal,
            tables: 0,
            units: 0,
            units_differing: 0,
            source_rows: 0,
            target_rows: 0,
            rows_listed: 0,
        },
        tables,
        notes,
    };
    report.finish();
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Run, render and write the report; print errors to stderr. Returns the exit code
/// (0 equal, 1 differences, 2 error).
pub async fn run_cli(cli: Cli) -> i32 {
    let common = cli.command.common().clone();
    let report = match execute(&cli.command).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dualwrite-validator: error: {e}");
            return EXIT_ERROR;
        }
    };
    match write_report(&report, &common) {
        Ok(()) => report.exit_code(),
        Err(e) => {
            eprintln!("dualwrite-validator: error: {e}");
            EXIT_ERROR
        }
    }
}

/// Render the report in the chosen format to `--output` or stdout.
pub fn write_report(report: &Report, common: &Common) -> Result<(), Error> {
    let text = report::render(report, common.format)?;
    match &common.output {
        Some(path) => std::fs::write(path, text).map_err(|source| Error::Output {
            path: path.display().to_string(),
            source,
        }),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|source| Error::Output {
                path: "stdout".into(),
                source,
            }),
    }
}
