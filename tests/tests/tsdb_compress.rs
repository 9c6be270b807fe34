//! After `copy`, the chunks compressed on the source hold their rows uncompressed on the target
//! (flagged compressed, "partial"). `compress` compresses exactly those, one at a time, and a
//! rerun finds nothing left; the validator reports each chunk's compression on both sides.

use dualwrite_common::catalog::Compression;
use dualwrite_tests::backfill_util::{clone_schema, copy_until, outcome, start_of_today};
use dualwrite_tests::validator_util::run_on;
use dualwrite_tests::Pair;
use dualwrite_validator::report::Status;

const STATES: &str = "SELECT string_agg(c.chunk_name || ':' || ch.status, ',' ORDER BY c.chunk_name)
  FROM timescaledb_information.chunks c
  JOIN _timescaledb_catalog.chunk ch ON ch.relid = format('%I.%I', c.chunk_schema, c.chunk_name)::regclass
 WHERE c.hypertable_name = 'metrics'";

#[tokio::test]
async fn compress_matches_the_sources_compressed_chunks() {
    let pair = Pair::start_runbook_layout();
    let (s, t) = (pair.source_url(), pair.target_url());
    clone_schema(&pair);
    copy_until(&pair, &start_of_today(&pair)).await;

    // The validator sees the data equal and the compression not.
    let r = run_on(&pair, "counts", &[]).await.unwrap();
    assert_eq!(r.summary.status, Status::Equal, "{r:#?}");
    let units = &r.tables[0].units;
    let compressed_on_source = units
        .iter()
        .filter(|u| u.source_compression == Some(Compression::Full))
        .count();
    assert_eq!(compressed_on_source, 16, "{units:#?}");
    assert!(
        units
            .iter()
            .filter(|u| u.source_compression == Some(Compression::Full))
            .all(|u| u.target_compression == Some(Compression::Partial)),
        "{units:#?}"
    );
    let text =
        dualwrite_validator::report::render(&r, dualwrite_validator::report::Format::Text).unwrap();
    assert!(text.contains("16 differ"), "{text}");
    assert_ne!(
        pair.target.psql(&pair.db, STATES),
        pair.source.psql(&pair.db, STATES)
    );

    let (code, out, err) = outcome(&["compress", "--source", &s, "--target", &t, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("16 chunks to compress"), "{out}");
    assert!(out.contains("[16/16] would compress"), "{out}");
    assert_ne!(
        pair.target.psql(&pair.db, STATES),
        pair.source.psql(&pair.db, STATES)
    );

    let (code, out, err) = outcome(&[
        "compress", "--source", &s, "--target", &t, "--pause", "10ms",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("[16/16] compressed"), "{out}");
    // Exactly the source's chunks are compressed, entirely.
    assert_eq!(
        pair.target.psql(&pair.db, STATES),
        pair.source.psql(&pair.db, STATES)
    );
    let (code, out, err) = outcome(&["compress", "--source", &s, "--target", &t]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("already has the source's compression state"),
        "{out}"
    );

    for command in ["counts", "checksum"] {
        let r = run_on(&pair, command, &[]).await.unwrap();
        assert_eq!(r.summary.status, Status::Equal, "{r:#?}");
        assert!(
            r.tables[0]
                .units
                .iter()
                .all(|u| u.source_compression == u.target_compression),
            "{r:#?}"
        );
        let text =
            dualwrite_validator::report::render(&r, dualwrite_validator::report::Format::Text)
                .unwrap();
        assert!(text.contains("every chunk as on the source"), "{text}");
    }
    // Estimates call TimescaleDB's functions in its schema (`ext`, not on the search path).
    let r = run_on(&pair, "counts", &["--estimate"]).await.unwrap();
    assert_eq!(r.summary.status, Status::Equal, "{r:#?}");
    assert!(r.summary.source_rows > 0, "{r:#?}");
}
