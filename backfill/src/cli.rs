//! Command-line arguments (clap derive). Parsed by main.rs, or by tests with [`crate::parse_args`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dualwrite_common::catalog::TableSpec;
use dualwrite_common::ident::QualifiedName;

/// Clones roles and schema to the target, then copies time-series history below the
/// consistency time T, resumably and in parallel.
#[derive(Debug, Parser)]
#[command(name = "dualwrite-backfill", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, in the order of the migration.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clone roles, schema and relational data to the target (runbook step 3).
    Schema(SchemaArgs),
    /// Copy time-series rows below --until from source to target (runbook step 6).
    Copy(CopyArgs),
    /// Show the progress of the backfill plans stored in the target.
    Status(StatusArgs),
    /// Drop the backfill's bookkeeping schema from the target.
    Clean(CleanArgs),
    /// Load CSV files into a target table in parallel, idempotent batches.
    Csv(CsvArgs),
    /// After copy: compress on the target exactly the TimescaleDB chunks compressed on the source.
    Compress(CompressArgs),
    /// Enable or disable TimescaleDB background jobs on the target (runbook step 7).
    Jobs(JobsArgs),
}

/// `compress`.
#[derive(Debug, Args, Clone)]
pub struct CompressArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    /// Only these hypertables (default: every hypertable).
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<TableSpec>,
    /// Wait this long between chunks, to leave the target room for its live load.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub pause: std::time::Duration,
    /// Print what would be compressed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Source database URL.
#[derive(Debug, Args, Clone)]
pub struct SourceArg {
    /// Source database URL (postgres://user:password@host:port/db?sslmode=...).
    #[arg(long, env = "DUALWRITE_SOURCE_URL", hide_env_values = true)]
    pub source: String,
}

/// Target database URL.
#[derive(Debug, Args, Clone)]
pub struct TargetArg {
    /// Target database URL (postgres://user:password@host:port/db?sslmode=...).
    #[arg(long, env = "DUALWRITE_TARGET_URL", hide_env_values = true)]
    pub target: String,
}

/// `schema`.
#[derive(Debug, Args, Clone)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    /// Also copy roles (pg_dumpall --roles-only), sanitised for a target without superuser.
    #[arg(long)]
    pub roles: bool,
    /// Re-apply the source's grants and ownership on the target (after the roles exist).
    #[arg(long)]
    pub privileges: bool,
    /// Where the dump files are written and kept for review (default: a new
    /// dualwrite-schema-<time> directory in the current directory).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Owner of TimescaleDB background jobs the target cannot assign to their source owner
    /// (default: the target URL's user).
    #[arg(long, value_name = "ROLE")]
    pub job_owner: Option<String>,
    /// Time-series tables whose data the backfill copies (their data is left out of the dump);
    /// repeatable. Always included: every hypertable and range-partitioned table with a time key.
    #[arg(long = "table", value_name = "SCHEMA.TABLE[:TIME_COLUMN]")]
    pub tables: Vec<TableSpec>,
    /// Directory of pg_dump, pg_dumpall and psql (default: the newest installed).
    #[arg(long, value_name = "DIR", env = "DUALWRITE_PG_BIN")]
    pub pg_bin: Option<PathBuf>,
}

/// `copy`.
#[derive(Debug, Args, Clone)]
pub struct CopyArgs {
    #[command(flatten)]
    pub source: SourceArg,
    #[command(flatten)]
    pub target: TargetArg,
    /// The consistency time T: rows with time < T are copied (e.g. 2024-03-01 12:00:00+00).
    #[arg(long, value_name = "T")]
    pub until: String,
    /// Copy only rows with time >= F.
    #[arg(long, value_name = "F")]
    pub from: Option<String>,
    /// SCHEMA.TABLE[:TIME_COLUMN]; repeatable. Default: every hypertable and range-partitioned
    /// table with a time key.
    #[arg(long = "table", value_name = "SCHEMA.TABLE[:TIME_COLUMN]")]
    pub tables: Vec<TableSpec>,
    /// Units copied at once (connections per server).
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
    /// Throttle: rows per second across all workers of this process.
    #[arg(long, value_name = "R")]
    pub max_rows_per_second: Option<u64>,
    /// Print the plan (units, estimated rows and bytes) and copy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Plan name; processes given the same name work one plan together (default: derived from
    /// the database, tables and range, so identical command lines share a plan).
    #[arg(long, value_name = "NAME")]
    pub plan: Option<String>,
    /// Time slice for tables without chunks or partitions (e.g. 1day, 6h; an integer for
    /// integer time). Default: sized for about --rows-per-unit rows.
    #[arg(long, value_name = "INTERVAL")]
    pub slice: Option<String>,
    /// Target size of a slice of a plain table, in rows (estimated from statistics).
    #[arg(long, default_value_t = 500_000, value_name = "N")]
    pub rows_per_unit: u64,
    /// Attempts per unit on transient errors before it is marked failed.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub attempts: u32,
    /// Read each unit under its own snapshot instead of one exported snapshot shared by all
    /// workers (the shared one holds back vacuum on the source while the copy runs).
    #[arg(long)]
    pub no_shared_snapshot: bool,
    /// Do not ANALYZE the copied tables on the target once every unit is done (by default
    /// they are, so the target plans queries with statistics before it serves reads).
    #[arg(long)]
    pub no_analyze: bool,
    /// No progress bar or progress lines (the summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// `status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// Show only this plan.
    #[arg(long, value_name = "NAME")]
    pub plan: Option<String>,
    /// List every unit, not only failed and running ones.
    #[arg(long)]
    pub units: bool,
}

/// `clean`.
#[derive(Debug, Args, Clone)]
pub struct CleanArgs {
    #[command(flatten)]
    pub target: TargetArg,
}

/// `csv`.
#[derive(Debug, Args, Clone)]
pub struct CsvArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// Table to load into.
    #[arg(long, value_name = "SCHEMA.TABLE", value_parser = parse_table)]
    pub table: QualifiedName,
    /// Columns in file order, comma-separated (default: all columns in table order).
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    pub columns: Vec<String>,
    /// Each file starts with a header line, which is skipped.
    #[arg(long)]
    pub header: bool,
    /// Field delimiter.
    #[arg(long, default_value_t = ',')]
    pub delimiter: char,
    /// The string that stands for NULL (COPY's NULL option; default: an unquoted empty field).
    #[arg(long, value_name = "TEXT")]
    pub null: Option<String>,
    /// Batches loaded at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
    /// Rows per batch (one target transaction each).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub batch_rows: u64,
    /// Name of this import; a rerun with the same name skips the batches already loaded
    /// (default: derived from the table and the files' paths and sizes; stdin needs one).
    #[arg(long, value_name = "NAME")]
    pub import_id: Option<String>,
    /// No progress bar or progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// CSV files; `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// What `jobs` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobsAction {
    /// Refresh continuous aggregates over the backfilled range, then schedule the jobs again.
    Enable,
    /// Stop scheduling the jobs (retention, compression, continuous aggregates).
    Disable,
}

/// `jobs`.
#[derive(Debug, Args, Clone)]
pub struct JobsArgs {
    /// enable or disable.
    #[arg(value_enum)]
    pub action: JobsAction,
    #[command(flatten)]
    pub target: TargetArg,
    /// Before enabling, run each job once, one at a time.
    #[arg(long)]
    pub run_now: bool,
    /// Do not refresh continuous aggregates before enabling.
    #[arg(long)]
    pub no_refresh: bool,
    /// Start of the refresh window (default: the earliest time the stored backfill plans copied).
    #[arg(long, value_name = "F")]
    pub from: Option<String>,
    /// End of the refresh window (default: the latest --until of the stored backfill plans).
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Source database URL: take each job's scheduled state and next start from the source as
    /// they are now (default: as `schema` recorded them on the target).
    #[arg(long, env = "DUALWRITE_SOURCE_URL", hide_env_values = true)]
    pub source: Option<String>,
    /// Jobs due now (their next start passed) start this far apart, not all at once.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stagger: std::time::Duration,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration (e.g. 10s, 1min): {e}"))
}

fn parse_table(s: &str) -> Result<QualifiedName, String> {
    QualifiedName::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_copy() {
        let cli = Cli::try_parse_from([
            "dualwrite-backfill",
            "copy",
            "--source",
            "postgres://a@h/db",
            "--target",
            "postgres://b@h/db",
            "--until",
            "2024-01-01",
            "--table",
            "public.events:at",
            "--jobs",
            "4",
        ])
        .unwrap();
        match cli.command {
            Command::Copy(a) => {
                assert_eq!(a.jobs, 4);
                assert_eq!(a.tables[0].time_column.as_deref(), Some("at"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_csv_and_jobs() {
        let cli = Cli::try_parse_from([
            "dualwrite-backfill",
            "csv",
            "--target",
            "postgres://b@h/db",
            "--table",
            "s.t",
            "--columns",
            "a,b",
            "x.csv",
            "-",
        ])
        .unwrap();
        match cli.command {
            Command::Csv(a) => {
                assert_eq!(a.columns, vec!["a", "b"]);
                assert_eq!(a.files.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "dualwrite-backfill",
            "jobs",
            "enable",
            "--target",
            "postgres://b@h/db",
            "--run-now",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Jobs(JobsArgs {
                action: JobsAction::Enable,
                run_now: true,
                ..
            })
        ));
    }
}
