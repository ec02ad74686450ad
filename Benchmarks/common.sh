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
PG_DATA=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$PG_DATA" ] || as_postgres "pg_ctl -D '$PG_DATA' -m fast stop" >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# Runs a shell command as the postgres user when we are root (PostgreSQL refuses to run as root).
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }

# Sets PG_URL to the PostgreSQL a benchmark's router uses: SIGNALBOX_BENCH_DATABASE_URL when set,
# otherwise a throwaway server in the scratch directory, stopped on exit.
start_bench_database() {
  for dir in /usr/lib/postgresql/*/bin; do [ -d "$dir" ] && PATH="$PATH:$dir"; done
  PG_URL=${SIGNALBOX_BENCH_DATABASE_URL:-}
  [ -z "$PG_URL" ] || return 0
  local port
  port=$(free_port)
  chmod 755 "$WORK"; mkdir -p "$WORK/pg" && chown postgres "$WORK/pg" 2>/dev/null || true
  as_postgres "initdb -D '$WORK/pg/data' -U postgres --auth=trust >/dev/null"
  as_postgres "pg_ctl -D '$WORK/pg/data' -l '$WORK/pg/log' -w -o \"-p $port -k '$WORK/pg' -c listen_addresses=127.0.0.1\" start >/dev/null"
  PG_DATA="$WORK/pg/data"
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# wait_for URL [seconds (20)]
wait_for() {
  local seconds=${2:-20}
  for _ in $(seq 1 $((seconds * 10))); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "no answer from $1 within $seconds s" >&2
  exit 1
}
