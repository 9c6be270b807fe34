#!/usr/bin/env bash
# Cost of shadow reads to the client: the same pgbench read load (-S -M prepared, 8 clients)
# through dualwrite-proxy in dual-write mode with shadow_reads = 0, 0.1 and 1.0 (changed live
# between runs), plus a direct run for reference. Prints tps, p99 client latency, the ratio
# to shadow_reads = 0, and what the shadow report counted.
#
#   bench/shadow.sh [SECONDS=15]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
cargo build --release -q -p dualwrite-proxy
source bench/lib.sh
SRC_PORT=$(pg_free_port); TGT_PORT=$(pg_free_port); PORT=$(pg_free_port); ADMIN=$(pg_free_port)
pg_start source "$SRC_PORT"
pg_start target "$TGT_PORT"
export PGPASSWORD=postgres
for port in "$SRC_PORT" "$TGT_PORT"; do
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
done
cat > "$BENCH_TMP/proxy.toml" <<CONF
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN"
mode = "dual-write"
shadow_reads = 0.0
[source]
url = "postgres://postgres:postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable"
[target]
url = "postgres://postgres:postgres@127.0.0.1:$TGT_PORT/postgres?sslmode=disable"
[auth]
method = "scram-sha-256"
users = [{ name = "postgres", password = "postgres" }]
[journal]
dir = "$BENCH_TMP/journal"
CONF
RUST_LOG=warn target/release/dualwrite-proxy run --config "$BENCH_TMP/proxy.toml" & BENCH_PIDS="$!"
sleep 1

# run LABEL PORT: pgbench with per-transaction log; prints "tps p99_ms".
run() {
  local label=$1 port=$2 dir=$BENCH_TMP/log-$1
  mkdir -p "$dir"
  (cd "$dir" && "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -S -M prepared -c 8 -j 2 \
      -T "$SECS" -n -l postgres > out 2>&1)
  local tps p99
  tps=$(awk '/^tps/ {print $3; exit}' "$dir/out")
  p99=$(cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.99)] / 1000}')
  echo "$tps $p99"
}

printf '%-22s %10s %10s %10s\n' "run" "tps" "p99 ms" "vs 0.0"
read -r dtps dp99 <<<"$(run direct "$SRC_PORT")"
printf '%-22s %10.0f %10.2f %10s\n' "direct (source)" "$dtps" "$dp99" "-"
base=
for rate in 0.0 0.1 1.0; do
  target/release/dualwrite-proxy set --config "$BENCH_TMP/proxy.toml" --shadow-reads "$rate" >/dev/null
  before=$(target/release/dualwrite-proxy shadow --json --config "$BENCH_TMP/proxy.toml" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["executions"], r["dropped"])')
  read -r tps p99 <<<"$(run "shadow-$rate" "$PORT")"
  sleep 1
  after=$(target/release/dualwrite-proxy shadow --json --config "$BENCH_TMP/proxy.toml" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["executions"], r["dropped"], sum(n for _, n in r["mismatches"]))')
  base=${base:-$tps}
  ratio=$(python3 -c "print(f'{$tps / $base:.2f}x')")
  read -r e0 d0 <<<"$before"; read -r e1 d1 m1 <<<"$after"
  printf '%-22s %10.0f %10.2f %10s   compared %d, dropped %d, mismatches %d\n' \
    "proxy shadow_reads=$rate" "$tps" "$p99" "$ratio" $((e1 - e0)) $((d1 - d0)) "$m1"
done
echo
echo "pgbench -S -M prepared -c 8 -j 2 -T $SECS, scale 10, $(nproc) cores, dual-write mode"
