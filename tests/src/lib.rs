//! Throwaway real PostgreSQL clusters for end-to-end tests and the demo.
//!
//! # Layout
//! - `pgbin`: which PostgreSQL installation to use (`PG_BIN`, `TARGET_PG_BIN`, `pg_config`).
//! - `cluster`: one throwaway cluster (initdb into a temp dir, free port, stop and remove on drop).
//! - `backfill_util`: a time-series source for `dualwrite-backfill`, row digests, running it.
//! - `bins`: the workspace binaries, built on demand, for tests that run processes.
//! - `certs`: a throwaway CA and server certificate (openssl).
//! - `clients`: the client drivers the tests run through the proxy, and their applications.
//! - `demo_tsdb`: `dualwrite-demo --timescaledb`, the runbook on a TimescaleDB source.
//! - `pair`: a source and a target cluster with a fresh database each.
//! - `proxy`: `dualwrite-proxy` started in-process on free ports.
//! - `faults`: a TCP relay that cuts a connection right after the server answered a command.
//! - `raw`: a raw wire-protocol client for malformed input.
//! - `tsdb`: clusters and pairs with TimescaleDB preloaded (built by `scripts/setup.sh`); they
//!   panic when it is missing.
//! - `validator_util`: tables covering many types and in-process runs of `dualwrite-validator`.
//!
//! Clusters run as the `postgres` OS user when this process is root (PostgreSQL refuses root).
//! When a cluster cannot start, the harness panics with the reason and the server log: a test
//! that needs Postgres never skips itself.

pub mod backfill_util;
pub mod bins;
pub mod certs;
pub mod clients;
pub mod cluster;
pub mod demo_tsdb;
pub mod faults;
pub mod load;
pub mod pair;
pub mod pgbin;
pub mod proxy;
pub mod raw;
pub mod tsdb;
pub mod validator_util;

pub use cluster::Cluster;
pub use pair::Pair;
pub use pgbin::PgBin;
pub use proxy::ProxyHandle;

/// A free TCP port on 127.0.0.1 (bound and released; callers retry if it is taken meanwhile).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// A unique, short, lower-case name for databases and roles in one test.
pub fn unique_name(prefix: &str) -> String {
    use rand::Rng;
    let n: u32 = rand::rng().random();
    format!("{prefix}_{n:08x}")
}
