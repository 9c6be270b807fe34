-- Single-row reads with psql 18 for tests/tests/shadow_limited.rs: rows 7, 7, 7 and 8 of table
-- `probe`, each read with a simple query, with the extended protocol (\bind), with a named
-- statement (\parse, \bind_named) and with FETCH_COUNT 1 (psql 17+ reads the rows in chunks of
-- one from a simple query).
\set ON_ERROR_STOP 1
SELECT id, v AS by_simple FROM probe WHERE id = 7;
SELECT id, v AS by_simple FROM probe WHERE id = 7;
SELECT id, v AS by_simple FROM probe WHERE id = 7;
SELECT id, v AS by_simple FROM probe WHERE id = 8;
SELECT id, v AS by_bind FROM probe WHERE id = $1 \bind 7 \g
SELECT id, v AS by_bind FROM probe WHERE id = $1 \bind 7 \g
SELECT id, v AS by_bind FROM probe WHERE id = $1 \bind 7 \g
SELECT id, v AS by_bind FROM probe WHERE id = $1 \bind 8 \g
SELECT id, v AS by_bind_named FROM probe WHERE id = $1 \parse by_id
\bind_named by_id 7 \g
\bind_named by_id 7 \g
\bind_named by_id 7 \g
\bind_named by_id 8 \g
\set FETCH_COUNT 1
SELECT id, v AS by_fetch_count FROM probe WHERE id = 7;
SELECT id, v AS by_fetch_count FROM probe WHERE id = 7;
SELECT id, v AS by_fetch_count FROM probe WHERE id = 7;
SELECT id, v AS by_fetch_count FROM probe WHERE id = 8;
