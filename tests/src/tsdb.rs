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
