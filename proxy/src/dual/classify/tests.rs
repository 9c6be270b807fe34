use super::cases::*;
use super::*;

#[test]
fn table() {
    assert!(CASES.len() >= 120, "only {} rows", CASES.len());
    let mut failures = Vec::new();
    for case in CASES {
        let got = classify(case.sql);
        let mut wrong = Vec::new();
        if got.route != case.route {
            wrong.push(format!("route {:?}", got.route));
        }
        if case.statements.is_some_and(|n| n != got.statements) {
            wrong.push(format!("statements {}", got.statements));
        }
        if case.tx.is_some_and(|t| t != got.tx) {
            wrong.push(format!("tx {:?}", got.tx));
        }
        if case.copy.is_some_and(|c| c != got.copy_from_stdin) {
            wrong.push(format!("copy_from_stdin {}", got.copy_from_stdin));
        }
        if case.session.is_some_and(|s| s != got.session_state) {
            wrong.push(format!("session_state {}", got.session_state));
        }
        if case.tables.is_some_and(|t| t != got.tables.as_slice()) {
            wrong.push(format!("tables {:?}", got.tables));
        }
        if case
            .nondet
            .is_some_and(|n| n != got.nondeterministic.as_slice())
        {
            wrong.push(format!("nondeterministic {:?}", got.nondeterministic));
        }
        if !wrong.is_empty() {
            failures.push(format!("{:?}: {}", case.sql, wrong.join(", ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn copies_and_cursor_statements_are_not_shadowable() {
    for sql in [
        "COPY t TO STDOUT",
        "/* report */ copy (SELECT 1) TO STDOUT",
        "DECLARE c CURSOR FOR SELECT * FROM t",
        "FETCH FORWARD 10 FROM c",
        "MOVE FORWARD $1 __asyncpg_portal_8__",
        "CLOSE c",
        "SELECT 1; FETCH 1 FROM c",
    ] {
        assert!(!classify(sql).shadowable, "{sql}");
    }
    for sql in [
        "SELECT * FROM t WHERE id = $1",
        "SHOW work_mem",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "SELECT 'FETCH 1 FROM c'",
    ] {
        assert!(classify(sql).shadowable, "{sql}");
    }
}

#[test]
fn word_lists_are_sorted() {
    for list in [
        ALLOWED_FUNCTIONS,
        NOT_CALLS,
        TYPE_NAMES,
        KEYWORDS,
        NONDETERMINISTIC,
        BARE_NONDETERMINISTIC,
    ] {
        assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
    }
    for f in [
        "nextval",
        "setval",
        "currval",
        "lastval",
        "set_config",
        "txid_current",
        "pg_notify",
    ] {
        assert!(!in_list(ALLOWED_FUNCTIONS, f), "{f} must not be allowed");
    }
}

#[test]
fn never_panics_on_generated_text() {
    const FRAGMENTS: &[&str] = &[
        "'",
        "\"",
        "$$",
        "$a$",
        "$1",
        "/*",
        "*/",
        "--",
        "\n",
        ";",
        "(",
        ")",
        "E'",
        "e'",
        "\\",
        "U&'",
        "U&\"",
        "B'",
        "x'",
        "::",
        ".",
        ",",
        "[",
        "]",
        " ",
        "select",
        "insert into t",
        "update",
        "delete from",
        "with",
        "as",
        "for update",
        "into",
        "copy",
        "from stdin",
        "explain",
        "analyze",
        "begin",
        "commit",
        "rollback to",
        "now()",
        "f(",
        "pg_catalog.",
        "é",
        "日本",
        "$",
        "$ab",
        "0.5e",
        "declare c cursor",
        "set",
        "temp",
    ];
    // A small deterministic generator: no dependency needed.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let len = (next() % 24) as usize;
        let mut sql = String::new();
        for _ in 0..len {
            sql.push_str(FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize]);
        }
        let got = classify(&sql);
        // Anything with a write verb outside quoting may go either way, but the counts must
        // be coherent.
        if got.statements == 0 {
            assert_eq!(got.tx, TxControl::None, "{sql:?}");
        }
        assert!(got.statements <= sql.len(), "{sql:?}");
    }
}

#[test]
fn large_query_is_linear() {
    let mut sql = String::from("SELECT ");
    while sql.len() < 1 << 20 {
        sql.push_str("coalesce(a, 'x;y') + lower(\"b\") /* c */ + $$d$$ + (e::numeric(5)),\n");
    }
    sql.push_str("1 FROM t; INSERT INTO big VALUES (1)");
    let start = std::time::Instant::now();
    let got = classify(&sql);
    let took = start.elapsed();
    assert_eq!(got.route, Route::Both);
    assert_eq!(got.statements, 2);
    assert_eq!(got.tables, vec!["big".to_string()]);
    // Linear work is a few milliseconds even unoptimized; quadratic would take minutes.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");

    let nested = format!("{}SELECT 1", "EXPLAIN ANALYZE ".repeat(100_000));
    assert_eq!(classify(&nested).route, Route::Both);
    let nested = format!(
        "DECLARE c CURSOR FOR {}SELECT 1",
        "EXPLAIN ANALYZE ".repeat(3)
    );
    assert_eq!(classify(&nested).route, Route::PrimaryOnly);

    let many: String = "SELECT 1;".repeat(100_000);
    assert_eq!(classify(&many).statements, 100_000);
    let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(
        classify(&format!("SELECT {deep}")).route,
        Route::PrimaryOnly
    );
}

#[test]
fn only_statements_that_may_change_data_have_an_effect() {
    let effect = [
        "insert into t values (1)",
        "update t set v = 1",
        "delete from t",
        "with x as (delete from t returning *) select * from x",
        "select nextval('s')",
        "select * into t2 from t",
        "create table t (id int)",
        "drop table t",
        "alter table t add column c int",
        "truncate t",
        "copy t from stdin",
        "call p()",
        "do $$ begin end $$",
        "execute stmt(1)",
        "explain analyze insert into t values (1)",
        "begin; insert into t values (1); commit",
        "frobnicate the table",
    ];
    for sql in effect {
        assert!(classify(sql).effect, "{sql} has an effect");
    }
    let none = [
        "select * from t",
        "select * from t for update",
        "begin",
        "commit",
        "rollback",
        "savepoint a",
        "set search_path = x",
        "reset all",
        "discard all",
        "prepare p as insert into t values (1)",
        "deallocate p",
        "listen ch",
        "lock table t in exclusive mode",
        "show work_mem",
        "explain select 1",
        "explain analyze select * from t",
        "declare c cursor with hold for select * from t",
        "begin; select 1; commit",
    ];
    for sql in none {
        assert!(!classify(sql).effect, "{sql} has no effect");
    }
}

#[test]
fn statements_that_must_run_outside_a_transaction_block_are_not_appendable() {
    for sql in [
        "insert into t values (1)",
        "update t set v = 1 -- trailing comment",
        "insert into t values (1) on conflict (id) do update set v = case when true then 1 end",
        "create table t (id int); drop table u",
    ] {
        assert!(classify(sql).appendable, "{sql}");
    }
    for sql in [
        "vacuum t",
        "create index concurrently i on t (v)",
        "create database d",
        "alter system set work_mem = '1MB'",
        "call p()",
        "do $$ begin end $$",
        "begin; insert into t values (1); commit",
        "insert into t values ('unterminated",
        "insert into t values (1) /* open comment",
    ] {
        assert!(!classify(sql).appendable, "{sql}");
    }
}
