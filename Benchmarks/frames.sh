#!/usr/bin/env bash
# The async frames one streamed chat completion allocates, largest first in call order: what an
# open stream keeps in memory. Swift allocates each async call's frame in its task's allocator,
# and a task keeps the slabs it grew to until it ends, so a long stream holds the deepest frame
# chain its tasks ever reached (Docs/performance.md, "Many streams at once").
#
# Starts the simulated provider and the release router, sends one streamed request to warm up,
# attaches gdb with a breakpoint on the task allocator for allocations over MIN_BYTES, sends a
# second request, and prints each allocation's size and the function that asked for it (the
# caller allocates its callee's frame). Background tasks (the ledger's upkeep) are left out.
#
# Usage: Benchmarks/frames.sh        Environment: MIN_BYTES (400), SIGNALBOX_BIN (release build)
set -euo pipefail
cd "$(dirname "$0")/.."
MIN_BYTES=${MIN_BYTES:-400}
command -v gdb >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gdb; }
WORK_PREFIX=signalbox-frames
source Benchmarks/common.sh
BIN=$(release_binary)
SIM_PORT=$(free_port); ROUTER_PORT=$(free_port)

"$BIN" sim-provider --port "$SIM_PORT" --first-token-ms 0 --inter-token-ms 0 >"$WORK/sim.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$SIM_PORT/healthz"
SIGNALBOX_DEMO_KEY=sk-sb-v1-frames-key-0000000000 "$BIN" serve --port "$ROUTER_PORT" --drain-delay 0 --sim-url "http://127.0.0.1:$SIM_PORT" \
  --data-dir "$WORK/data" --demo-credits 1000 --log-level warning >"$WORK/router.log" 2>&1 & ROUTER_PID=$!; pids+=($ROUTER_PID)
wait_for "http://127.0.0.1:$ROUTER_PORT/readyz"

chat() {
  curl -fsS -o /dev/null -H "Authorization: Bearer sk-sb-v1-frames-key-0000000000" -H "Content-Type: application/json" \
    -d '{"model":"openai/gpt-4o-mini","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"hi"}]}' \
    "http://127.0.0.1:$ROUTER_PORT/api/v1/chat/completions"
}
chat  # warm-up: caches, pools, the lease

# StackAllocator::alloc(this, size): the size is the second argument.
cat >"$WORK/gdb.cmds" <<GDB
set pagination off
set confirm off
break swift::StackAllocator<984ul, &swift::TaskAllocatorSlabMetadata, swift::TaskAllocatorConfiguration>::alloc(unsigned long) if \$rsi > $MIN_BYTES
commands
silent
printf "FRAME %d\n", \$rsi
bt 2
continue
end
continue
GDB
timeout 60 gdb -p "$ROUTER_PID" -batch -x "$WORK/gdb.cmds" >"$WORK/gdb.out" 2>&1 & GDB_PID=$!
for _ in $(seq 1 100); do grep -q "^Continuing" "$WORK/gdb.out" 2>/dev/null && break; sleep 0.1; done
chat
sleep 1
kill -INT "$GDB_PID" 2>/dev/null || true
wait "$GDB_PID" 2>/dev/null || true

python3 - "$WORK/gdb.out" <<'PY'
import re, subprocess, sys
records, size = [], None
for line in open(sys.argv[1], errors="replace"):
    if match := re.match(r"FRAME (\d+)", line):
        size = int(match.group(1))
    elif line.startswith("#1") and size is not None:
        records.append((size, line.strip()))
        size = None
names = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(r for _, r in records),
                       capture_output=True, text=True).stdout.splitlines()
shown = 0
for (size, _), name in zip(records, names):
    if "LedgerUpkeep" in name: continue
    name = re.sub(r"^#1\s+(0x[0-9a-f]+ in )?", "", name)
    name = re.sub(r"\s*\(.*?\) at .*?Sources/", "  at ", name)
    print(f"{size:>7}  {name[:160]}")
    shown += 1
if not shown: sys.exit("no frames recorded: gdb could not attach or set the breakpoint")
PY
