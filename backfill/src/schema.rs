//! `schema`: roles, schema and relational data to the target (runbook step 3).

use std::process::ExitCode;

use crate::cli::SchemaArgs;

/// Run `schema`.
pub async fn run(_args: SchemaArgs) -> crate::Result<ExitCode> {
    Err(crate::Error::Input(
        "`schema` is not available in this build".into(),
    ))
}
