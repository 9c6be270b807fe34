//! Row-level comparison of one small region: fetch every row from both sides as canonical
//! text and pair them by key into missing, extra and changed rows.

use std::collections::BTreeMap;

use crate::report::{RowDiff, RowDiffKind};
use crate::schema::TableShape;
use crate::session::{SessionError, Sides};
use crate::sql::where_clause;
use crate::units::Scan;

type Row = Vec<Option<String>>;

/// Fetch a region's rows on both sides.
pub async fn fetch(
    sides: &Sides,
    shape: &TableShape,
    scan: &Scan,
    source_cond: &str,
    target_cond: &str,
) -> Result<(Vec<Row>, Vec<Row>), SessionError> {
    let cols = shape.select_text();
    let q = |rel: String, cond: &str| format!("SELECT {cols} FROM {rel}{}", where_clause(cond));
    let (s, t) = sides
        .query_both(
            &q(scan.source_rel.quoted(), source_cond),
            &q(scan.target_rel.quoted(), target_cond),
            "fetching differing rows",
        )
        .await?;
    let conv = |rows: Vec<tokio_postgres::Row>| -> Vec<Row> {
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect()
            })
            .collect()
    };
    Ok((conv(s), conv(t)))
}

/// Pair rows by key: identical rows cancel (as many times as they occur on both sides); what
/// remains with the same key on both sides is changed, the rest missing or extra.
pub fn compare(shape: &TableShape, source: Vec<Row>, target: Vec<Row>) -> Vec<RowDiff> {
    let key_of = |r: &Row| -> Row { shape.key.iter().map(|&i| r[i].clone()).collect() };
    let mut by_key: BTreeMap<Row, (Vec<Row>, Vec<Row>)> = BTreeMap::new();
    for r in source {
        by_key.entry(key_of(&r)).or_default().0.push(r);
    }
    for r in target {
        by_key.entry(key_of(&r)).or_default().1.push(r);
    }
    let mut out = Vec::new();
    for (key, (mut s, mut t)) in by_key {
        s.sort();
        t.sort();
        // Remove rows present on both sides, multiset-wise.
        let (mut i, mut j) = (0, 0);
        let (mut s_left, mut t_left) = (Vec::new(), Vec::new());
        while i < s.len() && j < t.len() {
            match s[i].cmp(&t[j]) {
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    s_left.push(s[i].clone());
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    t_left.push(t[j].clone());
                    j += 1;
                }
            }
        }
        s_left.extend(s.drain(i..));
        t_left.extend(t.drain(j..));
        let pairs = if shape.has_key {
            s_left.len().min(t_left.len())
        } else {
            0
        };
        for (a, b) in s_left.iter().zip(t_left.iter()).take(pairs) {
            let changed_columns = shape
                .columns
                .iter()
                .enumerate()
                .filter(|(k, _)| a[*k] != b[*k])
                .map(|(_, c)| c.name.clone())
                .collect();
            out.push(RowDiff {
                kind: RowDiffKind::Changed,
                key: key.clone(),
                source: Some(a.clone()),
                target: Some(b.clone()),
                changed_columns,
            });
        }
        for a in s_left.into_iter().skip(pairs) {
            out.push(RowDiff {
                kind: RowDiffKind::Missing,
                key: key.clone(),
                source: Some(a),
                target: None,
                changed_columns: Vec::new(),
            });
        }
        for b in t_left.into_iter().skip(pairs) {
            out.push(RowDiff {
                kind: RowDiffKind::Extra,
                key: key.clone(),
                source: None,
                target: Some(b),
                changed_columns: Vec::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    fn shape(has_key: bool) -> TableShape {
        TableShape {
            columns: vec![
                Column::new("id", "integer", "int4", false),
                Column::new("v", "text", "text", false),
            ],
            key: if has_key { vec![0] } else { vec![0, 1] },
            has_key,
        }
    }

    #[test]
    fn classifies_rows() {
        let src = vec![
            vec![s("1"), s("a")],
            vec![s("2"), s("b")],
            vec![s("3"), None],
        ];
        let tgt = vec![
            vec![s("1"), s("a")],
            vec![s("3"), s("")],
            vec![s("4"), s("d")],
        ];
        let d = compare(&shape(true), src, tgt);
        let kinds: Vec<_> = d.iter().map(|r| (r.kind, r.key[0].clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (RowDiffKind::Missing, s("2")),
                (RowDiffKind::Changed, s("3")),
                (RowDiffKind::Extra, s("4"))
            ]
        );
        assert_eq!(d[1].changed_columns, vec!["v".to_string()]);
    }

    #[test]
    fn duplicates_without_key() {
        let src = vec![vec![s("1"), s("a")]];
        let tgt = vec![vec![s("1"), s("a")], vec![s("1"), s("a")]];
        let d = compare(&shape(false), src, tgt);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, RowDiffKind::Extra);
    }
}
