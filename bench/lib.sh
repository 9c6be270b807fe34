# Shared helpers for the benchmark scripts: throwaway clusters run as the postgres OS user.
# Source it; it sets PG_BIN and defines pg_start/pg_stop/pg_free_port.

PG_BIN=${PG_BIN:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
BENCH_TMP=$(mktemp -d /tmp/dwbench-XXXXXX)
chmod 755 "$BENCH_TMP"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres: "$BENCH_TMP"; fi

pg_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# pg_start NAME PORT [BIN]: initdb + start; superuser postgres/postgres over scram on 127.0.0.1;
# PG_EXTRA_CONF holds extra postgresql.conf lines (e.g. shared_preload_libraries).
pg_start() {
  local name=$1 port=$2 bin=${3:-$PG_BIN} dir=$BENCH_TMP/$1
  as_pg mkdir -p "$dir"
  echo postgres | as_pg tee "$dir/pw" >/dev/null
  as_pg "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pw" --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C --no-sync >/dev/null
  as_pg tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 256MB
max_wal_size = 8GB
${PG_EXTRA_CONF:-}
CONF
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
}

pg_stop_all() {
  for d in "$BENCH_TMP"/*/data; do [ -d "$d" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; done
}

bench_cleanup() {
  for p in ${BENCH_PIDS:-}; do kill "$p" 2>/dev/null || true; done
  pg_stop_all
  rm -rf "$BENCH_TMP"
}
trap bench_cleanup EXIT

# pair_start: a source and a target cluster, each initialised with pgbench tables (scale 10);
# sets SRC_PORT and TGT_PORT and exports PGPASSWORD.
pair_start() {
  SRC_PORT=$(pg_free_port); TGT_PORT=$(pg_free_port)
  pg_start source "$SRC_PORT"
  pg_start target "$TGT_PORT"
  export PGPASSWORD=postgres
  for port in "$SRC_PORT" "$TGT_PORT"; do
    "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
  done
}

# proxy_conf PORT ADMIN MODE [TOP-LEVEL KEYS]: a proxy config in front of pair_start's clusters.
proxy_conf() {
  cat <<CONF
listen = "127.0.0.1:$1"
admin_listen = "$2"
mode = "$3"
${4:-}
[source]
url = "postgres://postgres:postgres@127.0.0.1:$SRC_PORT/postgres?sslmode=disable"
[target]
url = "postgres://postgres:postgres@127.0.0.1:$TGT_PORT/postgres?sslmode=disable"
[auth]
method = "scram-sha-256"
users = [{ name = "postgres", password = "postgres" }]
[journal]
dir = "$BENCH_TMP/journal-$1"
CONF
}
