//! `copy`: time-series rows below T, source to target, resumable and parallel.

use std::process::ExitCode;

use crate::cli::CopyArgs;

/// Run `copy`.
pub async fn run(_args: CopyArgs) -> crate::Result<ExitCode> {
    Err(crate::Error::Input(
        "`copy` is not available in this build".into(),
    ))
}
