-- An application written as a psql 18 script (libpq 18 underneath), run by
-- tests/tests/proxy_drivers.rs once through dualwrite-proxy and once directly against
-- PostgreSQL; its output (errors included) is the transcript, and the two must be identical.
-- Exercises psql 18's extended-protocol meta-commands (\parse, \bind_named, \close_prepared),
-- its pipeline mode (\startpipeline, \sendpipeline, \flushrequest, \getresults, \syncpipeline,
-- an error mid-pipeline, a transaction inside a pipeline), FETCH_COUNT (chunked rows), \gset,
-- \gexec, \watch, \copy, savepoints, LISTEN/NOTIFY, and with DW_PROBE_ID one row read after
-- the test changed it on the target only.
\set ON_ERROR_STOP 0
\set VERBOSITY default
CREATE TABLE drv_psql18 (id int PRIMARY KEY, name text NOT NULL, amount numeric(12,2), at timestamptz);
INSERT INTO drv_psql18 SELECT g, 'row ' || g, g * 1.5, '2026-01-01'::timestamptz + g * interval '1 hour'
  FROM generate_series(1, 120) g;

-- Named statements from psql.
SELECT name, amount FROM drv_psql18 WHERE id = $1 \parse by_id
\bind_named by_id 7 \g
\bind_named by_id 8 \g
UPDATE drv_psql18 SET amount = amount + $2 WHERE id = $1 \parse bump
\bind_named bump 7 10 \g
\bind_named by_id 7 \g
\close_prepared by_id
\bind_named by_id 7 \g
SELECT $1::text || '-' || $2::text AS joined \bind a b \g

-- A pipeline: writes and reads before one Sync, a flush request mid-way.
\startpipeline
INSERT INTO drv_psql18 VALUES ($1, $2, $3, '2026-02-01') \bind 121 'piped 121' 1.25 \sendpipeline
\bind_named bump 121 1 \sendpipeline
SELECT count(*) AS n FROM drv_psql18 \bind \sendpipeline
\flushrequest
\getresults
\syncpipeline
-- An error mid-pipeline: the rest of that segment is skipped, the next one runs.
INSERT INTO drv_psql18 VALUES ($1, 'dup', 0, '2026-05-01') \bind 121 \sendpipeline
SELECT 'skipped' \bind \sendpipeline
\syncpipeline
SELECT amount FROM drv_psql18 WHERE id = $1 \bind 121 \sendpipeline
\endpipeline

-- A transaction inside a pipeline, rolled back, then one committed.
\startpipeline
BEGIN \bind \sendpipeline
UPDATE drv_psql18 SET name = 'rolled back' WHERE id <= $1 \bind 3 \sendpipeline
ROLLBACK \bind \sendpipeline
BEGIN \bind \sendpipeline
INSERT INTO drv_psql18 SELECT g, 'tx ' || g, g, '2026-03-01' FROM generate_series($1::int, $2::int) g \bind 122 130 \sendpipeline
COMMIT \bind \sendpipeline
\endpipeline
SELECT count(*), sum(amount) FROM drv_psql18;

-- Chunked rows (FETCH_COUNT), \gset, \gexec, \watch.
\set FETCH_COUNT 7
SELECT id, name FROM drv_psql18 WHERE id BETWEEN 20 AND 40 ORDER BY id;
\unset FETCH_COUNT
SELECT max(id) AS top, min(id) AS bottom FROM drv_psql18 \gset
\echo top :top bottom :bottom
SELECT format('UPDATE drv_psql18 SET name = %L WHERE id = %s', 'gexec ' || id, id) FROM drv_psql18 WHERE id IN (50, 51) ORDER BY id \gexec
SELECT count(*) AS gexec_rows FROM drv_psql18 WHERE name LIKE 'gexec %' \watch i=0.01 c=2

-- \copy in and out.
\copy (SELECT id, name FROM drv_psql18 WHERE id <= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)
CREATE TEMP TABLE staging (id int, name text);
\copy staging FROM STDIN WITH (FORMAT csv)
131,copied 131
132,copied 132
\.
INSERT INTO drv_psql18 SELECT id, name, 0, '2026-04-01' FROM staging;

-- Savepoints and errors with their fields.
BEGIN;
INSERT INTO drv_psql18 VALUES (133, 'kept', 1, '2026-05-01');
SAVEPOINT s;
INSERT INTO drv_psql18 VALUES (133, 'dup', 1, '2026-05-01');
ROLLBACK TO SAVEPOINT s;
INSERT INTO drv_psql18 VALUES (134, 'kept too', 1, '2026-05-01');
COMMIT;
SELECT 1 / 0;
SELECT nosuchcolumn FROM drv_psql18;

-- LISTEN/NOTIFY on the session.
LISTEN drv_psql18_chan;
NOTIFY drv_psql18_chan, 'hello';
SELECT pg_notify('drv_psql18_chan', 'again');
UNLISTEN *;

SELECT count(*) AS total, sum(amount) AS amount_sum FROM drv_psql18;

-- DW_PROBE_ID: say READY, wait for a line on stdin (meanwhile the test changes that row on the
-- target only), then read the row. The answer is the source's; the proxy's shadow report flags
-- the read.
\getenv probe_id DW_PROBE_ID
\if :{?probe_id}
\prompt 'READY\n' probe_go
SELECT id, name, amount FROM drv_psql18 WHERE id = :probe_id;
\endif
