#!/usr/bin/env bash
# Side-by-side load test, in one run, of the same upstream reached four ways:
#   (a) the simulated provider directly,
#   (b) the Signalbox router in front of it (embedded SQLite ledger),
#   (c) the Signalbox router on a PostgreSQL ledger (a throwaway server this script starts,
#       or SIGNALBOX_BENCH_DATABASE_URL),
#   (d) nginx proxy_pass in front of it,
# with wrk POSTing a non-streamed chat completion. Prints requests/s and latency percentiles
# for each, the router/nginx throughput ratio, the router's CPU time per request, the latency it
# adds over a direct call, and the settlements each ledger committed per second (with the mean
# group-commit batch size).
#
# The two routers take turns for ROUNDS rounds (3) and each figure is the median of its runs:
# on a shared 2-core machine whichever runs second after a burst was seen ~10% slower, so one
# run each says more about the order than about the ledger.
#
# Usage: Benchmarks/run.sh [seconds per run (10)] [connections (32)] [rounds (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
ROUNDS=${3:-3}
THREADS=2

command -v wrk >/dev/null && command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light
}
WORK_PREFIX=signalbox-bench
source Benchmarks/common.sh
BIN=$(release_binary)
SIM_PORT=$(free_port); ROUTER_PORT=$(free_port); NGINX_PORT=$(free_port)

# The upstream: no artificial latency, so the comparison measures the proxies.
"$BIN" sim-provider --port "$SIM_PORT" --first-token-ms 0 --inter-token-ms 0 >"$WORK/sim.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$SIM_PORT/healthz"

SIGNALBOX_DEMO_KEY=sk-sb-v1-benchmark-key-0000000000 "$BIN" serve --port "$ROUTER_PORT" --drain-delay 0 --sim-url "http://127.0.0.1:$SIM_PORT" \
  --data-dir "$WORK/data" --demo-credits 1000000 --log-level warning >"$WORK/router.log" 2>&1 & ROUTER_PID=$!; pids+=($ROUTER_PID)
wait_for "http://127.0.0.1:$ROUTER_PORT/readyz"

start_bench_database
PG_ROUTER_PORT=$(free_port)
SIGNALBOX_ADMIN_KEY=sk-sb-v1-benchmark-admin-000000 SIGNALBOX_DEMO_KEY=sk-sb-v1-benchmark-key-0000000000 "$BIN" serve --port "$PG_ROUTER_PORT" --drain-delay 0 --sim-url "http://127.0.0.1:$SIM_PORT" \
  --database-url "$PG_URL" --data-dir "$WORK/data-pg" --demo-credits 1000000 --log-level warning >"$WORK/router-pg.log" 2>&1 &
PG_ROUTER_PID=$!; pids+=($PG_ROUTER_PID)
wait_for "http://127.0.0.1:$PG_ROUTER_PORT/readyz"

cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream sim { server 127.0.0.1:$SIM_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://sim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_for "http://127.0.0.1:$NGINX_PORT/healthz"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {  # label url path key [model] [connections]
  local connections=${6:-$CONNECTIONS} threads=$THREADS
  [ "$connections" -lt "$threads" ] && threads=$connections
  BENCH_LABEL=$1 BENCH_PATH=$3 BENCH_KEY=$4 BENCH_MODEL=${5:-openai/gpt-4o-mini} \
    wrk -t"$threads" -c"$connections" -d"${DURATION}s" -s Benchmarks/post.lua "$2" 2>&1 >/dev/null | sed -n 's/^RESULT //p'
}

echo "warming up…" >&2
for port in "$ROUTER_PORT" "$PG_ROUTER_PORT"; do
  BENCH_LABEL=warmup BENCH_PATH=/api/v1/chat/completions BENCH_KEY=sk-sb-v1-benchmark-key-0000000000 \
    wrk -t1 -c4 -d2s -s Benchmarks/post.lua "http://127.0.0.1:$port" >/dev/null 2>&1
done
# Settlements and group-commit batches committed so far, from the node's /metrics.
settled() { curl -fs "http://127.0.0.1:$1/metrics" | awk '/^signalbox_ledger_settlements_total /{s=$2} /^signalbox_ledger_settlement_batches_total /{b=$2} END{printf "%d %d", s, b}'; }

direct=$(run direct "http://127.0.0.1:$SIM_PORT" /openai/v1/chat/completions "" gpt-4o-mini)
# One line per router run: the wrk result, then router CPU ticks and settlements/batches committed.
measure() {  # label port pid
  local before after settled_before settled_after result
  before=$(cpu_ticks "$3"); settled_before=$(settled "$2")
  result=$(run "$1" "http://127.0.0.1:$2" /api/v1/chat/completions sk-sb-v1-benchmark-key-0000000000)
  after=$(cpu_ticks "$3"); settled_after=$(settled "$2")
  echo "$result|$((after - before))|$settled_before|$settled_after"
}
: >"$WORK/runs"
for round in $(seq 1 "$ROUNDS"); do
  # Alternate which goes first, so neither always follows the other's burst.
  if [ $((round % 2)) = 1 ]; then order="sqlite pg"; else order="pg sqlite"; fi
  for which in $order; do
    if [ "$which" = sqlite ]; then measure router "$ROUTER_PORT" "$ROUTER_PID"; else measure router-pg "$PG_ROUTER_PORT" "$PG_ROUTER_PID"; fi >>"$WORK/runs"
  done
done
nginx=$(run nginx "http://127.0.0.1:$NGINX_PORT" /openai/v1/chat/completions "" gpt-4o-mini)
# Unloaded latency: one connection, so queueing does not hide what each hop adds.
direct1=$(run direct-1 "http://127.0.0.1:$SIM_PORT" /openai/v1/chat/completions "" gpt-4o-mini 1)
router1=$(run router-1 "http://127.0.0.1:$ROUTER_PORT" /api/v1/chat/completions sk-sb-v1-benchmark-key-0000000000 openai/gpt-4o-mini 1)
nginx1=$(run nginx-1 "http://127.0.0.1:$NGINX_PORT" /openai/v1/chat/completions "" gpt-4o-mini 1)
TICKS=$(getconf CLK_TCK)

python3 - "$direct" "$nginx" "$TICKS" "$DURATION" "$CONNECTIONS" "$direct1" "$router1" "$nginx1" "$WORK/runs" <<'PY'
import json, statistics, sys
direct, nginx = (json.loads(x) for x in sys.argv[1:3])
ticks, duration, connections = (int(x) for x in sys.argv[3:6])
direct1, router1, nginx1 = (json.loads(x) for x in sys.argv[6:9])
runs = {"router": [], "router-pg": []}
for line in open(sys.argv[9]):
    result, cpu, before, after = line.strip().split("|")
    result = json.loads(result)
    (s0, b0), (s1, b1) = ([int(v) for v in x.split()] for x in (before, after))
    result.update(cpu_us=int(cpu) / ticks * 1e6 / max(result["requests"], 1), settled=s1 - s0, batches=b1 - b0)
    runs[result["label"]].append(result)
def median(label, key):
    return statistics.median(r[key] for r in runs[label])
rounds = len(runs["router"])
print(f"Signalbox benchmark: {duration}s per target, {connections} connections, non-streamed chat completions; "
      f"routers: median of {rounds} alternating runs")
print(f"{'target':9} {'req/s':>10} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9} {'errors':>7}")
def row(r):
    print(f"{r['label']:9} {r['rps']:>10.1f} {r['p50_us']:>9} {r['p90_us']:>9} {r['p99_us']:>9} {r['errors'] + r['non2xx']:>7}")
row(direct)
for label in ("router", "router-pg"):
    row({"label": label, **{k: median(label, k) for k in ("rps", "p50_us", "p90_us", "p99_us")},
         "errors": sum(r["errors"] for r in runs[label]), "non2xx": sum(r["non2xx"] for r in runs[label])})
for r in (nginx, direct1, router1, nginx1):
    row(r)
print("router req/s per run: SQLite " + ", ".join(f"{r['rps']:.0f}" for r in runs["router"])
      + "; PostgreSQL " + ", ".join(f"{r['rps']:.0f}" for r in runs["router-pg"]))
print(f"router/nginx throughput: {median('router', 'rps') / nginx['rps']:.2f}x")
print(f"router CPU per request: {median('router', 'cpu_us'):.0f} µs (SQLite ledger), {median('router-pg', 'cpu_us'):.0f} µs (PostgreSQL ledger)")
print(f"router on PostgreSQL / router on SQLite throughput: {median('router-pg', 'rps') / median('router', 'rps'):.2f}x")
for name, label in (("SQLite", "router"), ("PostgreSQL", "router-pg")):
    settled, batches = sum(r["settled"] for r in runs[label]), sum(r["batches"] for r in runs[label])
    print(f"settlements committed, {name}: {settled / duration / rounds:.0f}/s in {batches / duration / rounds:.0f} transactions/s "
          f"(mean batch {settled / max(batches, 1):.1f})")
print(f"router added latency over direct, {connections} connections: p50 +{median('router', 'p50_us') - direct['p50_us']:.0f} µs, "
      f"p99 +{median('router', 'p99_us') - direct['p99_us']:.0f} µs")
print(f"router added latency over direct, 1 connection: p50 +{router1['p50_us'] - direct1['p50_us']} µs, p99 +{router1['p99_us'] - direct1['p99_us']} µs"
      f" (nginx adds p50 +{nginx1['p50_us'] - direct1['p50_us']} µs)")
PY
