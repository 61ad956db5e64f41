#!/usr/bin/env bash
# The ticket burst through PostgreSQL: ROWS tickets (default 100,000: the machine's
# package descriptions repeated; bench/tickets_bench.sh makes them) inserted by COPY
# in 1,000-row transactions while `runnel run` (2 workers) routes them with the ticket
# model and writes each queue back. Prints tickets/s from the first insert to the last
# result, ROUNDS times (default 3). Run by `make bench-tickets`; on the embedded
# database (bench/embedded_db.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/embedded_db.sh
D=$PWD/$B/tickets
[ -f "$D/big.count" ] || { echo "run bench/tickets_bench.sh first (it builds $D)" >&2; exit 1; }
for round in $(seq "${ROUNDS:-3}"); do
  fresh_db
  psql "$URL" -q -f examples/tickets/schema.sql
  "$RUNNEL" --log-level warn migrate --pipeline "$D/pipeline.toml" --db "$URL" > /dev/null
  "$RUNNEL" --log-level warn run --pipeline "$D/pipeline.toml" --db "$URL" --workers 2 --no-migrate \
    > "$RUNNEL_HOME/run.log" 2>&1 &
  run=$!
  sleep 1
  n=$(cat "$D/big.count")
  t0=$(date +%s.%N)
  # 1,000-row transactions, each its own COPY (the queue gets one row per chunk of keys).
  /usr/bin/python3 - "$D/big.csv" "$URL" <<'PY'
import csv, io, subprocess, sys
rows = list(csv.reader(open(sys.argv[1], encoding="utf-8")))[1:]
script = io.StringIO()
for i in range(0, len(rows), 1000):
    script.write("COPY tickets (subject, body) FROM STDIN WITH (FORMAT csv);\n")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([r[1], r[2]] for r in rows[i:i + 1000])
    script.write(buf.getvalue() + "\\.\n")
subprocess.run(["psql", sys.argv[2], "-q", "-v", "ON_ERROR_STOP=1"], input=script.getvalue().encode(), check=True)
PY
  t_loaded=$(date +%s.%N)
  psql "$URL" -qAt -c "DO \$\$ BEGIN LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM runnel_tickets_queue);
                         PERFORM pg_sleep(0.01); END LOOP; END \$\$" > /dev/null
  t1=$(date +%s.%N)
  served=$(psql "$URL" -qAt -c "SELECT count(*) FROM runnel_tickets_results WHERE status = 'done'")
  kill -TERM $run; wait $run || true
  [ "$served" -eq "$n" ] || { echo "only $served of $n tickets served" >&2; exit 1; }
  printf 'round %s: %s tickets in %.2f s (inserts %.2f s): %.0f tickets/s\n' "$round" "$n" \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$t_loaded - $t0" | bc)" "$(echo "$n / ($t1 - $t0)" | bc -l)"
done
