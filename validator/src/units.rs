//! Units of comparison: which chunk, partition or time bucket of which table is compared, and
//! with what SQL on each side.
//!
//! Chunks and partitions come from the shared catalog discovery, run on both servers. A source
//! chunk is read on the target from the target chunk with the same bounds when there is one
//! (TimescaleDB chunk names may differ between servers), else from the target table with the
//! chunk's range as a condition. Target chunks with no source counterpart become units too, so
//! rows that only the target holds are seen.

use std::str::FromStr;

use dualwrite_common::catalog::{
    chunk_compression, discover, CatalogError, Chunk, Compression, DimensionSlice, TableKind,
    TableSpec, TimeSeriesTable, TimeType,
};
use dualwrite_common::ident::QualifiedName;

use crate::range::{is_empty_range, max_opt, min_opt, subtract};
use crate::session::Sides;
use crate::sql::and;

/// Default bucket for plain tables with a timestamp or date time column: one day.
pub const DEFAULT_PLAIN_BUCKET_MICROS: i64 = 86_400_000_000;

/// Planning failed: a table or an argument does not fit.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("source: {0}")]
    Source(CatalogError),
    #[error("target: {0}")]
    Target(CatalogError),
    #[error("{table}: --bucket {bucket}: {detail}")]
    Bucket {
        table: QualifiedName,
        bucket: String,
        detail: String,
    },
    #[error("{table}: --{flag} {value}: {detail}")]
    Bound {
        table: QualifiedName,
        flag: &'static str,
        value: String,
        detail: String,
    },
    #[error("no time-series tables found on the source (no hypertables or range-partitioned tables with a time key): name tables with --table schema.table:time_column")]
    NothingToCompare,
}

/// A `--bucket` value: a duration (`1h`, `15min`, `1day`) for timestamp and date columns, a
/// positive integer for integer time columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketArg(pub String);

impl FromStr for BucketArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return if n > 0 {
                Ok(BucketArg(s.to_string()))
            } else {
                Err(format!("bucket {s:?} must be positive"))
            };
        }
        match humantime::parse_duration(s) {
            Ok(d) if !d.is_zero() => Ok(BucketArg(s.to_string())),
            Ok(_) => Err(format!("bucket {s:?} must be positive")),
            Err(e) => Err(format!(
                "bucket {s:?} is neither a duration (e.g. 1h, 1day) nor an integer: {e}"
            )),
        }
    }
}

impl BucketArg {
    /// The width in the time column's units (microseconds, or the integer's own unit).
    pub fn width_for(&self, time_type: TimeType) -> Result<i64, String> {
        let integer = self.0.parse::<i64>().ok();
        match (time_type.is_integer(), integer) {
            (true, Some(n)) => Ok(n),
            (true, None) => {
                Err("the time column is an integer: give the bucket as an integer".into())
            }
            (false, Some(_)) => Err(
                "the time column is a timestamp: give the bucket as a duration such as 1h or 1day"
                    .into(),
            ),
            (false, None) => {
                let d = humantime::parse_duration(&self.0).map_err(|e| e.to_string())?;
                i64::try_from(d.as_micros()).map_err(|_| "bucket too large".to_string())
            }
        }
    }
}

/// One query shape run on both sides: a relation and a condition per side, counted whole or
/// grouped into buckets.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The source chunk or partition, or the table for plain tables.
    pub label: String,
    /// What is read on the source.
    pub source_rel: QualifiedName,
    /// What is read on the target.
    pub target_rel: QualifiedName,
    /// The source's `WHERE` condition (`true` for none).
    pub source_cond: String,
    /// The target's `WHERE` condition.
    pub target_cond: String,
    /// The range the scan covers (clipped to `--from`/`--until`); `None` is unbounded.
    pub start: Option<i64>,
    /// End of the range (exclusive).
    pub end: Option<i64>,
    /// When set, rows are grouped into buckets of this width (aligned on the epoch).
    pub bucket: Option<i64>,
    /// Whether each side's relation is read whole (no condition): estimates are possible.
    pub whole: bool,
    /// TimescaleDB: the source chunk's compression state (`None` when not a chunk).
    pub source_compression: Option<Compression>,
    /// TimescaleDB: the target chunk's compression state.
    pub target_compression: Option<Compression>,
}

/// What is compared for one table.
#[derive(Clone, Debug)]
pub struct TablePlan {
    /// The table as found on the source.
    pub table: TimeSeriesTable,
    /// The same table as found on the target.
    pub target: TimeSeriesTable,
    /// What is read, in time order.
    pub scans: Vec<Scan>,
    /// `--from`/`--until` as time values.
    pub from: Option<i64>,
    /// `--until` as a time value.
    pub until: Option<i64>,
    /// Facts a reader should know (clipping ignored for estimates, unmatched chunks...).
    pub notes: Vec<String>,
}

/// The selection flags shared by every command, resolved.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `--table` arguments.
    pub tables: Vec<TableSpec>,
    /// With named tables: also compare every discovered time-series table.
    pub all: bool,
    /// `--from` as given.
    pub from: Option<String>,
    /// `--until` as given.
    pub until: Option<String>,
    /// `--bucket`.
    pub bucket: Option<BucketArg>,
}

/// Discover the tables on both sides and plan their scans. `estimate` plans whole relations only.
pub async fn plan(
    sides: &Sides,
    sel: &Selection,
    estimate: bool,
) -> Result<Vec<TablePlan>, PlanError> {
    let source_tables = {
        let client = sides.source.pool.get().await;
        let mut found = if sel.tables.is_empty() || sel.all {
            discover(&client, &[]).await.map_err(PlanError::Source)?
        } else {
            Vec::new()
        };
        if !sel.tables.is_empty() {
            for t in discover(&client, &sel.tables)
                .await
                .map_err(PlanError::Source)?
            {
                if !found.iter().any(|f| f.table == t.table) {
                    found.push(t);
                }
            }
        }
        found
    };
    if source_tables.is_empty() {
        return Err(PlanError::NothingToCompare);
    }
    let specs: Vec<TableSpec> = source_tables
        .iter()
        .map(|t| TableSpec {
            table: t.table.clone(),
            time_column: Some(t.time_column.clone()),
        })
        .collect();
    let target_tables = {
        let client = sides.target.pool.get().await;
        discover(&client, &specs).await.map_err(PlanError::Target)?
    };
    let mut plans: Vec<TablePlan> = source_tables
        .into_iter()
        .zip(target_tables)
        .map(|(s, t)| plan_table(s, t, sel, estimate))
        .collect::<Result<_, _>>()?;
    // Each chunk's compression state, reported per unit.
    if plans.iter().any(|p| p.table.kind == TableKind::Hypertable) {
        let on_source = {
            let client = sides.source.pool.get().await;
            chunk_compression(&client)
                .await
                .map_err(|e| PlanError::Source(CatalogError::Query(e)))?
        };
        let on_target = {
            let client = sides.target.pool.get().await;
            chunk_compression(&client)
                .await
                .map_err(|e| PlanError::Target(CatalogError::Query(e)))?
        };
        for scan in plans.iter_mut().flat_map(|p| p.scans.iter_mut()) {
            scan.source_compression = on_source.get(&scan.source_rel).copied();
            scan.target_compression = on_target.get(&scan.target_rel).copied();
        }
    }
    Ok(plans)
}

fn bound(
    table: &TimeSeriesTable,
    flag: &'static str,
    value: &Option<String>,
) -> Result<Option<i64>, PlanError> {
    value
        .as_deref()
        .map(|v| {
            table.time_type.parse(v).map_err(|detail| PlanError::Bound {
                table: table.table.clone(),
                flag,
                value: v.to_string(),
                detail,
            })
        })
        .transpose()
}

/// Plan one table from its source and target descriptions.
pub fn plan_table(
    source: TimeSeriesTable,
    target: TimeSeriesTable,
    sel: &Selection,
    estimate: bool,
) -> Result<TablePlan, PlanError> {
    let from = bound(&source, "from", &sel.from)?;
    let until = bound(&source, "until", &sel.until)?;
    let width = match &sel.bucket {
        Some(b) => Some(
            b.width_for(source.time_type)
                .map_err(|detail| PlanError::Bucket {
                    table: source.table.clone(),
                    bucket: b.0.clone(),
                    detail,
                })?,
        ),
        None => None,
    };
    let mut notes = Vec::new();
    let mut scans = Vec::new();
    let clip_cond = source.range_condition(from, until);

    if source.chunks.is_empty() {
        let bucket = match (estimate, width) {
            (true, _) => None,
            (false, Some(w)) => Some(w),
            (false, None) if !source.time_type.is_integer() => Some(DEFAULT_PLAIN_BUCKET_MICROS),
            (false, None) => None,
        };
        let cond = if estimate {
            "true".to_string()
        } else {
            clip_cond.clone()
        };
        if estimate && (from.is_some() || until.is_some()) {
            notes.push(
                "estimates cover the whole table: --from/--until cannot clip a catalog estimate"
                    .into(),
            );
        }
        // A table without chunks on the source may still be partitioned on the target.
        scans.push(Scan {
            label: source.table.name.clone(),
            source_rel: source.table.clone(),
            target_rel: target.table.clone(),
            source_cond: cond.clone(),
            target_cond: cond.clone(),
            start: if estimate { None } else { from },
            end: if estimate { None } else { until },
            bucket,
            whole: cond == "true",
            source_compression: None,
            target_compression: None,
        });
        return Ok(TablePlan {
            table: source,
            target,
            scans,
            from,
            until,
            notes,
        });
    }

    if !space_layouts_compatible(&source, &target) {
        notes.push(format!(
            "the source's and the target's space partitions of {} differ: compared by time range across all chunks",
            source.table
        ));
        let scans = time_range_scans(&source, &target, from, until, width, estimate);
        return Ok(TablePlan {
            table: source,
            target,
            scans,
            from,
            until,
            notes,
        });
    }

    let regular: Vec<&Chunk> = source.chunks.iter().filter(|c| !c.is_default).collect();
    let source_ranges: Vec<(Option<i64>, Option<i64>)> =
        regular.iter().map(|c| (c.start, c.end)).collect();
    // Ranges the target has chunks for and the source has none: read on both sides by range.
    // With space partitioning, a target chunk is covered only by source chunks in the same
    // space slices.
    let mut extra: Vec<(&Chunk, Option<i64>, Option<i64>)> = Vec::new();
    for t in target.chunks.iter().filter(|t| !t.is_default) {
        let same_space: Vec<(Option<i64>, Option<i64>)> = regular
            .iter()
            .filter(|c| c.space_key() == t.space_key())
            .map(|c| (c.start, c.end))
            .collect();
        for (a, b) in subtract((t.start, t.end), &same_space) {
            let (a, b) = (max_opt(a, from), min_opt(b, until));
            if !is_empty_range(a, b) {
                extra.push((t, a, b));
            }
        }
    }
    let any_of = |ranges: &[(Option<i64>, Option<i64>)]| -> String {
        let parts: Vec<String> = ranges
            .iter()
            .map(|(a, b)| format!("({})", source.range_condition(*a, *b)))
            .collect();
        if parts.is_empty() {
            "false".to_string()
        } else {
            parts.join(" OR ")
        }
    };
    let extra_ranges: Vec<(Option<i64>, Option<i64>)> =
        extra.iter().map(|(_, a, b)| (*a, *b)).collect();
    let target_ranges: Vec<(Option<i64>, Option<i64>)> = target
        .chunks
        .iter()
        .filter(|t| !t.is_default)
        .map(|t| (t.start, t.end))
        .collect();
    let same_layout = {
        let (mut a, mut b) = (source_ranges.clone(), target_ranges.clone());
        a.sort();
        b.sort();
        a == b
    };

    for chunk in &source.chunks {
        let (start, end) = if chunk.is_default {
            (from, until)
        } else {
            (max_opt(chunk.start, from), min_opt(chunk.end, until))
        };
        if is_empty_range(start, end) {
            continue;
        }
        let clipped = !chunk.is_default && (start != chunk.start || end != chunk.end);
        let mut own_cond = if chunk.is_default || clipped {
            // For the default partition, (start, end) is the --from/--until range.
            source.range_condition(start, end)
        } else {
            "true".to_string()
        };
        if chunk.is_default && !extra_ranges.is_empty() {
            // Rows in ranges only the target partitions are compared in those units.
            own_cond = and(&own_cond, &format!("NOT ({})", any_of(&extra_ranges)));
        }
        // A chunk is matched by its range in every dimension: hypertable chunks that share a
        // time range hold different rows when the table is space partitioned.
        let matched = target.chunks.iter().find(|t| {
            t.is_default == chunk.is_default
                && t.start == chunk.start
                && t.end == chunk.end
                && t.slices == chunk.slices
                && (!chunk.is_default || same_layout)
        });
        let (target_rel, target_cond) = match matched {
            Some(t) => (t.relation.clone(), own_cond.clone()),
            None if chunk.is_default => {
                // Rows the source's default partition holds: outside every regular range.
                let mut covered = source_ranges.clone();
                covered.extend(extra_ranges.iter().copied());
                let cond = format!("NOT ({})", any_of(&covered));
                notes.push(format!(
                    "the target's partitions differ from the source's: rows of {} are read from {} outside the other partitions' ranges",
                    chunk.relation, target.table
                ));
                (
                    target.table.clone(),
                    and(&cond, &source.range_condition(start, end)),
                )
            }
            None => (
                target.table.clone(),
                and(
                    &source.range_condition(start, end),
                    &chunk.space_condition(),
                ),
            ),
        };
        if matched.is_none() && !chunk.is_default && source.kind == TableKind::Partitioned {
            notes.push(format!(
                "the target has no partition with the bounds of {}: its rows are read from {} by range",
                chunk.relation, target.table
            ));
        }
        let bucket = match width {
            Some(w) if !estimate => match (chunk.start, chunk.end) {
                (Some(a), Some(b)) if b - a <= w => None,
                _ => Some(w),
            },
            _ => None,
        };
        let label = chunk.relation.name.clone();
        scans.push(Scan {
            label,
            source_rel: chunk.relation.clone(),
            whole: own_cond == "true" && target_cond == "true",
            target_rel,
            source_cond: own_cond,
            target_cond,
            start,
            end,
            bucket,
            source_compression: None,
            target_compression: None,
        });
    }
    // Target chunks (or their parts) the source has no chunk for: rows there are extra on the
    // target unless the source holds them elsewhere (its default partition).
    for (t, start, end) in extra {
        notes.push(format!(
            "the target has a chunk for a range the source has none for: {}",
            t.relation
        ));
        let cond = source.range_condition(start, end);
        scans.push(Scan {
            label: format!("{} (target only)", t.relation.name),
            source_rel: source.table.clone(),
            target_rel: t.relation.clone(),
            source_cond: and(&cond, &t.space_condition()),
            target_cond: cond,
            start,
            end,
            bucket: if estimate { None } else { width },
            whole: false,
            source_compression: None,
            target_compression: None,
        });
    }
    if estimate && (from.is_some() || until.is_some()) && scans.iter().any(|s| !s.whole) {
        notes.push(
            "chunks cut by --from/--until are counted exactly: an estimate cannot be clipped"
                .into(),
        );
    }
    scans.sort_by_key(|s| (s.start.is_none() && s.end.is_none(), s.start));
    Ok(TablePlan {
        table: source,
        target,
        scans,
        from,
        until,
        notes,
    })
}

/// Whether chunks can be matched by their space slices: every chunk of either side has slices
/// in the same columns, and slices of one column are either the same range or disjoint (not
/// the case when the number of hash partitions differs between the sides or changed over time).
fn space_layouts_compatible(source: &TimeSeriesTable, target: &TimeSeriesTable) -> bool {
    let all: Vec<&Chunk> = source.chunks.iter().chain(&target.chunks).collect();
    let Some(first) = all.first() else {
        return true;
    };
    let columns =
        |c: &Chunk| -> Vec<String> { c.slices.iter().map(|s| s.column.clone()).collect() };
    let want = columns(first);
    if want.is_empty() && all.iter().all(|c| c.slices.is_empty()) {
        return true;
    }
    if all.iter().any(|c| columns(c) != want) {
        return false;
    }
    let mut distinct: Vec<&DimensionSlice> = all.iter().flat_map(|c| c.slices.iter()).collect();
    distinct.sort();
    distinct.dedup();
    distinct
        .iter()
        .enumerate()
        .all(|(i, a)| distinct[i + 1..].iter().all(|b| !a.overlaps_differently(b)))
}

/// Units by time range over the whole table on both sides: the chunks' time ranges (both
/// sides', merged where they overlap), each read from both hypertables with a range condition.
fn time_range_scans(
    source: &TimeSeriesTable,
    target: &TimeSeriesTable,
    from: Option<i64>,
    until: Option<i64>,
    width: Option<i64>,
    estimate: bool,
) -> Vec<Scan> {
    let lo = |v: Option<i64>| v.unwrap_or(i64::MIN);
    let mut ranges: Vec<(Option<i64>, Option<i64>)> = source
        .chunks
        .iter()
        .chain(&target.chunks)
        .map(|c| (c.start, c.end))
        .collect();
    ranges.sort_by_key(|(a, _)| lo(*a));
    let mut merged: Vec<(Option<i64>, Option<i64>)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some((_, end)) if end.is_none_or(|e| lo(a) < e) => {
                *end = match (*end, b) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    _ => None,
                };
            }
            _ => merged.push((a, b)),
        }
    }
    merged
        .into_iter()
        .filter_map(|(a, b)| {
            let (start, end) = (max_opt(a, from), min_opt(b, until));
            if is_empty_range(start, end) {
                return None;
            }
            let cond = source.range_condition(start, end);
            let bucket = match width {
                Some(w) if !estimate => match (start, end) {
                    (Some(a), Some(b)) if b - a <= w => None,
                    _ => Some(w),
                },
                _ => None,
            };
            let label = match (start, end) {
                (Some(a), Some(b)) => format!(
                    "{} to {}",
                    source.time_type.display(a),
                    source.time_type.display(b)
                ),
                (Some(a), None) => format!("from {}", source.time_type.display(a)),
                (None, Some(b)) => format!("before {}", source.time_type.display(b)),
                (None, None) => source.table.name.clone(),
            };
            Some(Scan {
                label,
                source_rel: source.table.clone(),
                target_rel: target.table.clone(),
                source_cond: cond.clone(),
                target_cond: cond,
                start,
                end,
                bucket,
                whole: false,
                source_compression: None,
                target_compression: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(chunks: Vec<(i64, i64)>) -> TimeSeriesTable {
        TimeSeriesTable {
            table: QualifiedName::new("public", "m"),
            time_column: "ts".into(),
            time_type: TimeType::Timestamptz,
            kind: TableKind::Partitioned,
            chunks: chunks
                .into_iter()
                .enumerate()
                .map(|(i, (a, b))| Chunk {
                    relation: QualifiedName::new("public", format!("m_{i}")),
                    start: Some(a),
                    end: Some(b),
                    is_compressed: false,
                    is_default: false,
                    slices: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn buckets_parse() {
        let b: BucketArg = "1h".parse().unwrap();
        assert_eq!(b.width_for(TimeType::Timestamptz).unwrap(), 3_600_000_000);
        assert!(b.width_for(TimeType::BigInt).is_err());
        let n: BucketArg = "100".parse().unwrap();
        assert_eq!(n.width_for(TimeType::Integer).unwrap(), 100);
        assert!("0".parse::<BucketArg>().is_err());
        assert!("soon".parse::<BucketArg>().is_err());
    }

    #[test]
    fn clips_and_matches_chunks() {
        let day = DEFAULT_PLAIN_BUCKET_MICROS;
        let s = table(vec![(0, day), (day, 2 * day), (2 * day, 3 * day)]);
        let mut t = table(vec![(0, day), (day, 2 * day)]);
        t.chunks[1].relation.name = "other".into();
        let sel = Selection {
            from: Some("1970-01-01 12:00:00+00".into()),
            ..Selection::default()
        };
        let p = plan_table(s, t, &sel, false).unwrap();
        assert_eq!(p.scans.len(), 3);
        assert_eq!(p.scans[0].start, Some(day / 2));
        assert!(p.scans[0].source_cond.contains(">="));
        assert!(!p.scans[0].whole);
        assert_eq!(p.scans[1].target_rel.name, "other");
        assert!(p.scans[1].whole);
        // The third chunk has no target chunk: read by range from the target table.
        assert_eq!(p.scans[2].target_rel.name, "m");
        assert!(p.scans[2].target_cond.contains("<"));
    }

    #[test]
    fn different_layouts_cover_each_row_once() {
        let day = DEFAULT_PLAIN_BUCKET_MICROS;
        // Source: two daily partitions and a default; target: one two-day partition, a third
        // day, and a default.
        let mut s = table(vec![(0, day), (day, 2 * day)]);
        s.chunks.push(Chunk {
            relation: QualifiedName::new("public", "m_default"),
            start: None,
            end: None,
            is_compressed: false,
            is_default: true,
            slices: Vec::new(),
        });
        let mut t = table(vec![(0, 2 * day), (2 * day, 3 * day)]);
        t.chunks.push(s.chunks[2].clone());
        let p = plan_table(s, t, &Selection::default(), false).unwrap();
        let labels: Vec<&str> = p.scans.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, vec!["m_0", "m_1", "m_1 (target only)", "m_default"]);
        // Daily source partitions are read from the target table by range.
        assert_eq!(p.scans[0].target_rel.name, "m");
        // The third day is compared on its own and left out of the default unit on both sides.
        assert_eq!(p.scans[2].start, Some(2 * day));
        let default = &p.scans[3];
        assert!(
            default.source_cond.starts_with("NOT"),
            "{}",
            default.source_cond
        );
        assert_eq!(default.target_rel.name, "m");
        assert!(
            default.target_cond.contains("NOT"),
            "{}",
            default.target_cond
        );
    }

    /// A hypertable with one day in `n` hash slices; chunk names given in order.
    fn hashed(n: i64, names: &[&str]) -> TimeSeriesTable {
        let day = DEFAULT_PLAIN_BUCKET_MICROS;
        let width = i64::from(i32::MAX) / n;
        let mut t = table(vec![(0, day); n as usize]);
        t.kind = TableKind::Hypertable;
        for (i, c) in t.chunks.iter_mut().enumerate() {
            let i = i as i64;
            c.relation.name = names[i as usize].to_string();
            c.slices = vec![DimensionSlice {
                column: "device".into(),
                value_expr: "h(device)".into(),
                start: (i > 0).then_some(i * width),
                end: (i < n - 1).then_some((i + 1) * width),
            }];
        }
        t
    }

    #[test]
    fn space_partitioned_chunks_match_by_every_dimension() {
        let s = hashed(2, &["s_a", "s_b"]);
        let mut t = hashed(2, &["t_a", "t_b"]);
        t.chunks.reverse();
        let p = plan_table(s, t, &Selection::default(), false).unwrap();
        let pairs: Vec<(&str, &str)> = p
            .scans
            .iter()
            .map(|s| (s.source_rel.name.as_str(), s.target_rel.name.as_str()))
            .collect();
        assert_eq!(pairs, vec![("s_a", "t_a"), ("s_b", "t_b")]);
        assert!(p.scans.iter().all(|s| s.whole));

        // A missing target chunk is read from the hypertable by time range and slice.
        let s = hashed(2, &["s_a", "s_b"]);
        let mut t = hashed(2, &["t_a", "t_b"]);
        t.chunks.remove(1);
        let p = plan_table(s, t, &Selection::default(), false).unwrap();
        assert_eq!(p.scans[1].target_rel.name, "m");
        assert!(
            p.scans[1].target_cond.contains("h(device) >= "),
            "{}",
            p.scans[1].target_cond
        );

        // Two hash partitions against three: by time range over whole tables.
        let p = plan_table(
            hashed(2, &["s_a", "s_b"]),
            hashed(3, &["t_a", "t_b", "t_c"]),
            &Selection::default(),
            false,
        )
        .unwrap();
        assert_eq!(p.scans.len(), 1);
        assert_eq!(
            (
                p.scans[0].source_rel.name.as_str(),
                p.scans[0].target_rel.name.as_str()
            ),
            ("m", "m")
        );
        assert!(p.notes[0].contains("space partitions"), "{:?}", p.notes);
    }

    #[test]
    fn fine_buckets_group_chunks() {
        let day = DEFAULT_PLAIN_BUCKET_MICROS;
        let s = table(vec![(0, day)]);
        let sel = Selection {
            bucket: Some("1h".parse().unwrap()),
            ..Selection::default()
        };
        let p = plan_table(s.clone(), s.clone(), &sel, false).unwrap();
        assert_eq!(p.scans[0].bucket, Some(3_600_000_000));
        let p = plan_table(s.clone(), s, &sel, true).unwrap();
        assert_eq!(p.scans[0].bucket, None);
    }
}
