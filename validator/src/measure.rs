//! One measurement query run on both sides: row counts, or counts with an order-independent
//! digest, for a relation and condition, whole or grouped by time bucket or key hash.

use std::collections::BTreeMap;

use dualwrite_common::catalog::TimeSeriesTable;
use dualwrite_common::ident::QualifiedName;

use crate::schema::TableShape;
use crate::session::{SessionError, Side, Sides};
use crate::sql::{bucket_sql, where_clause};

/// How a row's hash is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestKind {
    /// `hash_record_extended` over the row's typed values (text for types without a stable
    /// hash): one 64-bit word per row. Needs PostgreSQL 14+ on both sides and a probe that
    /// both servers hash alike.
    Typed,
    /// `md5` of the row's canonical text: two 64-bit words per row. Any version, any platform.
    Text,
}

/// What is measured.
#[derive(Clone, Copy, Debug)]
pub enum Measure<'a> {
    /// `count(*)`.
    Count,
    /// `count(*)` and the sums of row-hash words.
    Digest(DigestKind, &'a TableShape),
}

/// How rows are grouped.
#[derive(Clone, Copy, Debug)]
pub enum Group<'a> {
    /// One result for the whole relation and condition.
    None,
    /// Time buckets of `width` aligned on `origin`.
    Time { origin: i64, width: i64 },
    /// 32 groups by bits `shift..shift+5` of the key's hash.
    KeyHash {
        shift: u32,
        shape: &'a TableShape,
        kind: DigestKind,
    },
}

/// One side's figures for a group.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Cell {
    /// Rows in the group.
    pub rows: i64,
    /// The digest's sums as text; empty for counts.
    pub digest: String,
}

/// Both sides' figures for one group (`key` is the bucket start or key-hash group; 0 ungrouped).
#[derive(Clone, Debug)]
pub struct Pairing {
    /// Bucket start, key-hash group, or 0.
    pub key: i64,
    /// The source's figures.
    pub source: Cell,
    /// The target's figures.
    pub target: Cell,
}

impl Pairing {
    /// Whether both sides agree.
    pub fn agrees(&self) -> bool {
        self.source.rows == self.target.rows && self.source.digest == self.target.digest
    }
}

/// The 64-bit hash of the key columns, for key bisection.
pub fn key_hash_sql(shape: &TableShape, kind: DigestKind) -> String {
    match kind {
        DigestKind::Typed => {
            let cols: Vec<String> = shape
                .key
                .iter()
                .map(|&i| shape.columns[i].typed_expr())
                .collect();
            format!("hash_record_extended(ROW({}), 7)", cols.join(", "))
        }
        DigestKind::Text => format!(
            "('x' || substr(md5({}), 1, 16))::bit(64)::int8",
            shape.key_text()
        ),
    }
}

fn empty_digest(m: &Measure) -> String {
    match m {
        Measure::Count => String::new(),
        Measure::Digest(DigestKind::Typed, _) => "0".into(),
        Measure::Digest(DigestKind::Text, _) => "0:0".into(),
    }
}

/// The SQL of one measurement on one side.
pub fn build_sql(
    side: &Side,
    table: &TimeSeriesTable,
    rel: &QualifiedName,
    cond: &str,
    measure: &Measure,
    group: &Group,
) -> String {
    let relq = rel.quoted();
    let filter = where_clause(cond);
    let (group_inner, group_outer) = match group {
        Group::None => (None, None),
        Group::Time { origin, width } => {
            let b = bucket_sql(
                table.time_type,
                &table.time_column,
                *origin,
                *width,
                side.version_num,
            );
            (Some(b.inner), Some(b.outer))
        }
        Group::KeyHash { shift, shape, kind } => (
            Some(format!(
                "(({} >> {shift}) & 31)",
                key_hash_sql(shape, *kind)
            )),
            Some("b::int8".to_string()),
        ),
    };
    // Text digests hash once per row behind an OFFSET 0 fence, then split the hash in two.
    let (from, group_expr, digest) = match measure {
        Measure::Count => (format!("{relq}{filter}"), group_inner, None),
        Measure::Digest(DigestKind::Typed, shape) => (
            format!("{relq}{filter}"),
            group_inner,
            Some(format!(
                "coalesce(sum(hash_record_extended({}, 0)), 0)::text",
                shape.row_typed()
            )),
        ),
        Measure::Digest(DigestKind::Text, shape) => {
            let b = group_inner
                .map(|g| format!(", {g} AS b"))
                .unwrap_or_default();
            let has_b = !b.is_empty();
            (
                format!(
                    "(SELECT md5({}) AS h{b} FROM {relq}{filter} OFFSET 0) r",
                    shape.row_text()
                ),
                has_b.then(|| "b".to_string()),
                Some(
                    "coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::int8), 0)::text || ':' || \
                     coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::int8), 0)::text"
                        .to_string(),
                ),
            )
        }
    };
    let digest_col = digest.map(|d| format!(", {d}")).unwrap_or_default();
    match (group_expr, group_outer) {
        (Some(g), Some(outer)) => format!(
            "SELECT {outer}, n{} FROM (SELECT {g} AS b, count(*)::int8 AS n{digest_col_as} FROM {from} GROUP BY 1) g",
            if digest_col.is_empty() { "" } else { ", d" },
            digest_col_as = if digest_col.is_empty() { String::new() } else { format!("{digest_col} AS d") },
        ),
        _ => format!("SELECT 0::int8, count(*)::int8{digest_col} FROM {from}"),
    }
}

/// Run one measurement on both sides and pair the groups (a group one side lacks has 0 rows).
#[allow(clippy::too_many_arguments)]
pub async fn measure_both(
    sides: &Sides,
    table: &TimeSeriesTable,
    target_table: &TimeSeriesTable,
    source_rel: &QualifiedName,
    target_rel: &QualifiedName,
    source_cond: &str,
    target_cond: &str,
    measure: &Measure<'_>,
    group: &Group<'_>,
    what: &str,
) -> Result<Vec<Pairing>, SessionError> {
    let s_sql = build_sql(
        &sides.source,
        table,
        source_rel,
        source_cond,
        measure,
        group,
    );
    let t_sql = build_sql(
        &sides.target,
        target_table,
        target_rel,
        target_cond,
        measure,
        group,
    );
    tracing::debug!(source = %s_sql, target = %t_sql, "measure");
    let (s, t) = sides.query_both(&s_sql, &t_sql, what).await?;
    let empty = Cell {
        rows: 0,
        digest: empty_digest(measure),
    };
    let mut map: BTreeMap<i64, Pairing> = BTreeMap::new();
    let is_digest = matches!(measure, Measure::Digest(..));
    for (rows, is_source) in [(s, true), (t, false)] {
        for r in rows {
            let key: i64 = r.get(0);
            let cell = Cell {
                rows: r.get(1),
                digest: if is_digest { r.get(2) } else { String::new() },
            };
            let p = map.entry(key).or_insert_with(|| Pairing {
                key,
                source: empty.clone(),
                target: empty.clone(),
            });
            if is_source {
                p.source = cell;
            } else {
                p.target = cell;
            }
        }
    }
    Ok(map.into_values().collect())
}
