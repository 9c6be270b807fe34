use super::*;

const R: Route = Route::PrimaryOnly;
const W: Route = Route::Both;

/// (statement, expected route)
const CASES: &[(&str, Route)] = &[
    // Plain reads.
    ("SELECT 1", R),
    ("select * from t", R),
    ("SELECT a, b FROM t WHERE id = $1", R),
    ("SELECT count(*) FROM t", R),
    ("SELECT sum(v), avg(v), min(v), max(v) FROM t GROUP BY k HAVING count(*) > 1", R),
    ("SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (x)", R),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", R),
    ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)", R),
    ("SELECT row_number() OVER (PARTITION BY k ORDER BY ts) FROM t", R),
    ("SELECT lag(v) OVER w FROM t WINDOW w AS (ORDER BY ts)", R),
    ("WITH x AS (SELECT 1) SELECT * FROM x", R),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", R),
    ("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.t = t.id LIMIT 1) x", R),
    ("SELECT v::numeric(10,2), ts::timestamp(3), s::varchar(20) FROM t", R),
    ("SELECT CAST(v AS numeric(12, 4)) FROM t", R),
    ("SELECT coalesce(a, b), nullif(a, 0), greatest(a, b), least(a, b) FROM t", R),
    ("SELECT extract(epoch FROM ts), date_trunc('hour', ts), time_bucket('5 minutes', ts) FROM t", R),
    ("SELECT substring(s FROM 2 FOR 3), position('a' IN s), trim(both ' ' from s) FROM t", R),
    ("SELECT jsonb_build_object('a', 1), j->>'k', j #> '{a,b}' FROM t", R),
    ("SELECT array_agg(x ORDER BY x), string_agg(s, ',') FROM t", R),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM t", R),
    ("SELECT count(*) FILTER (WHERE v > 0) FROM t", R),
    ("SELECT * FROM generate_series(1, 10) g", R),
    ("SELECT * FROM unnest(ARRAY[1,2,3]) AS u(x)", R),
    ("SELECT now(), current_timestamp, random()", R),
    ("SELECT pg_sleep(1)", R),
    ("VALUES (1, 'a'), (2, 'b')", R),
    ("TABLE t", R),
    ("SHOW search_path", R),
    ("show all", R),
    ("EXPLAIN SELECT * FROM t", R),
    ("EXPLAIN (COSTS OFF) DELETE FROM t", R),
    ("FETCH 10 FROM c", R),
    ("MOVE NEXT IN c", R),
    ("CLOSE c", R),
    ("DECLARE c CURSOR FOR SELECT * FROM t", R),
    ("COPY t TO STDOUT", R),
    ("COPY (SELECT * FROM t WHERE ts < now()) TO STDOUT (FORMAT binary)", R),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = $1;", R),
    ("SELECT 'insert into t values (1)'", R),
    ("SELECT \"insert\", \"delete\" FROM t", R),
    ("SELECT 1 -- ; delete from t", R),
    ("SELECT e'\\';delete from t'", R),
    ("SELECT $$;DELETE FROM t;$$", R),
    ("SELECT $fn$ drop table t; $fn$ AS body", R),
    ("SELECT /* ; DROP TABLE t; /* nested */ still comment */ 1", R),
    ("SELECT U&'d\\0061t\\+000061' FROM t", R),
    ("SELECT B'1010', X'1F'", R),
    ("  ", R),
    ("-- only a comment", R),
    (";;", R),
    ("SELECT * FROM t FOR UPDATE OF x SKIP LOCKED LIMIT 0", W),
    ("SELECT t.x AS \"for update\" FROM t", R),
    ("SELECT has_table_privilege('t', 'select'), current_setting('search_path')", R),
    ("SELECT to_char(ts, 'YYYY'), to_timestamp(1), age(ts) FROM t", R),
    ("SELECT md5(s), sha256(b) FROM t", R),
    ("SELECT regexp_replace(s, 'a', 'b') FROM t", R),
    ("SELECT x FROM t WHERE v BETWEEN (1) AND (2)", R),
    ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", R),
    ("SELECT * FROM t ORDER BY ts DESC NULLS LAST LIMIT (5) OFFSET (1)", R),
    ("SELECT CASE WHEN (a) THEN (b) ELSE (c) END FROM t", R),
    ("SELECT interval '1 day', timestamp '2024-01-01', date '2024-01-01'", R),
    // Writes.
    ("INSERT INTO t VALUES (1)", W),
    ("insert into t (a, b) values ($1, $2)", W),
    ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);", W),
    ("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;", W),
    ("DELETE FROM t WHERE id = 1", W),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v", W),
    ("INSERT INTO t SELECT * FROM u ON CONFLICT (id) DO UPDATE SET v = excluded.v", W),
    ("COPY t FROM STDIN", W),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv, HEADER)", W),
    ("copy t from '/tmp/file.csv'", W),
    ("COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", W),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d", W),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", W),
    ("WITH u AS (UPDATE t SET v = 1 RETURNING id) SELECT * FROM u", W),
    ("WITH x AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM x)", W),
    ("SELECT * INTO new_t FROM t", W),
    ("SELECT a INTO TEMP tmp FROM t", W),
    ("SELECT * FROM t FOR UPDATE", W),
    ("SELECT * FROM t WHERE id = 1 FOR NO KEY UPDATE", W),
    ("SELECT * FROM t FOR SHARE", W),
    ("SELECT * FROM t FOR KEY SHARE NOWAIT", W),
    ("EXPLAIN ANALYZE DELETE FROM t", W),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET v = 1", W),
    ("EXPLAIN ANALYZE SELECT nextval('s')", W),
    ("SELECT nextval('s')", W),
    ("SELECT setval('s', 42)", W),
    ("SELECT currval('s')", W),
    ("SELECT set_config('search_path', 'app', false)", W),
    ("SELECT my_function(1)", W),
    ("SELECT app.archive_old_rows()", W),
    ("SELECT create_hypertable('readings', 'ts')", W),
    ("SELECT add_retention_policy('readings', INTERVAL '30 days')", W),
    ("SELECT add_compression_policy('readings', INTERVAL '7 days')", W),
    ("SELECT pg_advisory_lock(1)", W),
    ("SELECT pg_notify('chan', 'x')", W),
    ("SELECT lo_create(0)", W),
    ("SELECT * FROM t WHERE id = f(1)", W),
    ("SELECT * FROM archive_and_return(10)", W),
    ("SELECT * FROM t JOIN LATERAL purge(t.id) p ON true", W),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", W),
    ("CALL refresh_continuous_aggregate('cagg', NULL, NULL)", W),
    ("DO $$ BEGIN PERFORM 1; END $$", W),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W),
    ("CREATE TABLE t (id int)", W),
    ("CREATE TEMP TABLE tmp (id int)", W),
    ("CREATE INDEX CONCURRENTLY i ON t (a)", W),
    ("ALTER TABLE t ADD COLUMN c int", W),
    ("DROP TABLE IF EXISTS t", W),
    ("TRUNCATE t", W),
    ("TRUNCATE TABLE a, b RESTART IDENTITY", W),
    ("COMMENT ON TABLE t IS 'x'", W),
    ("GRANT SELECT ON t TO app", W),
    ("REVOKE ALL ON t FROM app", W),
    ("REFRESH MATERIALIZED VIEW mv", W),
    ("VACUUM ANALYZE t", W),
    ("ANALYZE t", W),
    ("CLUSTER t USING i", W),
    ("REINDEX TABLE t", W),
    ("SET search_path = app", W),
    ("set local statement_timeout = '5s'", W),
    ("SET TIME ZONE 'UTC'", W),
    ("RESET ALL", W),
    ("DISCARD ALL", W),
    ("PREPARE p AS SELECT 1", W),
    ("EXECUTE p", W),
    ("DEALLOCATE p", W),
    ("LISTEN chan", W),
    ("UNLISTEN *", W),
    ("NOTIFY chan, 'x'", W),
    ("CHECKPOINT", W),
    ("BEGIN", W),
    ("begin;", W),
    ("BEGIN WORK", W),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", W),
    ("COMMIT", W),
    ("COMMIT AND CHAIN", W),
    ("END TRANSACTION", W),
    ("ROLLBACK", W),
    ("ABORT", W),
    ("SAVEPOINT s", W),
    ("RELEASE SAVEPOINT s", W),
    ("RELEASE s", W),
    ("ROLLBACK TO SAVEPOINT s", W),
    ("PREPARE TRANSACTION 'x'", W),
    ("COMMIT PREPARED 'x'", W),
    ("SET TRANSACTION READ ONLY", W),
    ("SET CONSTRAINTS ALL DEFERRED", W),
    ("FROBNICATE t", W),
    // Multi-statement text.
    ("SELECT 1; SELECT 2", R),
    ("SELECT 1; /* ; */ DELETE FROM t", W),
    ("SELECT $$;$$; INSERT INTO t VALUES (1)", W),
    ("SELECT 'a;b'; SELECT \"x;y\" FROM t", R),
    ("BEGIN; INSERT INTO t VALUES (1); COMMIT", W),
    ("SELECT 1; SET x = 1", W),
];

#[test]
fn table_of_statements() {
    assert!(CASES.len() >= 120, "{} cases", CASES.len());
    let mut wrong = Vec::new();
    for (sql, want) in CASES {
        let got = classify(sql).route;
        if got != *want {
            wrong.push(format!("{sql:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

#[test]
fn transaction_control() {
    for (sql, tx) in [
        ("BEGIN", TxControl::Begin),
        ("begin isolation level serializable", TxControl::Begin),
        ("START TRANSACTION", TxControl::Begin),
        ("COMMIT", TxControl::Commit),
        ("end", TxControl::Commit),
        ("ROLLBACK", TxControl::Rollback),
        ("abort", TxControl::Rollback),
        ("SAVEPOINT a", TxControl::Savepoint),
        ("ROLLBACK TO a", TxControl::RollbackToSavepoint),
        ("RELEASE SAVEPOINT a", TxControl::ReleaseSavepoint),
        ("COMMIT PREPARED 'x'", TxControl::Prepared),
        ("INSERT INTO t VALUES (1)", TxControl::None),
        ("BEGIN; INSERT INTO t VALUES (1); COMMIT", TxControl::Mixed),
    ] {
        assert_eq!(classify(sql).tx, tx, "{sql}");
    }
}

#[test]
fn details() {
    let c = classify("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);");
    assert_eq!(c.tables, vec!["pgbench_history"]);
    assert_eq!(c.nondeterministic, vec!["current_timestamp"]);
    assert_eq!(c.statements, 1);
    let c = classify("COPY metrics.readings (ts, v) FROM STDIN WITH (FORMAT binary)");
    assert!(c.copy_from_stdin);
    assert_eq!(c.tables, vec!["metrics.readings"]);
    assert!(!classify("COPY t TO STDOUT").copy_from_stdin);
    assert!(!classify("SELECT 'COPY t FROM STDIN'").copy_from_stdin);
    let c = classify("UPDATE \"Mixed\".\"Case\" SET v = 1; DELETE FROM Other; TRUNCATE a, b");
    assert_eq!(c.tables, vec!["Mixed.Case", "other", "a", "b"]);
    assert!(classify("SET search_path = x").session_state);
    assert!(classify("CREATE TEMP TABLE x (a int)").session_state);
    assert!(!classify("CREATE TABLE x (a int)").session_state);
    let c = classify("SELECT nextval('s'), now(), random()");
    assert_eq!(c.nondeterministic, vec!["nextval", "now", "random"]);
    assert_eq!(classify("SELECT 1; SELECT 2;").statements, 2);
    assert_eq!(classify("").statements, 0);
}

#[test]
fn never_panics_and_is_linear() {
    let parts = [
        "'", "\"", "$$", "$a$", "/*", "*/", "--", "\n", ";", "(", ")", "E'", "\\", "select",
        "insert", "$1", "u&'", "x", " ",
    ];
    let mut seed = 12345u64;
    for _ in 0..5000 {
        let mut s = String::new();
        for _ in 0..(seed % 20) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(parts[(seed >> 33) as usize % parts.len()]);
        }
        let _ = classify(&s);
    }
    let big = "SELECT ".to_string() + &"a + ".repeat(250_000) + "1";
    let t = std::time::Instant::now();
    assert_eq!(classify(&big).route, Route::PrimaryOnly);
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}
