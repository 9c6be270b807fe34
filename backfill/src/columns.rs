//! What is copied of a table: its columns, by name on both sides, and the COPY format.
//!
//! Binary COPY is the fast path. It is not safe for every type: some have no binary I/O
//! (`typsend`/`typreceive` unset), and arrays and composites of user-defined types carry type
//! OIDs in their binary form, which differ between servers. A table with any such column, or
//! whose column types differ between source and target, is copied in text format.

use dualwrite_common::ident::{quote_ident, QualifiedName};
use tokio_postgres::Client;

use crate::pg::{describe, Side};

/// Reading a table's columns failed or they don't fit.
#[derive(Debug, thiserror::Error)]
pub enum ColumnsError {
    /// The table doesn't exist on that side (bad input).
    #[error("table {table} does not exist on the {side}{hint}")]
    Missing {
        table: String,
        side: Side,
        hint: &'static str,
    },
    /// A source column the target lacks (bad input).
    #[error("column {column:?} of {table} is missing on the target (or is generated there)")]
    Column { table: String, column: String },
    #[error("{side}: reading the columns of {table}: {detail}")]
    Query {
        side: Side,
        table: String,
        detail: String,
    },
}

/// A column as seen on one side.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    type_name: String,
    generated: bool,
    binary_ok: bool,
}

/// How one table is copied.
#[derive(Clone, Debug)]
pub struct TableCopy {
    /// Quoted, comma-separated column list, in source order.
    pub column_list: String,
    /// Binary COPY (else text).
    pub binary: bool,
    /// Why text format was chosen, for people.
    pub text_reason: Option<String>,
}

impl TableCopy {
    /// The `WITH (...)` options of both COPY statements.
    pub fn options(&self) -> &'static str {
        if self.binary {
            "(FORMAT binary)"
        } else {
            "(FORMAT text)"
        }
    }
}

const COLUMNS_SQL: &str = "
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '',
       b.typsend::oid <> 0 AND b.typreceive::oid <> 0
         AND b.typtype <> 'c'
         AND NOT (b.typcategory = 'A' AND (e.oid >= 16384 OR e.typtype = 'c'))
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
WHERE a.attrelid = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = $1 AND c.relname = $2)
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

async fn columns(
    client: &Client,
    side: Side,
    table: &QualifiedName,
) -> Result<Vec<Column>, ColumnsError> {
    let rows = client
        .query(COLUMNS_SQL, &[&table.schema, &table.name])
        .await
        .map_err(|e| ColumnsError::Query {
            side,
            table: table.to_string(),
            detail: describe(&e),
        })?;
    Ok(rows
        .into_iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
            generated: r.get(2),
            binary_ok: r.get(3),
        })
        .collect())
}

/// Match a table's columns on both sides and choose the format.
pub async fn table_copy(
    source: &Client,
    target: &Client,
    table: &QualifiedName,
) -> Result<TableCopy, ColumnsError> {
    let src = columns(source, Side::Source, table).await?;
    if src.is_empty() {
        return Err(ColumnsError::Missing {
            table: table.to_string(),
            side: Side::Source,
            hint: "",
        });
    }
    let tgt = columns(target, Side::Target, table).await?;
    if tgt.is_empty() {
        return Err(ColumnsError::Missing {
            table: table.to_string(),
            side: Side::Target,
            hint: " (create the schema first, e.g. with `dualwrite-backfill schema`)",
        });
    }
    let mut names = Vec::new();
    let mut text_reason = None;
    for c in src.iter().filter(|c| !c.generated) {
        let Some(t) = tgt.iter().find(|t| t.name == c.name && !t.generated) else {
            return Err(ColumnsError::Column {
                table: table.to_string(),
                column: c.name.clone(),
            });
        };
        if text_reason.is_none() {
            if !c.binary_ok || !t.binary_ok {
                text_reason = Some(format!(
                    "column {} ({}) has no portable binary form",
                    c.name, c.type_name
                ));
            } else if c.type_name != t.type_name {
                text_reason = Some(format!(
                    "column {} is {} on the source and {} on the target",
                    c.name, c.type_name, t.type_name
                ));
            }
        }
        names.push(quote_ident(&c.name));
    }
    Ok(TableCopy {
        column_list: names.join(", "),
        binary: text_reason.is_none(),
        text_reason,
    })
}
