# Sourced by the pipeline and HTTP benchmarks: one embedded PostgreSQL in its own
# RUNNEL_HOME under /tmp, stopped and removed on exit. Before sourcing, the script has
# cd'ed to the repository and may set BUILD (default build/bench). Defines RUNNEL,
# RUNNEL_HOME, ADMIN (the postgres database's URL) and fresh_db, which recreates the
# database `bench` with the needs schema and sets URL. A script with more to clean up
# defines bench_cleanup, which runs first.
B=${BUILD:-build/bench}
RUNNEL=$B/src/runnel
export RUNNEL_HOME
RUNNEL_HOME=$(mktemp -d /tmp/runnel-bench-XXXXXX)
chmod 755 "$RUNNEL_HOME"
embedded_db_cleanup() {
  if declare -F bench_cleanup >/dev/null; then bench_cleanup || true; fi
  "$RUNNEL" db stop >/dev/null 2>&1 || true
  rm -rf "$RUNNEL_HOME"
}
trap embedded_db_cleanup EXIT
"$RUNNEL" --log-level warn db start >/dev/null
# The superuser creates the database; its owner (the role `db url` names) fills it.
ADMIN=$("$RUNNEL" db url --superuser --dbname postgres)
fresh_db() {
  PGOPTIONS='-c client_min_messages=warning' psql "$ADMIN" -qAt -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" \
    -c "CREATE DATABASE bench OWNER runnel_owner" >/dev/null
  URL=$("$RUNNEL" db url --dbname bench)
  psql "$URL" -q -f examples/needs/schema.sql >/dev/null
}
