#!/usr/bin/env bash
# pgbench tpcb-like -M prepared, 8 clients, in one run: directly against the source alone,
# through dualwrite-proxy in primary-only, and through the proxy in dual-write (source and
# target on this machine). Prints tps, latency, the ratios to direct, and the journal records
# of the dual-write runs (0 in a healthy run).
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
records=$(curl -s "http://127.0.0.1:$A2/status" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["dual_write"]["journal"]["records"])' 2>/dev/null || echo "?")
echo
echo "pgbench tpcb-like -M prepared, 8 clients, 2 threads, ${SECS}s x $ROUNDS rounds (median), $(nproc) cores"
printf '%-14s %10s %12s %10s\n' target tps latency_ms vs_direct
d=$(echo "${TPS[direct]}" | median)
for target in direct primary-only dual-write; do
  t=$(echo "${TPS[$target]}" | median)
  printf '%-14s %10s %12s %9sx\n' "$target" "$t" "$(echo "${LAT[$target]}" | median)" "$(awk -v a="$t" -v b="$d" 'BEGIN {printf "%.2f", a/b}')"
done
echo "journal records after the dual-write runs: $records"
