#!/usr/bin/env bash
# The settlement committer alone, side by side in one run: PostgreSQL (a throwaway server this
# script starts, or SIGNALBOX_TEST_DATABASE_URL) and the embedded SQLite ledger, each settling
# the same N settlements on leased accounts from many concurrent submitters.
# Prints settlements/s, batches and mean batch size, and checks `verify` afterwards.
#
# Usage: Benchmarks/ledger.sh [settlements (100000)] [accounts (64)] [submitters (1024)]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product ledger-bench >/dev/null
BIN="$(swift build -c release --show-bin-path)/ledger-bench"
for dir in /usr/lib/postgresql/*/bin; do [ -d "$dir" ] && PATH="$PATH:$dir"; done
WORK=$(mktemp -d /tmp/signalbox-ledger-bench.XXXXXX)
pg_stop() { :; }
trap 'pg_stop; rm -rf "$WORK"' EXIT
if [ -z "${SIGNALBOX_TEST_DATABASE_URL:-}" ]; then
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  chmod 755 "$WORK"; mkdir -p "$WORK/pg" && chown postgres "$WORK/pg" 2>/dev/null || true
  as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
  as_pg "initdb -D '$WORK/pg/data' -U postgres --auth=trust >/dev/null"
  as_pg "pg_ctl -D '$WORK/pg/data' -l '$WORK/pg/log' -w -o \"-p $PG_PORT -k '$WORK/pg' -c listen_addresses=127.0.0.1\" start >/dev/null"
  pg_stop() { as_pg "pg_ctl -D '$WORK/pg/data' -m fast stop" >/dev/null 2>&1 || true; }
  export SIGNALBOX_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi
"$BIN" "${1:-100000}" "${2:-64}" "${3:-1024}"
