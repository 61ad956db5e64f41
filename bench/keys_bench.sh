#!/usr/bin/env bash
# Keys that need request ids (issue #16), on one embedded PostgreSQL: 100,000-
# request insert bursts (1,000-row transactions, `runnel run` with 2 workers), the
# kinds taking turns going first, RUNS rounds (default 3), since the machine drifts:
#   (i) examples/needs/pipeline.toml as it is: the table's key is the integer `id`
#   (u) the table keyed by `loan uuid PRIMARY KEY DEFAULT gen_random_uuid()` instead
#   (t) the table keyed by `code text PRIMARY KEY DEFAULT md5(random()::text)` instead
# Each table has one key and its one index, as a user's table keyed so would.
# Ratios (uuid / integer, text / integer throughput) are taken within each round;
# medians are printed. Results: docs/performance.md.
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

burst() {  # burst KIND: one fresh database, one burst; prints and sets RATE
  fresh_db
  case $1 in
    i) serve_burst "$RUNNEL" $P ;;
    u) psql "$URL" -q -c "ALTER TABLE needs DROP COLUMN id" \
         -c "ALTER TABLE needs ADD COLUMN loan uuid PRIMARY KEY DEFAULT gen_random_uuid()"
       serve_burst "$RUNNEL" "$U" "$U" ;;
    t) psql "$URL" -q -c "ALTER TABLE needs DROP COLUMN id" \
         -c "ALTER TABLE needs ADD COLUMN code text PRIMARY KEY DEFAULT md5(random()::text)"
       serve_burst "$RUNNEL" "$T" "$T" ;;
  esac
  RATE=$(echo "100000 / $BURST" | bc)
  echo "($1) $RATE requests/s ($BURST s)"
}

UUID_RATIOS=()
TEXT_RATIOS=()
for run in $(seq 1 "${RUNS:-3}"); do
  echo "== round $run"
  declare -A rate=()
  order=(i u t)
  [ $((run % 3)) -eq 2 ] && order=(u t i)
  [ $((run % 3)) -eq 0 ] && order=(t i u)
  for kind in "${order[@]}"; do burst "$kind"; rate[$kind]=$RATE; done
  UUID_RATIOS+=("$(echo "scale=3; ${rate[u]} / ${rate[i]}" | bc)")
  TEXT_RATIOS+=("$(echo "scale=3; ${rate[t]} / ${rate[i]}" | bc)")
done
echo "uuid / integer key burst throughput per round: ${UUID_RATIOS[*]}; median $(median "${UUID_RATIOS[@]}")"
echo "text / integer key burst throughput per round: ${TEXT_RATIOS[*]}; median $(median "${TEXT_RATIOS[@]}")"
