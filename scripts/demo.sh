#!/usr/bin/env bash
# The main job: semantic search over the Debian package descriptions.
# Installs what it needs, builds and installs pg_hnsw (release), starts a
# throwaway PostgreSQL cluster under target/demo, loads the real dataset,
# builds the hnsw index and runs the sample questions and the recall/QPS
# sweep. `--pg 18` runs it on PostgreSQL 18 (default 15). Other arguments go
# to the demo (--ask "QUESTION", --port N, --connect CONNSTR, --dataset DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
major=15
args=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --pg) major="${2:?--pg needs a version: 15 or 18}"; shift 2 ;;
    --pg=*) major="${1#--pg=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
pg_config="$(bash scripts/pg-config.sh "$major")"
bash scripts/setup.sh
echo "Building and installing pg_hnsw for PostgreSQL $major (release; log in target/demo-install.log) ..."
mkdir -p target
if ! cargo pgrx install --release --pg-config "$pg_config" >target/demo-install.log 2>&1; then
  tail -30 target/demo-install.log
  echo "error: building pg_hnsw failed — fix: see target/demo-install.log" >&2
  exit 1
fi
PG_CONFIG="$pg_config" cargo run --quiet --release --manifest-path bench/Cargo.toml --bin demo -- "${args[@]}"
