#!/usr/bin/env bash
# The data plane against a static upstream, in one run (issue 14's harness):
#   - a static nginx answering every chat completion with a fixed OpenAI-style SSE stream
#     (6 events for the main figures; 2 and 102 content chunks for the cost of one chunk),
#   - nginx `proxy_pass` in front of it (a proxy that does no work),
#   - the router in front of it, on the embedded ledger, and on PostgreSQL for the ledger ratio,
# loaded by wrk with a Lua POST body. Prints requests/s, latency percentiles, router CPU per
# request (from the router's own /proc ticks) and per relayed chunk, and the added latency at
# one connection; then sweeps concurrency for nginx and the router and plots throughput and
# added latency against it (Docs/dataplane.png, matplotlib from PyPI).
#
# Usage: Benchmarks/dataplane.sh [seconds per run (10)] [connections (32)]
# Environment: SIGNALBOX_BIN (the release build by default), SIGNALBOX_BENCH_DATABASE_URL (a
# throwaway PostgreSQL otherwise), PLOT (default Docs/dataplane.png; empty for none).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
PLOT=${PLOT-Docs/dataplane.png}

command -v wrk >/dev/null && command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light
}
[ -z "$PLOT" ] || python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
WORK_PREFIX=signalbox-dataplane
source Benchmarks/common.sh
BIN=$(release_binary)
STATIC_PORT=$(free_port); NGINX_PORT=$(free_port); ROUTER_PORT=$(free_port); PG_ROUTER_PORT=$(free_port)

# The static answers: /mistral/… 6 events (role, 3 words, finish, usage) then [DONE]; /cohere/…
# 2 content chunks; /xai/… 102 content chunks. Models with one OpenAI-format endpoint each pick them.
python3 - "$WORK" "$STATIC_PORT" "$NGINX_PORT" <<'PY'
import json, sys
work, static_port, nginx_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def chunk(delta, finish=None, usage=None):
    body = {"id": "chatcmpl-static", "object": "chat.completion.chunk", "created": 1764460800, "model": "static",
            "system_fingerprint": "fp_static",
            "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage: body["usage"] = usage
    return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"
def answer(words):
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": f" word{i}"}) for i in range(words)]
    events.append(chunk({}, "stop"))
    events.append(chunk({}, usage={"prompt_tokens": 12, "completion_tokens": words, "total_tokens": 12 + words}))
    return "".join(events) + "data: [DONE]\n\n"
import os
for prefix, words in (("mistral", 3), ("cohere", 2), ("xai", 102)):
    os.makedirs(f"{work}/static/{prefix}/v1/chat", exist_ok=True)
    open(f"{work}/static/{prefix}/v1/chat/completions", "w").write(answer(words))
open(f"{work}/nginx.conf", "w").write(f"""worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{static_port};
    root {work}/static;
    # A POST to a static file is a 405; served as the file instead.
    location / {{ default_type text/event-stream; error_page 405 =200 $uri; }}
    location = /healthz {{ return 200 'ok'; }}
  }}
  upstream static {{ server 127.0.0.1:{static_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    location / {{
      proxy_pass http://static;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
PY
nginx -c "$WORK/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_for "http://127.0.0.1:$STATIC_PORT/healthz"
wait_for "http://127.0.0.1:$NGINX_PORT/healthz"

SIGNALBOX_DEMO_KEY=sk-sb-v1-benchmark-key-0000000000 "$BIN" serve --port "$ROUTER_PORT" --drain-delay 0 --sim-url "http://127.0.0.1:$STATIC_PORT" \
  --data-dir "$WORK/data" --demo-credits 1000000 --log-level warning >"$WORK/router.log" 2>&1 & ROUTER_PID=$!; pids+=($ROUTER_PID)
wait_for "http://127.0.0.1:$ROUTER_PORT/readyz" 60

start_bench_database
SIGNALBOX_ADMIN_KEY=sk-sb-v1-benchmark-admin-000000 SIGNALBOX_DEMO_KEY=sk-sb-v1-benchmark-key-0000000000 "$BIN" serve --port "$PG_ROUTER_PORT" --drain-delay 0 --sim-url "http://127.0.0.1:$STATIC_PORT" \
  --database-url "$PG_URL" --data-dir "$WORK/data-pg" --demo-credits 1000000 --log-level warning >"$WORK/router-pg.log" 2>&1 &
PG_ROUTER_PID=$!; pids+=($PG_ROUTER_PID)
wait_for "http://127.0.0.1:$PG_ROUTER_PORT/readyz" 60

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# run LABEL URL PATH KEY MODEL STREAM MAX_TOKENS CONNECTIONS [PID]: one JSON line, with the
# router's CPU ticks over the run when PID is given.
run() {
  local connections=$8 threads=2 before=0 after=0 result
  [ "$connections" -lt "$threads" ] && threads=$connections
  [ -n "${9:-}" ] && before=$(cpu_ticks "$9")
  result=$(BENCH_LABEL=$1 BENCH_PATH=$3 BENCH_KEY=$4 BENCH_MODEL=$5 BENCH_STREAM=$6 BENCH_MAX_TOKENS=$7 \
    wrk -t"$threads" -c"$connections" -d"${DURATION}s" -s Benchmarks/post.lua "$2" 2>&1 >/dev/null | sed -n 's/^RESULT //p')
  [ -n "${9:-}" ] && after=$(cpu_ticks "$9")
  echo "${result%\}}, \"cpu_ticks\": $((after - before)), \"connections\": $connections}"
}
STATIC="http://127.0.0.1:$STATIC_PORT"; NGINX="http://127.0.0.1:$NGINX_PORT"
ROUTER="http://127.0.0.1:$ROUTER_PORT"; PG_ROUTER="http://127.0.0.1:$PG_ROUTER_PORT"
UPSTREAM_PATH=/mistral/v1/chat/completions; ROUTE=/api/v1/chat/completions; KEY=sk-sb-v1-benchmark-key-0000000000
MODEL=mistralai/mistral-medium-3

echo "warming up…" >&2
for url in "$ROUTER" "$PG_ROUTER"; do
  for model in "$MODEL" cohere/command-a x-ai/grok-4.3; do
    run warmup "$url" "$ROUTE" "$KEY" "$model" true 200 4 >/dev/null
  done
done

: >"$WORK/runs"
{
  run direct "$STATIC" "$UPSTREAM_PATH" "" static false 16 "$CONNECTIONS"
  run nginx "$NGINX" "$UPSTREAM_PATH" "" static false 16 "$CONNECTIONS"
  run router "$ROUTER" "$ROUTE" "$KEY" "$MODEL" false 16 "$CONNECTIONS" "$ROUTER_PID"
  run router-streamed "$ROUTER" "$ROUTE" "$KEY" "$MODEL" true 16 "$CONNECTIONS" "$ROUTER_PID"
  run router-pg "$PG_ROUTER" "$ROUTE" "$KEY" "$MODEL" false 16 "$CONNECTIONS" "$PG_ROUTER_PID"
  run router-2-chunks "$ROUTER" "$ROUTE" "$KEY" cohere/command-a true 200 "$CONNECTIONS" "$ROUTER_PID"
  run router-102-chunks "$ROUTER" "$ROUTE" "$KEY" x-ai/grok-4.3 true 200 "$CONNECTIONS" "$ROUTER_PID"
  run direct-1 "$STATIC" "$UPSTREAM_PATH" "" static false 16 1
  run nginx-1 "$NGINX" "$UPSTREAM_PATH" "" static false 16 1
  run router-1 "$ROUTER" "$ROUTE" "$KEY" "$MODEL" false 16 1 "$ROUTER_PID"
  run router-streamed-1 "$ROUTER" "$ROUTE" "$KEY" "$MODEL" true 16 1 "$ROUTER_PID"
} >>"$WORK/runs"

# Time to first byte at half of the streamed peak: wrk's connections pause between requests so
# that together they send half the router-streamed rate measured above, while a probe sends
# streamed requests one at a time through the router and directly to the upstream, timing the
# response head and the first data event of each.
HALF_DELAY_MS=$(python3 - "$WORK/runs" "$CONNECTIONS" <<'PY'
import json, sys
runs = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
peak, connections = runs["router-streamed"]["rps"], int(sys.argv[2])
# Each connection's cycle at half the peak, less the time a request takes at that load (~the 1-connection p50).
print(max(1, round(connections * 1000 / (peak / 2) - runs["router-streamed-1"]["p50_us"] / 1000)))
PY
)
BENCH_DELAY_MS=$HALF_DELAY_MS run router-streamed-half "$ROUTER" "$ROUTE" "$KEY" "$MODEL" true 16 "$CONNECTIONS" "$ROUTER_PID" \
  >>"$WORK/runs" & HALF_LOAD=$!
sleep 1
python3 - "$ROUTER_PORT" "$STATIC_PORT" "$KEY" "$MODEL" "$UPSTREAM_PATH" "$((DURATION - 2))" >"$WORK/ttfb" <<'PY'
import http.client, json, sys, time
router_port, static_port, key, model, upstream_path, seconds = sys.argv[1:7]
body = json.dumps({"model": model, "max_tokens": 16, "stream": True,
                   "messages": [{"role": "user", "content": "Benchmark request: say something short."}]})
targets = {"router": (int(router_port), "/api/v1/chat/completions", {"Authorization": f"Bearer {key}"}),
           "direct": (int(static_port), upstream_path, {})}
samples = {name: {"head": [], "data": []} for name in targets}
connections = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for name, (port, _, _) in targets.items()}
deadline = time.monotonic() + int(seconds)
while time.monotonic() < deadline:
    for name, (port, path, headers) in targets.items():
        connection = connections[name]
        started = time.perf_counter()
        connection.request("POST", path, body, {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        head = time.perf_counter()
        seen = b""
        while b"data: " not in seen:
            chunk = response.read1(65536)
            if not chunk: break
            seen += chunk
        data = time.perf_counter()
        response.read()
        if response.status != 200 or b"data: " not in seen: sys.exit(f"{name}: {response.status} {seen[:200]!r}")
        samples[name]["head"].append((head - started) * 1e6)
        samples[name]["data"].append((data - started) * 1e6)
def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]
print(json.dumps({name: {kind: {"p50_us": percentile(v, 50), "p99_us": percentile(v, 99), "samples": len(v)}
                         for kind, v in figures.items()} for name, figures in samples.items()}))
PY
wait "$HALF_LOAD"

if [ -n "$PLOT" ]; then
  for connections in 1 2 4 8 16 32 64 128; do
    run "sweep-direct" "$STATIC" "$UPSTREAM_PATH" "" static false 16 "$connections"
    run "sweep-nginx" "$NGINX" "$UPSTREAM_PATH" "" static false 16 "$connections"
    run "sweep-router" "$ROUTER" "$ROUTE" "$KEY" "$MODEL" false 16 "$connections" "$ROUTER_PID"
  done >>"$WORK/runs"
fi

python3 - "$WORK/runs" "$(getconf CLK_TCK)" "$DURATION" "$CONNECTIONS" "$PLOT" "$WORK/ttfb" <<'PY'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ticks, duration, connections, plot = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ttfb = json.load(open(sys.argv[6]))
runs = {r["label"]: r for r in lines if not r["label"].startswith("sweep")}
def cpu_us(r): return r["cpu_ticks"] / ticks * 1e6 / max(r["requests"], 1)
print(f"Data plane against a static upstream: {duration}s per run, {connections} connections unless noted")
print(f"{'target':19} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'errors':>7} {'router CPU/req':>15}")
for label in ("direct", "nginx", "router", "router-streamed", "router-pg", "router-2-chunks", "router-102-chunks",
              "direct-1", "nginx-1", "router-1", "router-streamed-1"):
    r = runs[label]
    cpu = f"{cpu_us(r):.0f} µs" if r["cpu_ticks"] else ""
    print(f"{label:19} {r['rps']:>9.0f} {r['p50_us']:>8} {r['p99_us']:>8} {r['errors'] + r['non2xx']:>7} {cpu:>15}")
nginx, router = runs["nginx"], runs["router"]
print(f"router / nginx throughput, non-streamed: {router['rps'] / nginx['rps']:.3f}x; streamed: {runs['router-streamed']['rps'] / nginx['rps']:.3f}x")
print(f"router CPU per request: non-streamed {cpu_us(router):.0f} µs, streamed {cpu_us(runs['router-streamed']):.0f} µs")
per_chunk = (cpu_us(runs["router-102-chunks"]) - cpu_us(runs["router-2-chunks"])) / 100
print(f"router CPU per relayed chunk: {per_chunk:.1f} µs ((102-chunk − 2-chunk CPU per request) / 100)")
print(f"PostgreSQL ledger / embedded: {runs['router-pg']['rps'] / router['rps']:.2f}x")
print(f"added p50 at 1 connection: router +{runs['router-1']['p50_us'] - runs['direct-1']['p50_us']} µs, "
      f"streamed +{runs['router-streamed-1']['p50_us'] - runs['direct-1']['p50_us']} µs, nginx +{runs['nginx-1']['p50_us'] - runs['direct-1']['p50_us']} µs")
half = runs["router-streamed-half"]
print(f"at half the streamed peak ({half['rps']:.0f} of {runs['router-streamed']['rps']:.0f} req/s, probe one request at a time):")
for kind, what in (("head", "response head (first byte)"), ("data", "first data event")):
    router, direct = ttfb["router"][kind], ttfb["direct"][kind]
    print(f"  {what}: router p50 {router['p50_us']:.0f} µs, p99 {router['p99_us']:.0f} µs; direct p50 {direct['p50_us']:.0f} µs, "
          f"p99 {direct['p99_us']:.0f} µs; added p99 +{router['p99_us'] - direct['p99_us']:.0f} µs ({router['samples']} samples)")
sweep = [r for r in lines if r["label"].startswith("sweep")]
if plot and sweep:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = {}
    for r in sweep: series.setdefault(r["label"][6:], []).append(r)
    direct = {r["connections"]: r for r in series.get("direct", [])}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in ("nginx", "router"):
        points = sorted(series[name], key=lambda r: r["connections"])
        label = "nginx proxy_pass" if name == "nginx" else "Signalbox (non-streamed, embedded ledger)"
        left.plot([r["connections"] for r in points], [r["rps"] for r in points], marker="o", label=label)
        right.plot([r["connections"] for r in points], [(r["p50_us"] - direct[r["connections"]]["p50_us"]) / 1000 for r in points],
                   marker="o", label=label)
    for axis, title, unit in ((left, "Throughput", "requests/s"), (right, "Added p50 latency over a direct call", "ms")):
        axis.set_xscale("log", base=2); axis.set_xlabel("concurrent connections"); axis.set_ylabel(unit)
        axis.set_title(title); axis.grid(True, alpha=0.3); axis.legend()
    figure.suptitle("Static OpenAI-style SSE upstream, 2-core machine, one run")
    figure.tight_layout()
    figure.savefig(plot, dpi=110)
    print(f"plot written to {plot}")
    print("sweep (connections: nginx req/s, router req/s, router added p50 µs):")
    for r in sorted(series["router"], key=lambda r: r["connections"]):
        n = next(x for x in series["nginx"] if x["connections"] == r["connections"])
        print(f"  {r['connections']:>4}: {n['rps']:>9.0f} {r['rps']:>9.0f} {r['p50_us'] - direct[r['connections']]['p50_us']:>8}")
PY
