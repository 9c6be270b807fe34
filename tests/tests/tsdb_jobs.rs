//! `jobs enable` after `schema` and `copy` on a real TimescaleDB: stacked continuous aggregates
//! are refreshed in dependency order, a job paused on the source stays paused, next starts are
//! carried from the source, and jobs already due start staggered, not all at once.

use dualwrite_tests::backfill_util::{clone_schema, copy_until, outcome, start_of_today};
use dualwrite_tests::Pair;

const JOBS: &str = "SELECT string_agg(format('%s %s %s %s', job_id, owner, scheduled, next_start), E'\\n' ORDER BY job_id)
                      FROM timescaledb_information.jobs WHERE job_id >= 1000 AND job_id NOT IN (1000, 1001)";

#[tokio::test]
async fn enable_keeps_the_sources_schedules_and_refreshes_in_dependency_order() {
    let pair = Pair::start_runbook_layout();
    // The compression and retention policies are due now on the source (its scheduler is
    // stopped so they stay due); every other job has a next start ahead; job 1005 is paused.
    pair.source.psql(
        &pair.db,
        "SELECT _timescaledb_functions.stop_background_workers();
         SELECT ext.alter_job(1000, next_start => now() - interval '1 hour');
         SELECT ext.alter_job(1001, next_start => now() - interval '1 hour');
         SELECT ext.alter_job(1002, next_start => now() + interval '30 minutes');
         SELECT ext.alter_job(1003, next_start => now() + interval '5 hours');",
    );
    let source_jobs = pair.source.psql(&pair.db, JOBS);
    assert!(
        source_jobs.contains("1005 app_owner f 2"),
        "a paused job: {source_jobs}"
    );
    assert_eq!(source_jobs.lines().count(), 4, "{source_jobs}");
    assert!(
        source_jobs
            .lines()
            .all(|l| l.len() > "1005 app_owner f ".len()),
        "every job has a next start: {source_jobs}"
    );

    let t = pair.target_url();
    clone_schema(&pair);
    copy_until(&pair, &start_of_today(&pair)).await;
    assert_eq!(
        pair.target
            .psql(&pair.db, "SELECT count(*) FROM app.metrics"),
        pair.source
            .psql(&pair.db, "SELECT count(*) FROM app.metrics"),
    );

    let (code, out, err) = outcome(&["jobs", "enable", "--target", &t, "--stagger", "1h"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("paused on the source: stays paused"), "{out}");

    // Stacked aggregates: the daily one reads the hourly one and has the source's rows.
    for view in ["app.metrics_hourly", "app.metrics_daily"] {
        let rows = format!("SELECT count(*) || ' ' || coalesce(sum(n), 0) FROM {view}");
        let on_source = pair.source.psql(&pair.db, &rows);
        assert_ne!(on_source, "0 0");
        assert_eq!(pair.target.psql(&pair.db, &rows), on_source, "{view}");
    }
    // Same jobs, owners, scheduled state and next start (the paused one stays paused).
    assert_eq!(pair.target.psql(&pair.db, JOBS), source_jobs);
    // The two due jobs start one --stagger apart from now, not at once.
    let due = pair.target.psql(
        &pair.db,
        "SELECT scheduled, round(extract(epoch FROM next_start - now()) / 60)
           FROM timescaledb_information.jobs WHERE job_id = 1001",
    );
    assert_eq!(due, "t|60", "{out}");
    assert_eq!(
        pair.target.psql(
            &pair.db,
            "SELECT scheduled FROM timescaledb_information.jobs WHERE job_id = 1000"
        ),
        "t"
    );
}
