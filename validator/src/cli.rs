//! Command-line arguments (clap derive). Parsed by main.rs, or by tests with
//! `Cli::try_parse_from`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dualwrite_common::catalog::TableSpec;

use crate::checksum::DigestChoice;
use crate::counts::DEFAULT_TOLERANCE;
use crate::report::Format;
use crate::units::BucketArg;

/// Proves the target holds what the source holds: per-chunk counts, checksums down to the
/// differing rows, and a suggestion for the consistency time T.
#[derive(Debug, Parser)]
#[command(name = "dualwrite-validator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The three commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare row counts per chunk, partition or time bucket (exact, or --estimate).
    Counts(CountsArgs),
    /// Compare per-unit digests and list the differing rows.
    Checksum(ChecksumArgs),
    /// During dual-write: the earliest time from which every bucket agrees, as a candidate T.
    SuggestT(SuggestArgs),
}

/// What to compare and how to report it; shared by every command.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Source database URL (postgres://user:password@host:port/db?sslmode=...).
    #[arg(long, env = "DUALWRITE_SOURCE_URL", hide_env_values = true)]
    pub source: String,
    /// Target database URL.
    #[arg(long, env = "DUALWRITE_TARGET_URL", hide_env_values = true)]
    pub target: String,
    /// Compare only rows with time >= FROM (e.g. 2024-03-01 or 2024-03-01 12:00:00+00).
    #[arg(long)]
    pub from: Option<String>,
    /// Compare only rows with time < UNTIL.
    #[arg(long)]
    pub until: Option<String>,
    /// SCHEMA.TABLE[:TIME_COLUMN]; repeatable. Default: every hypertable and range-partitioned
    /// table with a time key.
    #[arg(long = "table", value_name = "SCHEMA.TABLE[:TIME_COLUMN]")]
    pub tables: Vec<TableSpec>,
    /// With --table: compare the discovered tables too, not only the named ones.
    #[arg(long)]
    pub all: bool,
    /// Time bucket (1h, 1day, ...; an integer for integer time columns): the unit for plain
    /// tables (default 1day) and for chunks wider than it.
    #[arg(long, value_name = "INTERVAL")]
    pub bucket: Option<BucketArg>,
    /// Queries in flight per server.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `counts`.
#[derive(Debug, Args, Clone)]
pub struct CountsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Compare catalog estimates (reltuples after ANALYZE) instead of count(*).
    #[arg(long)]
    pub estimate: bool,
    /// With --estimate: do not run ANALYZE first (use the statistics as they are).
    #[arg(long)]
    pub no_analyze: bool,
    /// With --estimate: relative difference reported as within tolerance.
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    pub tolerance: f64,
}

/// `checksum`.
#[derive(Debug, Args, Clone)]
pub struct ChecksumArgs {
    #[command(flatten)]
    pub common: Common,
    /// Columns identifying a row, comma-separated (default: the primary key).
    #[arg(long, value_delimiter = ',')]
    pub key: Vec<String>,
    /// Row hash: typed (fast, PostgreSQL 14+), text (md5 of canonical text, any version), auto.
    #[arg(long, value_enum, default_value_t = DigestChoice::Auto)]
    pub digest: DigestChoice,
    /// Bisect differing units until a region holds at most this many rows, then diff rows.
    #[arg(long, default_value_t = 1000)]
    pub bisect_rows: i64,
    /// Differing rows listed per unit.
    #[arg(long, default_value_t = 20)]
    pub max_rows: usize,
}

/// `suggest-t`.
#[derive(Debug, Args, Clone)]
pub struct SuggestArgs {
    #[command(flatten)]
    pub common: Common,
    /// Columns identifying a row, comma-separated (default: the primary key).
    #[arg(long, value_delimiter = ',')]
    pub key: Vec<String>,
    /// Row hash for the checksum pass.
    #[arg(long, value_enum, default_value_t = DigestChoice::Auto)]
    pub digest: DigestChoice,
}

impl Command {
    /// The shared flags of whichever command.
    pub fn common(&self) -> &Common {
        match self {
            Command::Counts(a) => &a.common,
            Command::Checksum(a) => &a.common,
            Command::SuggestT(a) => &a.common,
        }
    }
}
