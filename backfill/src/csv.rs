//! `csv`: CSV files into a target table in parallel, idempotent batches.

use std::process::ExitCode;

use crate::cli::CsvArgs;

/// Run `csv`.
pub async fn run(_args: CsvArgs) -> crate::Result<ExitCode> {
    Err(crate::Error::Input(
        "`csv` is not available in this build".into(),
    ))
}
