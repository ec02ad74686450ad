# Shared by the benchmark scripts (sourced, not run): the release build, free ports, a scratch
# directory, the processes to stop on exit, and waiting for a URL to answer.
# Before sourcing, set WORK_PREFIX (the scratch directory's name). KEEP_WORK=1 keeps it.

# The release build of the router, unless SIGNALBOX_BIN names one.
release_binary() {
  if [ -z "${SIGNALBOX_BIN:-}" ]; then
    swift build -c release --product signalbox >/dev/null
    SIGNALBOX_BIN="$(swift build -c release --show-bin-path)/signalbox"
  fi
  echo "$SIGNALBOX_BIN"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

WORK=$(mktemp -d "/tmp/${WORK_PREFIX:-signalbox-bench}.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for URL [seconds (20)]
wait_for() {
  local seconds=${2:-20}
  for _ in $(seq 1 $((seconds * 10))); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "no answer from $1 within $seconds s" >&2
  exit 1
}
