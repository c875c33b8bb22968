#!/usr/bin/env bash
# Runs every test of pg_hnsw on this machine, installing what it needs first:
#  1. unit tests of the pure Rust code and the in-database #[pg_test]s
#     (`cargo pgrx test`, on a temporary PostgreSQL 15 cluster run as postgres);
#  2. whole-cluster tests in pgrx-tests/ (client compatibility, recall on the
#     real dataset, crash recovery, replicas, concurrency), against the
#     extension installed into the system PostgreSQL 15;
#  3. the bench crate's tests (release build, shared with the demo): the
#     in-process embedding of the dataset's sample questions against the
#     stored vectors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Disk: no incremental caches (a one-shot run never reuses them), and the
# Cargo profiles keep only line tables. A cold run then peaks at about 2 GB (was about 10 GB).
export CARGO_INCREMENTAL=0
disk() { echo "test.sh: $1: $(df -h --output=avail . | tail -1 | tr -d ' ') free on $(df --output=target . | tail -1)"; }
disk "start"

export CARGO_PGRX_TEST_RUNAS=postgres
export CARGO_PGRX_TEST_PGDATA="$(pwd)/target/test-pgdata"
cargo pgrx test pg15
disk "unit and #[pg_test] tests passed"

cargo pgrx install --pg-config "${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
(cd pgrx-tests && cargo test -- --test-threads=2)
disk "cluster tests passed"
cargo test --release --manifest-path bench/Cargo.toml
