//! A source and a target cluster, each with a fresh database.

use crate::{unique_name, Cluster, PgBin};

/// Source on `PgBin::source()`, target on `PgBin::target()`, both with database `db`.
pub struct Pair {
    pub source: Cluster,
    pub target: Cluster,
    pub db: String,
}

impl Pair {
    pub fn start() -> Pair {
        Self::start_with(&PgBin::source(), &PgBin::target())
    }

    /// Start both clusters at once (they are independent) and create the test's database.
    pub fn start_with(source: &PgBin, target: &PgBin) -> Pair {
        Self::start_with_conf(source, target, &[])
    }

    /// As [`Pair::start_with`], with extra `postgresql.conf` lines on both clusters.
    pub fn start_with_conf(source: &PgBin, target: &PgBin, conf: &'static [&'static str]) -> Pair {
        let (s, t) = (source.clone(), target.clone());
        let handle = std::thread::spawn(move || Cluster::start_with(&t, conf));
        let source = Cluster::start_with(&s, conf);
        let target = match handle.join() {
            Ok(c) => c,
            Err(e) => std::panic::resume_unwind(e),
        };
        let db = unique_name("app");
        source.create_db(&db);
        target.create_db(&db);
        Pair { source, target, db }
    }

    pub fn source_url(&self) -> String {
        self.source.url(&self.db)
    }

    pub fn target_url(&self) -> String {
        self.target.url(&self.db)
    }

    /// Run the same SQL on both sides.
    pub fn both(&self, sql: &str) {
        self.source.psql(&self.db, sql);
        self.target.psql(&self.db, sql);
    }
}
