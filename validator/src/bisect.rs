//! Narrowing a differing unit down to small regions: split by time into 32 sub-ranges (one
//! grouped digest query per side), keep the sub-ranges that differ, and when time cannot be
//! split further (many rows at one instant), split by bits of the key's hash.

use dualwrite_common::catalog::{TimeSeriesTable, TimeType};

use crate::measure::{key_hash_sql, measure_both, DigestKind, Group, Measure};
use crate::schema::TableShape;
use crate::session::{SessionError, Sides};
use crate::sql::{and, micros_expr, where_clause};
use crate::units::Scan;

const FANOUT: i64 = 32;
const DAY_MICROS: i64 = 86_400_000_000;
/// Upper bound on digest queries per unit, so a unit where everything differs stays cheap.
const MAX_QUERIES: usize = 200;

/// A region of a unit: a time range and, after key splits, a filter on the key hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Start of the time range.
    pub start: i64,
    /// End of the time range (exclusive).
    pub end: i64,
    /// Low `bits` of the key hash equal `value`.
    pub key_bits: u32,
    /// The value those bits must hold.
    pub key_value: i64,
    /// Rows in the region on the side that has more.
    pub rows: i64,
}

impl Region {
    /// The region as a SQL condition on top of a scan's condition.
    pub fn condition(
        &self,
        table: &TimeSeriesTable,
        shape: &TableShape,
        kind: DigestKind,
        base: &str,
    ) -> String {
        let mut cond = and(
            base,
            &table.range_condition(Some(self.start), Some(self.end)),
        );
        if self.key_bits > 0 {
            let mask: i64 = (1i64 << self.key_bits) - 1;
            cond = and(
                &cond,
                &format!(
                    "({} & {mask}) = {}",
                    key_hash_sql(shape, kind),
                    self.key_value
                ),
            );
        }
        cond
    }
}

/// The smallest step of the time column: a day for dates, 1 otherwise.
fn grain(tt: TimeType) -> i64 {
    if tt == TimeType::Date {
        DAY_MICROS
    } else {
        1
    }
}

/// The range a possibly unbounded unit really spans: from the smallest to past the largest
/// time on either side. `None` when both sides are empty.
pub async fn data_bounds(
    sides: &Sides,
    table: &TimeSeriesTable,
    scan: &Scan,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<Option<(i64, i64)>, SessionError> {
    if let (Some(a), Some(b)) = (start, end) {
        return Ok(Some((a, b)));
    }
    let m = micros_expr(table.time_type, &table.time_column);
    let q = |rel: &str, cond: &str| {
        format!("SELECT min({m}), max({m}) FROM {rel}{}", where_clause(cond))
    };
    let (s, t) = sides
        .query_both(
            &q(&scan.source_rel.quoted(), &scan.source_cond),
            &q(&scan.target_rel.quoted(), &scan.target_cond),
            "finding the time range of a differing unit",
        )
        .await?;
    let mut lo: Option<i64> = None;
    let mut hi: Option<i64> = None;
    for r in s.iter().chain(t.iter()) {
        if let Some(v) = r.get::<_, Option<i64>>(0) {
            lo = Some(lo.map_or(v, |l| l.min(v)));
        }
        if let Some(v) = r.get::<_, Option<i64>>(1) {
            hi = Some(hi.map_or(v, |h| h.max(v)));
        }
    }
    let g = grain(table.time_type);
    Ok(match (lo, hi) {
        (Some(l), Some(h)) => Some((start.unwrap_or(l), end.unwrap_or(h + g))),
        _ => None,
    })
}

/// What bisection found.
#[derive(Clone, Debug, Default)]
pub struct Located {
    /// Differing regions in time order, each holding at most `threshold` rows on either side
    /// (or as small as splitting can make them).
    pub regions: Vec<Region>,
    /// False when the search stopped early (enough regions found, or the query budget spent):
    /// more differing regions may exist.
    pub complete: bool,
}

/// Bisect `[start, end)`, earliest time first, until `max_regions` differing regions are found
/// or nothing differing is left to split.
#[allow(clippy::too_many_arguments)]
pub async fn locate(
    sides: &Sides,
    table: &TimeSeriesTable,
    target_table: &TimeSeriesTable,
    shape: &TableShape,
    kind: DigestKind,
    scan: &Scan,
    start: i64,
    end: i64,
    rows: i64,
    threshold: i64,
    max_regions: usize,
) -> Result<Located, SessionError> {
    let first = Region {
        start,
        end,
        key_bits: 0,
        key_value: 0,
        rows,
    };
    if rows <= threshold {
        return Ok(Located {
            regions: vec![first],
            complete: true,
        });
    }
    let g = grain(table.time_type);
    let mut queue = vec![first];
    let mut leaves = Vec::new();
    let mut queries = 0;
    let measure = Measure::Digest(kind, shape);
    while let Some(r) = queue.pop() {
        if queries >= MAX_QUERIES || leaves.len() >= max_regions.max(1) {
            queue.push(r);
            break;
        }
        let by_time = r.key_bits == 0 && r.end - r.start > g;
        let group = if by_time {
            let span = r.end - r.start;
            let width = ((span + FANOUT - 1) / FANOUT).max(g);
            let width = (width + g - 1) / g * g;
            Group::Time {
                origin: r.start,
                width,
            }
        } else if r.key_bits + 5 <= 60 {
            Group::KeyHash {
                shift: r.key_bits,
                shape,
                kind,
            }
        } else {
            leaves.push(r);
            continue;
        };
        queries += 1;
        let pairings = measure_both(
            sides,
            table,
            target_table,
            &scan.source_rel,
            &scan.target_rel,
            &r.condition(table, shape, kind, &scan.source_cond),
            &r.condition(table, shape, kind, &scan.target_cond),
            &measure,
            &group,
            "bisecting a differing unit",
        )
        .await?;
        // Reversed, so that the stack yields the earliest region first.
        for p in pairings.iter().rev().filter(|p| !p.agrees()) {
            let rows = p.source.rows.max(p.target.rows);
            let child = match group {
                Group::Time { width, .. } => Region {
                    start: p.key.max(r.start),
                    end: (p.key + width).min(r.end),
                    rows,
                    ..r.clone()
                },
                _ => Region {
                    key_bits: r.key_bits + 5,
                    key_value: r.key_value | (p.key << r.key_bits),
                    rows,
                    ..r.clone()
                },
            };
            if rows <= threshold {
                leaves.push(child);
            } else {
                queue.push(child);
            }
        }
    }
    leaves.sort_by_key(|l| (l.start, l.key_value));
    Ok(Located {
        regions: leaves,
        complete: queue.is_empty(),
    })
}
