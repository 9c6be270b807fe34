//! Row counts per unit: exact `count(*)` on both sides in parallel, or catalog estimates
//! after ANALYZE (`pg_class.reltuples` scaled to the relation's current size, as the planner
//! does; `approximate_row_count` on TimescaleDB hypertables).

use dualwrite_common::catalog::TableKind;
use dualwrite_common::ident::{quote_ident, quote_literal, QualifiedName};
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::measure::{measure_both, Group, Measure, Pairing};
use crate::progress::Progress;
use crate::report::{Status, TableReport, UnitReport};
use crate::session::{SessionError, Side, Sides};
use crate::units::{Scan, TablePlan};

/// Default relative tolerance of `--estimate`.
pub const DEFAULT_TOLERANCE: f64 = 0.05;

/// Counting failed.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// How counts are taken.
#[derive(Clone, Copy, Debug)]
pub struct CountOptions {
    /// Compare catalog estimates instead of `count(*)`.
    pub estimate: bool,
    /// Run ANALYZE before reading estimates.
    pub analyze: bool,
    /// Relative difference under which estimates are called equal.
    pub tolerance: f64,
    /// Scans in flight.
    pub jobs: usize,
}

/// An empty table report for a plan, filled by the commands.
pub fn table_report(plan: &TablePlan) -> TableReport {
    TableReport {
        table: plan.table.table.to_string(),
        time_column: plan.table.time_column.clone(),
        time_type: plan.table.time_type.sql_name().to_string(),
        kind: match plan.table.kind {
            TableKind::Hypertable => "hypertable",
            TableKind::Partitioned => "partitioned",
            TableKind::Plain => "plain",
        }
        .to_string(),
        status: Status::Equal,
        source_rows: 0,
        target_rows: 0,
        units_total: 0,
        units_differing: 0,
        columns: Vec::new(),
        key_columns: Vec::new(),
        units: Vec::new(),
        notes: plan.notes.clone(),
        suggestion: None,
    }
}

/// The units a scan's groups stand for.
pub fn units_of(plan: &TablePlan, scan: &Scan, pairings: &[Pairing]) -> Vec<UnitReport> {
    let tt = plan.table.time_type;
    pairings
        .iter()
        .map(|p| {
            let (start, end, label) = match scan.bucket {
                Some(w) => {
                    let start = scan.start.map_or(p.key, |s| s.max(p.key));
                    let end = scan.end.map_or(p.key + w, |e| e.min(p.key + w));
                    let label = if scan.source_rel == plan.table.table {
                        tt.display(start)
                    } else {
                        format!("{} @ {}", scan.label, tt.display(start))
                    };
                    (Some(start), Some(end), label)
                }
                None => (scan.start, scan.end, scan.label.clone()),
            };
            let status = if p.agrees() {
                Status::Equal
            } else {
                Status::Differ
            };
            UnitReport {
                label,
                relation: scan.source_rel.to_string(),
                start: start.map(|v| tt.display(v)),
                end: end.map(|v| tt.display(v)),
                start_value: start,
                end_value: end,
                source_rows: p.source.rows,
                target_rows: p.target.rows,
                difference: p.target.rows - p.source.rows,
                status,
                estimated: false,
                source_digest: (!p.source.digest.is_empty()).then(|| p.source.digest.clone()),
                target_digest: (!p.target.digest.is_empty()).then(|| p.target.digest.clone()),
                rows: Vec::new(),
                rows_truncated: false,
                source_compression: scan.source_compression,
                target_compression: scan.target_compression,
            }
        })
        .collect()
}

/// Exact counts of every scan of every plan.
pub async fn exact(
    sides: &Sides,
    plans: &[TablePlan],
    jobs: usize,
    progress: &Progress,
) -> Result<Vec<TableReport>, CountError> {
    let work: Vec<(usize, &Scan)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.scans.iter().map(move |s| (i, s)))
        .collect();
    let results: Vec<(usize, Vec<UnitReport>)> = stream::iter(work)
        .map(|(i, scan)| async move {
            let plan = &plans[i];
            let group = match scan.bucket {
                Some(width) => Group::Time { origin: 0, width },
                None => Group::None,
            };
            let pairings = measure_both(
                sides,
                &plan.table,
                &plan.target,
                &scan.source_rel,
                &scan.target_rel,
                &scan.source_cond,
                &scan.target_cond,
                &Measure::Count,
                &group,
                &format!("counting rows of {}", scan.label),
            )
            .await?;
            let units = units_of(plan, scan, &pairings);
            let rows: i64 = units.iter().map(|u| u.source_rows + u.target_rows).sum();
            progress.done(1, rows.max(0) as u64);
            Ok::<_, CountError>((i, units))
        })
        .buffer_unordered(jobs.max(1))
        .try_collect()
        .await?;
    let mut reports: Vec<TableReport> = plans.iter().map(table_report).collect();
    for (i, units) in results {
        reports[i].units.extend(units);
    }
    Ok(reports)
}

/// The SQL of a relation's row estimate: TimescaleDB's `approximate_row_count` (in the
/// extension's schema, which need not be on the search path) for hypertable chunks (it counts
/// compressed rows), else `reltuples` scaled to the current size as the planner does; NULL
/// when never analyzed.
pub fn estimate_sql(rel: &QualifiedName, timescaledb_schema: Option<&str>) -> String {
    let lit = quote_literal(&rel.quoted());
    if let Some(schema) = timescaledb_schema {
        format!(
            "SELECT {}.approximate_row_count({lit}::regclass)::int8",
            quote_ident(schema)
        )
    } else {
        format!(
            "SELECT CASE WHEN c.reltuples < 0 THEN NULL
                         WHEN c.relpages = 0 THEN c.reltuples::int8
                         ELSE round(c.reltuples / c.relpages
                              * (pg_relation_size(c.oid) / current_setting('block_size')::int8))::int8 END
             FROM pg_class c WHERE c.oid = {lit}::regclass"
        )
    }
}

/// The planner's estimate of a relation's rows; `None` when it was never analyzed.
async fn estimate_relation(
    side: &Side,
    rel: &QualifiedName,
    hypertable: bool,
) -> Result<Option<i64>, SessionError> {
    let schema = side
        .timescaledb_schema
        .as_deref()
        .filter(|_| hypertable && side.timescaledb.is_some());
    let sql = estimate_sql(rel, schema);
    let rows = side
        .query(&sql, &format!("reading the row estimate of {rel}"))
        .await?;
    Ok(rows.first().and_then(|r| r.get::<_, Option<i64>>(0)))
}

/// Estimated counts: ANALYZE (unless disabled) and read the catalog for each whole relation;
/// scans cut by `--from`/`--until` are counted exactly.
pub async fn estimate(
    sides: &Sides,
    plans: &[TablePlan],
    opts: CountOptions,
    progress: &Progress,
) -> Result<Vec<TableReport>, CountError> {
    let work: Vec<(usize, &Scan)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.scans.iter().map(move |s| (i, s)))
        .collect();
    let results: Vec<(usize, Vec<UnitReport>, Option<String>)> = stream::iter(work)
        .map(|(i, scan)| async move {
            let plan = &plans[i];
            if !scan.whole {
                let pairings = measure_both(
                    sides,
                    &plan.table,
                    &plan.target,
                    &scan.source_rel,
                    &scan.target_rel,
                    &scan.source_cond,
                    &scan.target_cond,
                    &Measure::Count,
                    &Group::None,
                    &format!("counting rows of {}", scan.label),
                )
                .await?;
                let rows: i64 = pairings.iter().map(|p| p.source.rows + p.target.rows).sum();
                progress.done(1, rows.max(0) as u64);
                return Ok((i, units_of(plan, scan, &pairings), None));
            }
            // TimescaleDB's estimate counts compressed rows too; plain reltuples would not.
            let hyper = plan.table.kind == TableKind::Hypertable;
            if opts.analyze {
                let (sa, ta) = (
                    format!("ANALYZE {}", scan.source_rel.quoted()),
                    format!("ANALYZE {}", scan.target_rel.quoted()),
                );
                let (sw, tw) = (
                    format!("ANALYZE {}", scan.source_rel),
                    format!("ANALYZE {}", scan.target_rel),
                );
                let (a, b) = tokio::join!(
                    sides.source.execute(&sa, &sw),
                    sides.target.execute(&ta, &tw)
                );
                a?;
                b?;
            }
            let (s, t) = tokio::join!(
                estimate_relation(&sides.source, &scan.source_rel, hyper),
                estimate_relation(&sides.target, &scan.target_rel, hyper),
            );
            let (s, t) = (s?, t?);
            let mut note = None;
            let (s, t) = match (s, t) {
                (Some(s), Some(t)) => (s, t),
                _ => {
                    note = Some(format!(
                        "{} was never analyzed on one side: counted exactly",
                        scan.label
                    ));
                    let p = measure_both(
                        sides,
                        &plan.table,
                        &plan.target,
                        &scan.source_rel,
                        &scan.target_rel,
                        &scan.source_cond,
                        &scan.target_cond,
                        &Measure::Count,
                        &Group::None,
                        &format!("counting rows of {}", scan.label),
                    )
                    .await?;
                    (
                        p.iter().map(|x| x.source.rows).sum(),
                        p.iter().map(|x| x.target.rows).sum(),
                    )
                }
            };
            let mut unit = units_of(
                plan,
                scan,
                &[Pairing {
                    key: 0,
                    source: crate::measure::Cell {
                        rows: s,
                        digest: String::new(),
                    },
                    target: crate::measure::Cell {
                        rows: t,
                        digest: String::new(),
                    },
                }],
            );
            for u in &mut unit {
                u.estimated = note.is_none();
                u.status = tolerance_status(s, t, opts.tolerance);
            }
            progress.done(1, (s + t).max(0) as u64);
            Ok::<_, CountError>((i, unit, note))
        })
        .buffer_unordered(opts.jobs.max(1))
        .try_collect()
        .await?;
    let mut reports: Vec<TableReport> = plans.iter().map(table_report).collect();
    for (i, units, note) in results {
        reports[i].units.extend(units);
        reports[i].notes.extend(note);
    }
    Ok(reports)
}

/// Equal, within `tolerance` of the larger count, or different.
pub fn tolerance_status(source: i64, target: i64, tolerance: f64) -> Status {
    if source == target {
        Status::Equal
    } else if ((source - target).abs() as f64) <= tolerance * source.max(target) as f64 {
        Status::WithinTolerance
    } else {
        Status::Differ
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_sql_per_kind() {
        let chunk = QualifiedName::new("_timescaledb_internal", "_hyper_1_2_chunk");
        assert_eq!(
            estimate_sql(&chunk, Some("ext")),
            "SELECT \"ext\".approximate_row_count('\"_timescaledb_internal\".\"_hyper_1_2_chunk\"'::regclass)::int8"
        );
        let part = QualifiedName::new("public", "it's");
        let sql = estimate_sql(&part, None);
        assert!(sql.contains("reltuples / c.relpages"), "{sql}");
        assert!(sql.contains("'\"public\".\"it''s\"'::regclass"), "{sql}");
    }

    #[test]
    fn tolerance() {
        assert_eq!(tolerance_status(100, 100, 0.05), Status::Equal);
        assert_eq!(tolerance_status(100, 96, 0.05), Status::WithinTolerance);
        assert_eq!(tolerance_status(100, 90, 0.05), Status::Differ);
        assert_eq!(tolerance_status(0, 1, 0.05), Status::Differ);
    }
}
