#!/usr/bin/env bash
# dualwrite-validator against the floor, in one run on one machine: two throwaway clusters
# (source, target) holding the same ~5M rows in a range-partitioned table, then, alternating,
#   floor     psql 'SELECT count(*)' on both servers in parallel
#   counts    dualwrite-validator counts            (exact count(*) per partition, both sides)
#   estimate  dualwrite-validator counts --estimate (ANALYZE + reltuples)
#   checksum  dualwrite-validator checksum          (typed digest per partition)
#   checksum --digest text                          (md5 of canonical row text; informational)
# Prints the median seconds of ROUNDS runs, rows/s (rows per side / s) and the ratio to the floor.
#
#   bench/validator.sh [ROWS=5000000] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-5000000}
ROUNDS=${2:-3}
cargo build --release -q -p dualwrite-validator
BIN=${CARGO_TARGET_DIR:-target}/release/dualwrite-validator
source bench/lib.sh

SRC_PORT=$(pg_free_port); pg_start source "$SRC_PORT"
TGT_PORT=$(pg_free_port); pg_start target "$TGT_PORT"
export PGPASSWORD=postgres
SRC="postgres://postgres:postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable"
TGT="postgres://postgres:postgres@127.0.0.1:$TGT_PORT/postgres?sslmode=disable"
psql_on() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres postgres "${@:2}"; }

SCHEMA="CREATE TABLE metrics (ts timestamptz NOT NULL, device int NOT NULL, value float8, label text,
  payload jsonb, PRIMARY KEY (device, ts)) PARTITION BY RANGE (ts);
DO \$\$ BEGIN FOR d IN 0..9 LOOP EXECUTE format('CREATE TABLE metrics_%s PARTITION OF metrics FOR VALUES FROM (%L) TO (%L)',
  d, '2024-01-01'::timestamptz + d * interval '1 day', '2024-01-01'::timestamptz + (d + 1) * interval '1 day'); END LOOP; END \$\$;"
LOAD="INSERT INTO metrics SELECT '2024-01-01'::timestamptz + (i / 50) * (interval '10 days' / ($ROWS / 50)), i % 50,
  (i % 100000) * 0.25, 'device ' || (i % 50) || ', reading ' || i, jsonb_build_object('n', i % 1000, 'ok', i % 2 = 0)
  FROM generate_series(0, $ROWS - 1) i;"
echo "loading $ROWS rows into each side..." >&2
for p in "$SRC_PORT" "$TGT_PORT"; do
  ( psql_on "$p" -c "$SCHEMA" && psql_on "$p" -c "$LOAD" && psql_on "$p" -c "VACUUM ANALYZE metrics" ) &
done
wait
# Warm both caches once.
for p in "$SRC_PORT" "$TGT_PORT"; do psql_on "$p" -At -c "SELECT count(*) FROM metrics" >/dev/null; done

now() { date +%s.%N; }
floor_run() {
  psql_on "$SRC_PORT" -At -c "SELECT count(*) FROM metrics" >/dev/null &
  psql_on "$TGT_PORT" -At -c "SELECT count(*) FROM metrics" >/dev/null &
  wait
}
tool() { "$BIN" "$@" --source "$SRC" --target "$TGT" --quiet --format json --output /dev/null; }

declare -A T
names=(floor counts estimate checksum checksum-text)
for round in $(seq "$ROUNDS"); do
  for n in "${names[@]}"; do
    if [ "$n" = checksum-text ] && [ "$round" -gt 1 ]; then continue; fi
    a=$(now)
    case $n in
      floor) floor_run ;;
      counts) tool counts ;;
      estimate) tool counts --estimate ;;
      checksum) tool checksum ;;
      checksum-text) tool checksum --digest text ;;
    esac
    b=$(now)
    T[$n]="${T[$n]:-} $(echo "$b - $a" | bc -l)"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
FLOOR=$(echo "${T[floor]}" | median)
echo
echo "dualwrite-validator benchmark: $ROWS rows per side, $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), median of $ROUNDS rounds"
printf '%-34s %9s %14s %10s\n' "run" "seconds" "rows/s" "x floor"
for n in "${names[@]}"; do
  s=$(echo "${T[$n]}" | median)
  label=$n
  case $n in
    floor) label="floor: count(*) on both, parallel" ;;
    counts) label="counts" ;;
    estimate) label="counts --estimate" ;;
    checksum) label="checksum (typed digest)" ;;
    checksum-text) label="checksum --digest text (1 run)" ;;
  esac
  printf '%-34s %9.3f %14.0f %9.2fx\n' "$label" "$s" "$(echo "$ROWS / $s" | bc -l)" "$(echo "$s / $FLOOR" | bc -l)"
done
