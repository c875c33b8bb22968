#!/usr/bin/env bash
# Installs what pg_hnsw needs on a fresh Debian 12 machine, idempotently:
# PostgreSQL 15 server and headers, clang, sudo, cargo-pgrx 0.18.0, `cargo pgrx
# init` for PostgreSQL 15, and the postgres-owned test data directory.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
missing=()
for pkg in postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.0'; then
  echo "setup: installing cargo-pgrx 0.18.0 (about 6-10 minutes)"
  cargo install cargo-pgrx --version 0.18.0 --locked
fi

if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  cargo pgrx init --pg15 "$PG_CONFIG"
fi

# PostgreSQL refuses to run as root: tests run their clusters as `postgres`.
mkdir -p target/test-pgdata target/clusters
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: target/test-pgdata target/clusters
  # postgres must be able to reach the work tree to read its data dirs.
  dir="$(pwd)"
  while [ "$dir" != "/" ]; do chmod o+x "$dir" 2>/dev/null || true; dir="$(dirname "$dir")"; done
fi
