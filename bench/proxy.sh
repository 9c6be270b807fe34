#!/usr/bin/env bash
# pgbench -S (select-only), 8 clients, 2 threads: directly against PostgreSQL, through
# dualwrite-proxy (primary-only), and through pgbouncer (session mode), alternating, in one
# run on one machine. Prints tps, mean latency and the ratios proxy/direct, proxy/pgbouncer.
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
BENCH_PIDS="$!"

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

run() { # run PORT MODE -> "tps latency_ms"
  "$PG_BIN/pgbench" -h 127.0.0.1 -p "$1" -U postgres -S -M "$2" -c 8 -j 2 -T "$SECS" -n postgres 2>/dev/null |
    awk '/^latency average/ {lat=$4} /^tps/ {tps=$3} END {printf "%.0f %.3f\n", tps, lat}'
}

declare -A TPS LAT
for mode in simple prepared; do
  for round in $(seq "$ROUNDS"); do
    for target in direct proxy pgbouncer; do
      case $target in direct) port=$PG_PORT;; proxy) port=$PROXY_PORT;; pgbouncer) port=$BOUNCER_PORT;; esac
      read -r tps lat < <(run "$port" "$mode")
      TPS[$mode,$target]="${TPS[$mode,$target]:-} $tps"
      LAT[$mode,$target]="${LAT[$mode,$target]:-} $lat"
      echo "  $mode round $round $target: $tps tps, $lat ms" >&2
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "pgbench -S, 8 clients, 2 threads, ${SECS}s x $ROUNDS rounds (median), $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
printf '%-9s %-10s %10s %12s\n' mode target tps latency_ms
for mode in simple prepared; do
  for target in direct proxy pgbouncer; do
    printf '%-9s %-10s %10s %12s\n' "$mode" "$target" "$(echo "${TPS[$mode,$target]}" | median)" "$(echo "${LAT[$mode,$target]}" | median)"
  done
done
echo
for mode in simple prepared; do
  d=$(echo "${TPS[$mode,direct]}" | median); p=$(echo "${TPS[$mode,proxy]}" | median); b=$(echo "${TPS[$mode,pgbouncer]}" | median)
  awk -v m="$mode" -v d="$d" -v p="$p" -v b="$b" 'BEGIN {printf "%-9s proxy/direct = %.2fx   pgbouncer/direct = %.2fx   proxy/pgbouncer = %.2fx\n", m, p/d, b/d, p/b}'
done
kill "$(cat "$BENCH_TMP/bouncer.pid")" 2>/dev/null || true
