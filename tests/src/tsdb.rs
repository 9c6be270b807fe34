//! Clusters running TimescaleDB (the build `scripts/setup.sh` installs into PostgreSQL 18).

use crate::{Cluster, Pair, PgBin};

/// `postgresql.conf` lines of a TimescaleDB cluster. Telemetry stays off (tests make no
/// outbound calls); enough worker processes for the scheduler and a few jobs at once.
pub const TIMESCALEDB_CONF: &[&str] = &[
    "shared_preload_libraries = 'timescaledb'",
    "timescaledb.telemetry_level = off",
    "max_worker_processes = 32",
    "timescaledb.max_background_workers = 16",
];

impl Cluster {
    /// A cluster with TimescaleDB preloaded; panics when TimescaleDB is not installed.
    pub fn start_timescaledb() -> Cluster {
        Cluster::start_with(&PgBin::timescaledb_required(), TIMESCALEDB_CONF)
    }

    /// The installed `timescaledb` extension version in `db`, empty when it is not there.
    pub fn timescaledb_version(&self, db: &str) -> String {
        self.psql(
            db,
            "SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), '')",
        )
    }
}

impl Pair {
    /// Source and target both on PostgreSQL with TimescaleDB preloaded, each with the test's
    /// database (the extension is not created: a fresh target does not have it).
    pub fn start_timescaledb() -> Pair {
        let bin = PgBin::timescaledb_required();
        Pair::start_with_conf(&bin, &bin, TIMESCALEDB_CONF)
    }
}

/// The layout of a real TimescaleDB application, as the runbook meets it: TimescaleDB in
/// schema `ext` (not `public`); everything owned by the non-superuser `app_owner`; a hypertable
/// `app.metrics` partitioned by day and by `by_hash(device_id, 2)` over twelve days before
/// today, its chunks older than four days compressed (segmentby/orderby); two stacked continuous
/// aggregates (`app.metrics_hourly`, and `app.metrics_daily` on top of it) with refresh
/// policies; compression and retention policies; two user jobs, the second created paused.
/// `app_reader` may read. Run as the superuser on a fresh database of a TimescaleDB cluster,
/// then refresh the aggregates, then [`RUNBOOK_SOURCE_JOBS_SQL`].
pub const RUNBOOK_SOURCE_SQL: &str = r#"
CREATE SCHEMA ext;
CREATE EXTENSION timescaledb WITH SCHEMA ext;
CREATE SCHEMA app AUTHORIZATION app_owner;
GRANT USAGE ON SCHEMA ext TO app_owner, app_reader;
GRANT USAGE ON SCHEMA app TO app_reader;
SET ROLE app_owner;
CREATE TABLE app.devices (device_id int PRIMARY KEY, name text NOT NULL);
INSERT INTO app.devices SELECT d, 'device ' || d FROM generate_series(0, 3) d;
CREATE TABLE app.metrics (ts timestamptz NOT NULL, device_id int NOT NULL REFERENCES app.devices,
                          value double precision, note text);
SELECT ext.create_hypertable('app.metrics', ext.by_range('ts', interval '1 day'));
SELECT ext.add_dimension('app.metrics', ext.by_hash('device_id', 2));
INSERT INTO app.metrics
SELECT date_trunc('day', now()) - interval '12 days' + i * interval '5 minutes', d, i * 0.25 + d,
       CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i END
FROM generate_series(0, 12 * 288 - 1) i, generate_series(0, 3) d;
ALTER TABLE app.metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id',
                             timescaledb.compress_orderby = 'ts');
SELECT count(ext.compress_chunk(c))
  FROM ext.show_chunks('app.metrics', older_than => date_trunc('day', now()) - interval '4 days') c;
SELECT ext.add_compression_policy('app.metrics', interval '30 days');
SELECT ext.add_retention_policy('app.metrics', interval '365 days');
CREATE MATERIALIZED VIEW app.metrics_hourly WITH (timescaledb.continuous) AS
  SELECT ext.time_bucket('1 hour', ts) AS bucket, device_id, avg(value) AS avg_value, count(*) AS n
  FROM app.metrics GROUP BY 1, 2 WITH NO DATA;
CREATE MATERIALIZED VIEW app.metrics_daily WITH (timescaledb.continuous) AS
  SELECT ext.time_bucket('1 day', bucket) AS day, device_id, sum(n) AS n
  FROM app.metrics_hourly GROUP BY 1, 2 WITH NO DATA;
RESET ROLE;
"#;

/// The policies and jobs of [`RUNBOOK_SOURCE_SQL`], added once the aggregates are refreshed
/// (a policy's first run would race a manual refresh).
pub const RUNBOOK_SOURCE_JOBS_SQL: &str = r#"
SET ROLE app_owner;
SELECT ext.add_continuous_aggregate_policy('app.metrics_hourly', start_offset => NULL,
       end_offset => interval '1 hour', schedule_interval => interval '1 hour');
SELECT ext.add_continuous_aggregate_policy('app.metrics_daily', start_offset => NULL,
       end_offset => interval '1 day', schedule_interval => interval '1 day');
CREATE PROCEDURE app.touch_job(job_id int, config jsonb) LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; END $$;
SELECT ext.add_job('app.touch_job', '1 hour', initial_start => now() + interval '2 hours');
SELECT ext.add_job('app.touch_job', '1 day', scheduled => false);
GRANT SELECT ON app.metrics, app.devices, app.metrics_hourly, app.metrics_daily TO app_reader;
RESET ROLE;
"#;

/// Rows `app.metrics` holds after [`RUNBOOK_SOURCE_SQL`].
pub const RUNBOOK_METRICS_ROWS: i64 = 12 * 288 * 4;

impl Pair {
    /// [`Pair::start_timescaledb`] with [`RUNBOOK_SOURCE_SQL`] on the source (its roles
    /// `app_owner` and `app_reader` created there), both aggregates refreshed, and
    /// [`RUNBOOK_SOURCE_JOBS_SQL`]. The target
    /// is a fresh database without the extension.
    pub fn start_runbook_layout() -> Pair {
        let pair = Pair::start_timescaledb();
        pair.source.create_role("app_owner", "owner-pw", "");
        pair.source.create_role("app_reader", "reader-pw", "");
        pair.source.psql(&pair.db, RUNBOOK_SOURCE_SQL);
        pair.source.psql(
            &pair.db,
            "CALL ext.refresh_continuous_aggregate('app.metrics_hourly', NULL, NULL)",
        );
        pair.source.psql(
            &pair.db,
            "CALL ext.refresh_continuous_aggregate('app.metrics_daily', NULL, NULL)",
        );
        pair.source.psql(&pair.db, RUNBOOK_SOURCE_JOBS_SQL);
        pair
    }
}
