//! SQL fragments shared by counts, checksums and bisection: time buckets and time as integers.

use dualwrite_common::catalog::TimeType;
use dualwrite_common::ident::quote_ident;

/// ` WHERE cond`, or nothing when the condition is `true`.
pub fn where_clause(cond: &str) -> String {
    if cond == "true" {
        String::new()
    } else {
        format!(" WHERE {cond}")
    }
}

/// `a AND b`, dropping `true` terms.
pub fn and(a: &str, b: &str) -> String {
    match (a, b) {
        ("true", b) => b.to_string(),
        (a, "true") => a.to_string(),
        (a, b) => format!("({a}) AND ({b})"),
    }
}

/// The time column as `int8`: microseconds since the epoch, or the integer itself.
pub fn micros_expr(time_type: TimeType, column: &str) -> String {
    let col = quote_ident(column);
    match time_type {
        TimeType::Timestamptz | TimeType::Timestamp => {
            format!("(extract(epoch FROM {col}) * 1000000)::int8")
        }
        TimeType::Date => format!("(extract(epoch FROM {col}::timestamp) * 1000000)::int8"),
        _ => format!("{col}::int8"),
    }
}

/// How rows are grouped into buckets of `width` aligned on `origin`: `inner` is evaluated per
/// row and grouped on (as column `b`), `outer` turns a group's `b` into the bucket start.
#[derive(Clone, Debug)]
pub struct BucketSql {
    /// Per row: the group value.
    pub inner: String,
    /// Per group: the bucket start as `int8`, from `b`.
    pub outer: String,
}

/// Bucket expressions for a time column; `date_bin` where the server has it (PostgreSQL 14+).
/// Every form yields the same bucket starts, so source and target may use different forms.
pub fn bucket_sql(
    time_type: TimeType,
    column: &str,
    origin: i64,
    width: i64,
    version_num: i32,
) -> BucketSql {
    let col = quote_ident(column);
    match time_type {
        TimeType::SmallInt | TimeType::Integer | TimeType::BigInt => BucketSql {
            inner: format!(
                "(({col}::int8 - {origin}) / {width} - CASE WHEN {col}::int8 < {origin} AND ({col}::int8 - {origin}) % {width} <> 0 THEN 1 ELSE 0 END)"
            ),
            outer: format!("(b * {width} + {origin})::int8"),
        },
        _ if version_num >= 140000 => {
            let (value, origin_lit) = match time_type {
                TimeType::Timestamptz => (col, TimeType::Timestamptz.literal(origin)),
                TimeType::Timestamp => (col, TimeType::Timestamp.literal(origin)),
                _ => (
                    format!("{col}::timestamp"),
                    TimeType::Timestamp.literal(origin),
                ),
            };
            BucketSql {
                inner: format!("date_bin('{width} microseconds'::interval, {value}, {origin_lit})"),
                outer: "(extract(epoch FROM b) * 1000000)::int8".to_string(),
            }
        }
        _ => BucketSql {
            inner: format!(
                "floor(({} - {origin}::numeric) / {width})",
                micros_expr(time_type, column)
            ),
            outer: format!("(b * {width} + {origin})::int8"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments() {
        assert_eq!(where_clause("true"), "");
        assert_eq!(where_clause("x > 1"), " WHERE x > 1");
        assert_eq!(and("true", "a"), "a");
        assert_eq!(and("a", "b"), "(a) AND (b)");
        let b = bucket_sql(TimeType::Timestamptz, "ts", 0, 3_600_000_000, 150000);
        assert!(b.inner.starts_with("date_bin('3600000000 microseconds'"));
        let b = bucket_sql(TimeType::Timestamptz, "ts", 0, 10, 130000);
        assert!(b.inner.starts_with("floor("));
        let b = bucket_sql(TimeType::BigInt, "id", 5, 10, 150000);
        assert!(b.outer.contains("* 10 + 5"));
    }
}
