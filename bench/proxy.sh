#!/usr/bin/env bash
# pgbench -S (select-only), 8 clients, 2 threads: directly against PostgreSQL, through
# dualwrite-proxy (primary-only), and through pgbouncer (session mode), alternating, in one
# run on one machine. Prints tps, mean latency, the middleman's CPU time per transaction
# (from /proc, independent of other load) and the ratios proxy/direct, proxy/pgbouncer.
#
#   bench/proxy.sh [SECONDS_PER_RUN=10] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
command -v pgbouncer >/dev/null || { apt-get install -y -qq pgbouncer >/dev/null; }
cargo build --release -q -p dualwrite-proxy
source bench/lib.sh

PG_PORT=$(pg_free_port); PROXY_PORT=$(pg_free_port); BOUNCER_PORT=$(pg_free_port)
pg_start db "$PG_PORT"
export PGPASSWORD=postgres
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s 10 -q postgres >/dev/null 2>&1

cat > "$BENCH_TMP/proxy.toml" <<CONF
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = ""
mode = "primary-only"
[source]
url = "postgres://postgres:postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
[auth]
method = "scram-sha-256"
users = [{ name = "postgres", password = "postgres" }]
CONF
RUST_LOG=warn target/release/dualwrite-proxy run --config "$BENCH_TMP/proxy.toml" &
PROXY_PID=$!
BENCH_PIDS="$PROXY_PID"

as_pg tee "$BENCH_TMP/bouncer.ini" >/dev/null <<CONF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $BENCH_TMP/users.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $BENCH_TMP/bouncer.log
pidfile = $BENCH_TMP/bouncer.pid
CONF
echo '"postgres" "postgres"' | as_pg tee "$BENCH_TMP/users.txt" >/dev/null
as_pg pgbouncer -d "$BENCH_TMP/bouncer.ini"
sleep 1
BOUNCER_PID=$(cat "$BENCH_TMP/bouncer.pid")

# CPU time (user+system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

run() { # run PORT MODE PID -> "tps latency_ms cpu_us_per_tx" (CPU of PID, the middleman)
  local before after out
  before=$( [ -n "$3" ] && cpu_ticks "$3" || echo 0 )
  out=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$1" -U postgres -S -M "$2" -c 8 -j 2 -T "$SECS" -n postgres 2>/dev/null)
  after=$( [ -n "$3" ] && cpu_ticks "$3" || echo 0 )
  echo "$out" | awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" '
    /^latency average/ {lat=$4} /^tps/ {tps=$3} /^number of transactions actually processed/ {split($6, a, "/"); n=a[1]}
    END {printf "%.0f %.3f %.1f\n", tps, lat, (n > 0 ? t / hz * 1e6 / n : 0)}'
}

declare -A TPS LAT CPU
for mode in simple prepared; do
  for round in $(seq "$ROUNDS"); do
    for target in direct proxy pgbouncer; do
      case $target in direct) port=$PG_PORT pid="";; proxy) port=$PROXY_PORT pid=$PROXY_PID;; pgbouncer) port=$BOUNCER_PORT pid=$BOUNCER_PID;; esac
      read -r tps lat cpu < <(run "$port" "$mode" "$pid")
      TPS[$mode,$target]="${TPS[$mode,$target]:-} $tps"
      LAT[$mode,$target]="${LAT[$mode,$target]:-} $lat"
      CPU[$mode,$target]="${CPU[$mode,$target]:-} $cpu"
      echo "  $mode round $round $target: $tps tps, $lat ms, middleman CPU ${cpu} us/tx" >&2
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "pgbench -S, 8 clients, 2 threads, ${SECS}s x $ROUNDS rounds (median), $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
printf '%-9s %-10s %10s %12s %16s\n' mode target tps latency_ms cpu_us_per_tx
for mode in simple prepared; do
  for target in direct proxy pgbouncer; do
    cpu=$(echo "${CPU[$mode,$target]}" | median); [ "$target" = direct ] && cpu=-
    printf '%-9s %-10s %10s %12s %16s\n' "$mode" "$target" "$(echo "${TPS[$mode,$target]}" | median)" "$(echo "${LAT[$mode,$target]}" | median)" "$cpu"
  done
done
echo
for mode in simple prepared; do
  d=$(echo "${TPS[$mode,direct]}" | median); p=$(echo "${TPS[$mode,proxy]}" | median); b=$(echo "${TPS[$mode,pgbouncer]}" | median)
  awk -v m="$mode" -v d="$d" -v p="$p" -v b="$b" 'BEGIN {printf "%-9s proxy/direct = %.2fx   pgbouncer/direct = %.2fx   proxy/pgbouncer = %.2fx\n", m, p/d, b/d, p/b}'
done
kill "$(cat "$BENCH_TMP/bouncer.pid")" 2>/dev/null || true
