//! Units of work: which rows of which table one target transaction copies.
//!
//! A unit is one chunk or partition clipped to `[F, T)`, or one time slice of a table without
//! chunks. Hypertable chunks that share a time range (space partitioning) make one unit, read
//! from the hypertable, so that replacing a unit's range on the target never touches rows
//! another unit copies.

use dualwrite_common::catalog::{Chunk, TableKind, TimeSeriesTable, TimeType};
use dualwrite_common::ident::QualifiedName;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::pg::describe;

/// Building the plan failed. Every variant but `Query` is bad input.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `--until` or `--from` is not a value of a table's time column.
    #[error("--{flag} {detail}")]
    Time { flag: &'static str, detail: String },
    #[error("--from must be before --until")]
    EmptyRange,
    #[error("--slice {0:?}: expected a duration such as 1day, 6h or 30min (an integer for integer time columns)")]
    Slice(String),
    #[error("--rows-per-unit must be at least 1")]
    RowsPerUnit,
    #[error("no time-series tables found on the source: name them with --table SCHEMA.TABLE:TIME_COLUMN")]
    NoTables,
    #[error("source: planning {table}: {detail}")]
    Query { table: String, detail: String },
}

/// A relation name that serialises into the stored plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rel {
    /// Schema name, unquoted.
    pub schema: String,
    /// Relation name, unquoted.
    pub name: String,
}

impl Rel {
    /// As a [`QualifiedName`] (quoting, display).
    pub fn qn(&self) -> QualifiedName {
        QualifiedName::new(self.schema.clone(), self.name.clone())
    }
}

impl From<&QualifiedName> for Rel {
    fn from(q: &QualifiedName) -> Rel {
        Rel {
            schema: q.schema.clone(),
            name: q.name.clone(),
        }
    }
}

/// Which target rows a unit replaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replace {
    /// The rows of the table in the unit's time range.
    Range,
    /// The rows in the unit's range of the target's DEFAULT partition (the source's default
    /// partition holds rows outside every other partition's range).
    DefaultPartition,
}

/// One unit of work, as stored in the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitSpec {
    /// The time-series table; the target copy goes into it (routed to its partitions/chunks).
    pub table: Rel,
    /// hypertable, partitioned or plain.
    pub kind: String,
    /// The time column.
    pub time_column: String,
    /// The time column's type (`TimeType::sql_name`).
    pub time_type: String,
    /// The relation read on the source.
    pub source: Rel,
    /// Which target rows are replaced.
    pub replace: Replace,
    /// Rows with time >= start (unbounded when None).
    pub start: Option<i64>,
    /// Rows with time < end.
    pub end: i64,
    /// The source relation holds only rows of this range, so it is read without a WHERE.
    pub whole: bool,
    /// Estimated rows (from statistics), when known.
    pub est_rows: Option<i64>,
    /// Estimated bytes on disk, when known.
    pub est_bytes: Option<i64>,
    /// For a default partition's unit: the ranges of the table's other partitions, whose rows
    /// the unit must leave alone on the target.
    #[serde(default)]
    pub exclude: Vec<(Option<i64>, Option<i64>)>,
}

impl UnitSpec {
    /// The time type.
    pub fn time_type(&self) -> TimeType {
        TimeType::from_pg(&self.time_type).unwrap_or(TimeType::Timestamptz)
    }

    /// `WHERE` condition selecting the unit's rows.
    pub fn condition(&self) -> String {
        let col = dualwrite_common::ident::quote_ident(&self.time_column);
        let t = self.time_type();
        match self.start {
            Some(a) => format!(
                "{col} >= {} AND {col} < {}",
                t.literal(a),
                t.literal(self.end)
            ),
            None => format!("{col} < {}", t.literal(self.end)),
        }
    }

    /// `WHERE` condition selecting the target rows the unit replaces: its range, less the
    /// ranges of [`UnitSpec::exclude`].
    pub fn target_condition(&self) -> String {
        let col = dualwrite_common::ident::quote_ident(&self.time_column);
        let t = self.time_type();
        let mut c = self.condition();
        for (a, b) in &self.exclude {
            let r = match (a, b) {
                (Some(a), Some(b)) => {
                    format!("({col} >= {} AND {col} < {})", t.literal(*a), t.literal(*b))
                }
                (Some(a), None) => format!("{col} >= {}", t.literal(*a)),
                (None, Some(b)) => format!("{col} < {}", t.literal(*b)),
                (None, None) => "true".to_string(),
            };
            c.push_str(&format!(" AND NOT {r}"));
        }
        c
    }

    /// The range for people: `[a, b)`.
    pub fn range_text(&self) -> String {
        let t = self.time_type();
        format!(
            "[{}, {})",
            self.start
                .map(|a| t.display(a))
                .unwrap_or_else(|| "-inf".into()),
            t.display(self.end)
        )
    }
}

/// What to plan.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    /// The tables found on the source.
    pub tables: Vec<TimeSeriesTable>,
    /// `--from` as typed.
    pub from: Option<String>,
    /// `--until` as typed.
    pub until: String,
    /// `--slice` as typed.
    pub slice: Option<String>,
    /// `--rows-per-unit`.
    pub rows_per_unit: u64,
}

/// `--from` and `--until` of one table, as time values.
pub fn bounds(
    t: &TimeSeriesTable,
    from: Option<&str>,
    until: &str,
) -> Result<(Option<i64>, i64), PlanError> {
    let parse = |flag: &'static str, value: &str| {
        t.time_type.parse(value).map_err(|detail| PlanError::Time {
            flag,
            detail: format!(
                "{detail} (the time column {}.{} is {})",
                t.table,
                t.time_column,
                t.time_type.sql_name()
            ),
        })
    };
    let until_v = parse("until", until)?;
    let from_v = from.map(|f| parse("from", f)).transpose()?;
    if from_v.is_some_and(|f| f >= until_v) {
        return Err(PlanError::EmptyRange);
    }
    Ok((from_v, until_v))
}

/// Check `--from`/`--until`/`--slice` against every table without touching a server.
pub fn validate(req: &PlanRequest) -> Result<(), PlanError> {
    if req.rows_per_unit == 0 {
        return Err(PlanError::RowsPerUnit);
    }
    for t in &req.tables {
        bounds(t, req.from.as_deref(), &req.until)?;
        if let Some(s) = &req.slice {
            parse_slice(s, t.time_type)?;
        }
    }
    Ok(())
}

/// A `--slice` in the time column's units (microseconds for time types).
pub fn parse_slice(text: &str, time_type: TimeType) -> Result<i64, PlanError> {
    let bad = || PlanError::Slice(text.to_string());
    let v = if time_type.is_integer() {
        text.trim().parse::<i64>().map_err(|_| bad())?
    } else {
        let d = humantime::parse_duration(text.trim()).map_err(|_| bad())?;
        i64::try_from(d.as_micros()).map_err(|_| bad())?
    };
    if v <= 0 {
        return Err(bad());
    }
    Ok(v)
}

/// Clip `[start, end)` to `[from, until)`; `None` when nothing is left.
pub fn clip(
    start: Option<i64>,
    end: Option<i64>,
    from: Option<i64>,
    until: i64,
) -> Option<(Option<i64>, i64)> {
    let s = match (start, from) {
        (Some(a), Some(f)) => Some(a.max(f)),
        (a, f) => a.or(f),
    };
    let e = end.map_or(until, |b| b.min(until));
    match s {
        Some(s) if s >= e => None,
        _ => Some((s, e)),
    }
}

/// Estimated rows and bytes of a relation, when statistics exist.
#[derive(Clone, Copy, Debug, Default)]
struct Estimate {
    rows: Option<i64>,
    bytes: Option<i64>,
}

async fn estimates(
    source: &Client,
    rels: &[QualifiedName],
) -> Result<std::collections::HashMap<QualifiedName, Estimate>, tokio_postgres::Error> {
    let schemas: Vec<&str> = rels.iter().map(|r| r.schema.as_str()).collect();
    let names: Vec<&str> = rels.iter().map(|r| r.name.as_str()).collect();
    let rows = source
        .query(
            "SELECT n.nspname::text, c.relname::text, c.reltuples::float8, pg_table_size(c.oid)
             FROM unnest($1::text[], $2::text[]) AS r(s, t)
             JOIN pg_namespace n ON n.nspname = r.s
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = r.t",
            &[&schemas, &names],
        )
        .await?;
    // Compressed chunks: their own statistics count only rows added since compression.
    let compressed = dualwrite_common::catalog::compressed_row_counts(source).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let tuples: f64 = r.get(2);
            let name = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            let pre = compressed.get(&name).copied();
            let rows = match (pre, tuples >= 0.0) {
                (Some(c), true) => Some(c.rows + tuples as i64),
                (Some(c), false) => Some(c.rows),
                (None, true) => Some(tuples as i64),
                (None, false) => None,
            };
            let bytes = r.get::<_, i64>(3) + pre.map_or(0, |c| c.bytes);
            (
                name,
                Estimate {
                    rows,
                    bytes: Some(bytes),
                },
            )
        })
        .collect())
}

/// The fraction of `[start, end)` that `[a, b)` covers (1 when unbounded).
fn fraction(start: Option<i64>, end: Option<i64>, a: Option<i64>, b: i64) -> f64 {
    match (start, end) {
        (Some(s), Some(e)) if e > s => {
            let a = a.unwrap_or(s).max(s);
            let b = b.min(e);
            ((b - a).max(0) as f64) / ((e - s) as f64)
        }
        _ => 1.0,
    }
}

fn scale(e: Estimate, f: f64) -> (Option<i64>, Option<i64>) {
    (
        e.rows.map(|r| (r as f64 * f).round() as i64),
        e.bytes.map(|b| (b as f64 * f).round() as i64),
    )
}

/// Plan the units of every table, in table order.
pub async fn build(source: &Client, req: &PlanRequest) -> Result<Vec<UnitSpec>, PlanError> {
    validate(req)?;
    if req.tables.is_empty() {
        return Err(PlanError::NoTables);
    }
    let mut units = Vec::new();
    for t in &req.tables {
        let (from, until) = bounds(t, req.from.as_deref(), &req.until)?;
        let q = |e: tokio_postgres::Error| PlanError::Query {
            table: t.table.to_string(),
            detail: describe(&e),
        };
        let base = |source_rel: &QualifiedName, replace: Replace| UnitSpec {
            table: Rel::from(&t.table),
            kind: kind_name(&t.kind).to_string(),
            time_column: t.time_column.clone(),
            time_type: t.time_type.sql_name().to_string(),
            source: Rel::from(source_rel),
            replace,
            start: None,
            end: until,
            whole: false,
            est_rows: None,
            est_bytes: None,
            exclude: Vec::new(),
        };
        match t.kind {
            TableKind::Partitioned => {
                let rels: Vec<QualifiedName> =
                    t.chunks.iter().map(|c| c.relation.clone()).collect();
                let est = estimates(source, &rels).await.map_err(q)?;
                for c in &t.chunks {
                    let e = est.get(&c.relation).copied().unwrap_or_default();
                    if c.is_default {
                        let mut u = base(&c.relation, Replace::DefaultPartition);
                        u.start = from;
                        u.exclude = t
                            .chunks
                            .iter()
                            .filter(|o| !o.is_default)
                            .map(|o| (o.start, o.end))
                            .collect();
                        (u.est_rows, u.est_bytes) = scale(e, 1.0);
                        units.push(u);
                        continue;
                    }
                    let Some((s, end)) = clip(c.start, c.end, from, until) else {
                        continue;
                    };
                    let mut u = base(&c.relation, Replace::Range);
                    u.start = s;
                    u.end = end;
                    u.whole = s == c.start && Some(end) == c.end && c.start.is_some();
                    (u.est_rows, u.est_bytes) = scale(e, fraction(c.start, c.end, s, end));
                    units.push(u);
                }
            }
            TableKind::Hypertable => {
                let rels: Vec<QualifiedName> =
                    t.chunks.iter().map(|c| c.relation.clone()).collect();
                let est = estimates(source, &rels).await.map_err(q)?;
                for (s, e, chunks) in time_ranges(&t.chunks, from, until) {
                    let mut u = base(&t.table, Replace::Range);
                    u.start = s;
                    u.end = e;
                    let (mut rows, mut bytes) = (None::<i64>, None::<i64>);
                    for c in chunks {
                        let ce = est.get(&c.relation).copied().unwrap_or_default();
                        let (r, b) = scale(ce, fraction(c.start, c.end, s, e));
                        rows = add(rows, r);
                        bytes = add(bytes, b);
                    }
                    (u.est_rows, u.est_bytes) = (rows, bytes);
                    units.push(u);
                }
            }
            TableKind::Plain => {
                let est = estimates(source, std::slice::from_ref(&t.table))
                    .await
                    .map_err(q)?
                    .get(&t.table)
                    .copied()
                    .unwrap_or_default();
                let width = match &req.slice {
                    Some(s) => Some(parse_slice(s, t.time_type)?),
                    None => None,
                };
                let slices = plain_slices(source, t, from, until, est, width, req.rows_per_unit)
                    .await
                    .map_err(q)?;
                for (s, e, frac) in slices {
                    let mut u = base(&t.table, Replace::Range);
                    u.start = s;
                    u.end = e;
                    (u.est_rows, u.est_bytes) = scale(est, frac);
                    units.push(u);
                }
            }
        }
    }
    Ok(units)
}

fn add(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// The kind as stored.
pub fn kind_name(k: &TableKind) -> &'static str {
    match k {
        TableKind::Hypertable => "hypertable",
        TableKind::Partitioned => "partitioned",
        TableKind::Plain => "plain",
    }
}

/// Distinct (merged when overlapping) time ranges of hypertable chunks, clipped, with the
/// chunks in each.
fn time_ranges(
    chunks: &[Chunk],
    from: Option<i64>,
    until: i64,
) -> Vec<(Option<i64>, i64, Vec<&Chunk>)> {
    let mut clipped: Vec<(Option<i64>, i64, &Chunk)> = chunks
        .iter()
        .filter_map(|c| clip(c.start, c.end, from, until).map(|(s, e)| (s, e, c)))
        .collect();
    clipped.sort_by_key(|(s, e, _)| (*s, *e));
    let mut out: Vec<(Option<i64>, i64, Vec<&Chunk>)> = Vec::new();
    for (s, e, c) in clipped {
        match out.last_mut() {
            // Overlaps the previous range (None start only ever comes first).
            Some(last) if s.is_none_or(|s| s < last.1) => {
                last.1 = last.1.max(e);
                last.2.push(c);
            }
            _ => out.push((s, e, vec![c])),
        }
    }
    out
}

/// SQL for a time column's value as `int8` (microseconds since the epoch, or the integer).
pub fn time_as_i64(column_sql: &str, t: TimeType) -> String {
    match t {
        TimeType::SmallInt | TimeType::Integer | TimeType::BigInt => {
            format!("({column_sql})::int8")
        }
        _ => format!("(extract(epoch FROM {column_sql}) * 1000000)::int8"),
    }
}

/// Slices of a plain table: `(start, end, fraction of the rows estimate)`. The first slice is
/// open below when there is no --from, so rows older than today's minimum are never missed.
async fn plain_slices(
    source: &Client,
    t: &TimeSeriesTable,
    from: Option<i64>,
    until: i64,
    est: Estimate,
    width: Option<i64>,
    rows_per_unit: u64,
) -> Result<Vec<(Option<i64>, i64, f64)>, tokio_postgres::Error> {
    let col = dualwrite_common::ident::quote_ident(&t.time_column);
    let sql = format!(
        "SELECT {}, {}, {} FROM {}",
        time_as_i64(
            &format!(
                "min({col}) FILTER (WHERE {})",
                t.range_condition(from, Some(until))
            ),
            t.time_type
        ),
        time_as_i64(
            &format!(
                "max({col}) FILTER (WHERE {})",
                t.range_condition(from, Some(until))
            ),
            t.time_type
        ),
        time_as_i64(&format!("max({col})"), t.time_type),
        t.table.quoted()
    );
    let row = source.query_one(&sql, &[]).await?;
    let (min, max_below, max_all): (Option<i64>, Option<i64>, Option<i64>) =
        (row.get(0), row.get(1), row.get(2));
    let Some(min) = min else {
        return Ok(vec![(from, until, 1.0)]);
    };
    // min is the oldest row in [from, until).
    let lo = min;
    let hi = until;
    // Share of the table's rows below T, assuming rows spread evenly over time.
    let share = match max_all {
        Some(m) if m > min => {
            ((max_below.unwrap_or(min) - min) as f64 / (m - min) as f64).clamp(0.0, 1.0)
        }
        _ => 1.0,
    };
    let width = match width {
        Some(w) => w,
        None => {
            let rows = est.rows.unwrap_or(0).max(0) as f64 * share;
            let n = (rows / rows_per_unit.max(1) as f64)
                .ceil()
                .clamp(1.0, 10_000.0);
            let span = (hi.saturating_sub(lo)).max(1);
            let mut w = (span as f64 / n).ceil() as i64;
            if !t.time_type.is_integer() {
                // Whole seconds, so the boundaries read well.
                w = ((w + 999_999) / 1_000_000).max(1) * 1_000_000;
            }
            w.max(1)
        }
    };
    let mut out = Vec::new();
    let mut a = lo;
    while a < hi {
        let b = a.saturating_add(width).min(hi);
        out.push((if out.is_empty() { from } else { Some(a) }, b, 0.0));
        a = b;
    }
    let n = out.len().max(1) as f64;
    for s in &mut out {
        s.2 = share / n;
    }
    Ok(out)
}

/// Short stable hash, for plan ids and advisory lock keys (FNV-1a, 64 bits).
pub fn fnv64(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The default plan id: the same database, tables and range give the same id on any machine.
pub fn default_plan_id(
    database: &str,
    tables: &[TimeSeriesTable],
    from: Option<&str>,
    until: &str,
) -> String {
    let mut key = format!("{database}|{}|{until}", from.unwrap_or(""));
    for t in tables {
        key.push_str(&format!("|{}:{}", t.table.quoted(), t.time_column));
    }
    format!("p{:012x}", fnv64(&key) & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping() {
        assert_eq!(clip(Some(0), Some(10), None, 5), Some((Some(0), 5)));
        assert_eq!(clip(Some(0), Some(10), Some(3), 20), Some((Some(3), 10)));
        assert_eq!(clip(Some(10), Some(20), None, 10), None);
        assert_eq!(clip(None, Some(20), None, 10), Some((None, 10)));
        assert_eq!(clip(Some(0), None, None, 10), Some((Some(0), 10)));
        assert_eq!(clip(Some(0), Some(5), Some(5), 10), None);
    }

    #[test]
    fn hypertable_ranges_merge_space_partitions() {
        let q = |n: &str| QualifiedName::new("_timescaledb_internal", n);
        let c = |n: &str, s: i64, e: i64| Chunk {
            relation: q(n),
            start: Some(s),
            end: Some(e),
            is_compressed: false,
            is_default: false,
            slices: Vec::new(),
        };
        let chunks = vec![c("a", 0, 10), c("b", 0, 10), c("c", 10, 20), c("d", 20, 30)];
        let r = time_ranges(&chunks, None, 25);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].0, r[0].1, r[0].2.len()), (Some(0), 10, 2));
        assert_eq!((r[2].0, r[2].1), (Some(20), 25));
    }

    #[test]
    fn slices_and_ids() {
        assert_eq!(
            parse_slice("1day", TimeType::Timestamptz).unwrap(),
            86_400_000_000
        );
        assert_eq!(parse_slice("500", TimeType::BigInt).unwrap(), 500);
        assert!(parse_slice("soon", TimeType::Timestamptz).is_err());
        assert!(parse_slice("0", TimeType::BigInt).is_err());
        assert_eq!(fnv64("a"), fnv64("a"));
        assert_ne!(fnv64("a"), fnv64("b"));
    }

    #[test]
    fn unit_condition() {
        let u = UnitSpec {
            table: Rel {
                schema: "public".into(),
                name: "t".into(),
            },
            kind: "plain".into(),
            time_column: "ts".into(),
            time_type: "timestamptz".into(),
            source: Rel {
                schema: "public".into(),
                name: "t".into(),
            },
            replace: Replace::Range,
            start: None,
            end: 0,
            whole: false,
            est_rows: None,
            est_bytes: None,
            exclude: vec![(Some(0), None)],
        };
        assert_eq!(
            u.condition(),
            "\"ts\" < '1970-01-01 00:00:00+00'::timestamptz"
        );
        assert_eq!(u.range_text(), "[-inf, 1970-01-01 00:00:00+00)");
        assert_eq!(
            u.target_condition(),
            "\"ts\" < '1970-01-01 00:00:00+00'::timestamptz AND NOT \"ts\" >= '1970-01-01 00:00:00+00'::timestamptz"
        );
    }
}
