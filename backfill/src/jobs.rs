//! `jobs enable|disable`: TimescaleDB background jobs on the target (runbook step 7).

use std::process::ExitCode;

use crate::cli::JobsArgs;

/// Run `jobs`.
pub async fn run(_args: JobsArgs) -> crate::Result<ExitCode> {
    Err(crate::Error::Input(
        "`jobs` is not available in this build".into(),
    ))
}
