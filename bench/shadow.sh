#!/usr/bin/env bash
# Cost of shadow reads to the client: the same pgbench read load (-S -M prepared, 8 clients)
# through dualwrite-proxy in dual-write mode with shadow_reads = 0, 0.1 and 1.0 (changed live
# between runs), plus a direct run for reference. The rates are run in ROUNDS interleaved
# rounds (0, 0.1, 1.0, 0, 0.1, 1.0, ...) so that drift on a shared machine hits them alike;
# prints each run (with the CPU the proxy and the target's backends spent per transaction)
# and, per rate, the mean tps, the worst p99 client latency, the ratio to shadow_reads = 0,
# and what the shadow report counted. With WRITERS > 0, that many more pgbench clients update
# random rows of the same table through the proxy during each proxied run, WRITE_RATE
# transactions per second each (a rate the secondary keeps up with: a sample whose watermark
# the secondary has not reached within 2 s is skipped), so every sample waits for its
# watermark (the commits acknowledged before its read) and differing samples are checked
# against the writes racing them: the cost of both shows in the 0.1 and 1.0 rows.
#
#   bench/shadow.sh [SECONDS=15] [ROUNDS=2] [WRITERS=2] [WRITE_RATE=200]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
ROUNDS=${2:-2}
WRITERS=${3:-2}
WRITE_RATE=${4:-200}
cargo build --release -q -p dualwrite-proxy
source bench/lib.sh
pair_start
PORT=$(pg_free_port); ADMIN=$(pg_free_port)
proxy_conf "$PORT" "127.0.0.1:$ADMIN" dual-write "shadow_reads = 0.0" > "$BENCH_TMP/proxy.toml"
RUST_LOG=warn target/release/dualwrite-proxy run --config "$BENCH_TMP/proxy.toml" & BENCH_PIDS="$!"
sleep 1

# CPU ticks used so far by the proxy, and by the target server's finished backends (the
# postmaster's reaped children: the proxy's sessions there end with each pgbench run).
TICK_US=$((1000000 / $(getconf CLK_TCK)))
TARGET_PM=$(head -1 "$BENCH_TMP/target/data/postmaster.pid")
proxy_ticks() { awk '{print $14 + $15}' "/proc/$BENCH_PIDS/stat"; }
target_ticks() { awk '{print $16 + $17}' "/proc/$TARGET_PM/stat"; }

# run LABEL PORT: pgbench with per-transaction log; prints
# "tps p99_ms proxy_cpu_us_per_tx target_cpu_us_per_tx".
run() {
  local label=$1 port=$2 dir=$BENCH_TMP/log-$1
  mkdir -p "$dir"
  local p0 t0 writers=""; p0=$(proxy_ticks); t0=$(target_ticks)
  if [ "$port" != "$SRC_PORT" ] && [ "$WRITERS" -gt 0 ]; then
    "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -f "$BENCH_TMP/write.sql" -M prepared \
      -c "$WRITERS" -j 1 -R $((WRITERS * WRITE_RATE)) -T "$SECS" -n postgres > "$dir/writers.out" 2>&1 & writers=$!
  fi
  (cd "$dir" && "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -S -M prepared -c 8 -j 2 \
      -T "$SECS" -n -l postgres > out 2>&1)
  if [ -n "$writers" ]; then wait "$writers"; fi
  sleep 0.5
  local tps p99 n
  tps=$(awk '/^tps/ {print $3; exit}' "$dir/out")
  n=$(awk '/^number of transactions actually processed/ {split($6, a, "/"); print a[1]}' "$dir/out")
  p99=$(cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.99)] / 1000}')
  echo "$tps $p99 $(( ($(proxy_ticks) - p0) * TICK_US / n )) $(( ($(target_ticks) - t0) * TICK_US / n ))"
}

cat > "$BENCH_TMP/write.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SQL
printf '%-26s %10s %10s\n' "run" "tps" "p99 ms"
read -r dtps dp99 _ _ <<<"$(run direct "$SRC_PORT")"
printf '%-26s %10.0f %10.2f\n' "direct (source)" "$dtps" "$dp99"
declare -A TPS P99 CMP DROP MIS SKIP
for round in $(seq "$ROUNDS"); do
  for rate in 0.0 0.1 1.0; do
    target/release/dualwrite-proxy set --config "$BENCH_TMP/proxy.toml" --shadow-reads "$rate" >/dev/null
    before=$(target/release/dualwrite-proxy shadow --json --config "$BENCH_TMP/proxy.toml" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["executions"], r["dropped"], sum(n for _, n in r["mismatches"]), r["skipped"])')
    read -r tps p99 pcpu tcpu <<<"$(run "shadow-$rate-$round" "$PORT")"
    sleep 1
    after=$(target/release/dualwrite-proxy shadow --json --config "$BENCH_TMP/proxy.toml" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["executions"], r["dropped"], sum(n for _, n in r["mismatches"]), r["skipped"])')
    read -r e0 d0 m0 s0 <<<"$before"; read -r e1 d1 m1 s1 <<<"$after"
    printf '%-26s %10.0f %10.2f   compared %d, dropped %d, skipped %d, mismatches %d; CPU us/tx: proxy %d, target %d\n' \
      "round $round shadow_reads=$rate" "$tps" "$p99" $((e1 - e0)) $((d1 - d0)) $((s1 - s0)) $((m1 - m0)) "$pcpu" "$tcpu"
    TPS[$rate]="${TPS[$rate]:-} $tps"; P99[$rate]="${P99[$rate]:-} $p99"
    CMP[$rate]=$(( ${CMP[$rate]:-0} + e1 - e0 )); DROP[$rate]=$(( ${DROP[$rate]:-0} + d1 - d0 )); MIS[$rate]=$(( ${MIS[$rate]:-0} + m1 - m0 )); SKIP[$rate]=$(( ${SKIP[$rate]:-0} + s1 - s0 ))
  done
done
echo
printf '%-22s %10s %12s %10s %10s %9s %9s %11s\n' "shadow_reads" "mean tps" "worst p99 ms" "vs 0.0" "compared" "dropped" "skipped" "mismatches"
base=$(python3 -c "v='${TPS[0.0]}'.split(); print(sum(map(float, v)) / len(v))")
for rate in 0.0 0.1 1.0; do
  mean=$(python3 -c "v='${TPS[$rate]}'.split(); print(sum(map(float, v)) / len(v))")
  worst=$(python3 -c "print(max(map(float, '${P99[$rate]}'.split())))")
  ratio=$(python3 -c "print(f'{$mean / $base:.2f}x')")
  printf '%-22s %10.0f %12.2f %10s %10d %9d %9d %11d\n' "$rate" "$mean" "$worst" "$ratio" "${CMP[$rate]}" "${DROP[$rate]}" "${SKIP[$rate]}" "${MIS[$rate]}"
done
echo
echo "pgbench -S -M prepared -c 8 -j 2 -T $SECS, scale 10, $(nproc) cores, dual-write mode, $ROUNDS rounds, $WRITERS writing clients at $WRITE_RATE tps each beside the proxied runs"
target/release/dualwrite-proxy shadow --config "$BENCH_TMP/proxy.toml" | sed -n 2p
