#!/usr/bin/env bash
# Installs DuckDB's C library (libduckdb.so, Parquet built in) and its header, which
# Debian 12 does not package, from the npm registry: the header from the `duckdb`
# package and the library from `@duckdb/node-bindings-linux-x64`, one DuckDB version.
# Only the two tarballs are fetched (npm pack: no install scripts, no dependencies),
# checked against the SHA-256 sums below, and unpacked into
#   ${RUNNEL_DEPS_DIR:-<repo>/.deps}/duckdb-<version>/{include/duckdb.h,lib/libduckdb.so}
# which CMake finds (RUNNEL_DUCKDB_DIR). Idempotent: nothing is fetched when present.
set -euo pipefail

version=1.4.4
header_package="duckdb@${version}"
header_sha256=5bb967dcbcd517670ba5f169f238fb9d6787e53752c60ebe24386169d76941ed
library_package="@duckdb/node-bindings-linux-x64@${version}-r.4"
library_sha256=732fac4dc6b8f198870b9c4bb6ddf13544466daca00ad28ba2f1d80de5d7aa4b

repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${RUNNEL_DEPS_DIR:-$repo/.deps}/duckdb-${version}"
if [ -f "$target/include/duckdb.h" ] && [ -f "$target/lib/libduckdb.so" ]; then
  echo "install-duckdb: DuckDB ${version} present in $target"
  exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "install-duckdb: only linux-x64 is pinned here; got $(uname -m)" >&2
  exit 1
fi
command -v npm >/dev/null || { echo "install-duckdb: npm is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fetch() {  # package sha256 -> path of the checked tarball
  local file
  file="$(cd "$work" && npm pack --silent "$1" | tail -1)"
  echo "$2  $work/$file" | sha256sum --check --quiet - >&2 || {
    echo "install-duckdb: $1: checksum mismatch" >&2
    exit 1
  }
  echo "$work/$file"
}
header_tgz="$(fetch "$header_package" "$header_sha256")"
library_tgz="$(fetch "$library_package" "$library_sha256")"

staging="$work/duckdb-${version}"
mkdir -p "$staging/include" "$staging/lib"
tar -xzf "$header_tgz" -C "$work" package/src/duckdb/src/include/duckdb.h package/LICENSE
mv "$work/package/src/duckdb/src/include/duckdb.h" "$staging/include/"
mv "$work/package/LICENSE" "$staging/LICENSE"
rm -rf "$work/package"
tar -xzf "$library_tgz" -C "$work" package/libduckdb.so
mv "$work/package/libduckdb.so" "$staging/lib/"
mkdir -p "$(dirname "$target")"
rm -rf "$target"
mv "$staging" "$target"
echo "install-duckdb: DuckDB ${version} installed in $target"
