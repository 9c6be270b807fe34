//! Before copying: do the target's partitions take every row the plan copies? A target table
//! partitioned by range without a DEFAULT partition rejects rows outside its partitions; the
//! copy would fail unit by unit, so the gaps are reported up front, before anything is written.

use dualwrite_common::catalog::{self, TableKind, TimeSeriesTable};
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

/// Problems found, one line each (empty: the target takes every row).
pub async fn check(
    source: &Client,
    target: &Client,
    tables: &[TimeSeriesTable],
    units: &[UnitSpec],
    target_has_timescaledb: bool,
) -> Result<Vec<String>, String> {
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
                    if !covered(&ranges, u.start, u.end) {
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
    Ok(problems)
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
