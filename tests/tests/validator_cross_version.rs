//! Source on the system PostgreSQL, target on a newer major version (PostgreSQL 18): equal
//! data gives equal digests, with both the typed and the text row hash.

use dualwrite_tests::validator_util::{fill_both, run_on};
use dualwrite_tests::{Pair, PgBin};
use dualwrite_validator::report::Status;

#[tokio::test]
async fn checksums_agree_across_major_versions() {
    let newer = PgBin::newer_required();
    let pair = Pair::start_with(&PgBin::source(), &newer);
    assert!(pair.target.bin.major > pair.source.bin.major);
    fill_both(&pair);
    let tables = ["--table", "public.metrics", "--table", "public.events:at"];
    for digest in ["typed", "text"] {
        let r = run_on(
            &pair,
            "checksum",
            &[&tables[..], &["--digest", digest]].concat(),
        )
        .await
        .unwrap();
        assert_eq!(r.digest.as_deref(), Some(digest));
        assert_eq!(
            r.summary.status,
            Status::Equal,
            "PostgreSQL {} vs {} with {digest} digests: {r:#?}",
            pair.source.bin.major,
            pair.target.bin.major
        );
        assert_eq!(r.summary.source_rows, 5760 + 10 + 3000);
    }
    // Auto picks the typed hash when both servers hash the probe row alike.
    let r = run_on(&pair, "checksum", &tables).await.unwrap();
    assert_eq!(r.digest.as_deref(), Some("typed"));
    assert_eq!(r.exit_code(), 0);
}
