#!/usr/bin/env bash
# The main job: semantic search over the Debian package descriptions.
# Installs what it needs, builds and installs pg_hnsw (release), starts a
# throwaway PostgreSQL 15 cluster under target/demo, loads the real dataset,
# builds the hnsw index and runs the sample questions and the recall/QPS
# sweep. Extra arguments go to the demo (--port N, --connect CONNSTR,
# --dataset DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "Building and installing pg_hnsw (release; log in target/demo-install.log) ..."
mkdir -p target
if ! cargo pgrx install --release --pg-config "${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" >target/demo-install.log 2>&1; then
  tail -30 target/demo-install.log
  echo "error: building pg_hnsw failed — fix: see target/demo-install.log" >&2
  exit 1
fi
cargo run --quiet --release --manifest-path bench/Cargo.toml --bin demo -- "$@"
