#!/usr/bin/env bash
# The HTTP API under load on one embedded PostgreSQL (its own RUNNEL_HOME in /tmp,
# removed afterwards), with wrk and bench/http_wait_bench on loopback. Run by `make
# bench-http` after a Release build in build/bench; results go to docs/performance.md.
#   (a) single-record POST, 64 connections, 10 s: `runnel run --http` serving (2
#       workers) and an API-only process (--workers 0) side by side
#   (b) NDJSON bulk, 1,000 records per POST, 8 connections, 10 s: the same two ways
#   (c) ?wait round trip at a steady 1,000 requests/s for 20 s (open loop)
#   (d) the same while a new model version is pushed every 2 s (model swaps)
#   (e) 1,000 SSE subscribers (GET .../events?client=i, one per client) while rows are
#       inserted by SQL at SSE_RATE (default 10,000) requests/s and served, 20 s:
#       event latency from the result's commit, every request arriving exactly once
# OLD_BUILD=dir also runs (a) and (b) with the runnel binary of that build directory
# (e.g. the code before a change), alternating which goes first in each of ROUNDS
# rounds (default 1); AB_ONLY=1 runs (a) and (b) only; SSE_ONLY=1 runs (e) only;
# WORKERS="2" or "0" runs one mode of (a) and (b) only.
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
PORT=${PORT:-18181}
H=http://127.0.0.1:$PORT
RUN=
bench_cleanup() { [ -n "$RUN" ] && kill -TERM "$RUN" 2>/dev/null && wait "$RUN" 2>/dev/null || true; }
source bench/embedded_db.sh
WAIT=$B/bench/http_wait_bench
serve() {  # serve WORKERS [BINARY]
  local pipeline=$P
  # An older build reads the pipeline without the settings it does not know.
  [ "${2:-$RUNNEL}" != "$RUNNEL" ] && pipeline=$OLD_P
  "${2:-$RUNNEL}" --log-level warn run --pipeline "$pipeline" --db "$URL" --workers "$1" --http 127.0.0.1:$PORT \
    > "$RUNNEL_HOME/run.log" 2>&1 &
  RUN=$!
  for _ in $(seq 100); do curl -sf $H/readyz >/dev/null && return; sleep 0.1; done
  echo "runnel did not get ready:"; cat "$RUNNEL_HOME/run.log"; exit 1
}
stop() { kill -TERM "$RUN"; wait "$RUN" || true; RUN=; }
wrk_summary() { grep -E "Requests/sec|^ +50%|^ +99%" | tr -s ' ' | paste -sd ' '; }

LUA=$RUNNEL_HOME/lua
mkdir -p "$LUA"
cat > "$LUA/single.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = '{"client_id":' .. (n % 100 + 1) .. ',"age":40,"gender":1,"family_members":2,'
    .. '"financial_education":0.5,"income":50,"wealth":100,"income_investment":1,"accumulation_investment":0}'
  return wrk.format(nil, nil, nil, body)
end
LUA
/usr/bin/python3 - "$LUA/bulk.ndjson" <<'PY'
import json, random, sys
random.seed(1)
with open(sys.argv[1], "w") as f:
    for i in range(1000):
        f.write(json.dumps({"client_id": i % 100 + 1, "age": random.randint(18, 90), "gender": random.randint(0, 1),
                            "family_members": random.randint(0, 5), "financial_education": round(random.uniform(0.036, 0.903), 4),
                            "income": round(random.uniform(1.54, 365.3), 3), "wealth": round(random.uniform(1.06, 2233.2), 3),
                            "income_investment": random.randint(0, 1), "accumulation_investment": random.randint(0, 1)}) + "\n")
PY
cat > "$LUA/bulk.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
local f = io.open("$LUA/bulk.ndjson", "r")
wrk.body = f:read("*a")
f:close()
LUA

ab() {  # ab WORKERS BINARY LABEL: (a) and (b) with one binary
  echo "== (a) single-record POST, 64 connections, 10 s: $3 [$2]"
  fresh_db; serve "$1" "$2"
  wrk -t2 -c64 -d10s --latency -s "$LUA/single.lua" $H/v1/pipelines/needs/requests | wrk_summary
  stop
  echo "== (b) NDJSON bulk, 1,000 records per POST, 8 connections, 10 s: $3 [$2]"
  fresh_db; serve "$1" "$2"
  wrk -t2 -c8 -d10s --latency -s "$LUA/bulk.lua" $H/v1/pipelines/needs/requests | wrk_summary
  echo "   (records/s = 1,000 x Requests/sec)"
  stop
}
sse() {
  echo "== (e) 1,000 SSE subscribers, one per client, while ${SSE_RATE:-10000} requests/s are inserted and served, 20 s"
  fresh_db; serve 2
  "$B/bench/sse_bench" --port $PORT --db "$URL" --subscribers 1000 --rate "${SSE_RATE:-10000}" --seconds 20
  psql "$URL" -qAt -c "SELECT 'served: ' || count(*) FROM runnel_needs_results"
  stop
}
if [ -n "${SSE_ONLY:-}" ]; then sse; exit 0; fi

binaries=("$RUNNEL")
[ -n "${OLD_BUILD:-}" ] && binaries+=("$OLD_BUILD/src/runnel")
OLD_P=$RUNNEL_HOME/old_pipeline.toml  # the model path made absolute, gather_ms (session 30) left out
sed -e "s|^path = \"model/|path = \"$PWD/examples/needs/model/|" -e '/^gather_ms/d' $P > "$OLD_P"
for round in $(seq "${ROUNDS:-1}"); do
  order=("${binaries[@]}")
  if [ $((round % 2)) -eq 0 ] && [ ${#binaries[@]} -eq 2 ]; then order=("${binaries[1]}" "${binaries[0]}"); fi
  for workers in ${WORKERS:-2 0}; do
    label=$([ "$workers" = 0 ] && echo "API only (--workers 0)" || echo "serving, 2 workers")
    for binary in "${order[@]}"; do ab "$workers" "$binary" "$label"; done
  done
done
[ -n "${AB_ONLY:-}" ] && exit 0

echo "== (c) ?wait round trip at 1,000 requests/s, 20 s, 32 connections (after a 3 s warm-up)"
fresh_db; serve 2
"$WAIT" --port $PORT --rate 1000 --seconds 3 >/dev/null
"$WAIT" --port $PORT --rate 1000 --seconds 20 --connections 32
stop

echo "== (d) the same while a new model version is pushed every 2 s"
fresh_db; serve 2
"$WAIT" --port $PORT --rate 1000 --seconds 3 >/dev/null
(
  for i in $(seq 10); do
    sleep 2
    "$RUNNEL" --log-level warn model push --name needs --file examples/needs/model/demo_model.h5 \
      --description "swap $i" --db "$URL" >/dev/null
  done
) &
PUSHER=$!
"$WAIT" --port $PORT --rate 1000 --seconds 20 --connections 32
wait $PUSHER
psql "$URL" -qAt -c "SELECT 'model versions that served: ' || count(DISTINCT model_version) || ', requests: '
                      || count(*) || ', not done: ' || count(*) FILTER (WHERE status <> 'done')
                      FROM runnel_needs_results"
stop

sse
