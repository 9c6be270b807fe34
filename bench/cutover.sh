#!/usr/bin/env bash
# Cutover pause under load: pgbench -S -M prepared, 8 clients, through dualwrite-proxy in
# dual-write mode while the primary is flipped source -> target -> source ... N times.
# Prints each pause, the median, and pgbench's tps and failed transactions.
#
#   bench/cutover.sh [CUTOVERS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
cargo build --release -q -p dualwrite-proxy
source bench/lib.sh
pair_start
PORT=$(pg_free_port); ADMIN=$(pg_free_port)
proxy_conf "$PORT" "127.0.0.1:$ADMIN" dual-write > "$BENCH_TMP/proxy.toml"
RUST_LOG=warn target/release/dualwrite-proxy run --config "$BENCH_TMP/proxy.toml" & BENCH_PIDS="$!"
sleep 1
SECS=$((N * 2 + 4))
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -S -M prepared -c 8 -j 2 -T "$SECS" -n postgres > "$BENCH_TMP/pgbench.out" 2>&1 &
LOAD=$!
sleep 2
pauses=()
to=target
for i in $(seq "$N"); do
  out=$(target/release/dualwrite-proxy cutover --config "$BENCH_TMP/proxy.toml" --to "$to" --timeout 10s)
  pause=$(echo "$out" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["pause_ms"], 2))')
  pauses+=("$pause")
  echo "  cutover $i -> $to: pause $pause ms" >&2
  if [ "$to" = target ]; then to=source; else to=target; fi
  sleep 1.5
done
wait "$LOAD" || true
median=$(printf '%s\n' "${pauses[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
echo
echo "cutovers under pgbench -S -M prepared, 8 clients, $(nproc) cores: $N"
echo "pause ms: ${pauses[*]}"
echo "median pause: $median ms"
grep -E "^tps|number of failed transactions|aborted" "$BENCH_TMP/pgbench.out" || true
