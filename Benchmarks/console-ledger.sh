#!/usr/bin/env bash
# The console's Ledger page on a ledger of 100,000 entries, side by side in one run: the same
# page of 50 entries through the admin JSON API and through the console (HTML, with the session
# check), on PostgreSQL and on the embedded SQLite ledger. Reports the server time per request
# (time to first byte on loopback, p50 and p95 over N requests) and checks each page holds 50 rows.
#
# Usage: Benchmarks/console-ledger.sh [entries (100000)] [requests per case (200)]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product signalbox >/dev/null
export SIGNALBOX_BIN="$(swift build -c release --show-bin-path)/signalbox"
for dir in /usr/lib/postgresql/*/bin; do [ -d "$dir" ] && PATH="$PATH:$dir"; done
WORK=$(mktemp -d /tmp/signalbox-console-bench.XXXXXX)
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
python3 Benchmarks/console_ledger.py "$WORK" "${1:-100000}" "${2:-200}"
