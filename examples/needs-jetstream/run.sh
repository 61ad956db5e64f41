#!/usr/bin/env bash
# The needs workload from a 3-node NATS JetStream cluster, all on this machine:
#   1. three nats-server nodes (client ports 4222-4224, routes 6222-6224), stores under
#      a scratch directory;
#   2. Runnel's embedded PostgreSQL (`runnel db start`), the needs tables, `migrate`;
#   3. `runnel jetstream setup --replicas 3`: the request, dead-letter and result
#      streams, three copies each;
#   4. two `runnel run` processes sharing the durable consumer (on separate hosts in a
#      real deployment: list the nodes in [jetstream] servers, point --db at the
#      database);
#   5. `runnel load --jetstream`: ROWS synthetic requests (default 20,000) at RATE per
#      second (default 5,000), waited for until every one has its result;
#   6. `runnel status` (with the consumer's line) and `runnel jetstream status`.
# Everything it started is stopped at the end except the embedded database (`runnel db
# stop`). Needs `runnel` on PATH (make demo-jetstream builds it), Debian's nats-server
# and psql. docs/jetstream.md explains each step.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pipeline="$here/pipeline.toml"
rows=${ROWS:-20000}
rate=${RATE:-5000}
work=$(mktemp -d /tmp/runnel-jetstream-example.XXXXXX)
pids=()
cleanup() {  # keeps the script's own exit status (set -e applies in the trap too)
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "1. three nats-server nodes, one JetStream cluster"
for i in 1 2 3; do
  routes=""
  for j in 1 2 3; do [ "$j" != "$i" ] && routes+="${routes:+,}nats://127.0.0.1:$((6221 + j))"; done
  /usr/sbin/nats-server -js -a 127.0.0.1 -p $((4221 + i)) -sd "$work/n$i" --server_name "n$i" \
    --cluster_name runnel-example --cluster "nats://127.0.0.1:$((6221 + i))" --routes "$routes" \
    >"$work/n$i.log" 2>&1 &
  pids+=($!)
done
for port in 4222 4223 4224; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
echo "nodes on 4222, 4223, 4224 (logs in $work)"

step "2. PostgreSQL, the needs tables, migrate"
runnel db start
db=$(runnel db url)
if [ "$(psql "$db" -qAt -c "SELECT to_regclass('needs') IS NULL")" = t ]; then
  psql "$db" -q -f "$here/../needs/schema.sql"
fi
runnel migrate --pipeline "$pipeline"

step "3. the streams, three replicas each"
for attempt in $(seq 30); do  # the cluster elects its JetStream leader first
  if runnel jetstream setup --pipeline "$pipeline" --replicas 3 2>"$work/setup.err"; then break; fi
  [ "$attempt" = 30 ] && { cat "$work/setup.err" >&2; exit 1; }
  sleep 1
done

step "4. two runnel run processes sharing the consumer"
before=$(psql "$db" -qAt -c "SELECT count(*) FROM runnel_needs_results")
for name in a b; do
  runnel run --pipeline "$pipeline" --workers 1 --no-migrate >"$work/run-$name.log" 2>&1 &
  pids+=($!)
done
sleep 2

step "5. $rows requests published at $rate/s"
runnel load --pipeline "$pipeline" --jetstream --rows "$rows" --rate "$rate"
want=$((before + rows))
for _ in $(seq 600); do
  served=$(psql "$db" -qAt -c "SELECT count(*) FROM runnel_needs_results")
  [ "$served" -ge "$want" ] && break
  sleep 0.2
done
[ "$served" -ge "$want" ] || { echo "only $((served - before)) of $rows served" >&2; cat "$work"/run-*.log >&2; exit 1; }
echo "all $rows served"

step "6. status"
runnel status --pipeline "$pipeline"
runnel jetstream status --pipeline "$pipeline"
