#!/usr/bin/env bash
# The console's Ledger page on a ledger of 100,000 entries, side by side in one run: the same
# page of 50 entries through the admin JSON API and through the console (HTML, with the session
# check), on PostgreSQL and on the embedded SQLite ledger. Reports the server time per request
# (time to first byte on loopback, p50 and p95 over N requests) and checks each page holds 50 rows.
#
# Usage: Benchmarks/console-ledger.sh [entries (100000)] [requests per case (200)]
# PostgreSQL: SIGNALBOX_BENCH_DATABASE_URL (a server this script may create databases on), else a
# throwaway server started here.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK_PREFIX=signalbox-console-bench
source Benchmarks/common.sh
export SIGNALBOX_BIN
SIGNALBOX_BIN=$(release_binary)
start_bench_database
export PATH
SIGNALBOX_TEST_DATABASE_URL="$PG_URL" python3 Benchmarks/console_ledger.py "$WORK" "${1:-100000}" "${2:-200}"
