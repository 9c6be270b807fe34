#!/usr/bin/env bash
# pgbench tpcb-like -M prepared, 8 clients, in one run: directly against the source alone,
# through dualwrite-proxy in primary-only, and through the proxy in dual-write (source and
# target on this machine). Prints saturated tps, latency and the ratios to direct; then, at a
# fixed offered rate (pgbench -R at half of primary-only's saturated tps), the p50/p99 latency
# of each (what ordering the secondary's commits costs a client); and the journal records and
# detaches of the dual-write runs (0 in a healthy run).
#
#   bench/dualwrite.sh [SECONDS_PER_RUN=15] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
ROUNDS=${2:-3}
cargo build --release -q -p dualwrite-proxy
source bench/lib.sh

pair_start
P1=$(pg_free_port); P2=$(pg_free_port); A2=$(pg_free_port)
proxy_conf "$P1" "" primary-only > "$BENCH_TMP/p1.toml"
proxy_conf "$P2" "127.0.0.1:$A2" dual-write > "$BENCH_TMP/p2.toml"
RUST_LOG=warn target/release/dualwrite-proxy run --config "$BENCH_TMP/p1.toml" & BENCH_PIDS="$!"
RUST_LOG=warn target/release/dualwrite-proxy run --config "$BENCH_TMP/p2.toml" & BENCH_PIDS="$BENCH_PIDS $!"
sleep 1

run() { # run PORT -> "tps latency_ms"
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$1" -U postgres -M prepared -c 8 -j 2 -T "$SECS" -n postgres 2>/dev/null |
    awk '/^latency average/ {lat=$4} /^tps/ {tps=$3} END {printf "%.0f %.3f\n", tps, lat}'
}
declare -A TPS LAT
for round in $(seq "$ROUNDS"); do
  for target in direct primary-only dual-write; do
    case $target in direct) port=$SRC_PORT;; primary-only) port=$P1;; dual-write) port=$P2;; esac
    read -r tps lat < <(run "$port")
    TPS[$target]="${TPS[$target]:-} $tps"; LAT[$target]="${LAT[$target]:-} $lat"
    echo "  round $round $target: $tps tps, $lat ms" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "pgbench tpcb-like -M prepared, 8 clients, 2 threads, ${SECS}s x $ROUNDS rounds (median), $(nproc) cores"
printf '%-14s %10s %12s %10s\n' target tps latency_ms vs_direct
d=$(echo "${TPS[direct]}" | median)
for target in direct primary-only dual-write; do
  t=$(echo "${TPS[$target]}" | median)
  printf '%-14s %10s %12s %9sx\n' "$target" "$t" "$(echo "${LAT[$target]}" | median)" "$(awk -v a="$t" -v b="$d" 'BEGIN {printf "%.2f", a/b}')"
done

# At a fixed offered rate: latency percentiles from pgbench's per-transaction log (latency =
# the transaction's time plus its schedule lag, as pgbench counts it under --rate).
RATE=$(( $(echo "${TPS[primary-only]}" | median) / 2 ))
percentiles() { # percentiles LOGPREFIX -> "p50_ms p99_ms"
  cat "$1".* | awk '{print $3 + ($7 == "" ? 0 : $7)}' | sort -n |
    awk '{a[NR]=$1} END {printf "%.3f %.3f\n", a[int(NR*0.50)]/1000, a[int(NR*0.99)]/1000}'
}
declare -A P50 P99
for target in direct primary-only dual-write; do
  case $target in direct) port=$SRC_PORT;; primary-only) port=$P1;; dual-write) port=$P2;; esac
  prefix=$BENCH_TMP/lat-$target
  (cd "$BENCH_TMP" && "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -M prepared -c 8 -j 2 \
    -T "$SECS" -R "$RATE" -l --log-prefix="$prefix" -n postgres >/dev/null 2>&1)
  read -r P50[$target] P99[$target] < <(percentiles "$prefix")
  echo "  rate $RATE $target: p50 ${P50[$target]} ms, p99 ${P99[$target]} ms" >&2
done
status=$(curl -s "http://127.0.0.1:$A2/status" 2>/dev/null)
records=$(echo "$status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dual_write"]["journal"]["records"])' 2>/dev/null || echo "?")
attached=$(echo "$status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dual_write"]["secondary_attached"])' 2>/dev/null || echo "?")
keyed=$(echo "$status" | python3 -c 'import json,sys; o=json.load(sys.stdin)["dual_write"]["commit_order"]; print(o["by_wal_position"], "of", o["assigned"])' 2>/dev/null || echo "?")
echo
echo "at a fixed rate of $RATE tps (half of primary-only's saturated tps), 8 clients"
printf '%-14s %10s %10s %14s\n' target p50_ms p99_ms p99_vs_primary
for target in direct primary-only dual-write; do
  printf '%-14s %10s %10s %13sx\n' "$target" "${P50[$target]}" "${P99[$target]}" \
    "$(awk -v a="${P99[$target]}" -v b="${P99[primary-only]}" 'BEGIN {printf "%.2f", a/b}')"
done
echo "journal records after the dual-write runs: $records; secondary attached: $attached; commits ordered by WAL position: $keyed"
