//! The backfill's bookkeeping in the target, schema `_dualwrite_backfill`: plans, their units
//! and CSV batches. Workers on any machine claim units here with `FOR UPDATE SKIP LOCKED`.
//!
//! A worker holds a session advisory lock `(LOCK_CLASS, worker_key)` on its target connection
//! for as long as it lives, and stamps its key on the units it claims. A `running` unit whose
//! key is not locked by anyone belongs to a worker that died (SIGKILL, lost connection): any
//! worker may claim it again. The copy transaction re-checks the key under `FOR UPDATE`, so a
//! unit is never committed by a worker that lost its claim.

use serde_json::Value;
use tokio_postgres::types::Json;
use tokio_postgres::{Client, GenericClient};

use crate::plan::UnitSpec;

/// The bookkeeping schema.
pub const SCHEMA: &str = "_dualwrite_backfill";

/// First key of the advisory locks the backfill takes ("dwBf").
pub const LOCK_CLASS: i32 = 0x6477_4266;

const DDL: &str = "
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '_dualwrite_backfill') THEN
    CREATE SCHEMA _dualwrite_backfill;
    COMMENT ON SCHEMA _dualwrite_backfill IS 'dualwrite-backfill plans and progress; drop with dualwrite-backfill clean';
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS _dualwrite_backfill.plan (
    plan_id text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    source text NOT NULL,
    from_value text,
    until_value text NOT NULL,
    tables text NOT NULL
);
CREATE TABLE IF NOT EXISTS _dualwrite_backfill.unit (
    plan_id text NOT NULL REFERENCES _dualwrite_backfill.plan ON DELETE CASCADE,
    unit_id int NOT NULL,
    table_name text NOT NULL,
    source_relation text NOT NULL,
    range_text text NOT NULL,
    spec jsonb NOT NULL,
    est_rows bigint,
    est_bytes bigint,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'failed')),
    rows bigint,
    bytes bigint,
    attempts int NOT NULL DEFAULT 0,
    copies int NOT NULL DEFAULT 0,
    owner text,
    worker_key int,
    started_at timestamptz,
    finished_at timestamptz,
    error text,
    PRIMARY KEY (plan_id, unit_id)
);
CREATE TABLE IF NOT EXISTS _dualwrite_backfill.csv_batch (
    import_id text NOT NULL,
    batch_id text NOT NULL,
    table_name text NOT NULL,
    file text NOT NULL,
    batch_rows bigint NOT NULL,
    rows bigint NOT NULL,
    bytes bigint NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (import_id, batch_id)
);";

/// SQL that is true when no live worker holds the advisory lock of `key_sql` (a unit column).
fn owner_gone(key_sql: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND l.classid = {LOCK_CLASS}::int8::oid AND l.objid = {key_sql}::int8::oid
            AND l.objsubid = 2 AND l.granted)"
    )
}

/// Create the schema and its tables when missing (serialised: several processes may start
/// at once).
pub async fn ensure_schema(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])
        .await?;
    tx.batch_execute(DDL).await?;
    tx.commit().await
}

/// Whether the schema exists.
pub async fn exists(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&SCHEMA])
        .await?
        .is_some())
}

/// A plan as described when it is created.
#[derive(Clone, Debug)]
pub struct NewPlan {
    pub plan_id: String,
    /// Source endpoint and database (never a password).
    pub source: String,
    pub from: Option<String>,
    pub until: String,
    /// The tables, for people.
    pub tables: String,
}

/// Store the plan and its units unless a plan with that id exists. Returns whether it was
/// created (false: resuming the stored one, whose units win).
pub async fn create_or_resume(
    client: &mut Client,
    plan: &NewPlan,
    units: &[UnitSpec],
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])
        .await?;
    let found = tx
        .query_opt(
            "SELECT 1 FROM _dualwrite_backfill.plan WHERE plan_id = $1",
            &[&plan.plan_id],
        )
        .await?
        .is_some();
    if found {
        tx.commit().await?;
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO _dualwrite_backfill.plan (plan_id, source, from_value, until_value, tables)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &plan.plan_id,
            &plan.source,
            &plan.from,
            &plan.until,
            &plan.tables,
        ],
    )
    .await?;
    let insert = tx
        .prepare(
            "INSERT INTO _dualwrite_backfill.unit
               (plan_id, unit_id, table_name, source_relation, range_text, spec, est_rows, est_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    for (i, u) in units.iter().enumerate() {
        let id = i as i32 + 1;
        let spec = serde_json::to_value(u).unwrap_or(Value::Null);
        tx.execute(
            &insert,
            &[
                &plan.plan_id,
                &id,
                &u.table.qn().to_string(),
                &u.source.qn().to_string(),
                &u.range_text(),
                &Json(&spec),
                &u.est_rows,
                &u.est_bytes,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Give failed units of a plan another chance (a rerun retries them).
pub async fn retry_failed(client: &Client, plan_id: &str) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "UPDATE _dualwrite_backfill.unit SET state = 'pending'
             WHERE plan_id = $1 AND state = 'failed'",
            &[&plan_id],
        )
        .await
}

/// Take this worker's liveness lock; false when another session holds the key.
pub async fn lock_worker(client: &Client, key: i32) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &key])
        .await?
        .get(0))
}

/// Let go of this worker's liveness lock (it goes with the session anyway).
pub async fn unlock_worker(client: &Client, key: i32) -> Result<(), tokio_postgres::Error> {
    client
        .query_one("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_CLASS, &key])
        .await
        .map(drop)
}

/// A unit claimed by a worker.
#[derive(Clone, Debug)]
pub struct Claim {
    pub unit_id: i32,
    pub spec: UnitSpec,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// Claim the next pending unit, or a running one whose worker is gone.
pub async fn claim(
    client: &Client,
    plan_id: &str,
    owner: &str,
    key: i32,
) -> Result<Option<Claim>, ClaimError> {
    let sql = format!(
        "UPDATE _dualwrite_backfill.unit u
         SET state = 'running', owner = $2, worker_key = $3, attempts = u.attempts + 1,
             started_at = now(), finished_at = NULL, error = NULL
         WHERE (u.plan_id, u.unit_id) = (
             SELECT c.plan_id, c.unit_id FROM _dualwrite_backfill.unit c
             WHERE c.plan_id = $1
               AND (c.state = 'pending' OR (c.state = 'running' AND {}))
             ORDER BY c.unit_id LIMIT 1
             FOR UPDATE SKIP LOCKED)
         RETURNING u.unit_id, u.spec, u.attempts",
        owner_gone("c.worker_key")
    );
    let Some(row) = client.query_opt(&sql, &[&plan_id, &owner, &key]).await? else {
        return Ok(None);
    };
    let unit_id: i32 = row.get(0);
    let spec: Value = row.get(1);
    let spec: UnitSpec =
        serde_json::from_value(spec).map_err(|e| ClaimError::Spec(unit_id, e.to_string()))?;
    Ok(Some(Claim {
        unit_id,
        spec,
        attempts: row.get(2),
    }))
}

/// Claiming failed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    #[error("unit {0} of the stored plan is unreadable ({1}); run `dualwrite-backfill clean` and start again")]
    Spec(i32, String),
}

/// In the copy transaction: lock the unit and check that this worker still owns it.
pub async fn still_mine(
    tx: &impl GenericClient,
    plan_id: &str,
    unit_id: i32,
    key: i32,
) -> Result<bool, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT state, worker_key FROM _dualwrite_backfill.unit
             WHERE plan_id = $1 AND unit_id = $2 FOR UPDATE",
            &[&plan_id, &unit_id],
        )
        .await?;
    Ok(row.is_some_and(|r| {
        r.get::<_, String>(0) == "running" && r.get::<_, Option<i32>>(1) == Some(key)
    }))
}

/// In the copy transaction: the unit is done.
pub async fn mark_done(
    tx: &impl GenericClient,
    plan_id: &str,
    unit_id: i32,
    rows: i64,
    bytes: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE _dualwrite_backfill.unit
         SET state = 'done', rows = $3, bytes = $4, finished_at = now(), copies = copies + 1,
             error = NULL
         WHERE plan_id = $1 AND unit_id = $2",
        &[&plan_id, &unit_id, &rows, &bytes],
    )
    .await?;
    Ok(())
}

/// A retry of a claimed unit: count the attempt, keep the error for `status`.
pub async fn note_retry(
    client: &Client,
    plan_id: &str,
    unit_id: i32,
    key: i32,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE _dualwrite_backfill.unit SET attempts = attempts + 1, error = $4
             WHERE plan_id = $1 AND unit_id = $2 AND worker_key = $3 AND state = 'running'",
            &[&plan_id, &unit_id, &key, &error],
        )
        .await?;
    Ok(())
}

/// The unit failed for good (until a rerun).
pub async fn mark_failed(
    client: &Client,
    plan_id: &str,
    unit_id: i32,
    key: i32,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE _dualwrite_backfill.unit SET state = 'failed', error = $4, finished_at = now()
             WHERE plan_id = $1 AND unit_id = $2 AND worker_key = $3 AND state = 'running'",
            &[&plan_id, &unit_id, &key, &error],
        )
        .await?;
    Ok(())
}

/// Hand a worker's running units back (it stops without finishing them).
pub async fn release(
    client: &Client,
    plan_id: &str,
    key: i32,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE _dualwrite_backfill.unit SET state = 'pending'
             WHERE plan_id = $1 AND worker_key = $2 AND state = 'running'",
            &[&plan_id, &key],
        )
        .await?;
    Ok(())
}

/// Progress of one table of a plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableProgress {
    pub table: String,
    pub units: i64,
    pub done: i64,
    pub running: i64,
    pub failed: i64,
    pub rows: i64,
    pub bytes: i64,
    pub est_rows: Option<i64>,
    pub est_bytes: Option<i64>,
    /// Seconds from the first unit started to the last one finished.
    pub seconds: Option<f64>,
}

/// Per-table progress of a plan, in table order.
pub async fn progress(
    client: &Client,
    plan_id: &str,
) -> Result<Vec<TableProgress>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT table_name, count(*), count(*) FILTER (WHERE state = 'done'),
                count(*) FILTER (WHERE state = 'running' AND NOT {gone}),
                count(*) FILTER (WHERE state = 'failed'),
                coalesce(sum(rows) FILTER (WHERE state = 'done'), 0)::int8,
                coalesce(sum(bytes) FILTER (WHERE state = 'done'), 0)::int8,
                sum(est_rows)::int8, sum(est_bytes)::int8,
                extract(epoch FROM max(finished_at) FILTER (WHERE state = 'done') - min(started_at))::float8
         FROM _dualwrite_backfill.unit WHERE plan_id = $1
         GROUP BY table_name ORDER BY min(unit_id)",
        gone = owner_gone("worker_key")
    );
    let rows = client.query(&sql, &[&plan_id]).await?;
    Ok(rows
        .into_iter()
        .map(|r| TableProgress {
            table: r.get(0),
            units: r.get(1),
            done: r.get(2),
            running: r.get(3),
            failed: r.get(4),
            rows: r.get(5),
            bytes: r.get(6),
            est_rows: r.get(7),
            est_bytes: r.get(8),
            seconds: r.get(9),
        })
        .collect())
}

/// A stored plan, for `status`.
#[derive(Clone, Debug)]
pub struct PlanRow {
    pub plan_id: String,
    pub created_at: String,
    pub source: String,
    pub from: Option<String>,
    pub until: String,
    pub tables: String,
}

/// The stored plans, oldest first.
pub async fn plans(client: &Client) -> Result<Vec<PlanRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT plan_id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC',
                    source, from_value, until_value, tables
             FROM _dualwrite_backfill.plan ORDER BY created_at, plan_id",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| PlanRow {
            plan_id: r.get(0),
            created_at: r.get(1),
            source: r.get(2),
            from: r.get(3),
            until: r.get(4),
            tables: r.get(5),
        })
        .collect())
}

/// One unit as `status` lists it.
#[derive(Clone, Debug)]
pub struct UnitRow {
    pub unit_id: i32,
    pub table: String,
    pub source_relation: String,
    pub range: String,
    /// pending, running, done, failed; `stale` for a running unit whose worker is gone.
    pub state: String,
    pub rows: Option<i64>,
    pub bytes: Option<i64>,
    pub attempts: i32,
    pub copies: i32,
    pub owner: Option<String>,
    pub seconds: Option<f64>,
    pub error: Option<String>,
}

/// Units of a plan; `all` false lists only running, stale and failed ones.
pub async fn units(
    client: &Client,
    plan_id: &str,
    all: bool,
) -> Result<Vec<UnitRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT unit_id, table_name, source_relation, range_text,
                CASE WHEN state = 'running' AND {gone} THEN 'stale' ELSE state END,
                rows, bytes, attempts, copies, owner,
                extract(epoch FROM coalesce(finished_at, now()) - started_at)::float8, error
         FROM _dualwrite_backfill.unit WHERE plan_id = $1 AND ($2 OR state IN ('running', 'failed'))
         ORDER BY unit_id",
        gone = owner_gone("worker_key")
    );
    let rows = client.query(&sql, &[&plan_id, &all]).await?;
    Ok(rows
        .into_iter()
        .map(|r| UnitRow {
            unit_id: r.get(0),
            table: r.get(1),
            source_relation: r.get(2),
            range: r.get(3),
            state: r.get(4),
            rows: r.get(5),
            bytes: r.get(6),
            attempts: r.get(7),
            copies: r.get(8),
            owner: r.get(9),
            seconds: r.get(10),
            error: r.get(11),
        })
        .collect())
}

/// Whether a worker of any plan is alive (holds its advisory lock).
pub async fn live_workers(client: &Client) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'advisory'
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid = $1::int8::oid AND l.objsubid = 2 AND l.objid <> 0 AND l.granted",
            &[&i64::from(LOCK_CLASS)],
        )
        .await?
        .get(0))
}
