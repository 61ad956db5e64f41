#!/usr/bin/env bash
# Keys that need request ids (issue #16), on one embedded PostgreSQL: 100,000-
# request insert bursts (1,000-row transactions, `runnel run` with 2 workers), the
# kinds taking turns going first, RUNS rounds (default 3), since the machine drifts:
#   (i) examples/needs/pipeline.toml as it is: the table's key is the integer `id`
#   (u) the table keyed by `loan uuid PRIMARY KEY DEFAULT gen_random_uuid()` instead
#   (t) the table keyed by `code text PRIMARY KEY DEFAULT md5(random()::text)` instead
# Each table has one key and its one index, as a user's table keyed so would.
# Ratios (uuid / integer, text / integer throughput) are taken within each round;
# medians are printed. Each round also times the same load into each table with no
# pipeline (no trigger, nothing served): the tables' own floor for those ratios.
# Results: docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
source bench/embedded_db.sh
source bench/burst.sh
U=examples/needs/.keys_bench_uuid.toml
T=examples/needs/.keys_bench_text.toml
bench_cleanup() { rm -f "$U" "$T"; }
sed 's/^key = "id"$/key = "loan"/' $P > "$U"
sed 's/^key = "id"$/key = "code"/' $P > "$T"
grep -q '^key = "loan"$' "$U" || { echo "keys_bench: $P has no key = \"id\"" >&2; exit 1; }

pipeline_of() { case $1 in i) echo $P ;; u) echo "$U" ;; t) echo "$T" ;; esac; }

table_of() {  # table_of KIND: a fresh database whose needs table is keyed so
  fresh_db
  case $1 in
    u) psql "$URL" -q -c "ALTER TABLE needs DROP COLUMN id" \
         -c "ALTER TABLE needs ADD COLUMN loan uuid PRIMARY KEY DEFAULT gen_random_uuid()" ;;
    t) psql "$URL" -q -c "ALTER TABLE needs DROP COLUMN id" \
         -c "ALTER TABLE needs ADD COLUMN code text PRIMARY KEY DEFAULT md5(random()::text)" ;;
  esac
}

burst() {  # burst KIND: one fresh database, one burst; prints and sets RATE
  table_of "$1"
  serve_burst "$RUNNEL" "$(pipeline_of "$1")" "$(pipeline_of "$1")"
  RATE=$(echo "100000 / $BURST" | bc)
  echo "($1) $RATE requests/s ($BURST s)"
}

table_only() {  # table_only KIND: the burst's load into the table alone; sets LOAD
  table_of "$1"
  local t0
  t0=$(now)
  "$RUNNEL" load --pipeline "$(pipeline_of "$1")" --db "$URL" --rows 100000 --rows-per-txn 1000 \
    --clients 100 --seed 1 >/dev/null 2>&1
  LOAD=$(echo "$(now) - $t0" | bc)
  echo "($1, table alone) $(echo "100000 / $LOAD" | bc) rows/s ($LOAD s)"
}

UUID_RATIOS=()
TEXT_RATIOS=()
UUID_FLOOR=()
TEXT_FLOOR=()
for run in $(seq 1 "${RUNS:-3}"); do
  echo "== round $run"
  declare -A rate=()
  order=(i u t)
  [ $((run % 3)) -eq 2 ] && order=(u t i)
  [ $((run % 3)) -eq 0 ] && order=(t i u)
  declare -A load=()
  for kind in "${order[@]}"; do burst "$kind"; rate[$kind]=$RATE; done
  for kind in "${order[@]}"; do table_only "$kind"; load[$kind]=$LOAD; done
  UUID_RATIOS+=("$(echo "scale=3; ${rate[u]} / ${rate[i]}" | bc)")
  TEXT_RATIOS+=("$(echo "scale=3; ${rate[t]} / ${rate[i]}" | bc)")
  UUID_FLOOR+=("$(echo "scale=3; ${load[i]} / ${load[u]}" | bc)")
  TEXT_FLOOR+=("$(echo "scale=3; ${load[i]} / ${load[t]}" | bc)")
done
echo "uuid / integer key burst throughput per round: ${UUID_RATIOS[*]}; median $(median "${UUID_RATIOS[@]}")"
echo "text / integer key burst throughput per round: ${TEXT_RATIOS[*]}; median $(median "${TEXT_RATIOS[@]}")"
echo "the tables alone, uuid / integer load throughput per round: ${UUID_FLOOR[*]}; median $(median "${UUID_FLOOR[@]}")"
echo "the tables alone, text / integer load throughput per round: ${TEXT_FLOOR[*]}; median $(median "${TEXT_FLOOR[@]}")"
