#!/usr/bin/env bash
# Installs pg_hnsw a second time under the extension name `vector`, so that
# what pgvector users already have keeps working unchanged: `CREATE EXTENSION
# vector` in migrations (Django's VectorExtension(), Rails' enable_extension
# "vector") and in every pg_dump of a pgvector database.
#
#   scripts/install-as-vector.sh [--force] [--uninstall]
#
# It writes `vector.control` and `vector--<version>.sql` into PostgreSQL's
# extension directory (the one `$PG_CONFIG`, default PostgreSQL 15's, names);
# both load the same library as `pg_hnsw` ($libdir/pg_hnsw), which must be
# installed first (`cargo pgrx install`). A database uses one or the other:
# `vector` and `pg_hnsw` define the same types and cannot both be created in
# one database.
#
# If a `vector` extension that is not pg_hnsw (pgvector itself) is installed
# there, the script refuses to overwrite it unless given --force, which first
# moves pgvector's control file aside (vector.control.pgvector). --uninstall
# removes our files and restores a moved pgvector control file.
set -euo pipefail

PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
force=0
uninstall=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --uninstall) uninstall=1 ;;
    *) echo "usage: $0 [--force] [--uninstall]" >&2; exit 2 ;;
  esac
done

ext="$("$PG_CONFIG" --sharedir)/extension"
lib="$("$PG_CONFIG" --pkglibdir)"
marker="pg_hnsw installed as vector"
control="$ext/vector.control"

ours() { [ -f "$control" ] && grep -q "$marker" "$control"; }

if [ "$uninstall" -eq 1 ]; then
  if ours; then
    rm -f "$control" "$ext"/vector--*.sql.pg_hnsw
    for f in "$ext"/vector--*.sql; do
      [ -f "$f" ] && grep -q "$marker" "$f" && rm -f "$f"
    done
    echo "removed pg_hnsw's vector extension files from $ext"
  fi
  if [ -f "$control.pgvector" ]; then
    mv "$control.pgvector" "$control"
    echo "restored pgvector's vector.control"
  fi
  exit 0
fi

src_control="$ext/pg_hnsw.control"
if [ ! -f "$src_control" ] || [ ! -f "$lib/pg_hnsw.so" ]; then
  echo "error: pg_hnsw is not installed in $ext — fix: run 'cargo pgrx install --pg-config $PG_CONFIG' first" >&2
  exit 1
fi
version="$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$src_control")"
src_sql="$ext/pg_hnsw--$version.sql"
if [ ! -f "$src_sql" ]; then
  echo "error: $src_sql is missing — fix: reinstall pg_hnsw" >&2
  exit 1
fi

if [ -f "$control" ] && ! ours; then
  if [ "$force" -ne 1 ]; then
    echo "error: a 'vector' extension that is not pg_hnsw (pgvector?) is installed in $ext — fix: rerun with --force to move it aside (vector.control.pgvector; --uninstall restores it)" >&2
    exit 1
  fi
  mv "$control" "$control.pgvector"
  echo "moved the existing vector.control to vector.control.pgvector"
fi

{
  echo "# $marker (scripts/install-as-vector.sh)"
  echo "comment = 'pg_hnsw under the name vector: vector, halfvec, sparsevec and bit types and the hnsw index (pgvector-compatible)'"
  echo "default_version = '$version'"
  echo "module_pathname = '\$libdir/pg_hnsw'"
  echo "relocatable = true"
  echo "superuser = true"
  echo "trusted = false"
} >"$control"
{
  echo "-- $marker (scripts/install-as-vector.sh)"
  sed "s/CREATE EXTENSION pg_hnsw/CREATE EXTENSION vector/g" "$src_sql"
} >"$ext/vector--$version.sql"
echo "installed pg_hnsw $version as extension 'vector' in $ext"
