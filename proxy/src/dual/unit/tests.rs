use super::*;

fn frame(tag: u8, body: &[u8]) -> Bytes {
    let mut b = vec![tag];
    b.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    b.extend_from_slice(body);
    Bytes::from(b)
}

fn parse(name: &str, text: &str) -> Bytes {
    frame(f::PARSE, format!("{name}\0{text}\0\0\0").as_bytes())
}

fn bind(portal: &str, statement: &str) -> Bytes {
    frame(
        f::BIND,
        format!("{portal}\0{statement}\0\0\0\0\0\0\0").as_bytes(),
    )
}

fn execute(max_rows: i32) -> Bytes {
    execute_on("", max_rows)
}

fn execute_on(portal: &str, max_rows: i32) -> Bytes {
    let mut body = format!("{portal}\0").into_bytes();
    body.extend_from_slice(&max_rows.to_be_bytes());
    frame(f::EXECUTE, &body)
}

fn describe_portal() -> Bytes {
    frame(f::DESCRIBE, b"P\0")
}

fn sync() -> Bytes {
    frame(f::SYNC, b"")
}

/// Feed a batch at shadow rate 1.0; the units it produced.
fn units(frames: &[Bytes]) -> Vec<Unit> {
    let mut b = Builder {
        shadow_rate: 1.0,
        ..Builder::default()
    };
    let mut out = Vec::new();
    for fr in frames {
        b.push(fr[0], fr, &mut out);
    }
    out.into_iter()
        .map(|i| match i {
            Item::Unit(u) => u,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn an_extended_batch_takes_a_statement_before_its_sync_only_if_each_of_its_own_may() {
    // A commit marker may run in the batch's implicit transaction: not with VACUUM in it,
    // nor with transaction control.
    let writes = units(&[
        parse("", "UPDATE t SET v = v + 1 WHERE id = $1"),
        bind("", ""),
        execute(0),
        parse("", "INSERT INTO h VALUES ($1)"),
        bind("", ""),
        execute(0),
        sync(),
    ]);
    assert!(writes[0].appendable && writes[0].effect);
    for other in ["VACUUM t", "COMMIT", "CREATE INDEX CONCURRENTLY i ON t (v)"] {
        let u = units(&[
            parse("", "INSERT INTO h VALUES ($1)"),
            bind("", ""),
            execute(0),
            parse("", other),
            bind("", ""),
            execute(0),
            sync(),
        ]);
        assert!(!u[0].appendable, "{other}");
    }
}

#[test]
fn a_read_alone_is_one_sample() {
    let u = units(&[
        parse("", "SELECT v FROM t WHERE id = $1"),
        bind("", ""),
        execute(0),
        sync(),
    ]);
    assert_eq!(u.len(), 1);
    assert!(u[0].shadow && !u[0].shares_answer);
    assert_eq!(u[0].results, vec![0]);
}

#[test]
fn a_read_sent_with_the_begin_before_it_is_sampled_after_it() {
    // pgjdbc with autocommit off: BEGIN goes out with the transaction's first query.
    let u = units(&[
        parse("", "BEGIN"),
        bind("", ""),
        execute(0),
        parse("", "SELECT v FROM t WHERE id = $1"),
        bind("", ""),
        describe_portal(),
        execute(0),
        sync(),
    ]);
    assert_eq!(u.len(), 2, "{u:?}");
    assert!(!u[0].shadow && u[0].answer_shared && !u[0].shares_answer);
    assert_eq!(u[0].tx, Some(TxControl::Begin));
    assert_eq!(u[0].results, vec![0]);
    assert!(u[1].shadow && u[1].shares_answer && !u[1].answer_shared);
    assert_eq!(u[1].results, vec![1]);
    assert_eq!(u[1].text, "SELECT v FROM t WHERE id = $1");
    assert!(matches!(u[1].steps.last(), Some(Step::Raw(s)) if s[0] == f::SYNC));
}

#[test]
fn a_named_statements_first_execution_is_sampled_after_its_parse() {
    let u = units(&[
        parse("S_1", "SELECT v FROM t WHERE id = $1"),
        bind("", "S_1"),
        describe_portal(),
        execute(0),
        sync(),
    ]);
    assert_eq!(u.len(), 2, "{u:?}");
    assert!(
        matches!(u[0].steps.first(), Some(Step::Parse { statement, .. }) if statement == "S_1")
    );
    assert!(u[0].answer_shared && u[0].results.is_empty());
    assert!(u[1].shadow && u[1].shares_answer);
    assert!(matches!(u[1].steps.first(), Some(Step::Bind { statement, .. }) if statement == "S_1"));
    // Later executions are samples of their own.
    let mut b = Builder {
        shadow_rate: 1.0,
        ..Builder::default()
    };
    let mut out = Vec::new();
    for fr in [
        parse("S_1", "SELECT v FROM t WHERE id = $1"),
        sync(),
        bind("", "S_1"),
        execute(0),
        sync(),
    ] {
        b.push(fr[0], &fr, &mut out);
    }
    assert!(matches!(out.last(), Some(Item::Unit(u)) if u.shadow && !u.shares_answer));
}

#[test]
fn reads_before_or_between_writes_of_a_batch_are_not_sampled() {
    for frames in [
        vec![
            parse("", "SELECT v FROM t WHERE id = $1"),
            bind("", ""),
            execute(0),
            parse("", "INSERT INTO t VALUES (1)"),
            bind("", ""),
            execute(0),
            sync(),
        ],
        vec![
            parse("", "INSERT INTO t VALUES (1)"),
            bind("", ""),
            execute(0),
            parse("", "SELECT v FROM t WHERE id = $1"),
            bind("", ""),
            execute(0),
            parse("", "UPDATE t SET v = 2"),
            bind("", ""),
            execute(0),
            sync(),
        ],
    ] {
        let u = units(&frames);
        assert_eq!(u.len(), 1, "{u:?}");
        assert!(!u[0].shadow && !u[0].answer_shared);
    }
}

#[test]
fn reads_after_the_last_write_of_a_batch_are_sampled_the_earlier_ones_are_not() {
    // psycopg fetching inside a pipeline: reads and writes alternate before one Sync.
    let u = units(&[
        parse("", "INSERT INTO t VALUES (1)"),
        bind("", ""),
        execute(0),
        parse("", "SELECT count(*) FROM t"),
        bind("c1", ""),
        execute_on("c1", 0),
        parse("", "UPDATE t SET v = 2"),
        bind("", ""),
        execute(0),
        parse("", "SELECT sum(v) FROM t"),
        bind("", ""),
        execute(0),
        sync(),
    ]);
    assert_eq!(u.len(), 2, "{u:?}");
    assert_eq!(u[0].results, vec![0, 2]);
    assert!(u[0].answer_shared);
    assert!(u[1].shadow && u[1].shares_answer);
    assert_eq!(u[1].results, vec![3]);
    assert_eq!(u[1].text, "SELECT sum(v) FROM t");
}

/// The Execute steps of a unit: (portal, row limit).
fn executes(u: &Unit) -> Vec<(Vec<u8>, i32)> {
    u.steps
        .iter()
        .filter_map(|s| match s {
            Step::Raw(f) if f[0] == super::f::EXECUTE => {
                let end = f[5..].iter().position(|c| *c == 0).unwrap();
                let l = &f[f.len() - 4..];
                Some((
                    f[5..5 + end].to_vec(),
                    i32::from_be_bytes([l[0], l[1], l[2], l[3]]),
                ))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn row_limited_reads_are_sampled_with_one_row_more_on_the_unnamed_portal() {
    // asyncpg's fetchrow: Execute with a row limit of 1.
    let u = units(&[
        parse("", "SELECT v FROM t WHERE id = $1"),
        bind("", ""),
        execute(1),
        sync(),
    ]);
    assert_eq!(u.len(), 1, "{u:?}");
    assert!(u[0].shadow);
    assert_eq!(u[0].results, vec![0]);
    assert_eq!(executes(&u[0]), vec![(vec![], 2)]);
    // pgjdbc's setFetchSize in a transaction: a named portal bound in the batch, read
    // in pieces. The sample binds and runs the unnamed portal instead.
    let u = units(&[
        parse("", "BEGIN"),
        bind("", ""),
        execute(0),
        parse("", "SELECT v FROM t"),
        bind("C_1", ""),
        execute_on("C_1", 7),
        sync(),
    ]);
    assert_eq!(u.len(), 2, "{u:?}");
    assert!(u[0].answer_shared);
    assert!(u[1].shadow && u[1].shares_answer);
    assert_eq!(executes(&u[1]), vec![(vec![], 8)]);
    assert!(matches!(&u[1].steps[0], Step::Bind { bind, .. } if bind[5] == 0));
    // Its next pieces in the same batch (node-postgres's `rows`) are not compared: the
    // sample holds the first one only.
    let u = units(&[
        parse("", "SELECT v FROM t"),
        bind("", ""),
        execute(7),
        execute(7),
        execute(7),
        sync(),
    ]);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].results, vec![0]);
    assert_eq!(executes(&u[0]), vec![(vec![], 8)]);
    // A later piece of that portal (no Bind in its batch) is not a sample: the secondary
    // has no such portal.
    let u = units(&[execute_on("C_1", 7), sync()]);
    assert!(u.iter().all(|u| !u.shadow), "{u:?}");
    // No limit stays no limit.
    let u = units(&[parse("", "SELECT 1"), bind("", ""), execute(0), sync()]);
    assert_eq!(executes(&u[0]), vec![(vec![], 0)]);
}
