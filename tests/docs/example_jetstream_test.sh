#!/usr/bin/env bash
# examples/needs-jetstream/run.sh as a user runs it (a 3-node JetStream cluster, two
# `runnel run` processes, a load), with 3,000 requests, a fresh RUNNEL_HOME and BIN_DIR
# first on PATH; the embedded database is stopped afterwards. Exit 77 (a skip) without
# Debian's nats-server, unless CI=true.
#
#   example_jetstream_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
bin=$(cd "$2" && pwd)
if [ ! -x /usr/sbin/nats-server ]; then
  [ "${CI:-}" = true ] && { echo "nats-server is missing and CI=true" >&2; exit 1; }
  echo "skipped: /usr/sbin/nats-server is missing (Debian's nats-server)"
  exit 77
fi
work=$(mktemp -d /tmp/runnel-example.XXXXXX)
chmod 755 "$work"  # the embedded cluster's user (root runs it as runnel-pg) enters RUNNEL_HOME
export RUNNEL_HOME="$work/home" PATH="$bin:$PATH"
unset RUNNEL_DB_URL RUNNEL_CONFIG
trap 'runnel db stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
out=$(ROWS=3000 RATE=3000 "$src/examples/needs-jetstream/run.sh" 2>&1) || { echo "$out"; exit 1; }
echo "$out"
grep -q "all 3000 served" <<<"$out"
grep -q "done 3000, throttled 0, failed 0" <<<"$out"
grep -q "jetstream: consumer runnel-needs of stream REQUESTS: pending 0, delivered and not acknowledged 0" <<<"$out"
