//! The classification table: statements and what `classify` must find in them.

use super::*;
use Route::{Both as W, PrimaryOnly as R};

/// One table row: the text, its route, and optionally more expectations.
pub(super) struct Case {
    pub(super) sql: &'static str,
    pub(super) route: Route,
    pub(super) statements: Option<usize>,
    pub(super) tx: Option<TxControl>,
    pub(super) copy: Option<bool>,
    pub(super) session: Option<bool>,
    pub(super) tables: Option<&'static [&'static str]>,
    pub(super) nondet: Option<&'static [&'static str]>,
}

pub(super) const fn c(sql: &'static str, route: Route) -> Case {
    Case {
        sql,
        route,
        statements: None,
        tx: None,
        copy: None,
        session: None,
        tables: None,
        nondet: None,
    }
}

impl Case {
    const fn n(mut self, n: usize) -> Self {
        self.statements = Some(n);
        self
    }
    const fn tx(mut self, tx: TxControl) -> Self {
        self.tx = Some(tx);
        self
    }
    const fn copy(mut self) -> Self {
        self.copy = Some(true);
        self
    }
    const fn copy_false(mut self) -> Self {
        self.copy = Some(false);
        self
    }
    const fn session(mut self, s: bool) -> Self {
        self.session = Some(s);
        self
    }
    const fn tables(mut self, t: &'static [&'static str]) -> Self {
        self.tables = Some(t);
        self
    }
    const fn nondet(mut self, n: &'static [&'static str]) -> Self {
        self.nondet = Some(n);
        self
    }
}

use TxControl as T;

pub(super) const CASES: &[Case] = &[
    // Plain reads.
    c("SELECT 1", R).n(1).tx(T::None).session(false).tables(&[]).nondet(&[]),
    c("select * from t", R),
    c("SELECT a, b FROM public.t WHERE id = $1 AND s = $2", R),
    c("(SELECT 1) UNION ALL (SELECT 2)", R),
    c("SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (x)", R),
    c("SELECT * FROM t WHERE id IN (SELECT id FROM u) AND NOT EXISTS (SELECT 1)", R),
    c("SELECT * FROM t WHERE id = ANY($1) OR id = ANY (ARRAY[1,2]) OR x > ALL (SELECT 1)", R),
    c("SELECT count(*), sum(v), avg(v), min(v), max(v) FROM t GROUP BY k HAVING count(*) > 1", R),
    c("SELECT row_number() OVER (PARTITION BY k ORDER BY ts), lag(v, 1) OVER w FROM t WINDOW w AS (ORDER BY ts)", R),
    c("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v), count(*) FILTER (WHERE v > 0) FROM t", R),
    c("WITH x AS (SELECT 1) SELECT * FROM x", R).tables(&[]),
    c("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", R),
    c("WITH a AS MATERIALIZED (SELECT 1), b(x) AS NOT MATERIALIZED (SELECT 2) SELECT * FROM a, b", R),
    c("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.t = t.id LIMIT 1) x", R),
    c("SELECT * FROM t JOIN LATERAL generate_series(1, t.n) AS g(i) ON true", R),
    c("SELECT * FROM (SELECT 1) AS s(a), (VALUES (1, 2)) v(a, b)", R),
    c("SELECT * FROM unnest($1::int[]) WITH ORDINALITY AS u(x, n)", R),
    c("SELECT * FROM generate_series(1, 3) g(i) CROSS JOIN t t2(a, b)", R),
    c("SELECT v::numeric(10,2), ts::timestamp(3), s::varchar(20), c::character varying(5) FROM t", R),
    c("SELECT CAST(v AS numeric(12, 4)), CAST(s AS char(3)), x::pg_catalog.numeric(5) FROM t", R),
    c("SELECT interval '1 day', b::bit(8), d::decimal(6,2) FROM t", R),
    c("SELECT coalesce(a, b), nullif(a, 0), greatest(a, b), least(a, b) FROM t", R),
    c("SELECT extract(epoch FROM ts), date_trunc('hour', ts), time_bucket('5 minutes', ts) FROM t", R),
    c("SELECT substring(s FROM 2 FOR 3), position('a' IN s), trim(both ' ' from s), overlay(s placing 'x' from 1) FROM t", R),
    c("SELECT jsonb_build_object('a', 1), j->>'k', j #> '{a,b}', jsonb_set(j, '{a}', '1') FROM t", R),
    c("SELECT array_agg(x ORDER BY x), string_agg(s, ','), array_length(a, 1) FROM t", R),
    c("SELECT pg_catalog.lower(s), pg_catalog.pg_get_userbyid(o) FROM t", R),
    c("SELECT DISTINCT ON (k) k, upper(s) FROM t ORDER BY k, ts DESC", R),
    c("SELECT * FROM t GROUP BY ROLLUP (a, b), CUBE (c), GROUPING SETS ((a), ())", R),
    c("SELECT \"lower\"(s) FROM t", R),
    c("SELECT * FROM t TABLESAMPLE SYSTEM (10) REPEATABLE (42)", R),
    c("SELECT current_setting('search_path'), version(), pg_typeof(1)", R),
    c("SELECT pg_sleep(1)", R),
    c("VALUES (1, 'a'), (2, 'b')", R),
    c("SELECT * FROM ROWS FROM (generate_series(1, 2), unnest(ARRAY[1])) AS x(a, b)", R),
    c("SELECT * FROM (t JOIN u ON t.id = u.id) j(a, b)", R),
    c("SELECT * FROM jsonb_to_recordset($1) AS r(a int, b varchar(10))", R),
    c("SELECT x FROM t WHERE ts > CURRENT_TIMESTAMP - INTERVAL '1 day' ORDER BY lower(s) LIMIT (5)", R)
        .nondet(&["current_timestamp"]),
    c("SELECT CASE WHEN (a) THEN upper(b) ELSE (c) END, ARRAY(SELECT 1), ROW(1, 2) FROM t", R),
    c("SELECT collation for (s), s COLLATE \"C\" FROM t WHERE s SIMILAR TO 'a%' ESCAPE '!'", R),
    c("SELECT json_table.* FROM json_table('[]', '$[*]' COLUMNS (a int PATH '$.a'))", R),
    c("SELECT 1 OPERATOR(pg_catalog.+) 2", R),
    c("TABLE t", R),
    c("SHOW search_path", R).session(false),
    c("show ALL", R),
    // Non-deterministic reads: still reads, but reported.
    c("SELECT now(), current_timestamp, random()", R)
        .nondet(&["now", "current_timestamp", "random"]),
    c("SELECT clock_timestamp(), gen_random_uuid(), CURRENT_DATE, localtimestamp(3)", R)
        .nondet(&["clock_timestamp", "gen_random_uuid", "current_date", "localtimestamp"]),
    c("SELECT * FROM t WHERE ts > now() - interval '1 hour' AND ts < now()", R).nondet(&["now"]),
    c("SELECT 'now'::timestamp, now FROM t", R).nondet(&[]),
    // EXPLAIN.
    c("EXPLAIN SELECT * FROM t", R),
    c("EXPLAIN DELETE FROM t", R).tables(&[]),
    c("EXPLAIN (COSTS OFF, VERBOSE) INSERT INTO t VALUES (1)", R),
    c("EXPLAIN (ANALYZE false) UPDATE t SET a = 1", R),
    c("EXPLAIN ANALYZE SELECT * FROM t", R),
    c("EXPLAIN ANALYZE DELETE FROM t", W).tables(&["t"]),
    c("explain analyse verbose update t set a = 1", W).tables(&["t"]),
    c("EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)", W).tables(&["t"]),
    c("EXPLAIN (analyze true, buffers) MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", W)
        .tables(&["t"]),
    c("EXPLAIN ANALYZE SELECT nextval('s')", W).nondet(&["nextval"]),
    // Cursors.
    c("FETCH 10 FROM c", R),
    c("MOVE NEXT IN c", R),
    c("CLOSE c", R),
    c("DECLARE c CURSOR FOR SELECT * FROM t", R).session(false),
    c("DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT * FROM t", W).session(true),
    c("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", W),
    c("DECLARE c CURSOR FOR SELECT my_func(x) FROM t", W),
    // COPY.
    c("COPY t TO STDOUT", R).copy_false(),
    c("COPY public.t (a, b) TO STDOUT WITH (FORMAT csv)", R),
    c("COPY (SELECT * FROM t WHERE ts < now()) TO STDOUT (FORMAT binary)", R).nondet(&["now"]),
    c("COPY t FROM STDIN", W).copy().tables(&["t"]),
    c("copy \"Events\" (a, b) from stdin with (format csv)", W).copy().tables(&["Events"]),
    c("COPY s.t FROM '/tmp/data.csv'", W).copy_false().tables(&["s.t"]),
    c("COPY t FROM PROGRAM 'cat x'", W).tables(&["t"]),
    c("COPY (INSERT INTO t VALUES (1) RETURNING *) TO STDOUT", W).tables(&["t"]),
    c("COPY (DELETE FROM t RETURNING id) TO STDOUT", W).tables(&["t"]),
    // pgbench.
    c("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;", W)
        .n(1)
        .tables(&["pgbench_accounts"]),
    c("SELECT abalance FROM pgbench_accounts WHERE aid = $1;", R).n(1).tables(&[]),
    c("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;", W)
        .tables(&["pgbench_tellers"]),
    c("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);", W)
        .tables(&["pgbench_history"])
        .nondet(&["current_timestamp"]),
    // Writes.
    c("INSERT INTO t VALUES (1)", W).tables(&["t"]).session(false).tx(T::None),
    c("insert into Public.Orders (id) select id from staging", W).tables(&["public.orders"]),
    c("INSERT INTO \"My Table\" AS m (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a", W)
        .tables(&["My Table"]),
    c("INSERT INTO t (id, ts) VALUES (nextval('t_id_seq'), now()) RETURNING id", W)
        .tables(&["t"])
        .nondet(&["nextval", "now"]),
    c("UPDATE ONLY s.t SET a = 1 FROM u WHERE u.id = t.id", W).tables(&["s.t"]),
    c("DELETE FROM t WHERE id = $1", W).tables(&["t"]),
    c("delete from only \"S\".\"T\" using u where true", W).tables(&["S.T"]),
    c("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)", W)
        .tables(&["t"]),
    c("TRUNCATE t", W).tables(&["t"]),
    c("TRUNCATE TABLE ONLY a, b.c RESTART IDENTITY CASCADE", W).tables(&["a", "b.c"]),
    c("truncate x *, \"Y\"", W).tables(&["x", "Y"]),
    // Data-modifying CTEs.
    c("WITH d AS (DELETE FROM t WHERE old RETURNING *) SELECT count(*) FROM d", W).tables(&["t"]),
    c("WITH x AS (SELECT 1), y AS (UPDATE u SET a = 1 RETURNING a) SELECT * FROM x, y", W)
        .tables(&["u"]),
    c("WITH a AS (SELECT 1) INSERT INTO log SELECT * FROM a", W).tables(&["log"]),
    c("WITH m AS MATERIALIZED (INSERT INTO a VALUES (1) RETURNING id), n AS (DELETE FROM b RETURNING id) SELECT * FROM m, n", W)
        .tables(&["a", "b"]),
    c("WITH x AS (SELECT * FROM (WITH y AS (MERGE INTO z USING q ON true WHEN MATCHED THEN DELETE) SELECT 1) s) SELECT 1", W)
        .tables(&["z"]),
    c("INSERT INTO t WITH d AS (DELETE FROM u RETURNING *) SELECT * FROM d", W).tables(&["t", "u"]),
    // SELECT INTO and locking reads.
    c("SELECT * INTO new_t FROM t", W).tables(&["new_t"]).session(false),
    c("SELECT a INTO TEMP TABLE tmp FROM t", W).tables(&["tmp"]).session(true),
    c("SELECT * FROM t WHERE id = 1 FOR UPDATE", W).tables(&[]),
    c("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", W),
    c("SELECT * FROM t FOR SHARE NOWAIT", W),
    c("select * from t for key share of t", W),
    c("SELECT * FROM t FOR UPDATE OF x SKIP LOCKED LIMIT 0", W),
    // Functions with side effects or unknown.
    c("SELECT nextval('s')", W).nondet(&["nextval"]),
    c("SELECT setval('s', 42, true)", W).nondet(&["setval"]),
    c("SELECT currval('s'), lastval()", W).nondet(&["currval", "lastval"]),
    c("SELECT set_config('app.user', '42', false)", W),
    c("SELECT pg_advisory_lock(1)", W),
    c("SELECT pg_try_advisory_xact_lock(1, 2)", W),
    c("SELECT pg_notify('ch', 'x')", W),
    c("SELECT lo_import('/tmp/x')", W),
    c("SELECT my_func(1)", W),
    c("SELECT app.audit_event($1)", W),
    c("SELECT public.lower(s) FROM t", W),
    c("SELECT \"MyFunc\"(x) FROM t", W),
    c("SELECT * FROM t WHERE id IN (SELECT f(id) FROM u)", W),
    c("SELECT DISTINCT ON (k) do_something(k) FROM t", W),
    c("SELECT * FROM t, dblink('conn', 'select 1') AS (a int)", W),
    c("SELECT create_hypertable('conditions', 'time')", W),
    c("SELECT add_retention_policy('conditions', INTERVAL '30 days')", W),
    c("SELECT add_compression_policy('metrics', INTERVAL '7 days')", W),
    c("SELECT compress_chunk(c) FROM show_chunks('metrics') c", W),
    c("SELECT drop_chunks('metrics', older_than => INTERVAL '3 months')", W),
    c("SELECT txid_current()", W).nondet(&["txid_current"]),
    c("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", W),
    c("SELECT setseed(0.5)", W).nondet(&["setseed"]),
    c("SELECT * FROM ROWS FROM (archive(1)) AS x(a)", W),
    c("SELECT * FROM t JOIN LATERAL purge(t.id) p ON true", W),
    c("SELECT * FROM t AS a, f(1) b", W),
    c("SELECT * FROM t WHERE a = 1 AND bump(a)", W),
    c("SELECT x FROM t ORDER BY rank_and_log(x) LIMIT 1", W),
    c("SELECT ARRAY[write_it(1)], (write_it(2))", W),
    c("SELECT xmlexists('//a' PASSING BY REF log_it(x)) FROM t", W),
    c("SELECT a.b.c(1)", W),
    c("SELECT pg_catalog.nextval('s'), pg_catalog.now()", W).nondet(&["nextval", "now"]),
    c("SELECT other.now()", W).nondet(&[]),
    c("VALUES (1, nextval('s'))", W),
    c("WITH f(x) AS (SELECT side_effect()) SELECT * FROM f", W),
    c("TABLE t; SELECT f()", W).n(2),
    // DDL and maintenance.
    c("CREATE TABLE t (id int PRIMARY KEY, v numeric(10,2))", W).session(false),
    c("CREATE TEMP TABLE tmp (id int)", W).session(true),
    c("create global temporary table tmp2 as select 1", W).session(true),
    c("CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", W),
    c("CREATE INDEX CONCURRENTLY i ON t (a)", W),
    c("ALTER TABLE t ADD COLUMN c text", W),
    c("DROP TABLE IF EXISTS t CASCADE", W),
    c("COMMENT ON TABLE t IS 'x'", W),
    c("GRANT SELECT ON t TO bob", W),
    c("REVOKE ALL ON t FROM bob", W),
    c("SECURITY LABEL ON TABLE t IS 'secret'", W),
    c("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", W),
    c("REINDEX TABLE t", W),
    c("CLUSTER t USING i", W),
    c("VACUUM (ANALYZE) t", W),
    c("ANALYZE t", W),
    c("IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO local", W),
    c("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", W),
    c("REASSIGN OWNED BY a TO b", W),
    c("DROP OWNED BY a", W),
    c("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W),
    c("CALL refresh_continuous_aggregate('cagg', NULL, NULL)", W),
    c("DO $$BEGIN PERFORM 1; END$$", W).n(1).tx(T::None),
    c("NOTIFY ch, 'payload'", W),
    c("CHECKPOINT", W),
    c("EXECUTE stmt(1, 2)", W),
    // Session state.
    c("SET search_path = app, public", W).session(true).tx(T::None),
    c("SET LOCAL statement_timeout = '5s'", W).session(true),
    c("set role admin", W).session(true),
    c("SET SESSION AUTHORIZATION bob", W).session(true),
    c("RESET ALL", W).session(true),
    c("DISCARD ALL", W).session(true),
    c("PREPARE q(int) AS SELECT * FROM t WHERE id = $1", W).session(true).tx(T::None),
    c("DEALLOCATE ALL", W).session(true),
    c("LISTEN ch", W).session(true),
    c("UNLISTEN *", W).session(true),
    c("LOAD 'auto_explain'", W).session(true),
    c("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", W).tx(T::None),
    c("SET CONSTRAINTS ALL DEFERRED", W).tx(T::None),
    // Transaction control.
    c("BEGIN", W).tx(T::Begin).n(1).session(false),
    c("begin;", W).tx(T::Begin).n(1),
    c("BEGIN WORK", W).tx(T::Begin),
    c("begin isolation level serializable", W).tx(T::Begin),
    c("START TRANSACTION", W).tx(T::Begin),
    c("start transaction isolation level serializable, read only", W).tx(T::Begin),
    c("COMMIT", W).tx(T::Commit),
    c("commit and chain", W).tx(T::Commit),
    c("COMMIT WORK", W).tx(T::Commit),
    c("END", W).tx(T::Commit),
    c("END TRANSACTION", W).tx(T::Commit),
    c("ROLLBACK", W).tx(T::Rollback),
    c("Rollback Transaction", W).tx(T::Rollback),
    c("ABORT", W).tx(T::Rollback),
    c("SAVEPOINT s1", W).tx(T::Savepoint),
    c("ROLLBACK TO SAVEPOINT s1", W).tx(T::RollbackToSavepoint),
    c("rollback work to s1", W).tx(T::RollbackToSavepoint),
    c("RELEASE SAVEPOINT s1", W).tx(T::ReleaseSavepoint),
    c("RELEASE s1", W).tx(T::ReleaseSavepoint),
    c("PREPARE TRANSACTION 'gx1'", W).tx(T::Prepared).session(false),
    c("COMMIT PREPARED 'gx1'", W).tx(T::Prepared),
    c("ROLLBACK PREPARED 'gx1'", W).tx(T::Prepared),
    c("BEGIN; UPDATE t SET a = 1; COMMIT;", W).n(3).tx(T::Mixed).tables(&["t"]),
    c("SAVEPOINT a; RELEASE a", W).n(2).tx(T::Mixed),
    // Multi-statement text.
    c("SELECT 1; SELECT 2", R).n(2).tx(T::None),
    c("SELECT 1; DELETE FROM t", W).n(2).tables(&["t"]),
    c("SET x = 1; SELECT 1", W).n(2).session(true),
    c("COPY t FROM STDIN; SELECT 1", W).n(2).copy(),
    c("INSERT INTO a VALUES (1); INSERT INTO b VALUES (2); INSERT INTO a VALUES (3)", W)
        .n(3)
        .tables(&["a", "b"]),
    // Tricky quoting.
    c("SELECT 1; /* ; */ DELETE FROM t", W).n(2).tables(&["t"]),
    c("SELECT $$;$$; INSERT INTO t VALUES (1)", W).n(2).tables(&["t"]),
    c("SELECT 'insert into t'", R).n(1).tables(&[]),
    c("SELECT \"insert\" FROM t", R),
    c("SELECT \"insert\", \"delete\", \"my;func\" FROM \"update;\"", R).n(1),
    c("SELECT 1 -- ; delete from t", R).n(1),
    c(r"SELECT e'\';delete from t'", R).n(1),
    c(r"SELECT E'it\'s; DROP TABLE t'", R).n(1),
    c(r"SELECT e'\\';delete from t", W).n(2).tables(&["t"]),
    c(r"SELECT 'a\'; DELETE FROM t", W).n(2),
    c("SELECT 'it''s; delete from t'", R).n(1),
    c("SELECT $$;DELETE FROM t;$$", R).n(1),
    c("SELECT $fn$ drop table t; $$ nested $$; $fn$ AS body", R).n(1),
    c("SELECT $a$ $b$ ; $b$ $a$; UPDATE t SET x = 1", W).n(2).tables(&["t"]),
    c("SELECT /* ; DROP TABLE t; /* nested */ still comment */ 1", R).n(1),
    c("SELECT /* /* */ ; DELETE FROM t */ 1", R).n(1),
    c("SELECT U&'d\\0061t\\+000061' FROM t", R),
    c("SELECT U&\"a;b\" FROM t", R).n(1),
    c("SELECT B'1010', X'1F', N'x'", R),
    c("SELECT $1, $2::text, a$b FROM t WHERE x = $10", R),
    c("SELECT x$$ FROM t; DELETE FROM u", W).n(2).tables(&["u"]),
    c("SELECT (1; DELETE FROM t)", W).n(1),
    c("SELECT 'unterminated; DELETE FROM t", W).n(1),
    c("SELECT 1 /* unterminated comment", R).n(1),
    c("SELECT $$ unterminated", R).n(1),
    // Empty.
    c("", R).n(0).tx(T::None).tables(&[]).nondet(&[]),
    c("  \n\t", R).n(0),
    c("-- only a comment", R).n(0),
    c("/* only /* nested */ a comment */", R).n(0),
    c(";;", R).n(0),
    c(" ; -- x\n ; ", R).n(0),
    // Unknown commands.
    c("FROBNICATE ALL THE THINGS", W).n(1),
    c("'select'", W),
    c("VACUUM", W),
];
