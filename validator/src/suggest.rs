//! suggest-t: during dual-write, the earliest time from which every bucket already agrees
//! between source and target (counts first, then checksums), as a candidate consistency time T.

use crate::counts::{table_report, units_of};
use crate::measure::{measure_both, DigestKind, Group, Measure, Pairing};
use crate::report::{Suggestion, TableReport};
use crate::schema::{shape, SchemaError};
use crate::session::{SessionError, Sides};
use crate::sql::and;
use crate::units::{BucketArg, Scan, TablePlan};

/// Default bucket of suggest-t for timestamp and date columns.
pub const DEFAULT_BUCKET: &str = "1h";
/// Agreeing non-empty buckets after the candidate for `high` confidence.
pub const HIGH_CONFIDENCE_BUCKETS: usize = 12;
/// ... and for `medium`.
pub const MEDIUM_CONFIDENCE_BUCKETS: usize = 3;

/// suggest-t failed.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("{table}: --bucket {bucket}: {detail}")]
    Bucket {
        table: String,
        bucket: String,
        detail: String,
    },
}

/// Suggest T for each table.
pub async fn run(
    sides: &Sides,
    plans: &[TablePlan],
    bucket: Option<&BucketArg>,
    kind: DigestKind,
    key: &[String],
) -> Result<Vec<TableReport>, SuggestError> {
    let mut out = Vec::new();
    for plan in plans {
        out.push(one(sides, plan, bucket, kind, key).await?);
    }
    Ok(out)
}

async fn one(
    sides: &Sides,
    plan: &TablePlan,
    bucket: Option<&BucketArg>,
    kind: DigestKind,
    key: &[String],
) -> Result<TableReport, SuggestError> {
    let table = &plan.table;
    let arg = bucket
        .cloned()
        .unwrap_or_else(|| BucketArg(DEFAULT_BUCKET.into()));
    let width = arg
        .width_for(table.time_type)
        .map_err(|detail| SuggestError::Bucket {
            table: table.table.to_string(),
            bucket: arg.0.clone(),
            detail,
        })?;
    // The whole table, clipped to --from/--until.
    let clip = table.range_condition(plan.from, plan.until);
    let scan = Scan {
        label: table.table.name.clone(),
        source_rel: table.table.clone(),
        target_rel: plan.target.table.clone(),
        source_cond: clip.clone(),
        target_cond: clip,
        start: plan.from,
        end: plan.until,
        bucket: Some(width),
        whole: false,
        source_compression: None,
        target_compression: None,
    };
    let group = Group::Time { origin: 0, width };
    let counts = measure_both(
        sides,
        table,
        &plan.target,
        &scan.source_rel,
        &scan.target_rel,
        &scan.source_cond,
        &scan.target_cond,
        &Measure::Count,
        &group,
        "counting rows per bucket",
    )
    .await?;
    let mut report = table_report(plan);
    let shape = shape(sides, &table.table, &plan.target.table, key).await?;
    report.columns = shape.columns.iter().map(|c| c.name.clone()).collect();
    report.key_columns = shape.key_names();

    let last_bad_count = counts.iter().rev().find(|p| !p.agrees()).map(|p| p.key);
    let mut candidate = match last_bad_count {
        Some(k) => k + width,
        None => counts.first().map_or(0, |p| p.key),
    };
    let mut pairings: Vec<Pairing> = counts.clone();
    let mut last_bad = last_bad_count.and_then(|k| counts.iter().find(|p| p.key == k).cloned());
    let latest = counts.last().map(|p| p.key + width);
    if latest.is_some_and(|l| candidate < l) {
        // Checksums of the buckets from the candidate on.
        let from = table.range_condition(Some(candidate), None);
        let digests = measure_both(
            sides,
            table,
            &plan.target,
            &scan.source_rel,
            &scan.target_rel,
            &and(&scan.source_cond, &from),
            &and(&scan.target_cond, &from),
            &Measure::Digest(kind, &shape),
            &group,
            "checksumming buckets",
        )
        .await?;
        if let Some(bad) = digests.iter().rev().find(|p| !p.agrees()) {
            candidate = bad.key + width;
            last_bad = Some(bad.clone());
        }
        for d in digests {
            if let Some(p) = pairings.iter_mut().find(|p| p.key == d.key) {
                *p = d;
            } else {
                pairings.push(d);
            }
        }
        pairings.sort_by_key(|p| p.key);
    }
    report.units = units_of(plan, &scan, &pairings);
    let tt = table.time_type;
    let after: Vec<&Pairing> = pairings.iter().filter(|p| p.key >= candidate).collect();
    let nonempty = after
        .iter()
        .filter(|p| p.source.rows > 0 || p.target.rows > 0)
        .count();
    let rows_after: i64 = after.iter().map(|p| p.source.rows).sum();
    let buckets_after = latest.map_or(0, |l| ((l - candidate).max(0) / width) as usize);
    let no_candidate = latest.is_none() || latest.is_some_and(|l| candidate >= l);
    let (confidence, reason) = if latest.is_none() {
        (
            "none".to_string(),
            "neither side holds rows in the range: nothing to compare".to_string(),
        )
    } else if no_candidate {
        (
            "none".to_string(),
            "the latest bucket differs: dual-write may not be running for this table, or writes are in flight (retry, or cut the range with --until)".to_string(),
        )
    } else if last_bad.is_none() {
        (
            "high".to_string(),
            format!(
                "every one of {nonempty} non-empty buckets agrees (counts and checksums): the target already holds everything, so any T works; the earliest is the first bucket"
            ),
        )
    } else {
        let bad = last_bad
            .as_ref()
            .map(|b| (b.source.rows, b.target.rows))
            .unwrap_or((0, 0));
        let short = bad.1 < bad.0;
        let level = if !short {
            "low"
        } else if nonempty >= HIGH_CONFIDENCE_BUCKETS {
            "high"
        } else if nonempty >= MEDIUM_CONFIDENCE_BUCKETS {
            "medium"
        } else {
            "low"
        };
        let mut why = format!(
            "{nonempty} non-empty buckets ({rows_after} source rows) from the candidate on agree in counts and checksums; the bucket just before differs (source {}, target {})",
            bad.0, bad.1
        );
        if short {
            why.push_str(", the target being short as dual-write leaves it");
        } else {
            why.push_str(": the target is not short there, which is not what dual-write leaves; look before trusting it");
        }
        if nonempty < HIGH_CONFIDENCE_BUCKETS {
            why.push_str(&format!("; fewer than {HIGH_CONFIDENCE_BUCKETS} agreeing buckets, so let dual-write run longer for more evidence"));
        }
        (level.to_string(), why)
    };
    report.suggestion = Some(Suggestion {
        candidate: (!no_candidate).then(|| tt.display(candidate)),
        candidate_value: (!no_candidate).then_some(candidate),
        confidence,
        reason,
        bucket: arg.0.clone(),
        agreeing_buckets_after: if no_candidate { 0 } else { buckets_after },
        nonempty_buckets_after: if no_candidate { 0 } else { nonempty },
        rows_after: if no_candidate { 0 } else { rows_after },
        last_differing_bucket: last_bad.as_ref().map(|b| tt.display(b.key)),
        last_differing_source_rows: last_bad.as_ref().map(|b| b.source.rows),
        last_differing_target_rows: last_bad.as_ref().map(|b| b.target.rows),
    });
    Ok(report)
}
