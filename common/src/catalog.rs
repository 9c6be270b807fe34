//! Discovery of time-series tables and their chunks, shared by backfill and validator.
//!
//! A time-series table is a TimescaleDB hypertable (chunks from its catalog), a
//! range-partitioned table with a single time-like key (each leaf partition is a chunk), or
//! any table named as `schema.table:time_column` (no chunks; callers slice it by time).
//! Time values are carried as `i64`: microseconds since the Unix epoch for timestamps and
//! dates, the value itself for integer time columns.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use tokio_postgres::Client;

use crate::ident::{quote_ident, QualifiedName};

/// The type of a time column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeType {
    Timestamptz,
    Timestamp,
    Date,
    SmallInt,
    Integer,
    BigInt,
}

impl TimeType {
    /// From `format_type()` output; `None` when the type cannot order time.
    pub fn from_pg(name: &str) -> Option<TimeType> {
        Some(match name {
            "timestamp with time zone" | "timestamptz" => TimeType::Timestamptz,
            "timestamp without time zone" | "timestamp" => TimeType::Timestamp,
            "date" => TimeType::Date,
            "smallint" => TimeType::SmallInt,
            "integer" => TimeType::Integer,
            "bigint" => TimeType::BigInt,
            n if n.starts_with("timestamp(") && n.ends_with("with time zone") => {
                TimeType::Timestamptz
            }
            n if n.starts_with("timestamp(") => TimeType::Timestamp,
            _ => return None,
        })
    }

    pub fn sql_name(self) -> &'static str {
        match self {
            TimeType::Timestamptz => "timestamptz",
            TimeType::Timestamp => "timestamp",
            TimeType::Date => "date",
            TimeType::SmallInt => "smallint",
            TimeType::Integer => "integer",
            TimeType::BigInt => "bigint",
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            TimeType::SmallInt | TimeType::Integer | TimeType::BigInt
        )
    }

    /// Parse a value as Postgres prints it (with `TimeZone = 'UTC'`) or as a user writes it:
    /// `2024-03-01`, `2024-03-01 12:00:00`, `2024-03-01T12:00:00Z`, `2024-03-01 12:00:00+02`.
    pub fn parse(self, text: &str) -> Result<i64, String> {
        let t = text.trim().trim_matches('\'');
        if self.is_integer() {
            return t
                .parse::<i64>()
                .map_err(|_| format!("{text:?} is not an integer"));
        }
        parse_time(t).ok_or_else(|| {
            format!(
                "{text:?} is not a timestamp (expected e.g. 2024-03-01 or 2024-03-01 12:00:00+00)"
            )
        })
    }

    /// A SQL literal with its cast, e.g. `'2024-03-01 00:00:00+00'::timestamptz`.
    pub fn literal(self, value: i64) -> String {
        match self {
            TimeType::SmallInt | TimeType::Integer | TimeType::BigInt => {
                format!("{value}::{}", self.sql_name())
            }
            _ => format!("'{}'::{}", self.display(value), self.sql_name()),
        }
    }

    /// Human form of a value.
    pub fn display(self, value: i64) -> String {
        match self {
            TimeType::SmallInt | TimeType::Integer | TimeType::BigInt => value.to_string(),
            TimeType::Date => micros_to_utc(value).format("%Y-%m-%d").to_string(),
            TimeType::Timestamp => micros_to_utc(value)
                .format("%Y-%m-%d %H:%M:%S%.f")
                .to_string(),
            TimeType::Timestamptz => micros_to_utc(value)
                .format("%Y-%m-%d %H:%M:%S%.f+00")
                .to_string(),
        }
    }
}

fn micros_to_utc(v: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(v)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn parse_time(t: &str) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_micros());
    }
    // Postgres prints offsets as +HH or +HH:MM.
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, fmt) {
            return Some(d.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(d.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_micros())
}

/// How a table is split into chunks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Hypertable,
    Partitioned,
    Plain,
}

/// A chunk or leaf partition and its time range `[start, end)`; `None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Chunk {
    pub relation: QualifiedName,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// TimescaleDB: the chunk is compressed (read it without ONLY so compressed rows count).
    pub is_compressed: bool,
    /// A DEFAULT partition: holds whatever no other partition's range takes.
    pub is_default: bool,
    /// TimescaleDB: the chunk's ranges in the hypertable's other dimensions (space
    /// partitioning, e.g. `by_hash(device_id, 4)`), ordered by column; empty otherwise. Chunks
    /// of one hypertable with the same time range differ here.
    pub slices: Vec<DimensionSlice>,
}

/// A chunk's range `[start, end)` in a dimension other than time, in TimescaleDB's internal
/// values (a hash for closed dimensions); `None` where the range is open (TimescaleDB's
/// minimum or maximum).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct DimensionSlice {
    pub column: String,
    /// The SQL expression of the column whose value the range bounds, e.g.
    /// `_timescaledb_functions.get_partition_hash("device_id")`.
    pub value_expr: String,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl DimensionSlice {
    /// `WHERE` condition selecting the rows of this slice.
    pub fn condition(&self) -> String {
        match (self.start, self.end) {
            (Some(a), Some(b)) => {
                format!("{} >= {a} AND {} < {b}", self.value_expr, self.value_expr)
            }
            (Some(a), None) => format!("{} >= {a}", self.value_expr),
            (None, Some(b)) => format!("{} < {b}", self.value_expr),
            (None, None) => "true".to_string(),
        }
    }

    /// Whether two slices of the same column overlap without being the same range.
    pub fn overlaps_differently(&self, other: &DimensionSlice) -> bool {
        let lo = |v: Option<i64>| v.unwrap_or(i64::MIN);
        let hi = |v: Option<i64>| v.unwrap_or(i64::MAX);
        self.column == other.column
            && (self.start, self.end) != (other.start, other.end)
            && lo(self.start) < hi(other.end)
            && lo(other.start) < hi(self.end)
    }
}

impl Chunk {
    /// The chunk's position in the dimensions other than time: `(column, start, end)` each.
    pub fn space_key(&self) -> Vec<(&str, Option<i64>, Option<i64>)> {
        self.slices
            .iter()
            .map(|s| (s.column.as_str(), s.start, s.end))
            .collect()
    }

    /// `WHERE` condition selecting the chunk's rows in the dimensions other than time
    /// (`true` when it has none).
    pub fn space_condition(&self) -> String {
        let parts: Vec<String> = self
            .slices
            .iter()
            .map(DimensionSlice::condition)
            .filter(|c| c != "true")
            .collect();
        if parts.is_empty() {
            "true".to_string()
        } else {
            parts.join(" AND ")
        }
    }
}

/// A time-series table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimeSeriesTable {
    pub table: QualifiedName,
    pub time_column: String,
    pub time_type: TimeType,
    pub kind: TableKind,
    /// Ordered by start; empty for plain tables.
    pub chunks: Vec<Chunk>,
}

impl TimeSeriesTable {
    /// `WHERE` condition for `[start, end)` on this table's time column.
    pub fn range_condition(&self, start: Option<i64>, end: Option<i64>) -> String {
        let col = quote_ident(&self.time_column);
        match (start, end) {
            (Some(a), Some(b)) => format!(
                "{col} >= {} AND {col} < {}",
                self.time_type.literal(a),
                self.time_type.literal(b)
            ),
            (Some(a), None) => format!("{col} >= {}", self.time_type.literal(a)),
            (None, Some(b)) => format!("{col} < {}", self.time_type.literal(b)),
            (None, None) => "true".to_string(),
        }
    }
}

/// A `--table schema.table[:time_column]` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub table: QualifiedName,
    pub time_column: Option<String>,
}

impl std::str::FromStr for TableSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // The time column follows the last ':' outside double quotes.
        let mut in_quotes = false;
        let mut split = None;
        for (i, c) in s.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ':' if !in_quotes => split = Some(i),
                _ => {}
            }
        }
        let (name, column) = match split {
            Some(i) => (
                &s[..i],
                Some(s[i + 1..].trim().trim_matches('"').to_string()),
            ),
            None => (s, None),
        };
        if column.as_deref() == Some("") {
            return Err(format!("{s:?}: empty time column after ':'"));
        }
        Ok(TableSpec {
            table: QualifiedName::parse(name)?,
            time_column: column,
        })
    }
}

/// Discovery failed; names the table or column.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("table {0} does not exist")]
    UnknownTable(QualifiedName),
    #[error("table {table} has no column {column:?}")]
    UnknownColumn {
        table: QualifiedName,
        column: String,
    },
    #[error("column {column:?} of {table} has type {pg_type}, which is not a time type (timestamptz, timestamp, date or an integer)")]
    NotTime {
        table: QualifiedName,
        column: String,
        pg_type: String,
    },
    #[error(
        "table {0} is not partitioned by a single time column: name its time column as {0}:column"
    )]
    NoTimeColumn(QualifiedName),
    #[error("cannot read partition bounds of {relation}: {detail}")]
    Bounds {
        relation: QualifiedName,
        detail: String,
    },
    #[error("catalog query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// The installed TimescaleDB version, if any.
pub async fn timescaledb_version(client: &Client) -> Result<Option<String>, CatalogError> {
    let row = client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Find the time-series tables: the named ones, or with none named, every hypertable and
/// every range-partitioned table with a single time-like key.
pub async fn discover(
    client: &Client,
    named: &[TableSpec],
) -> Result<Vec<TimeSeriesTable>, CatalogError> {
    client.batch_execute("SET TimeZone = 'UTC'").await?;
    let has_tsdb = timescaledb_version(client).await?.is_some();
    let mut out = Vec::new();
    if named.is_empty() {
        if has_tsdb {
            for (schema, name) in hypertables(client).await? {
                out.push(
                    describe(client, &QualifiedName::new(schema, name), None, has_tsdb).await?,
                );
            }
        }
        let rows = client
            .query(
                "SELECT n.nspname, c.relname FROM pg_partitioned_table p
                 JOIN pg_class c ON c.oid = p.partrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE p.partstrat = 'r' AND p.partnatts = 1 AND NOT c.relispartition
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE '\\_timescaledb%'
                 ORDER BY 1, 2",
                &[],
            )
            .await?;
        for r in rows {
            let q = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            match describe(client, &q, None, has_tsdb).await {
                // An integer range key is an id more often than a time: only when named.
                Ok(t) if t.time_type.is_integer() => {}
                Ok(t) => out.push(t),
                // Range-partitioned by something that is not time: not a time-series table.
                Err(CatalogError::NotTime { .. }) | Err(CatalogError::NoTimeColumn(_)) => {}
                Err(e) => return Err(e),
            }
        }
    } else {
        for spec in named {
            out.push(describe(client, &spec.table, spec.time_column.as_deref(), has_tsdb).await?);
        }
    }
    Ok(out)
}

async fn hypertables(client: &Client) -> Result<Vec<(String, String)>, CatalogError> {
    let rows = client
        .query(
            "SELECT hypertable_schema::text, hypertable_name::text FROM timescaledb_information.hypertables
             WHERE hypertable_name::text NOT LIKE '\\_materialized\\_hypertable\\_%'
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Describe one table: kind, time column (given, or from its partition key / dimension) and chunks.
pub async fn describe(
    client: &Client,
    table: &QualifiedName,
    time_column: Option<&str>,
    has_tsdb: bool,
) -> Result<TimeSeriesTable, CatalogError> {
    let row = client
        .query_opt(
            "SELECT c.oid::int8, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'f', 'v', 'm')",
            &[&table.schema, &table.name],
        )
        .await?
        .ok_or_else(|| CatalogError::UnknownTable(table.clone()))?;
    let relkind: String = row.get(1);

    let is_hypertable = has_tsdb
        && client
            .query_opt(
                "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_schema::text = $1 AND hypertable_name::text = $2",
                &[&table.schema, &table.name],
            )
            .await?
            .is_some();

    let column = match time_column {
        Some(c) => c.to_string(),
        None if is_hypertable => {
            let r = client
                .query_one(
                    "SELECT column_name::text FROM timescaledb_information.dimensions
                     WHERE hypertable_schema::text = $1 AND hypertable_name::text = $2
                     ORDER BY dimension_number LIMIT 1",
                    &[&table.schema, &table.name],
                )
                .await?;
            r.get(0)
        }
        None if relkind == "p" => partition_key(client, table).await?,
        None => return Err(CatalogError::NoTimeColumn(table.clone())),
    };
    let type_row = client
        .query_opt(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table.schema, &table.name, &column],
        )
        .await?
        .ok_or_else(|| CatalogError::UnknownColumn {
            table: table.clone(),
            column: column.clone(),
        })?;
    let pg_type: String = type_row.get(0);
    let time_type = TimeType::from_pg(&pg_type).ok_or_else(|| CatalogError::NotTime {
        table: table.clone(),
        column: column.clone(),
        pg_type,
    })?;

    let (kind, chunks) = if is_hypertable {
        (
            TableKind::Hypertable,
            hypertable_chunks(client, table, &column, time_type).await?,
        )
    } else if relkind == "p"
        && partition_key(client, table).await.ok().as_deref() == Some(column.as_str())
    {
        (
            TableKind::Partitioned,
            partitions(client, table, time_type).await?,
        )
    } else {
        (TableKind::Plain, Vec::new())
    };
    Ok(TimeSeriesTable {
        table: table.clone(),
        time_column: column,
        time_type,
        kind,
        chunks,
    })
}

/// The single key column of a range-partitioned table.
async fn partition_key(client: &Client, table: &QualifiedName) -> Result<String, CatalogError> {
    let row = client
        .query_opt(
            "SELECT a.attname::text FROM pg_partitioned_table p
             JOIN pg_class c ON c.oid = p.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0]
             WHERE n.nspname = $1 AND c.relname = $2 AND p.partstrat = 'r' AND p.partnatts = 1 AND p.partattrs[0] <> 0",
            &[&table.schema, &table.name],
        )
        .await?;
    row.map(|r| r.get(0))
        .ok_or_else(|| CatalogError::NoTimeColumn(table.clone()))
}

/// Leaf partitions (sub-partitions included) with their bounds.
async fn partitions(
    client: &Client,
    table: &QualifiedName,
    time_type: TimeType,
) -> Result<Vec<Chunk>, CatalogError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid),
                    (SELECT pg_get_expr(pc.relpartbound, pc.oid) FROM pg_class pc WHERE pc.oid = t.parentrelid)
             FROM pg_partition_tree(format('%I.%I', $1::text, $2::text)::regclass) t
             JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE t.isleaf",
            &[&table.schema, &table.name],
        )
        .await?;
    let mut chunks = Vec::new();
    for r in rows {
        let relation = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let bound: Option<String> = r.get(2);
        let bound = bound.unwrap_or_default();
        let chunk = if bound == "DEFAULT" {
            Chunk {
                relation,
                start: None,
                end: None,
                is_compressed: false,
                is_default: true,
                slices: Vec::new(),
            }
        } else {
            let (start, end) =
                parse_range_bound(&bound, time_type).map_err(|detail| CatalogError::Bounds {
                    relation: relation.clone(),
                    detail,
                })?;
            Chunk {
                relation,
                start,
                end,
                is_compressed: false,
                is_default: false,
                slices: Vec::new(),
            }
        };
        chunks.push(chunk);
    }
    chunks.sort_by_key(|c| (c.is_default, c.start));
    Ok(chunks)
}

/// Parse `FOR VALUES FROM ('a') TO ('b')` (MINVALUE/MAXVALUE as unbounded).
pub fn parse_range_bound(
    text: &str,
    time_type: TimeType,
) -> Result<(Option<i64>, Option<i64>), String> {
    let rest = text
        .strip_prefix("FOR VALUES FROM (")
        .ok_or_else(|| format!("not a range bound: {text:?}"))?;
    let (from, rest) = rest
        .split_once(") TO (")
        .ok_or_else(|| format!("not a range bound: {text:?}"))?;
    let to = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("not a range bound: {text:?}"))?;
    let value = |v: &str| -> Result<Option<i64>, String> {
        match v.trim() {
            "MINVALUE" | "MAXVALUE" => Ok(None),
            v => time_type.parse(v).map(Some),
        }
    };
    Ok((value(from)?, value(to)?))
}

async fn hypertable_chunks(
    client: &Client,
    table: &QualifiedName,
    time_column: &str,
    time_type: TimeType,
) -> Result<Vec<Chunk>, CatalogError> {
    let mut slices = space_slices(client, table, time_column).await?;
    let rows = client
        .query(
            "SELECT chunk_schema::text, chunk_name::text, range_start::text, range_end::text,
                    range_start_integer, range_end_integer, is_compressed
             FROM timescaledb_information.chunks
             WHERE hypertable_schema::text = $1 AND hypertable_name::text = $2
             ORDER BY range_start, range_start_integer",
            &[&table.schema, &table.name],
        )
        .await?;
    let mut chunks = Vec::new();
    for r in rows {
        let relation = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let (start, end) = if time_type.is_integer() {
            (r.get::<_, Option<i64>>(4), r.get::<_, Option<i64>>(5))
        } else {
            let parse = |v: Option<String>| -> Result<Option<i64>, CatalogError> {
                v.map(|t| {
                    TimeType::Timestamptz
                        .parse(&t)
                        .map_err(|detail| CatalogError::Bounds {
                            relation: relation.clone(),
                            detail,
                        })
                })
                .transpose()
            };
            (parse(r.get(2))?, parse(r.get(3))?)
        };
        chunks.push(Chunk {
            slices: slices.remove(&relation).unwrap_or_default(),
            relation,
            start,
            end,
            is_compressed: r.get::<_, Option<bool>>(6).unwrap_or(false),
            is_default: false,
        });
    }
    // Chunks with the same time range (space partitioning) in a stable order.
    chunks.sort_by(|a, b| {
        (a.start.is_none(), a.start, &a.slices).cmp(&(b.start.is_none(), b.start, &b.slices))
    });
    Ok(chunks)
}

/// How much of a TimescaleDB chunk is compressed (from `_timescaledb_catalog.chunk.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed.
    None,
    /// Compressed, with rows added since in its uncompressed part (or unordered): what a
    /// backfill into a chunk flagged compressed leaves. `compress_chunk` finishes it.
    Partial,
    /// Compressed entirely.
    Full,
}

impl Compression {
    /// From the chunk status bits: 1 compressed, 2 unordered, 8 partial.
    pub fn from_status(status: i32) -> Compression {
        if status & 1 == 0 {
            Compression::None
        } else if status & (2 | 8) != 0 {
            Compression::Partial
        } else {
            Compression::Full
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Partial => "partially compressed",
            Compression::Full => "compressed",
        }
    }
}

/// Joins `_timescaledb_catalog.chunk ch` to its table (`pg_class cl`, `pg_namespace n`).
const CHUNK_BY_RELID: &str =
    "JOIN pg_class cl ON cl.oid = ch.relid JOIN pg_namespace n ON n.oid = cl.relnamespace";
/// The same for TimescaleDB versions whose chunk catalog names its table instead.
const CHUNK_BY_NAME: &str = "JOIN pg_namespace n ON n.nspname = ch.schema_name
     JOIN pg_class cl ON cl.relnamespace = n.oid AND cl.relname = ch.table_name";

/// Whether TimescaleDB's catalog table `table` has `column` (its layout changes across
/// versions).
async fn catalog_has_column(
    client: &Client,
    table: &str,
    column: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_attribute WHERE attrelid = $1::text::regclass
               AND attname = $2 AND NOT attisdropped",
            &[&table, &column],
        )
        .await?
        .is_some())
}

/// How this TimescaleDB's chunk catalog joins to the chunks' tables; `None` without
/// TimescaleDB.
async fn chunk_join(client: &Client) -> Result<Option<&'static str>, tokio_postgres::Error> {
    let has_tsdb = client
        .query_opt(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await?
        .is_some();
    if !has_tsdb {
        return Ok(None);
    }
    let by_relid = catalog_has_column(client, "_timescaledb_catalog.chunk", "relid").await?;
    Ok(Some(if by_relid {
        CHUNK_BY_RELID
    } else {
        CHUNK_BY_NAME
    }))
}

/// Every chunk's compression state, by chunk (compressed chunks' internal tables excluded).
/// Empty without TimescaleDB.
pub async fn chunk_compression(
    client: &Client,
) -> Result<std::collections::HashMap<QualifiedName, Compression>, tokio_postgres::Error> {
    let Some(chunk_rel) = chunk_join(client).await? else {
        return Ok(Default::default());
    };
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, cl.relname::text, ch.status FROM _timescaledb_catalog.chunk ch {chunk_rel}"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                Compression::from_status(r.get(2)),
            )
        })
        .collect())
}

/// A compressed chunk's rows and table bytes (heap and TOAST) as they were before compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreCompression {
    pub rows: i64,
    pub bytes: i64,
}

/// The catalog's sizes of compressed chunks as they were before compression
/// (`compression_chunk_size`), by chunk: a compressed chunk's own statistics count only its
/// uncompressed part (0 right after compression). Empty without TimescaleDB.
pub async fn compressed_row_counts(
    client: &Client,
) -> Result<std::collections::HashMap<QualifiedName, PreCompression>, tokio_postgres::Error> {
    let Some(chunk_rel) = chunk_join(client).await? else {
        return Ok(Default::default());
    };
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, cl.relname::text, coalesce(s.numrows_pre_compression, 0),
                        s.uncompressed_heap_size + s.uncompressed_toast_size
                 FROM _timescaledb_catalog.compression_chunk_size s
                 JOIN _timescaledb_catalog.chunk ch ON ch.id = s.chunk_id
                 {chunk_rel}"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                PreCompression {
                    rows: r.get(2),
                    bytes: r.get(3),
                },
            )
        })
        .collect())
}

/// Each chunk's slices in the hypertable's dimensions other than `time_column`. TimescaleDB
/// 2.x before 2.22 links slices to chunks through `chunk_constraint`; later versions store the
/// chunk in the slice.
async fn space_slices(
    client: &Client,
    table: &QualifiedName,
    time_column: &str,
) -> Result<std::collections::HashMap<QualifiedName, Vec<DimensionSlice>>, CatalogError> {
    let slice_has_chunk =
        catalog_has_column(client, "_timescaledb_catalog.dimension_slice", "chunk_id").await?;
    let (chunk_rel, slice_join) = if slice_has_chunk {
        (
            CHUNK_BY_RELID,
            "JOIN _timescaledb_catalog.dimension_slice ds ON ds.chunk_id = ch.id",
        )
    } else {
        (
            CHUNK_BY_NAME,
            "JOIN _timescaledb_catalog.chunk_constraint cc ON cc.chunk_id = ch.id
             JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = cc.dimension_slice_id",
        )
    };
    let sql = format!(
        "SELECT n.nspname::text, cl.relname::text, d.column_name::text, ds.range_start, ds.range_end,
                d.num_slices IS NOT NULL, d.partitioning_func_schema::text, d.partitioning_func::text
         FROM _timescaledb_catalog.chunk ch
         JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
         {chunk_rel}
         {slice_join}
         JOIN _timescaledb_catalog.dimension d ON d.id = ds.dimension_id
         WHERE h.schema_name::text = $1 AND h.table_name::text = $2 AND d.column_name::text <> $3
         ORDER BY 1, 2, 3"
    );
    let rows = client
        .query(&sql, &[&table.schema, &table.name, &time_column])
        .await?;
    let mut out: std::collections::HashMap<QualifiedName, Vec<DimensionSlice>> =
        std::collections::HashMap::new();
    for r in rows {
        let relation = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let column: String = r.get(2);
        let closed: bool = r.get(5);
        let func: Option<(String, String)> = match (r.get(6), r.get(7)) {
            (Some(s), Some(f)) => Some((s, f)),
            _ => None,
        };
        let col = quote_ident(&column);
        let value_expr = match func {
            Some((schema, f)) => format!("{}.{}({col})", quote_ident(&schema), quote_ident(&f)),
            None if closed => format!("_timescaledb_functions.get_partition_hash({col})"),
            None => format!("_timescaledb_functions.time_to_internal({col})"),
        };
        // TimescaleDB marks open ends with the minimum and maximum bigint.
        let start: i64 = r.get(3);
        let end: i64 = r.get(4);
        out.entry(relation).or_default().push(DimensionSlice {
            column,
            value_expr,
            start: (start != i64::MIN).then_some(start),
            end: (end != i64::MAX).then_some(end),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times_both_ways() {
        let t = TimeType::Timestamptz;
        let v = t.parse("2024-03-01 12:00:00+00").unwrap();
        assert_eq!(t.parse("2024-03-01T12:00:00Z").unwrap(), v);
        assert_eq!(t.parse("2024-03-01 14:00:00+02").unwrap(), v);
        assert_eq!(t.parse(&t.display(v)).unwrap(), v);
        assert_eq!(
            TimeType::Date.parse("2024-03-01").unwrap(),
            t.parse("2024-03-01 00:00:00+00").unwrap()
        );
        assert_eq!(t.literal(0), "'1970-01-01 00:00:00+00'::timestamptz");
        assert!(t.parse("yesterday-ish").is_err());
        assert_eq!(TimeType::BigInt.parse("42").unwrap(), 42);
    }

    #[test]
    fn parses_partition_bounds() {
        let t = TimeType::Timestamptz;
        let (a, b) = parse_range_bound(
            "FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-01-02 00:00:00+00')",
            t,
        )
        .unwrap();
        assert_eq!(b.unwrap() - a.unwrap(), 86_400_000_000);
        assert_eq!(
            parse_range_bound(
                "FOR VALUES FROM (MINVALUE) TO ('2024-01-01 00:00:00+00')",
                t
            )
            .unwrap()
            .0,
            None
        );
        assert!(parse_range_bound("FOR VALUES IN (1)", t).is_err());
    }

    #[test]
    fn table_specs() {
        let s: TableSpec = "metrics.readings:ts".parse().unwrap();
        assert_eq!(s.table, QualifiedName::new("metrics", "readings"));
        assert_eq!(s.time_column.as_deref(), Some("ts"));
        let s: TableSpec = "\"we:ird\".t".parse().unwrap();
        assert_eq!(s.table.schema, "we:ird");
        assert_eq!(s.time_column, None);
        assert!("t:".parse::<TableSpec>().is_err());
    }
}
