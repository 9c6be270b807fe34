use std::time::Duration;

use super::compare::*;
use super::report::*;
use super::results::*;
use super::results::{differing_rows, Reservoir};
use crate::dual::outcome::{Outcome, ResultKind, StatementResult};

fn rows(rows: u64, digest: u64, unordered: u64) -> StatementResult {
    StatementResult {
        kind: ResultKind::Tag(format!("SELECT {rows}")),
        rows,
        digest,
        unordered,
        types: 7,
        head: None,
    }
}

#[test]
fn a_row_limited_read_compares_rows_when_the_secondarys_result_is_whole() {
    let suspended = |rows, digest, unordered| StatementResult {
        kind: ResultKind::Suspended,
        ..rows_of(rows, digest, unordered)
    };
    // The primary stopped at its limit of 1; the secondary (limit 2) had only that row:
    // the rows are compared.
    assert_eq!(
        compare(&suspended(1, 1, 1), &rows(1, 1, 1), false),
        Ok(Match::Rows)
    );
    assert_eq!(
        compare(&suspended(1, 1, 1), &rows(1, 2, 2), false),
        Err(Kind::Rows)
    );
    // Fewer rows than the limit on the secondary.
    assert_eq!(
        compare(&suspended(1, 1, 1), &rows(0, 0, 0), false),
        Err(Kind::RowCount)
    );
    // More rows than the limit on the secondary: without ORDER BY each side may return
    // other rows first, only the count compares.
    assert_eq!(
        compare(&suspended(1, 1, 1), &suspended(2, 5, 5), false),
        Ok(Match::CountOnly)
    );
    // With ORDER BY, the secondary's first N rows are the primary's N.
    let mut more = suspended(2, 5, 5);
    more.head = Some((1, 1));
    assert_eq!(compare(&suspended(1, 1, 1), &more, true), Ok(Match::Rows));
    more.head = Some((3, 3));
    assert_eq!(compare(&suspended(1, 1, 1), &more, true), Err(Kind::Rows));
    // The primary read to the end where the secondary has more rows than that.
    assert_eq!(
        compare(&rows(1, 1, 1), &suspended(2, 5, 5), false),
        Err(Kind::RowCount)
    );
    // Both stopped at the same limit (a sample run without one row more).
    assert_eq!(
        compare(&suspended(1, 1, 1), &suspended(1, 2, 2), false),
        Ok(Match::CountOnly)
    );
    assert_eq!(
        compare(&suspended(1, 1, 1), &suspended(1, 2, 2), true),
        Err(Kind::Rows)
    );
}

fn rows_of(rows: u64, digest: u64, unordered: u64) -> StatementResult {
    self::rows(rows, digest, unordered)
}

#[test]
fn a_difference_is_in_doubt_only_when_a_concurrent_commit_wrote_a_table_the_read_names() {
    use crate::dual::order::Touched;
    let read = "SELECT n FROM public.Counters c JOIN \"items\" i ON i.id = c.id";
    assert!(!concurrent(&Touched::Nothing, read));
    assert!(concurrent(&Touched::Unknown, read));
    assert!(concurrent(&Touched::Tables(vec!["counters".into()]), read));
    assert!(concurrent(&Touched::Tables(vec!["s.items".into()]), read));
    assert!(!concurrent(
        &Touched::Tables(vec!["events".into(), "count".into()]),
        read
    ));
}

#[test]
fn kinds_in_order() {
    let err = |code: &str| StatementResult {
        kind: ResultKind::Error {
            code: code.into(),
            message: "m".into(),
        },
        rows: 0,
        digest: 0,
        unordered: 0,
        types: 0,
        head: None,
    };
    assert_eq!(
        compare(&rows(1, 1, 1), &rows(1, 1, 1), true),
        Ok(Match::Rows)
    );
    assert_eq!(
        compare(&rows(1, 1, 1), &err("42P01"), false),
        Err(Kind::Error)
    );
    assert_eq!(
        compare(&err("42P01"), &err("42703"), false),
        Ok(Match::Rows)
    );
    assert_eq!(
        compare(&err("42P01"), &err("22012"), false),
        Err(Kind::Sqlstate)
    );
    assert_eq!(
        compare(&rows(2, 1, 1), &rows(1, 1, 1), false),
        Err(Kind::RowCount)
    );
    assert_eq!(
        compare(&rows(2, 1, 1), &rows(2, 1, 2), false),
        Err(Kind::Rows)
    );
    assert_eq!(
        compare(&rows(2, 1, 5), &rows(2, 2, 5), true),
        Err(Kind::Order)
    );
    assert_eq!(
        compare(&rows(2, 1, 5), &rows(2, 2, 5), false),
        Ok(Match::OtherOrder)
    );
    let mut t = rows(1, 1, 1);
    t.types = 8;
    assert_eq!(compare(&rows(1, 1, 1), &t, false), Err(Kind::Types));
}

#[test]
fn normalizes_literals_and_comments() {
    assert_eq!(
        normalize("SELECT abalance FROM  pgbench_accounts\n WHERE aid = 4711 -- x\n"),
        "SELECT abalance FROM pgbench_accounts WHERE aid = ?"
    );
    assert_eq!(
        normalize("select * from t1 where s = 'it''s' and x in (1.5, 2e3) /* c */"),
        "select * from t1 where s = ? and x in (?, ?)"
    );
    assert_eq!(normalize("SELECT $1::int"), "SELECT $1::int");
    assert!(has_order_by("select a from t\norder  by a"));
    assert!(!has_order_by("select 'order by' from t"));
    assert!(!has_order_by("select a from t -- order by a"));
}

#[test]
fn renders_rows() {
    let mut body = vec![0, 3];
    body.extend_from_slice(&1i32.to_be_bytes());
    body.push(b'7');
    body.extend_from_slice(&(-1i32).to_be_bytes());
    body.extend_from_slice(&2i32.to_be_bytes());
    body.extend_from_slice(&[0, 1]);
    assert_eq!(render_row(&body), "(7, NULL, \\x0001)");
}

#[test]
fn lists_rows_found_on_one_side_only() {
    let row = |v: &[u8]| {
        let mut b = vec![0, 1];
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v);
        bytes::Bytes::from(b)
    };
    let p = Outcome {
        sample: vec![row(b"1"), row(b"2"), row(b"3")],
        ..Outcome::default()
    };
    let s = Outcome {
        sample: vec![row(b"1"), row(b"3"), row(b"4")],
        ..Outcome::default()
    };
    assert_eq!(
        differing_rows(&p, &s),
        (vec!["(2)".to_string()], vec!["(4)".to_string()])
    );
}

#[test]
fn queue_bound_and_percentiles() {
    let s = Shadow::new(1.0);
    assert!(s.admit(2));
    assert!(s.admit(2));
    assert!(!s.admit(2));
    s.done();
    assert!(s.admit(2));
    assert_eq!(s.report().dropped, 1);
    let mut r = Reservoir::default();
    for ms in 1..=100 {
        r.add(Duration::from_millis(ms));
    }
    let p = r.percentiles();
    assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
}
