//! `status` and `clean`: the stored plans' progress, and dropping them.

use std::process::ExitCode;

use crate::cli::{CleanArgs, StatusArgs};

/// Run `status`.
pub async fn run(_args: StatusArgs) -> crate::Result<ExitCode> {
    Err(crate::Error::Input(
        "`status` is not available in this build".into(),
    ))
}

/// Run `clean`.
pub async fn clean(_args: CleanArgs) -> crate::Result<ExitCode> {
    Err(crate::Error::Input(
        "`clean` is not available in this build".into(),
    ))
}
