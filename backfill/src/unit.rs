//! One unit in one target transaction: lock the unit's row and check the claim, delete the
//! target's rows in the unit's range, stream `COPY ... TO STDOUT` from the source into
//! `COPY ... FROM STDIN` on the target, mark the unit done, commit. Nothing is held in memory
//! beyond one batch of at most [`BATCH_BYTES`].

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{Client, IsolationLevel};
use tokio_util::sync::CancellationToken;

use crate::columns::TableCopy;
use crate::pg::{describe, is_transient};
use crate::plan::{Replace, UnitSpec};
use crate::progress::Progress;
use crate::rows::RowCounter;
use crate::store;
use crate::throttle::Throttle;

/// Bytes gathered from the source before they are sent to the target as one CopyData.
pub const BATCH_BYTES: usize = 256 * 1024;

/// Why a unit was not copied.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("source: {}", describe(.0))]
    Source(tokio_postgres::Error),
    #[error("target: {}", describe(.0))]
    Target(tokio_postgres::Error),
    /// The shared snapshot is gone (its coordinator connection closed).
    #[error("source: the shared snapshot is no longer available: {}", describe(.0))]
    Snapshot(tokio_postgres::Error),
    /// Another worker took the unit over (this worker was thought dead).
    #[error("the unit was claimed by another worker")]
    Lost,
    /// Connecting for the unit failed.
    #[error("{0}")]
    Connect(String),
    /// The unit cannot be copied as stored.
    #[error("{0}")]
    Invalid(String),
    /// Stopped by a second Ctrl-C; rolled back.
    #[error("interrupted")]
    Cancelled,
}

impl UnitError {
    /// Worth another attempt.
    pub fn is_transient(&self) -> bool {
        match self {
            UnitError::Source(e) | UnitError::Target(e) => is_transient(e),
            UnitError::Snapshot(_) | UnitError::Connect(_) => true,
            UnitError::Lost | UnitError::Cancelled | UnitError::Invalid(_) => false,
        }
    }
}

/// What a unit copy needs besides the connections.
pub struct UnitJob<'a> {
    pub plan_id: &'a str,
    pub unit_id: i32,
    pub worker_key: i32,
    pub spec: &'a UnitSpec,
    pub table: &'a TableCopy,
    /// The exported snapshot to read under, if any.
    pub snapshot: Option<&'a str>,
    pub progress: &'a Progress,
    pub throttle: Option<&'a Throttle>,
    /// Fired by a second Ctrl-C: abandon the unit.
    pub kill: &'a CancellationToken,
}

/// A committed unit.
#[derive(Clone, Copy, Debug)]
pub struct Copied {
    pub rows: u64,
    pub bytes: u64,
    pub took: Duration,
}

/// The source query of a unit.
pub fn read_sql(spec: &UnitSpec, table: &TableCopy) -> String {
    let rel = spec.source.qn().quoted();
    if spec.whole {
        // A leaf partition holding exactly the unit's rows: COPY the table itself.
        format!(
            "COPY {rel} ({}) TO STDOUT {}",
            table.column_list,
            table.options()
        )
    } else {
        format!(
            "COPY (SELECT {} FROM {rel} WHERE {}) TO STDOUT {}",
            table.column_list,
            spec.condition(),
            table.options()
        )
    }
}

/// The target statements of a unit: the DELETE, then the COPY.
pub fn write_sql(spec: &UnitSpec, table: &TableCopy) -> (String, String) {
    let rel = spec.table.qn().quoted();
    let cond = match spec.replace {
        Replace::Range => spec.condition(),
        Replace::DefaultPartition => spec.target_condition(),
    };
    (
        format!("DELETE FROM {rel} WHERE {cond}"),
        format!(
            "COPY {rel} ({}) FROM STDIN {}",
            table.column_list,
            table.options()
        ),
    )
}

/// Copy one unit. Rows streamed are counted in `progress` as they go and taken back if the
/// unit does not commit.
pub async fn copy_unit(
    source: &mut Client,
    target: &mut Client,
    job: &UnitJob<'_>,
) -> Result<Copied, UnitError> {
    let mut streamed = (0u64, 0u64);
    let result = copy_inner(source, target, job, &mut streamed).await;
    if result.is_err() {
        job.progress.unstream(streamed.0, streamed.1);
    }
    result
}

async fn copy_inner(
    source: &mut Client,
    target: &mut Client,
    job: &UnitJob<'_>,
    streamed: &mut (u64, u64),
) -> Result<Copied, UnitError> {
    let started = Instant::now();
    let src = source
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(UnitError::Source)?;
    if let Some(snapshot) = job.snapshot {
        src.batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT {}",
            dualwrite_common::ident::quote_literal(snapshot)
        ))
        .await
        .map_err(|e| {
            if e.code().is_some_and(|c| c.code() == "22023") {
                UnitError::Snapshot(e)
            } else {
                UnitError::Source(e)
            }
        })?;
    }
    let tgt = target.transaction().await.map_err(UnitError::Target)?;
    if !store::still_mine(&tgt, job.plan_id, job.unit_id, job.worker_key)
        .await
        .map_err(UnitError::Target)?
    {
        return Err(UnitError::Lost);
    }
    let (delete, write) = write_sql(job.spec, job.table);
    tgt.execute(&delete, &[]).await.map_err(UnitError::Target)?;

    let out = src
        .copy_out(&read_sql(job.spec, job.table))
        .await
        .map_err(UnitError::Source)?;
    let sink = tgt.copy_in(&write).await.map_err(UnitError::Target)?;
    let mut out = std::pin::pin!(out);
    let mut sink = std::pin::pin!(sink);
    let mut counter = RowCounter::new(job.table.binary);
    let mut batch = BytesMut::with_capacity(BATCH_BYTES);
    loop {
        let next = tokio::select! {
            biased;
            _ = job.kill.cancelled() => return Err(UnitError::Cancelled),
            next = out.next() => next,
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(UnitError::Source)?;
        let rows = counter.feed(&chunk);
        streamed.0 += rows;
        streamed.1 += chunk.len() as u64;
        job.progress.stream(rows, chunk.len() as u64);
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH_BYTES {
            let data = batch.split().freeze();
            batch.reserve(BATCH_BYTES);
            tokio::select! {
                biased;
                _ = job.kill.cancelled() => return Err(UnitError::Cancelled),
                r = sink.send(data) => r.map_err(UnitError::Target)?,
            }
        }
        if let Some(t) = job.throttle {
            tokio::select! {
                biased;
                _ = job.kill.cancelled() => return Err(UnitError::Cancelled),
                _ = t.take(rows) => {}
            }
        }
    }
    if !batch.is_empty() {
        sink.send(batch.split().freeze())
            .await
            .map_err(UnitError::Target)?;
    }
    let rows = sink.as_mut().finish().await.map_err(UnitError::Target)?;
    store::mark_done(
        &tgt,
        job.plan_id,
        job.unit_id,
        rows as i64,
        streamed.1 as i64,
    )
    .await
    .map_err(UnitError::Target)?;
    if job.kill.is_cancelled() {
        return Err(UnitError::Cancelled);
    }
    tgt.commit().await.map_err(UnitError::Target)?;
    // The read-only source transaction has nothing to keep; its end cannot undo the copy.
    let _ = src.commit().await;
    // Correct the live count to the target's exact one.
    if rows > streamed.0 {
        job.progress.stream(rows - streamed.0, 0);
    } else {
        job.progress.unstream(streamed.0 - rows, 0);
    }
    Ok(Copied {
        rows,
        bytes: streamed.1,
        took: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Rel;

    #[test]
    fn statements() {
        let spec = UnitSpec {
            table: Rel {
                schema: "public".into(),
                name: "m".into(),
            },
            kind: "partitioned".into(),
            time_column: "ts".into(),
            time_type: "bigint".into(),
            source: Rel {
                schema: "public".into(),
                name: "m_1".into(),
            },
            replace: Replace::Range,
            start: Some(10),
            end: 20,
            whole: true,
            est_rows: None,
            est_bytes: None,
            exclude: vec![],
        };
        let table = TableCopy {
            column_list: "\"ts\", \"v\"".into(),
            binary: true,
            text_reason: None,
        };
        assert_eq!(
            read_sql(&spec, &table),
            "COPY \"public\".\"m_1\" (\"ts\", \"v\") TO STDOUT (FORMAT binary)"
        );
        let (d, w) = write_sql(&spec, &table);
        assert_eq!(
            d,
            "DELETE FROM \"public\".\"m\" WHERE \"ts\" >= 10::bigint AND \"ts\" < 20::bigint"
        );
        assert_eq!(
            w,
            "COPY \"public\".\"m\" (\"ts\", \"v\") FROM STDIN (FORMAT binary)"
        );
    }
}
