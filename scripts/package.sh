#!/usr/bin/env bash
# Builds installable packages of pg_hnsw (release) with `cargo pgrx package`,
# one per PostgreSQL version, into target/package/:
#   pg_hnsw-VERSION-pgNN-linux-x86_64.tar.gz   lib/pg_hnsw.so, extension/*,
#                                             install.sh (copies them into the
#                                             server `pg_config` names)
#   postgresql-15-pg-hnsw_VERSION_amd64.deb   for Debian's PostgreSQL 15
#                                             (Depends: postgresql-15)
# Usage: scripts/package.sh [15] [18]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
mkdir -p target/package
for major in "${@:-15 18}"; do
  for m in $major; do
    pg_config="$(bash scripts/pg-config.sh "$m")"
    tree="target/package/tree-pg$m"
    rm -rf "$tree"
    echo "package.sh: building for PostgreSQL $m ($pg_config)"
    cargo pgrx package --pg-config "$pg_config" --out-dir "$tree" >"target/package/build-pg$m.log" 2>&1 ||
      { tail -30 "target/package/build-pg$m.log"; echo "error: cargo pgrx package failed — fix: see target/package/build-pg$m.log" >&2; exit 1; }
    pkglibdir="$("$pg_config" --pkglibdir)"
    sharedir="$("$pg_config" --sharedir)"

    name="pg_hnsw-$version-pg$m"
    stage="target/package/$name"
    rm -rf "$stage"
    mkdir -p "$stage/lib" "$stage/extension"
    cp "$tree$pkglibdir/pg_hnsw.so" "$stage/lib/"
    cp "$tree$sharedir/extension/"pg_hnsw* "$stage/extension/"
    cat >"$stage/install.sh" <<SH
#!/usr/bin/env bash
# Installs pg_hnsw $version into a PostgreSQL $m server:
#   sudo ./install.sh [PATH/TO/pg_config]   (default: pg_config on PATH)
# then, in a database: CREATE EXTENSION pg_hnsw;
set -euo pipefail
cd "\$(dirname "\$0")"
pg_config="\${1:-pg_config}"
major="\$("\$pg_config" --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')"
if [ "\$major" != "$m" ]; then
  echo "error: this package is for PostgreSQL $m, \$pg_config is PostgreSQL \$major — fix: use the pg$m package or pass the right pg_config" >&2
  exit 1
fi
install -m 755 lib/pg_hnsw.so "\$("\$pg_config" --pkglibdir)/"
install -m 644 extension/* "\$("\$pg_config" --sharedir)/extension/"
echo "pg_hnsw $version installed into PostgreSQL \$major; now: CREATE EXTENSION pg_hnsw;"
SH
    chmod 755 "$stage/install.sh"
    tar czf "target/package/$name-linux-x86_64.tar.gz" -C target/package "$name"
    echo "package.sh: target/package/$name-linux-x86_64.tar.gz"

    # A .deb only where the server itself is a Debian package.
    if [ "$m" = 15 ] && command -v dpkg-deb >/dev/null; then
      deb="target/package/deb-pg$m"
      rm -rf "$deb"
      mkdir -p "$deb/DEBIAN"
      cp -r "$tree/." "$deb/"
      cat >"$deb/DEBIAN/control" <<CONTROL
Package: postgresql-$m-pg-hnsw
Version: $version
Architecture: amd64
Maintainer: pg_hnsw developers
Depends: postgresql-$m
Section: database
Priority: optional
Description: HNSW vector index access method for PostgreSQL $m, pgvector-compatible
 The vector, halfvec, sparsevec and bit types, their operators and the hnsw
 index access method. After installing: CREATE EXTENSION pg_hnsw;
CONTROL
      dpkg-deb --root-owner-group --build "$deb" "target/package/postgresql-$m-pg-hnsw_${version}_amd64.deb" >/dev/null
      echo "package.sh: target/package/postgresql-$m-pg-hnsw_${version}_amd64.deb"
    fi
  done
done
