#!/usr/bin/env bash
# Instructions the router executes per request, counted by callgrind on a fixed workload:
# repeatable whatever else the machine is doing, unlike timings. The router runs under valgrind
# with the simulated provider outside it (so only the router is counted), on the embedded ledger.
# After a warm-up, it counts REQUESTS non-streamed and then REQUESTS streamed chat completions of
# 16 tokens, sent one at a time over one keep-alive connection, and prints instructions per
# request for each, with the share of each part of the program (Swift module, or shared library).
# Then REQUESTS/2 streamed answers of 2 tokens and as many of 102 give the cost of one relayed
# chunk: the difference per request divided by the difference in events.
#
# Usage: Benchmarks/callgrind.sh [--check BASELINE.json] [--write BASELINE.json]
#   --check: fail (exit 1) when a figure rose more than 20% over the baseline.
#   --write: record the figures as the new baseline.
# Environment: REQUESTS (default 200), SIGNALBOX_BIN (default: the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-200}
CHECK=""; WRITE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --check) CHECK=$2; shift 2 ;;
    --write) WRITE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v valgrind >/dev/null && command -v cc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind gcc; }
WORK_PREFIX=signalbox-callgrind
source Benchmarks/common.sh
SIGNALBOX_BIN=$(release_binary)
SIM_PORT=$(free_port); ROUTER_PORT=$(free_port)

# Valgrind 3.19 cannot read the DWARF 5 the Swift toolchain writes; the symbol table is all
# callgrind needs to name functions, so it runs a copy without debug info.
BIN="$WORK/signalbox"
objcopy --strip-debug "$SIGNALBOX_BIN" "$BIN"
# Valgrind 3.19 also crashes when a program's sigsuspend mask is read-only, as libdispatch's is
# (it runs an async main): a preloaded sigsuspend hands the kernel a copy on the stack.
cat >"$WORK/sigsuspend.c" <<'C'
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
int sigsuspend(const sigset_t *mask) { sigset_t copy = *mask; return (int)syscall(SYS_rt_sigsuspend, &copy, 8); }
C
cc -shared -fPIC -O2 -o "$WORK/sigsuspend.so" "$WORK/sigsuspend.c"

"$BIN" sim-provider --port "$SIM_PORT" --first-token-ms 0 --inter-token-ms 0 --answer-tokens 200 >"$WORK/sim.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$SIM_PORT/healthz" 20

# Counting is off until the workload starts (--instr-atstart=no): start-up is not measured.
SIGNALBOX_DEMO_KEY=sk-sb-v1-callgrind-key-0000000000 LD_PRELOAD="$WORK/sigsuspend.so" valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$WORK/callgrind.out" "$BIN" serve --port "$ROUTER_PORT" --drain-delay 0 \
  --sim-url "http://127.0.0.1:$SIM_PORT" --data-dir "$WORK/data" --demo-credits 1000000 --log-level warning \
  >"$WORK/router.log" 2>&1 & ROUTER_PID=$!; pids+=($ROUTER_PID)
wait_for "http://127.0.0.1:$ROUTER_PORT/readyz" 180

python3 - "$ROUTER_PORT" "$ROUTER_PID" "$REQUESTS" "$WORK" "$CHECK" "$WRITE" <<'PY'
import http.client, json, os, re, subprocess, sys, collections
port, pid, requests, work, check, write = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]

connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
def chat(stream, tokens=16):
    body = json.dumps({"model": "openai/gpt-4o-mini", "max_tokens": tokens, "stream": stream,
                       "messages": [{"role": "user", "content": "Benchmark request: say something short."}]})
    connection.request("POST", "/api/v1/chat/completions", body,
                       {"Authorization": "Bearer sk-sb-v1-callgrind-key-0000000000", "Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        sys.exit(f"request failed: {response.status} {data[:300]!r}")
    return data

def control(*args):
    subprocess.run(["callgrind_control", *args, pid], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

for stream in (False, True):  # warm-up: the key cache, connection pools, the lease, lazy initialisation
    for _ in range(50): chat(stream)
control("-i", "on")
figures = {}
# The answer is as long as max_tokens (the simulator's --answer-tokens is larger): 16 tokens for
# the two main figures; 2 and 102 for the cost of one relayed chunk, which is the difference
# between them divided by the difference in events.
workloads = (("non_streamed", False, 16, requests), ("streamed", True, 16, requests),
             ("streamed_2_tokens", True, 2, requests // 2), ("streamed_102_tokens", True, 102, requests // 2))
for label, stream, tokens, count in workloads:
    control("-z")
    chunks = 0
    for _ in range(count):
        chunks += chat(stream, tokens).count(b"data: ")
    control("-d", label)
    figures[label] = {"chunks_per_request": chunks / count if stream else 0, "requests": count}
control("-i", "off")

def read_dump(number):
    # Each `callgrind_control -d` writes the next callgrind.out.<n>, in order.
    return open(os.path.join(work, f"callgrind.out.{number}"), errors="replace").read()

def module_of(symbol, obj):
    match = re.match(r"\$s(\d+)", symbol)
    if match:
        length = int(match.group(1))
        start = match.end()
        return symbol[start:start + length]
    base = os.path.basename(obj)
    return base.split(".so")[0] if base else "?"

def parse(text):
    """Self cost (Ir) per part of the program, from a callgrind dump (name compression aware)."""
    names, objects = {}, {}
    total = 0
    parts = collections.Counter()
    functions = collections.Counter()
    current_obj, current_fn = "", ""
    in_call = False
    def resolve(table, value):
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m: return value
        if m.group(2) is not None: table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "?")
    for line in text.splitlines():
        if line.startswith("ob="): current_obj = resolve(objects, line[3:])
        elif line.startswith("fn="): current_fn = resolve(names, line[3:])
        elif line.startswith(("cob=",)): resolve(objects, line[4:])
        elif line.startswith(("cfn=", "cfi=", "cfl=")):
            if line.startswith("cfn="): resolve(names, line[4:])
        elif line.startswith("calls="): in_call = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            fields = line.split()
            if in_call:  # the inclusive cost of a call line is not self cost
                in_call = False
                continue
            if len(fields) >= 2:
                cost = int(fields[1])
                total += cost
                parts[module_of(current_fn, current_obj)] += cost
                functions[current_fn] += cost
    return total, parts, functions

def demangle(symbols):
    try:
        result = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(symbols),
                                capture_output=True, text=True, check=True)
        return result.stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return symbols

for number, label in enumerate(figures, start=1):
    total, parts, functions = parse(read_dump(number))
    count = figures[label]["requests"]
    figures[label]["instructions_per_request"] = total // count
    figures[label]["parts"] = {name: cost // count for name, cost in parts.most_common(12)}
    top = functions.most_common(int(os.environ.get("TOP_FUNCTIONS", "15")))
    figures[label]["functions"] = list(zip(demangle([name for name, _ in top]), [cost // count for _, cost in top]))
short, long = figures.pop("streamed_2_tokens"), figures.pop("streamed_102_tokens")
per_chunk = (long["instructions_per_request"] - short["instructions_per_request"]) / (long["chunks_per_request"] - short["chunks_per_request"])
figures["per_streamed_chunk"] = {"instructions_per_request": int(per_chunk), "chunks_per_request": 0, "parts": {}, "functions": [],
                                 "note": f"{short['chunks_per_request']:.0f} vs {long['chunks_per_request']:.0f} events"}

for label, figure in figures.items():
    if label == "per_streamed_chunk":
        print(f"per streamed chunk: {figure['instructions_per_request']:,} instructions ({figure['note']} per request)")
        continue
    print(f"{label}: {figure['instructions_per_request']:,} instructions per request"
          + (f" ({figure['chunks_per_request']:.1f} SSE events each)" if figure["chunks_per_request"] else ""))
    print("  by part of the program (self cost):")
    for name, cost in figure["parts"].items():
        print(f"    {name:28} {cost:>12,}  {100 * cost / figure['instructions_per_request']:5.1f} %")
    print("  by function (self cost):")
    for name, cost in figure["functions"]:
        print(f"    {cost:>10,}  {100 * cost / figure['instructions_per_request']:5.1f} %  {name[:150]}")

if write:
    with open(write, "w") as handle:
        json.dump({label: {"instructions_per_request": f["instructions_per_request"]} for label, f in figures.items()},
                  handle, indent=2)
        handle.write("\n")
    print(f"baseline written to {write}")
if check:
    baseline = json.load(open(check))
    failed = False
    for label, figure in figures.items():
        if label not in baseline: continue
        before = baseline[label]["instructions_per_request"]
        now = figure["instructions_per_request"]
        change = (now - before) / before
        verdict = "FAIL" if change > 0.20 else "ok"
        failed |= change > 0.20
        print(f"{label}: {now:,} vs baseline {before:,} ({change:+.1%}) {verdict}")
    sys.exit(1 if failed else 0)
PY
