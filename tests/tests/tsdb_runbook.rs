//! The whole runbook on a real TimescaleDB layout (space partitioning, compressed chunks,
//! stacked continuous aggregates, a paused job, TimescaleDB in schema `ext`, everything owned
//! by a non-superuser), the application writing through the dual-writing proxy: schema,
//! dual-write, copy below T, compress, jobs enable, validate. It ends with counts and checksum
//! EQUAL, the aggregates returning the same rows on both sides, the same chunks compressed, and
//! the same jobs with the same owners, scheduled state and next start.

use std::time::Duration;

use dualwrite_tests::backfill_util::{clone_schema, outcome, run, start_of_today};
use dualwrite_tests::proxy::{client, ProxyHandle};
use dualwrite_tests::validator_util::run_on;
use dualwrite_tests::Pair;
use dualwrite_validator::report::Status;

/// Chunks by time range and compression state (chunk names of chunks created after the
/// restore may differ between the sides).
const CHUNKS: &str = "SELECT string_agg(c.range_start || ' ' || ch.status, E'\\n' ORDER BY c.range_start, ch.status)
  FROM timescaledb_information.chunks c
  JOIN _timescaledb_catalog.chunk ch ON ch.relid = format('%I.%I', c.chunk_schema, c.chunk_name)::regclass
 WHERE c.hypertable_name = 'metrics'";

const JOBS: &str = "SELECT string_agg(format('%s %s %s %s %s', job_id, proc_name, owner, scheduled, next_start), E'\\n' ORDER BY job_id)
  FROM timescaledb_information.jobs WHERE job_id >= 1000";

#[tokio::test]
async fn runbook_through_the_dual_writing_proxy_leaves_the_target_identical() {
    let pair = Pair::start_runbook_layout();
    let (s, t) = (pair.source_url(), pair.target_url());
    // The source's scheduler gives each policy its first run, and with it a next start.
    let mut pending = String::new();
    for _ in 0..120 {
        pending = pair.source.psql(
            &pair.db,
            "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000 AND next_start IS NULL",
        );
        if pending == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(pending, "0", "{}", pair.source.psql(&pair.db, JOBS));

    // Step 3: roles, schema, privileges.
    clone_schema(&pair);

    // Steps 2 and 4: the application (as app_owner) writes through the proxy to both.
    let journal = tempfile::tempdir().unwrap();
    let toml = format!(
        "mode = \"dual-write\"\nprimary = \"source\"\n[source]\nurl = \"{s}\"\n[target]\nurl = \"{t}\"\n\
         [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"app_owner\", password = \"owner-pw\" }}]\n\
         [journal]\ndir = \"{}\"\n",
        journal.path().display()
    );
    let proxy = ProxyHandle::start(&toml).await;
    let app = client(&proxy.url("app_owner", "owner-pw", &pair.db)).await;
    // T: the start of today; the history below it exists on the source only.
    let t_value = start_of_today(&pair);
    app.batch_execute(&format!(
        "INSERT INTO app.metrics
         SELECT '{t_value}'::timestamptz + i * interval '1 minute', i % 4, i * 0.5, 'live ' || i
         FROM generate_series(0, 299) i;
         UPDATE app.metrics SET note = 'corrected' WHERE ts = '{t_value}'::timestamptz + interval '10 minutes';
         DELETE FROM app.metrics WHERE ts = '{t_value}'::timestamptz + interval '20 minutes';"
    ))
    .await
    .unwrap();
    // The secondary applies the writes right after the primary answered.
    let live = format!("SELECT count(*) FROM app.metrics WHERE ts >= '{t_value}'");
    assert_eq!(pair.source.psql(&pair.db, &live), "299");
    let mut on_target = String::new();
    for _ in 0..100 {
        on_target = pair.target.psql(&pair.db, &live);
        if on_target == "299" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(on_target, "299", "{}", proxy.admin_get("/status").await);

    // Step 6: the history below T, then the source's compression.
    let code = run(&[
        "copy", "--source", &s, "--target", &t, "--until", &t_value, "-q",
    ])
    .await;
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    let (code, out, err) = outcome(&["compress", "--source", &s, "--target", &t]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("[16/16] compressed"), "{out}");

    // Step 7: aggregates refreshed, jobs scheduled as on the source.
    let (code, out, err) = outcome(&["jobs", "enable", "--target", &t, "--source", &s]);
    assert_eq!(code, 0, "{out}{err}");

    // Step 8: validation, with more writes still arriving through the proxy.
    app.batch_execute(&format!(
        "INSERT INTO app.metrics VALUES ('{t_value}'::timestamptz + interval '6 hours', 1, 1.5, 'late')"
    ))
    .await
    .unwrap();
    for _ in 0..100 {
        if pair.target.psql(&pair.db, &live) == "300" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for command in ["counts", "checksum"] {
        let r = run_on(&pair, command, &[]).await.unwrap();
        assert_eq!(r.summary.status, Status::Equal, "{command}: {r:#?}");
        assert_eq!(
            r.summary.source_rows,
            dualwrite_tests::tsdb::RUNBOOK_METRICS_ROWS + 300
        );
        assert!(r.tables[0].units.len() >= 26, "{r:#?}");
    }
    // The aggregates return the same rows below T (the live rows are not materialized yet on
    // either side).
    for view in [
        "SELECT string_agg(format('%s %s %s %s', bucket, device_id, round(avg_value::numeric, 6), n), ',' ORDER BY bucket, device_id) FROM app.metrics_hourly WHERE bucket < '{T}'",
        "SELECT string_agg(format('%s %s %s', day, device_id, n), ',' ORDER BY day, device_id) FROM app.metrics_daily WHERE day < '{T}'",
    ] {
        let sql = view.replace("{T}", &t_value);
        let on_source = pair.source.psql(&pair.db, &sql);
        assert!(!on_source.is_empty());
        assert_eq!(pair.target.psql(&pair.db, &sql), on_source, "{sql}");
    }
    // The same chunks, compressed the same.
    assert_eq!(
        pair.target.psql(&pair.db, CHUNKS),
        pair.source.psql(&pair.db, CHUNKS)
    );
    // The same jobs, owners, scheduled state and next start.
    assert_eq!(
        pair.target.psql(&pair.db, JOBS),
        pair.source.psql(&pair.db, JOBS)
    );
    // Ownership: the owner role reads its aggregate on the target.
    assert_ne!(
        pair.target.psql_as(
            "app_owner",
            "owner-pw",
            &pair.db,
            "SELECT count(*) FROM app.metrics_daily"
        ),
        "0"
    );
    drop(app);
    proxy.stop().await;
}
