#!/usr/bin/env bash
# Memory with many streams open at once: STREAMS concurrent streamed chat completions (default
# 10,000) through one router on the embedded ledger, from clients spread over 127.0.0.x addresses,
# to the simulated provider sending one token a second. Prints the router's resident memory before,
# at the peak (every stream open and receiving), and 3 s and 12 s after they all ended (the node
# gives freed memory back every 10 s), with how many streams
# were open at once, how many completed, and the router's CPU time; then the same again (a second
# wave), to tell memory the router keeps from memory it reuses.
#
# Usage: Benchmarks/streams.sh [streams (10000)] [tokens per answer (20)] [waves (2)]
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS=${1:-10000}
TOKENS=${2:-20}
WAVES=${3:-2}
# The router holds two descriptors per stream (client and upstream): raise the limit as far as allowed.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ $((STREAMS * 2 + 200)) -gt "$(ulimit -n)" ]; then
  echo "note: $STREAMS streams need $((STREAMS * 2 + 200)) descriptors in the router; this shell allows $(ulimit -n)" >&2
fi
WORK_PREFIX=signalbox-streams
source Benchmarks/common.sh
BIN=$(release_binary)
SIM_PORT=$(free_port); ROUTER_PORT=$(free_port)

"$BIN" sim-provider --port "$SIM_PORT" --first-token-ms 1000 --inter-token-ms 1000 >"$WORK/sim.log" 2>&1 & pids+=($!)
wait_for "http://127.0.0.1:$SIM_PORT/healthz"
SIGNALBOX_DEMO_KEY=sk-sb-v1-streams-key-0000000000 "$BIN" serve --port "$ROUTER_PORT" --drain-delay 0 --sim-url "http://127.0.0.1:$SIM_PORT" \
  --data-dir "$WORK/data" --demo-credits 1000000 --first-token-timeout 120 --stall-timeout 60 --log-level warning \
  >"$WORK/router.log" 2>&1 & ROUTER_PID=$!; pids+=($ROUTER_PID)
wait_for "http://127.0.0.1:$ROUTER_PORT/readyz"

python3 - "$ROUTER_PORT" "$ROUTER_PID" "$STREAMS" "$TOKENS" "$WAVES" <<'PY'
import asyncio, json, sys, time
port, pid, streams, tokens, waves = (int(argument) for argument in sys.argv[1:6])

def rss_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
def cpu_seconds():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100

body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True, "max_tokens": tokens,
                   "messages": [{"role": "user", "content": "Write a long answer, please, slowly."}]}).encode()
request = (f"POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-sb-v1-streams-key-0000000000\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
state = {"open": 0, "peak_open": 0, "receiving": 0, "done": 0, "failed": 0, "errors": {}}

async def one(index):
    source = f"127.0.{1 + index // 250 % 250}.{1 + index % 250}"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError as error:
        state["failed"] += 1; state["errors"][str(error)[:60]] = state["errors"].get(str(error)[:60], 0) + 1
        return
    state["open"] += 1; state["peak_open"] = max(state["peak_open"], state["open"])
    receiving = False
    try:
        writer.write(request)
        status = await reader.readline()
        if b" 200 " not in status:
            state["failed"] += 1; state["errors"][status.decode()[:60]] = state["errors"].get(status.decode()[:60], 0) + 1
            return
        while True:
            line = await reader.readline()
            if not line: break
            if line.startswith(b"data: ") and not receiving and b"content" in line:
                receiving = True; state["receiving"] += 1
            if line.startswith(b"data: [DONE]"):
                state["done"] += 1
                break
    except OSError as error:
        state["failed"] += 1; state["errors"][str(error)[:60]] = state["errors"].get(str(error)[:60], 0) + 1
    finally:
        if receiving: state["receiving"] -= 1
        state["open"] -= 1
        writer.close()

async def wave():
    before, cpu_before = rss_mib(), cpu_seconds()
    started = time.monotonic()
    tasks = []
    for index in range(streams):
        tasks.append(asyncio.create_task(one(index)))
        if index % 500 == 499: await asyncio.sleep(0.05)  # a ramp, not a SYN flood
    peak_rss, peak_receiving, at = before, 0, 0.0
    while not all(task.done() for task in tasks):
        await asyncio.sleep(0.5)
        rss = rss_mib()
        if state["receiving"] >= peak_receiving:
            peak_receiving, at = state["receiving"], time.monotonic() - started
        peak_rss = max(peak_rss, rss)
    elapsed = time.monotonic() - started
    await asyncio.sleep(3)
    after = rss_mib()
    await asyncio.sleep(9)  # past the node's allocator trim (every 10 s)
    settled = rss_mib()
    print(f"streams: {streams} asked, {state['peak_open']} connections open at the peak, "
          f"{peak_receiving} receiving tokens at once (at {at:.1f} s), {state['done']} completed, {state['failed']} failed "
          f"{state['errors'] or ''}")
    print(f"router RSS: {before:.0f} MiB before, {peak_rss:.0f} MiB at the peak, {after:.0f} MiB 3 s and {settled:.0f} MiB 12 s "
          f"after the last stream ended; {(peak_rss - before) * 1024 / max(state['peak_open'], 1):.0f} KiB per open stream")
    print(f"router CPU: {cpu_seconds() - cpu_before:.1f} s over {elapsed:.1f} s")

async def main():
    # Waves: memory a finished wave left behind and the next one does not reuse is retained.
    for number in range(1, waves + 1):
        if waves > 1: print(f"wave {number}:")
        state.update({"open": 0, "peak_open": 0, "receiving": 0, "done": 0, "failed": 0, "errors": {}})
        await wave()

asyncio.run(main())
PY
