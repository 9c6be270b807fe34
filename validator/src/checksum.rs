//! Per-unit digests on both sides, and for every unit that differs, bisection down to the
//! differing rows.

use futures_util::{stream, StreamExt, TryStreamExt};

use crate::bisect::{data_bounds, locate};
use crate::counts::{table_report, units_of};
use crate::diff::{compare, fetch};
use crate::measure::{measure_both, DigestKind, Group, Measure};
use crate::progress::Progress;
use crate::report::{Status, TableReport, UnitReport};
use crate::schema::{shape, SchemaError, TableShape};
use crate::session::{SessionError, Sides};
use crate::units::{Scan, TablePlan};

/// A probe row covering the typed-hash types: both servers must hash it alike before typed
/// digests are trusted (hash functions follow the platform's byte order).
const PROBE: &str = "SELECT hash_record_extended(ROW(1::int2, 2::int4, 3::int8, 1.5::float4, 0.1::float8, \
    true, 'é x'::text COLLATE \"C\", '2024-03-01 12:00:00+00'::timestamptz, '2024-03-01 12:00:00'::timestamp, \
    '2024-03-01'::date, '{\"a\": [1, 2.5, null]}'::jsonb, '\\x00ff'::bytea, \
    '0b3c7a1e-4c0d-4d2a-9b1f-3f2b1c0d9e8a'::uuid, '12:34:56'::time, ARRAY[1, 2]::int4[], NULL::text), 0)";

/// A smallest region is fetched only up to this many times `--bisect-rows` rows.
const UNSPLITTABLE_FETCH_FACTOR: i64 = 10;

/// Checksum failed.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("--digest typed needs PostgreSQL 14 or later on both sides and identical hashing on both (source {source_version}, target {target_version}): use --digest text")]
    TypedUnavailable {
        source_version: i32,
        target_version: i32,
    },
}

/// `--digest`: which row hash to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DigestChoice {
    /// Typed when both servers support it and hash a probe row alike, else text.
    #[default]
    Auto,
    Typed,
    Text,
}

/// Checksum settings.
#[derive(Clone, Debug)]
pub struct ChecksumOptions {
    /// `--key`: columns that identify a row (default: the primary key).
    pub key: Vec<String>,
    /// Which row hash was asked for.
    pub digest: DigestChoice,
    /// Bisect until a region holds at most this many rows, then fetch them.
    pub bisect_rows: i64,
    /// Differing rows listed per unit.
    pub max_rows: usize,
    /// Scans in flight.
    pub jobs: usize,
}

/// Decide the digest kind; returns a note saying why when falling back.
pub async fn choose_digest(
    sides: &Sides,
    choice: DigestChoice,
) -> Result<(DigestKind, Option<String>), ChecksumError> {
    if choice == DigestChoice::Text {
        return Ok((DigestKind::Text, None));
    }
    let unavailable = ChecksumError::TypedUnavailable {
        source_version: sides.source.version_num,
        target_version: sides.target.version_num,
    };
    if sides.source.version_num < 140000 || sides.target.version_num < 140000 {
        return match choice {
            DigestChoice::Typed => Err(unavailable),
            _ => Ok((
                DigestKind::Text,
                Some("text digest: typed hashing needs PostgreSQL 14+ on both sides".into()),
            )),
        };
    }
    let (s, t) = sides
        .query_both(PROBE, PROBE, "probing the row hash")
        .await?;
    let s: Option<i64> = s.first().map(|r| r.get(0));
    let t: Option<i64> = t.first().map(|r| r.get(0));
    if s.is_some() && s == t {
        Ok((DigestKind::Typed, None))
    } else if choice == DigestChoice::Typed {
        Err(unavailable)
    } else {
        Ok((
            DigestKind::Text,
            Some("text digest: source and target hash a probe row differently".into()),
        ))
    }
}

/// Digests of every unit, with the differing rows of every differing unit.
pub async fn run(
    sides: &Sides,
    plans: &[TablePlan],
    kind: DigestKind,
    opts: &ChecksumOptions,
    progress: &Progress,
) -> Result<Vec<TableReport>, ChecksumError> {
    let mut shapes = Vec::new();
    for p in plans {
        shapes.push(shape(sides, &p.table.table, &p.target.table, &opts.key).await?);
    }
    let work: Vec<(usize, &Scan)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.scans.iter().map(move |s| (i, s)))
        .collect();
    let shapes_ref = &shapes;
    let results: Vec<(usize, Vec<UnitReport>)> = stream::iter(work)
        .map(|(i, scan)| async move {
            let plan = &plans[i];
            let shape = &shapes_ref[i];
            let group = match scan.bucket {
                Some(width) => Group::Time { origin: 0, width },
                None => Group::None,
            };
            let pairings = measure_both(
                sides,
                &plan.table,
                &plan.target,
                &scan.source_rel,
                &scan.target_rel,
                &scan.source_cond,
                &scan.target_cond,
                &Measure::Digest(kind, shape),
                &group,
                &format!("checksumming {}", scan.label),
            )
            .await?;
            let mut units = units_of(plan, scan, &pairings);
            let rows: i64 = units.iter().map(|u| u.source_rows + u.target_rows).sum();
            progress.done(1, rows.max(0) as u64);
            for u in units.iter_mut().filter(|u| u.status == Status::Differ) {
                differing_rows(sides, plan, shape, kind, scan, u, opts).await?;
            }
            Ok::<_, ChecksumError>((i, units))
        })
        .buffer_unordered(opts.jobs.max(1))
        .try_collect()
        .await?;
    let mut reports: Vec<TableReport> = plans.iter().map(table_report).collect();
    for (r, s) in reports.iter_mut().zip(&shapes) {
        r.columns = s.columns.iter().map(|c| c.name.clone()).collect();
        r.key_columns = s.key_names();
        if !s.has_key {
            r.notes.push("no primary key and no --key: rows are compared whole (a changed row shows as missing plus extra)".into());
        }
    }
    for (i, units) in results {
        reports[i].units.extend(units);
    }
    Ok(reports)
}

/// Bisect a differing unit and diff its smallest differing regions, up to `max_rows` rows.
async fn differing_rows(
    sides: &Sides,
    plan: &TablePlan,
    shape: &TableShape,
    kind: DigestKind,
    scan: &Scan,
    unit: &mut UnitReport,
    opts: &ChecksumOptions,
) -> Result<(), SessionError> {
    let Some((start, end)) =
        data_bounds(sides, &plan.table, scan, unit.start_value, unit.end_value).await?
    else {
        return Ok(());
    };
    let rows = unit.source_rows.max(unit.target_rows);
    let located = locate(
        sides,
        &plan.table,
        &plan.target,
        shape,
        kind,
        scan,
        start,
        end,
        rows,
        opts.bisect_rows,
        opts.max_rows,
    )
    .await?;
    if !located.complete {
        unit.rows_truncated = true;
    }
    for region in located.regions {
        if unit.rows.len() >= opts.max_rows {
            unit.rows_truncated = true;
            break;
        }
        if region.rows > UNSPLITTABLE_FETCH_FACTOR * opts.bisect_rows {
            // Identical rows in bulk that no time or key split can separate: not fetched.
            unit.rows_truncated = true;
            continue;
        }
        let (s, t) = fetch(
            sides,
            shape,
            scan,
            &region.condition(&plan.table, shape, kind, &scan.source_cond),
            &region.condition(&plan.target, shape, kind, &scan.target_cond),
        )
        .await?;
        let mut diffs = compare(shape, s, t);
        let room = opts.max_rows - unit.rows.len();
        if diffs.len() > room {
            diffs.truncate(room);
            unit.rows_truncated = true;
        }
        unit.rows.extend(diffs);
    }
    Ok(())
}
