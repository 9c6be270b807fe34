//! `copy --until T` on a million rows, source PostgreSQL 15 and target 18 (with
//! `TARGET_PG_BIN`): every row below T arrives, none at or above T; rows the application wrote
//! to the target at or above T are untouched; rows below T already on the target are replaced,
//! not duplicated. Also `--dry-run`, `status`, a rerun that finds nothing to do, and `clean`.

use dualwrite_tests::backfill_util::{
    below_t, code, copy, digest, has_plan_schema, process, readings_rows, setup, T,
};
use dualwrite_tests::Pair;

const TABLES: [&str; 4] = ["--table", "public.readings", "--table", "public.events:at"];

#[tokio::test]
async fn copies_every_row_below_t_and_nothing_else() {
    let t0 = std::time::Instant::now();
    let pair = Pair::start();
    eprintln!("clusters up after {:?}", t0.elapsed());
    setup(&pair, 1_000_000);
    eprintln!("source filled after {:?}", t0.elapsed());

    // Dual-write has been running: rows at and after T on the target, plus copies of some
    // rows below T and one stale row below T that the source doesn't have.
    let db = &pair.db;
    pair.target.psql(
        db,
        &format!(
            "INSERT INTO readings (ts, device, value, note) SELECT '{T}'::timestamptz + i * interval '1 minute', 1000 + i, i, 'dual-write' FROM generate_series(0, 99) i;
             INSERT INTO events SELECT '{T}'::timestamptz + i * interval '1 hour', NULL, 'dual-write ' || i, i FROM generate_series(0, 9) i;
             INSERT INTO readings (ts, device, note) VALUES ('2024-02-01 00:00:00+00', 5000, 'stale');
             {}",
            readings_rows(1_000_000, 0, 20_000)
        ),
    );
    let at_or_after = |c: &dualwrite_tests::Cluster, table: &str, col: &str| {
        digest(c, db, table, &format!("{col} >= '{T}'"))
    };
    let target_after_readings = at_or_after(&pair.target, "readings", "ts");
    let target_after_events = at_or_after(&pair.target, "events", "at");
    let devices = digest(&pair.source, db, "devices", "true");
    assert_eq!(devices, digest(&pair.target, db, "devices", "true"));

    eprintln!("target prepared after {:?}", t0.elapsed());
    // --dry-run prints the plan and writes nothing.
    let (s, t) = (pair.source_url(), pair.target_url());
    let out = process(&[
        "copy",
        "--source",
        &s,
        "--target",
        &t,
        "--until",
        T,
        "--dry-run",
        TABLES[0],
        TABLES[1],
        TABLES[2],
        TABLES[3],
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 11 weekly partitions start below T (the 11th is clipped at T), the default partition,
    // and the events table's slices.
    assert!(stdout.contains("public.readings_w10"), "{stdout}");
    assert!(!stdout.contains("public.readings_w11"), "{stdout}");
    assert!(stdout.contains("public.readings_default"), "{stdout}");
    assert!(
        stdout.contains("text COPY"),
        "events has an enum array: {stdout}"
    );
    assert!(
        !stdout.contains(&pair.source.url(db)),
        "no URL (password) printed"
    );
    assert!(!has_plan_schema(&pair), "--dry-run wrote nothing");
    assert_eq!(
        pair.target.psql(db, "SELECT count(*) FROM readings"),
        (20_000 + 100 + 1).to_string()
    );

    eprintln!("dry run done after {:?}", t0.elapsed());
    let started = std::time::Instant::now();
    let c = copy(
        &pair,
        &[&TABLES[..], &["--jobs", "2", "--rows-per-unit", "10000"]].concat(),
    )
    .await;
    assert_eq!(code(c), code(std::process::ExitCode::SUCCESS));
    eprintln!("copy took {:?}", started.elapsed());

    let (src, tgt) = below_t(&pair, "readings", "ts");
    assert_eq!(src, tgt, "readings below T");
    assert!(src.starts_with("7"), "about 700k rows below T: {src}");
    let (src, tgt) = below_t(&pair, "events", "at");
    assert_eq!(src, tgt, "events below T");
    assert_eq!(
        at_or_after(&pair.target, "readings", "ts"),
        target_after_readings
    );
    assert_eq!(
        at_or_after(&pair.target, "events", "at"),
        target_after_events
    );
    assert_eq!(
        pair.target
            .psql(db, "SELECT count(*) FROM readings WHERE note = 'stale'"),
        "0"
    );
    assert_eq!(digest(&pair.target, db, "devices", "true"), devices);
    // Default partition rows below T (December) came over, those after it (May) did not.
    assert_eq!(
        pair.target.psql(
            db,
            "SELECT count(*) FILTER (WHERE note LIKE 'early %'), count(*) FILTER (WHERE note LIKE 'late %') FROM readings"
        ),
        "1000|0"
    );

    eprintln!("compared after {:?}", t0.elapsed());
    // Bookkeeping: every unit done exactly once.
    let units = pair.target.psql(
        db,
        "SELECT count(*), count(*) FILTER (WHERE state = 'done'), max(copies), min(copies), sum(rows)
         FROM _dualwrite_backfill.unit",
    );
    let cols: Vec<&str> = units.split('|').collect();
    assert_eq!(cols[0], cols[1], "{units}");
    assert_eq!((cols[2], cols[3]), ("1", "1"), "{units}");
    let below: i64 = pair
        .source
        .psql(
            db,
            &format!(
                "SELECT (SELECT count(*) FROM readings WHERE ts < '{T}') + (SELECT count(*) FROM events WHERE at < '{T}')"
            ),
        )
        .parse()
        .unwrap();
    assert_eq!(cols[4], below.to_string(), "rows recorded per unit add up");

    // status shows the plan, complete.
    let out = process(&["status", "--target", &t]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("{0}/{0} units done", cols[0])),
        "{stdout}"
    );
    assert!(stdout.contains("public.readings"), "{stdout}");
    assert!(
        !stdout.contains("postgres:"),
        "no password in status: {stdout}"
    );

    // A rerun resumes the same plan, finds nothing to do and changes nothing.
    let c = copy(&pair, &TABLES).await;
    assert_eq!(code(c), code(std::process::ExitCode::SUCCESS));
    assert_eq!(
        pair.target
            .psql(db, "SELECT count(*) FROM _dualwrite_backfill.plan"),
        "1"
    );
    assert_eq!(
        pair.target
            .psql(db, "SELECT max(copies) FROM _dualwrite_backfill.unit"),
        "1"
    );
    let (src, tgt) = below_t(&pair, "readings", "ts");
    assert_eq!(src, tgt);

    // clean drops the bookkeeping.
    let out = process(&["clean", "--target", &t]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!has_plan_schema(&pair));
    let out = process(&["status", "--target", &t]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no backfill plans"));
}
