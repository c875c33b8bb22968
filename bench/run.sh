#!/usr/bin/env bash
# Runs the benchmark: `bench/run.sh sweep` (real dataset, with hnswlib) or
# `bench/run.sh synthetic --n 10000,100000,1000000 --dims 128`.
# Builds and installs pg_hnsw in release mode first. Results: bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo pgrx install --release --pg-config "${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" >target/bench-install.log 2>&1 || { tail -30 target/bench-install.log; exit 1; }
cargo run --quiet --release --manifest-path bench/Cargo.toml --bin bench -- "${@:-sweep}"
