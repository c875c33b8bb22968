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

export CARGO_PGRX_TEST_RUNAS=postgres
export CARGO_PGRX_TEST_PGDATA="$(pwd)/target/test-pgdata"
cargo pgrx test pg15

cargo pgrx install --pg-config "${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
(cd pgrx-tests && cargo test -- --test-threads=2)
cargo test --release --manifest-path bench/Cargo.toml
