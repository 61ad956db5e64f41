#!/usr/bin/env bash
# Installs the Debian packages Runnel needs, skipping those already present.
#   scripts/install-deps.sh build   what building and running Runnel needs
#   scripts/install-deps.sh test    that, plus the test, fuzz and lint tools
#   scripts/install-deps.sh bench   that, plus Google Benchmark and PyTorch (baseline)
# Then DuckDB's C library, which Debian does not package (scripts/install-duckdb.sh),
# and for the tests the npm package hyparquet.
# Works as root or as a user with sudo. Idempotent: with nothing missing it changes
# nothing and needs no network.
set -euo pipefail

build_packages=(
  g++ make cmake ninja-build pkg-config git
  postgresql libpq-dev
  libfmt-dev libspdlog-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev
  libsimdjson-dev  # On-Demand parsing of submitted records (src/server/record_parser.cpp)
  libhdf5-dev libzip-dev libprotobuf-dev protobuf-compiler libonnx-dev libpugixml-dev
  libboost1.74-dev libssl-dev openssl
  libicu-dev  # Unicode case mapping of the text operators (StringNormalizer)
  libre2-dev  # the regular expressions of the Tokenizer operator
  libabsl-dev  # flat hash maps (the n-gram lookups of TfIdfVectorizer)
  libnats-dev  # the NATS C client: JetStream as a request source
  libsleef-dev  # SLEEF's vectorized expf (the tensor runtime's Exp, Softmax on AVX-512)
  libdnnl-dev  # oneDNN: the tensor runtime's 3x3 convolutions of 16 channels or more (tensor/onednn_conv.cpp)
  libjemalloc-dev  # the runnel executable's allocator in Release builds (CMake option RUNNEL_JEMALLOC)
  curl  # the README's HTTP examples
  nodejs npm  # fetch DuckDB's C library from the npm registry (scripts/install-duckdb.sh)
)
test_packages=(
  libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-dev clang-format clang-tidy
  prometheus  # promtool checks the /metrics exposition
  # train the tree models tests/model/trees_test.cpp checks against
  python3-xgboost python3-sklearn python3-onnx
  python3-regex  # the Python tokenizers the Hugging Face tokenizers are checked against (tests/text)
  python3-sentencepiece  # trains the Unigram tokenizers tests/text checks, and encodes as the reference
  python3-torch  # the transformer of examples/reviews and the logits it is checked against
  libonnx-testdata  # the ONNX backend tests the tensor runtime is held to (tests/tensor)
  chromium  # the dashboard's browser tests (headless)
  nats-server  # the JetStream the tests start (tests/nats, tests/server)
  python3-cryptography  # signs the NATS operator, account and user JWTs of tests/support/nats_credentials.py
)

bench_packages=(
  libcpp-httplib-dev libbenchmark-dev python3-torch python3-h5py python3-numpy bc wrk python3-regex
  python3-xgboost python3-sklearn python3-onnx nodejs npm  # bench-trees and its peers
  nats-server  # bench-jetstream
  libxnnpack-dev libpthreadpool-dev  # bench-onednn: XNNPACK's convolutions and products too (its header needs pthreadpool.h, which the package does not pull in)
)

case "${1:-build}" in
  build) wanted=("${build_packages[@]}") ;;
  test) wanted=("${build_packages[@]}" "${test_packages[@]}") ;;
  bench) wanted=("${build_packages[@]}" "${bench_packages[@]}") ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=()
for package in "${wanted[@]}"; do
  # NodeSource's nodejs brings its own npm, which Debian's npm package conflicts with.
  if [ "$package" = npm ] && command -v npm >/dev/null; then continue; fi
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done

# After the packages: DuckDB (every mode) and, for the tests, hyparquet, the independent
# Parquet reader the snapshot archives are checked with (tests/snapshot).
install_npm_deps() {
  "$(dirname "$0")/install-duckdb.sh"
  if [ "${1:-build}" = test ]; then
    local prefix
    prefix="${RUNNEL_DEPS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.deps}/node"
    if [ ! -f "$prefix/node_modules/hyparquet/package.json" ]; then
      npm install --silent --no-save --no-package-lock --ignore-scripts --prefix "$prefix" hyparquet@1.33.0
      echo "install-deps: hyparquet installed in $prefix"
    fi
  fi
}

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#wanted[@]} packages present"
  install_npm_deps "${1:-build}"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo; missing: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_npm_deps "${1:-build}"
