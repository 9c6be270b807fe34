//! `dualwrite-backfill`: schema clone and time-series backfill below the consistency time T.
//!
//! Each subcommand lives in its own module; [`run`] dispatches a parsed command line and returns
//! the process exit code, so tests run the tool in-process.

pub mod cli;
pub mod columns;
pub mod compress;
pub mod copy;
pub mod cover;
pub mod csv;
pub mod jobs;
pub mod pg;
pub mod pgtools;
pub mod plan;
pub mod privileges;
pub mod progress;
pub mod roles;
pub mod rows;
pub mod schema;
pub mod sqlscript;
pub mod status;
pub mod store;
pub mod throttle;
pub mod timescale;
pub mod unit;
pub mod worker;

use std::process::ExitCode;

pub use cli::Cli;

/// Parse a command line (argv[0] first), for tests.
pub fn parse_args<I, T>(args: I) -> std::result::Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    <Cli as clap::Parser>::try_parse_from(args)
}

/// Run one subcommand. Exit codes: 0 done, 1 failed (some work not done), 2 bad input.
pub async fn run(cli: Cli) -> ExitCode {
    use cli::Command;
    let result = match cli.command {
        Command::Schema(a) => schema::run(a).await,
        Command::Copy(a) => copy::run(a).await,
        Command::Status(a) => status::run(a).await,
        Command::Clean(a) => status::clean(a).await,
        Command::Csv(a) => csv::run(a).await,
        Command::Compress(a) => compress::run(a).await,
        Command::Jobs(a) => jobs::run(a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dualwrite-backfill: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A failure that ends the command, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or a database that doesn't fit (exit 2): nothing was written.
    #[error("{0}")]
    Input(String),
    /// Anything else (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Input(_) => 2,
            Error::Other(_) => 1,
        }
    }
}

impl From<pg::PgError> for Error {
    fn from(e: pg::PgError) -> Self {
        Error::Other(anyhow::Error::new(e))
    }
}

/// Result of a subcommand.
pub type Result<T> = std::result::Result<T, Error>;
