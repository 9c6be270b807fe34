//! Columns and key of a compared table, and the SQL expressions that turn a row into
//! canonical text or into a typed hash input.

use dualwrite_common::ident::{quote_ident, quote_literal, QualifiedName};

use crate::session::{SessionError, Side, Sides};

/// Types whose extended hash function hashes the stored value itself (not a looser notion of
/// equality) and is stable across major versions. Everything else is hashed as text.
const TYPED_HASH_SAFE: &[&str] = &[
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "bool",
    "text",
    "varchar",
    "timestamptz",
    "timestamp",
    "date",
    "uuid",
    "jsonb",
    "bytea",
    "time",
    "oid",
];

/// Types whose hash follows a collation: hashed with `COLLATE "C"` so that byte-different
/// strings never hash alike.
const COLLATABLE: &[&str] = &["text", "varchar"];

/// One column of a compared table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// `format_type()` output, for people.
    pub type_name: String,
    /// Base type name (`typname`), or the element's for arrays.
    #[serde(skip)]
    base: String,
    /// Whether the column is an array (of `base`).
    #[serde(skip)]
    pub is_array: bool,
}

impl Column {
    /// Build a column description (tests and callers that know the types).
    pub fn new(name: &str, type_name: &str, base: &str, is_array: bool) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            base: base.into(),
            is_array,
        }
    }

    /// The column as canonical text (settings from the session make it stable).
    pub fn text_expr(&self) -> String {
        format!("{}::text", quote_ident(&self.name))
    }

    /// The column as input to `hash_record_extended`: itself when its type hashes stably,
    /// else its canonical text.
    pub fn typed_expr(&self) -> String {
        let col = quote_ident(&self.name);
        if TYPED_HASH_SAFE.contains(&self.base.as_str()) {
            if COLLATABLE.contains(&self.base.as_str()) {
                format!("{col} COLLATE \"C\"")
            } else {
                col
            }
        } else {
            format!("{col}::text COLLATE \"C\"")
        }
    }

    /// Whether the column is hashed through its text form in typed mode.
    pub fn hashed_as_text(&self) -> bool {
        !TYPED_HASH_SAFE.contains(&self.base.as_str())
    }
}

/// Columns and key of one table, read from the source and checked against the target.
#[derive(Clone, Debug)]
pub struct TableShape {
    /// Columns in the source's order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the key (`--key`, else the primary key, else every column).
    pub key: Vec<usize>,
    /// Whether the key came from `--key` or a primary key (else rows can only be missing or extra).
    pub has_key: bool,
}

/// The table's columns or key do not fit.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{table}: --key column {column:?} does not exist")]
    UnknownKey {
        table: QualifiedName,
        column: String,
    },
    #[error("{table}: the target lacks column {column:?} that the source has")]
    MissingOnTarget {
        table: QualifiedName,
        column: String,
    },
}

async fn columns(side: &Side, table: &QualifiedName) -> Result<Vec<Column>, SessionError> {
    let sql = format!(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                CASE WHEN t.typcategory = 'A' THEN coalesce(e.typname::text, '') ELSE t.typname::text END,
                t.typcategory = 'A'
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
         WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
        quote_literal(&table.quoted())
    );
    let rows = side
        .query(&sql, &format!("reading the columns of {table}"))
        .await?;
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
            base: r.get(2),
            is_array: r.get(3),
        })
        .collect())
}

async fn primary_key(side: &Side, table: &QualifiedName) -> Result<Vec<String>, SessionError> {
    let sql = format!(
        "SELECT a.attname::text FROM pg_index i
         JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = {}::regclass AND i.indisprimary ORDER BY k.n",
        quote_literal(&table.quoted())
    );
    let rows = side
        .query(&sql, &format!("reading the primary key of {table}"))
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Read a table's columns on both sides and resolve its key.
pub async fn shape(
    sides: &Sides,
    table: &QualifiedName,
    target_table: &QualifiedName,
    key: &[String],
) -> Result<TableShape, SchemaError> {
    let (cols, target_cols) = tokio::join!(
        columns(&sides.source, table),
        columns(&sides.target, target_table)
    );
    let (cols, target_cols) = (cols?, target_cols?);
    if let Some(c) = cols
        .iter()
        .find(|c| !target_cols.iter().any(|t| t.name == c.name))
    {
        return Err(SchemaError::MissingOnTarget {
            table: table.clone(),
            column: c.name.clone(),
        });
    }
    let names = if key.is_empty() {
        primary_key(&sides.source, table).await?
    } else {
        key.to_vec()
    };
    let mut idx = Vec::new();
    for n in &names {
        match cols.iter().position(|c| &c.name == n) {
            Some(i) => idx.push(i),
            None => {
                return Err(SchemaError::UnknownKey {
                    table: table.clone(),
                    column: n.clone(),
                })
            }
        }
    }
    let has_key = !idx.is_empty();
    if !has_key {
        idx = (0..cols.len()).collect();
    }
    Ok(TableShape {
        columns: cols,
        key: idx,
        has_key,
    })
}

impl TableShape {
    /// `ROW(...)::text` of the whole row: record output quotes values holding separators,
    /// quotes or spaces, prints NULL as nothing and '' as `""`, so it is unambiguous.
    pub fn row_text(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.name)).collect();
        format!("ROW({})::text", cols.join(", "))
    }

    /// `ROW(...)` of the whole row for `hash_record_extended`.
    pub fn row_typed(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(Column::typed_expr).collect();
        format!("ROW({})", cols.join(", "))
    }

    /// `ROW(...)::text` of the key columns.
    pub fn key_text(&self) -> String {
        let cols: Vec<String> = self
            .key
            .iter()
            .map(|&i| quote_ident(&self.columns[i].name))
            .collect();
        format!("ROW({})::text", cols.join(", "))
    }

    /// Every column as text, in order, for fetching rows to diff.
    pub fn select_text(&self) -> String {
        self.columns
            .iter()
            .map(Column::text_expr)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Key column names.
    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&i| self.columns[i].name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        let shape = TableShape {
            columns: vec![
                Column::new("ts", "timestamp with time zone", "timestamptz", false),
                Column::new("Label", "text", "text", false),
                Column::new("amount", "numeric(10,2)", "numeric", false),
            ],
            key: vec![0],
            has_key: true,
        };
        assert_eq!(shape.row_text(), "ROW(\"ts\", \"Label\", \"amount\")::text");
        assert_eq!(
            shape.row_typed(),
            "ROW(\"ts\", \"Label\" COLLATE \"C\", \"amount\"::text COLLATE \"C\")"
        );
        assert_eq!(shape.key_text(), "ROW(\"ts\")::text");
        assert!(shape.columns[2].hashed_as_text());
    }
}
