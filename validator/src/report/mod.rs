//! The result of a run, as one serialisable model rendered as text, JSON or HTML.
//!
//! The JSON form is this model as is (`schema_version` 1); docs/validator.md documents it.

pub mod html;
pub mod json;
pub mod text;

use serde::Serialize;

/// How a unit, a table or the whole run compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Source and target differ.
    Differ,
    /// Estimates differ by no more than the stated tolerance.
    WithinTolerance,
    /// Source and target agree.
    Equal,
}

impl Status {
    /// Short word for people.
    pub fn word(self) -> &'static str {
        match self {
            Status::Equal => "equal",
            Status::WithinTolerance => "within tolerance",
            Status::Differ => "DIFFERS",
        }
    }
}

/// Which command produced the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandKind {
    /// `counts`, exact or estimated.
    Counts,
    /// `checksum`.
    Checksum,
    /// `suggest-t`.
    SuggestT,
}

/// How a row differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowDiffKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// Same key on both sides, other values differ.
    Changed,
}

/// One differing row. Values are canonical text (`null` for NULL), aligned with the table's
/// `columns` and `key_columns`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RowDiff {
    /// Missing, extra or changed.
    pub kind: RowDiffKind,
    /// The key columns' values.
    pub key: Vec<Option<String>>,
    /// The row on the source (`null` when missing there).
    pub source: Option<Vec<Option<String>>>,
    /// The row on the target (`null` when missing there).
    pub target: Option<Vec<Option<String>>>,
    /// For `changed`: the names of the columns whose values differ.
    pub changed_columns: Vec<String>,
}

/// One compared unit: a chunk, a partition or a time bucket.
#[derive(Clone, Debug, Serialize)]
pub struct UnitReport {
    /// Chunk or partition name, or the bucket's start.
    pub label: String,
    /// The source relation read.
    pub relation: String,
    /// Range `[start, end)` as text; `null` when unbounded.
    pub start: Option<String>,
    /// End of the range (exclusive) as text.
    pub end: Option<String>,
    /// The same range as integers (microseconds since the epoch, or the integer time value).
    pub start_value: Option<i64>,
    /// End of the range as an integer.
    pub end_value: Option<i64>,
    /// Rows on the source (estimated in estimate mode).
    pub source_rows: i64,
    /// Rows on the target.
    pub target_rows: i64,
    /// `target_rows - source_rows`.
    pub difference: i64,
    /// Whether the unit agrees.
    pub status: Status,
    /// Whether the row counts are catalog estimates.
    pub estimated: bool,
    /// Checksum mode: each side's digest (sums of the row-hash words).
    pub source_digest: Option<String>,
    /// The target's digest.
    pub target_digest: Option<String>,
    /// Checksum mode: the differing rows found by bisection (capped by `--max-rows`).
    pub rows: Vec<RowDiff>,
    /// Whether more differing rows exist than are listed.
    pub rows_truncated: bool,
    /// TimescaleDB: the source chunk's compression (`none`, `partial`, `full`); `null` when
    /// the unit is not a chunk.
    pub source_compression: Option<dualwrite_common::catalog::Compression>,
    /// TimescaleDB: the target chunk's compression.
    pub target_compression: Option<dualwrite_common::catalog::Compression>,
}

/// suggest-t's answer for one table.
#[derive(Clone, Debug, Serialize)]
pub struct Suggestion {
    /// The candidate T, or `null` when none can be given.
    pub candidate: Option<String>,
    /// The candidate as an integer (microseconds since the epoch, or the integer time).
    pub candidate_value: Option<i64>,
    /// `high`, `medium`, `low` or `none`.
    pub confidence: String,
    /// Why, in a sentence or two.
    pub reason: String,
    /// The bucket width used.
    pub bucket: String,
    /// Buckets from the candidate on, all agreeing (counts and checksums).
    pub agreeing_buckets_after: usize,
    /// Of those, how many hold rows.
    pub nonempty_buckets_after: usize,
    /// Rows on the source from the candidate on.
    pub rows_after: i64,
    /// The last bucket before the candidate that differs.
    pub last_differing_bucket: Option<String>,
    /// Its rows on the source.
    pub last_differing_source_rows: Option<i64>,
    /// Its rows on the target.
    pub last_differing_target_rows: Option<i64>,
}

/// One table's results.
#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    /// `schema.table`.
    pub table: String,
    /// The column that orders rows in time.
    pub time_column: String,
    /// `timestamptz`, `timestamp`, `date`, `smallint`, `integer` or `bigint`.
    pub time_type: String,
    /// `hypertable`, `partitioned` or `plain`.
    pub kind: String,
    /// The worst status of its units.
    pub status: Status,
    /// Sum over units.
    pub source_rows: i64,
    /// Sum over units.
    pub target_rows: i64,
    /// Number of units.
    pub units_total: usize,
    /// Units that differ.
    pub units_differing: usize,
    /// Column names, for reading `rows`.
    pub columns: Vec<String>,
    /// The columns identifying a row (every column when the table has no key).
    pub key_columns: Vec<String>,
    /// Units in time order.
    pub units: Vec<UnitReport>,
    /// Facts a reader should know about this table's comparison.
    pub notes: Vec<String>,
    /// suggest-t's answer.
    pub suggestion: Option<Suggestion>,
}

/// Totals over every table.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The worst status of any table.
    pub status: Status,
    /// Tables compared.
    pub tables: usize,
    /// Units compared.
    pub units: usize,
    /// Units that differ.
    pub units_differing: usize,
    /// Rows on the source.
    pub source_rows: i64,
    /// Rows on the target.
    pub target_rows: i64,
    /// Differing rows listed in all units.
    pub rows_listed: usize,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Version of this JSON schema: 1.
    pub schema_version: u32,
    /// The command run.
    pub command: CommandKind,
    /// `exact`, `estimate`, `checksum` or `suggest-t`.
    pub mode: String,
    /// Checksum: `typed` or `text`.
    pub digest: Option<String>,
    /// Estimate mode: the relative tolerance within which counts are called equal.
    pub tolerance: Option<f64>,
    /// The source URL, password hidden.
    pub source: String,
    /// The target URL, password hidden.
    pub target: String,
    /// `--from` as given.
    pub from: Option<String>,
    /// `--until` as given.
    pub until: Option<String>,
    /// When the run began (RFC 3339, UTC).
    pub started_at: String,
    /// How long it took.
    pub elapsed_seconds: f64,
    /// Totals.
    pub summary: Summary,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Facts about the whole run (e.g. why the text digest was chosen).
    pub notes: Vec<String>,
}

impl Report {
    /// 0 when everything agrees (and suggest-t found a candidate everywhere), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        let missing_candidate = self.command == CommandKind::SuggestT
            && self
                .tables
                .iter()
                .any(|t| t.suggestion.as_ref().is_none_or(|s| s.candidate.is_none()));
        if missing_candidate
            || (self.command != CommandKind::SuggestT && self.summary.status == Status::Differ)
        {
            1
        } else {
            0
        }
    }

    /// Recompute table and run totals from the units.
    pub fn finish(&mut self) {
        for t in &mut self.tables {
            t.units.sort_by_key(|u| {
                (
                    u.start_value.is_none() && u.end_value.is_none(),
                    u.start_value,
                    u.label.clone(),
                )
            });
            t.source_rows = t.units.iter().map(|u| u.source_rows).sum();
            t.target_rows = t.units.iter().map(|u| u.target_rows).sum();
            t.units_total = t.units.len();
            t.units_differing = t
                .units
                .iter()
                .filter(|u| u.status == Status::Differ)
                .count();
            t.status = t
                .units
                .iter()
                .map(|u| u.status)
                .min()
                .unwrap_or(Status::Equal);
        }
        self.summary = Summary {
            status: self
                .tables
                .iter()
                .map(|t| t.status)
                .min()
                .unwrap_or(Status::Equal),
            tables: self.tables.len(),
            units: self.tables.iter().map(|t| t.units_total).sum(),
            units_differing: self.tables.iter().map(|t| t.units_differing).sum(),
            source_rows: self.tables.iter().map(|t| t.source_rows).sum(),
            target_rows: self.tables.iter().map(|t| t.target_rows).sum(),
            rows_listed: self
                .tables
                .iter()
                .flat_map(|t| &t.units)
                .map(|u| u.rows.len())
                .sum(),
        };
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    /// A table per table for a terminal.
    Text,
    /// The report model, for machines.
    Json,
    /// A self-contained page with heat strips.
    Html,
}

/// Render a report.
pub fn render(report: &Report, format: Format) -> Result<String, serde_json::Error> {
    Ok(match format {
        Format::Text => text::render(report),
        Format::Json => json::render(report)?,
        Format::Html => html::render(report),
    })
}
