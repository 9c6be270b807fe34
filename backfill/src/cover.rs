//! Before copying: do the target's partitions take every row the plan copies? A target table
//! partitioned by range without a DEFAULT partition rejects rows outside its partitions; the
//! copy would fail unit by unit. A source partition the target lacks is created there (same
//! name, same bounds) before the workers start, so they never race to create it; what cannot
//! be fixed that way is reported up front, before anything is written.

use dualwrite_common::catalog::{self, TableKind, TimeSeriesTable};
use dualwrite_common::ident::QualifiedName;
use tokio_postgres::Client;

use crate::pg::describe;
use crate::plan::{Replace, UnitSpec};

/// Whether `[a, b)` lies inside the union of `ranges` (`None` is unbounded).
pub fn covered(ranges: &[(Option<i64>, Option<i64>)], a: Option<i64>, b: i64) -> bool {
    let mut sorted: Vec<(i64, i64)> = ranges
        .iter()
        .map(|(s, e)| (s.unwrap_or(i64::MIN), e.unwrap_or(i64::MAX)))
        .collect();
    sorted.sort_unstable();
    let mut pos = a.unwrap_or(i64::MIN);
    for (s, e) in sorted {
        if pos >= b {
            break;
        }
        if s <= pos {
            pos = pos.max(e);
        }
    }
    pos >= b
}

/// A source partition the target lacks.
#[derive(Clone, Debug, PartialEq)]
pub struct Missing {
    pub parent: QualifiedName,
    pub partition: QualifiedName,
    /// `FOR VALUES FROM (...) TO (...)`, as the source has it.
    pub bound: String,
}

impl Missing {
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE {} PARTITION OF {} {}",
            self.partition.quoted(),
            self.parent.quoted(),
            self.bound
        )
    }
}

/// Create the missing partitions on the target, in one transaction.
pub async fn create(target: &mut Client, missing: &[Missing]) -> Result<(), String> {
    let tx = target
        .transaction()
        .await
        .map_err(|e| format!("target: {}", describe(&e)))?;
    for m in missing {
        tx.batch_execute(&m.create_sql()).await.map_err(|e| {
            format!(
                "target: creating partition {}: {}",
                m.partition,
                describe(&e)
            )
        })?;
    }
    tx.commit()
        .await
        .map_err(|e| format!("target: {}", describe(&e)))
}

/// The source's bound of partition `rel`, when it is one.
async fn source_bound(source: &Client, rel: &QualifiedName) -> Result<Option<String>, String> {
    let row = source
        .query_opt(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2 AND c.relispartition",
            &[&rel.schema, &rel.name],
        )
        .await
        .map_err(|e| format!("source: {}", describe(&e)))?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
}

/// Partitions to create on the target, and problems that stop the copy (one line each).
pub async fn check(
    source: &Client,
    target: &Client,
    tables: &[TimeSeriesTable],
    units: &[UnitSpec],
    target_has_timescaledb: bool,
) -> Result<(Vec<Missing>, Vec<String>), String> {
    let mut missing: Vec<Missing> = Vec::new();
    let mut problems = Vec::new();
    for t in tables.iter().filter(|t| t.kind == TableKind::Partitioned) {
        let on_target = catalog::describe(
            target,
            &t.table,
            Some(&t.time_column),
            target_has_timescaledb,
        )
        .await
        .map_err(|e| format!("target: {e}"))?;
        if on_target.kind != TableKind::Partitioned || on_target.chunks.iter().any(|c| c.is_default)
        {
            continue;
        }
        let ranges: Vec<(Option<i64>, Option<i64>)> =
            on_target.chunks.iter().map(|c| (c.start, c.end)).collect();
        let name = t.table.to_string();
        for u in units.iter().filter(|u| u.table.qn().to_string() == name) {
            match u.replace {
                Replace::Range => {
                    if covered(&ranges, u.start, u.end) {
                        continue;
                    }
                    let partition = u.source.qn();
                    if missing.iter().any(|m| m.partition == partition) {
                        continue;
                    }
                    if let Some(bound) = source_bound(source, &partition).await? {
                        missing.push(Missing {
                            parent: t.table.clone(),
                            partition,
                            bound,
                        });
                    } else {
                        problems.push(format!(
                            "the target's partitions of {name} do not cover {} (source partition {}); create them, or a DEFAULT partition",
                            u.range_text(),
                            u.source.qn()
                        ));
                    }
                }
                Replace::DefaultPartition => {
                    let sql = format!(
                        "SELECT EXISTS (SELECT 1 FROM {} WHERE {})",
                        u.source.qn().quoted(),
                        u.condition()
                    );
                    let any: bool = source
                        .query_one(&sql, &[])
                        .await
                        .map_err(|e| format!("source: {}", describe(&e)))?
                        .get(0);
                    if any {
                        problems.push(format!(
                            "the source's DEFAULT partition {} holds rows in {} but the target's {name} has no DEFAULT partition",
                            u.source.qn(),
                            u.range_text()
                        ));
                    }
                }
            }
        }
    }
    Ok((missing, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage() {
        let r = [(Some(0), Some(10)), (Some(10), Some(20)), (Some(30), None)];
        assert!(covered(&r, Some(0), 20));
        assert!(covered(&r, Some(5), 15));
        assert!(!covered(&r, Some(15), 25));
        assert!(covered(&r, Some(30), 1000));
        assert!(!covered(&r, None, 5));
        assert!(covered(&[(None, Some(5))], None, 5));
        assert!(!covered(&[], Some(0), 1));
    }
}
