#!/usr/bin/env bash
# The README's shell blocks, run in order as a newcomer pastes them, against the
# embedded database: the README can never drift from what works.
#
#   readme_test.sh SOURCE_DIR BIN_DIR
#
# Every ```sh block runs, in one bash session with `set -e` (a failing command fails
# the test naming its README line), except a block preceded by a line
# `<!-- readme-test: skip ... -->` (the opening `make demo` / `make test`, which CI
# runs itself, and building by hand, which is what `make test` does). It runs in a
# scratch directory holding `examples` (linked from SOURCE_DIR) and `../shared` (the
# fixtures: RUNNEL_SHARED_DIR, else SOURCE_DIR/../shared), with a fresh RUNNEL_HOME and
# BIN_DIR first on PATH. curl fails on HTTP errors here (--fail-with-body). Processes
# the README starts in the background must still be running at the end; they are then
# stopped with SIGINT and the embedded database is stopped.
set -euo pipefail

src=$(cd "$1" && pwd)
bin=$(cd "$2" && pwd)
shared=${RUNNEL_SHARED_DIR:-$src/../shared}
if [ ! -d "$shared/models" ]; then
  if [ "${CI:-}" = true ]; then
    echo "readme_test: the fixtures are missing ($shared) and CI=true" >&2
    exit 1
  fi
  echo "readme_test: skipped: the README uses ../shared, which is absent ($shared); set RUNNEL_SHARED_DIR"
  exit 77
fi
shared=$(cd "$shared" && pwd)

work=$(mktemp -d /tmp/runnel-readme.XXXXXX)
chmod 755 "$work"  # the embedded cluster's user (root runs it as runnel-pg) enters RUNNEL_HOME
mkdir "$work/repo"
ln -s "$src/examples" "$work/repo/examples"
ln -s "$shared" "$work/shared"
export RUNNEL_HOME="$work/home" PATH="$bin:$PATH"
unset RUNNEL_DB_URL RUNNEL_CONFIG

# The script: README line N is script line N (other lines blank), so $LINENO names it.
script="$work/readme.sh"
awk '
  /^<!-- readme-test: skip/ { skip = 1 }
  /^```sh[[:space:]]*$/ && !inside { inside = 1; run = !skip; skip = 0; print ""; next }
  /^```/ && inside { inside = 0; print ""; next }
  { print ((inside && run) ? $0 : "") }
' "$src/README.md" >"$script"
if ! grep -q '[^[:space:]]' "$script"; then
  echo "readme_test: no shell block found in $src/README.md" >&2
  exit 1
fi

cat >"$work/prelude.sh" <<'PRELUDE'
set -eE -o pipefail
trap 'echo "readme_test: README.md:$LINENO failed (exit $?)" >&2' ERR
curl() {  # fail on HTTP errors, unless the README line chose --fail itself
  local arg
  for arg in "$@"; do
    case $arg in --fail | -[a-zA-Z]*f*) command curl --max-time 60 "$@"; return ;; esac
  done
  command curl --fail-with-body --max-time 60 "$@"
}
PRELUDE
cat >"$work/epilogue.sh" <<'EPILOGUE'
trap - ERR
set +e
status=0
for pid in $(jobs -p); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "readme_test: a process the README runs in the background ended early (pid $pid)" >&2
    status=1
  fi
  kill -INT "$pid" 2>/dev/null
done
wait
exit $status
EPILOGUE

cleanup() {
  runnel db stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work/repo"
echo "readme_test: running $(grep -c '[^[:space:]]' "$script") README lines in $work/repo"
bash -c "source '$work/prelude.sh'; source '$script'; source '$work/epilogue.sh'" </dev/null

# What the README's blocks did must be visible in the database.
db=$(runnel db url)
served=$(psql "$db" -qAt -c "SELECT count(*) FROM runnel_needs_results WHERE status = 'done'")
wines=$(psql "$db" -qAt -c "SELECT count(*) FROM runnel_wine_results WHERE status = 'done'")
echo "readme_test: needs requests done: $served, wine requests done: $wines"
[ "$served" -ge 10000 ] || { echo "readme_test: the README's 10,000 needs requests were not all served" >&2; exit 1; }
[ "$wines" -ge 1 ] || { echo "readme_test: no wine was scored" >&2; exit 1; }
