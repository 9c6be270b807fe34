//! The report as JSON: the model serialised as is, for CI gates.

use super::Report;

/// Pretty-printed JSON with a trailing newline.
pub fn render(report: &Report) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(report)?;
    s.push('\n');
    Ok(s)
}
