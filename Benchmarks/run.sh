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
# Usage: Benchmarks/run.sh [seconds per run (10)] [connections (32)]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
THREADS=2

command -v wrk >/dev/null && command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light
}
swift build -c release --product signalbox >/dev/null
BIN="$(swift build -c release --show-bin-path)/signalbox"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
SIM_PORT=$(free_port); ROUTER_PORT=$(free_port); NGINX_PORT=$(free_port)
WORK=$(mktemp -d /tmp/signalbox-bench.XXXXXX)
pids=()
pg_stop() { :; }
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; pg_stop; rm -rf "$WORK"; }
trap cleanup EXIT

wait_for() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# The upstream: no artificial latency, so the comparison measures the proxies.
"$BIN" sim-provider --port "$SIM_PORT" --first-token-ms 0 --inter-token-ms 0 >"$WORK/sim.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$SIM_PORT/healthz"

SIGNALBOX_DEMO_KEY=sk-sb-v1-benchmark "$BIN" serve --port "$ROUTER_PORT" --sim-url "http://127.0.0.1:$SIM_PORT" \
  --data-dir "$WORK/data" --demo-credits 1000000 --log-level warning >"$WORK/router.log" 2>&1 & ROUTER_PID=$!; pids+=($ROUTER_PID)
wait_for "http://127.0.0.1:$ROUTER_PORT/readyz"

# The PostgreSQL ledger: a throwaway server (as the postgres user when we are root) unless one is given.
for dir in /usr/lib/postgresql/*/bin; do [ -d "$dir" ] && PATH="$PATH:$dir"; done
PG_URL=${SIGNALBOX_BENCH_DATABASE_URL:-}
if [ -z "$PG_URL" ]; then
  PG_PORT=$(free_port)
  chmod 755 "$WORK"; mkdir -p "$WORK/pg" && chown postgres "$WORK/pg" 2>/dev/null || true
  as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
  as_pg "initdb -D '$WORK/pg/data' -U postgres --auth=trust >/dev/null"
  as_pg "pg_ctl -D '$WORK/pg/data' -l '$WORK/pg/log' -w -o \"-p $PG_PORT -k '$WORK/pg' -c listen_addresses=127.0.0.1\" start >/dev/null"
  pg_stop() { as_pg "pg_ctl -D '$WORK/pg/data' -m fast stop" >/dev/null 2>&1 || true; }
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi
PG_ROUTER_PORT=$(free_port)
SIGNALBOX_DEMO_KEY=sk-sb-v1-benchmark "$BIN" serve --port "$PG_ROUTER_PORT" --sim-url "http://127.0.0.1:$SIM_PORT" \
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
  BENCH_LABEL=warmup BENCH_PATH=/api/v1/chat/completions BENCH_KEY=sk-sb-v1-benchmark \
    wrk -t1 -c4 -d2s -s Benchmarks/post.lua "http://127.0.0.1:$port" >/dev/null 2>&1
done
# Settlements and group-commit batches committed so far, from the node's /metrics.
settled() { curl -fs "http://127.0.0.1:$1/metrics" | awk '/^signalbox_ledger_settlements_total /{s=$2} /^signalbox_ledger_settlement_batches_total /{b=$2} END{printf "%d %d", s, b}'; }

direct=$(run direct "http://127.0.0.1:$SIM_PORT" /openai/v1/chat/completions "" gpt-4o-mini)
before=$(cpu_ticks "$ROUTER_PID"); settled_before=$(settled "$ROUTER_PORT")
router=$(run router "http://127.0.0.1:$ROUTER_PORT" /api/v1/chat/completions sk-sb-v1-benchmark)
after=$(cpu_ticks "$ROUTER_PID"); settled_after=$(settled "$ROUTER_PORT")
pg_before=$(cpu_ticks "$PG_ROUTER_PID"); pg_settled_before=$(settled "$PG_ROUTER_PORT")
router_pg=$(run router-pg "http://127.0.0.1:$PG_ROUTER_PORT" /api/v1/chat/completions sk-sb-v1-benchmark)
pg_after=$(cpu_ticks "$PG_ROUTER_PID"); pg_settled_after=$(settled "$PG_ROUTER_PORT")
nginx=$(run nginx "http://127.0.0.1:$NGINX_PORT" /openai/v1/chat/completions "" gpt-4o-mini)
# Unloaded latency: one connection, so queueing does not hide what each hop adds.
direct1=$(run direct-1 "http://127.0.0.1:$SIM_PORT" /openai/v1/chat/completions "" gpt-4o-mini 1)
router1=$(run router-1 "http://127.0.0.1:$ROUTER_PORT" /api/v1/chat/completions sk-sb-v1-benchmark openai/gpt-4o-mini 1)
nginx1=$(run nginx-1 "http://127.0.0.1:$NGINX_PORT" /openai/v1/chat/completions "" gpt-4o-mini 1)
TICKS=$(getconf CLK_TCK)

python3 - "$direct" "$router" "$nginx" "$before" "$after" "$TICKS" "$DURATION" "$CONNECTIONS" "$direct1" "$router1" "$nginx1" \
  "$router_pg" "$pg_before" "$pg_after" "$settled_before" "$settled_after" "$pg_settled_before" "$pg_settled_after" <<'PY'
import json, sys
direct, router, nginx = (json.loads(x) for x in sys.argv[1:4])
before, after, ticks, duration, connections = (int(x) for x in sys.argv[4:9])
direct1, router1, nginx1 = (json.loads(x) for x in sys.argv[9:12])
router_pg = json.loads(sys.argv[12])
pg_before, pg_after = int(sys.argv[13]), int(sys.argv[14])
(s0, b0), (s1, b1), (p0, q0), (p1, q1) = ([int(v) for v in x.split()] for x in sys.argv[15:19])
print(f"Signalbox benchmark: {duration}s per target, {connections} connections, non-streamed chat completions")
print(f"{'target':8} {'req/s':>10} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9} {'errors':>7}")
for r in (direct, router, router_pg, nginx, direct1, router1, nginx1):
    print(f"{r['label']:8} {r['rps']:>10.1f} {r['p50_us']:>9} {r['p90_us']:>9} {r['p99_us']:>9} {r['errors'] + r['non2xx']:>7}")
cpu_us = (after - before) / ticks * 1e6 / max(router['requests'], 1)
print(f"router/nginx throughput: {router['rps'] / nginx['rps']:.2f}x")
print(f"router CPU per request: {cpu_us:.0f} µs (SQLite ledger), "
      f"{(pg_after - pg_before) / ticks * 1e6 / max(router_pg['requests'], 1):.0f} µs (PostgreSQL ledger)")
print(f"router on PostgreSQL / router on SQLite throughput: {router_pg['rps'] / router['rps']:.2f}x")
for name, settled, batches in (("SQLite", s1 - s0, b1 - b0), ("PostgreSQL", p1 - p0, q1 - q0)):
    print(f"settlements committed, {name}: {settled / duration:.0f}/s in {batches / duration:.0f} transactions/s "
          f"(mean batch {settled / max(batches, 1):.1f})")
print(f"router added latency over direct, {connections} connections: p50 +{router['p50_us'] - direct['p50_us']} µs, p99 +{router['p99_us'] - direct['p99_us']} µs")
print(f"router added latency over direct, 1 connection: p50 +{router1['p50_us'] - direct1['p50_us']} µs, p99 +{router1['p99_us'] - direct1['p99_us']} µs"
      f" (nginx adds p50 +{nginx1['p50_us'] - direct1['p50_us']} µs)")
PY
