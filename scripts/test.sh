#!/usr/bin/env bash
# Runs every test of pg_hnsw on this machine, installing what it needs first,
# on PostgreSQL 15 and then on PostgreSQL 18 (the full suite on each):
#  1. unit tests of the pure Rust code and the in-database #[pg_test]s
#     (`cargo pgrx test pgNN`, on a temporary cluster run as postgres);
#  2. whole-cluster tests in pgrx-tests/ (client compatibility, recall on the
#     real dataset, crash recovery, replicas, concurrency), against the
#     extension installed into that version's server;
#  3. once, the bench crate's tests (release build, shared with the demo): the
#     in-process embedding of the dataset's sample questions against the
#     stored vectors.
# PG_HNSW_TEST_PG="15" (or "18") limits the run to one version.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Disk: no incremental caches (a one-shot run never reuses them), and the
# Cargo profiles keep only line tables. A cold run then peaks at about 2 GB (was about 10 GB).
export CARGO_INCREMENTAL=0
disk() { echo "test.sh: $1: $(df -h --output=avail . | tail -1 | tr -d ' ') free on $(df --output=target . | tail -1)"; }
disk "start"

export CARGO_PGRX_TEST_RUNAS=postgres
for major in ${PG_HNSW_TEST_PG:-15 18}; do
  pg_config="$(bash scripts/pg-config.sh "$major")"
  echo "test.sh: PostgreSQL $major ($pg_config)"
  data="target/test-pgdata"
  if [ "$major" != 15 ]; then data="target/test-pgdata$major"; fi
  CARGO_PGRX_TEST_PGDATA="$(pwd)/$data" cargo pgrx test "pg$major"
  disk "PostgreSQL $major: unit and #[pg_test] tests passed"

  cargo pgrx install --pg-config "$pg_config"
  (cd pgrx-tests && PG_CONFIG="$pg_config" cargo test -- --test-threads=2)
  disk "PostgreSQL $major: cluster tests passed"
done
cargo test --release --manifest-path bench/Cargo.toml
