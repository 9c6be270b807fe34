//! The harness itself: clusters start, versions are right, databases are separate.

use dualwrite_tests::{Pair, PgBin};

#[test]
fn pair_starts_with_separate_databases() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int)");
    pair.source.psql(&pair.db, "INSERT INTO t VALUES (1)");
    assert_eq!(pair.source.psql(&pair.db, "SELECT count(*) FROM t"), "1");
    assert_eq!(pair.target.psql(&pair.db, "SELECT count(*) FROM t"), "0");
    let v = pair.target.psql(&pair.db, "SHOW server_version_num");
    assert_eq!(v.parse::<u32>().unwrap() / 10000, PgBin::target().major);
}
