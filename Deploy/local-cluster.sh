#!/usr/bin/env bash
# The docker-compose.yml topology as local processes, without Docker: a PostgreSQL ledger, the
# schema migration, a cluster key, one simulated provider, two regions (eu, us) of two router
# nodes each gossiping with each other, and an nginx load balancer per region.
#
# Usage: Deploy/local-cluster.sh [--workdir DIR]
#   SIGNALBOX_BIN           the binary (default: a release build of this checkout)
#   SIGNALBOX_DATABASE_URL  use this PostgreSQL instead of starting a throwaway one
#   LB_EU_PORT, LB_US_PORT  load balancer ports (8081, 8082); BASE_PORT (18080) for everything else
# Writes DIR/cluster.env (URLs and keys, mode 0600: the keys are never printed) and DIR/ready once
# every node and balancer answers;
# Ctrl-C or SIGTERM stops everything (nodes drain and leave the cluster first).
set -euo pipefail
cd "$(dirname "$0")/.."

WORKDIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) WORKDIR=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/signalbox-local-cluster.XXXXXX)}
mkdir -p "$WORKDIR"
chmod 755 "$WORKDIR"
LB_EU_PORT=${LB_EU_PORT:-8081}
LB_US_PORT=${LB_US_PORT:-8082}
BASE_PORT=${BASE_PORT:-18080}
SIM_PORT=$((BASE_PORT + 11))

for dir in /usr/lib/postgresql/*/bin; do [ -d "$dir" ] && PATH="$PATH:$dir"; done
export PATH
if [ -z "${SIGNALBOX_BIN:-}" ]; then
  swift build -c release --product signalbox >&2
  SIGNALBOX_BIN="$(swift build -c release --show-bin-path)/signalbox"
fi
command -v nginx >/dev/null || { echo "nginx is needed for the load balancers (apt-get install nginx-light)" >&2; exit 1; }

pids=()
pg_stop() { :; }
stop_all() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pg_stop
  rm -f "$WORKDIR/ready"
}
trap stop_all EXIT
trap 'exit 0' INT TERM

as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
DATABASE_URL=${SIGNALBOX_DATABASE_URL:-}
if [ -z "$DATABASE_URL" ]; then
  PG_PORT=$((BASE_PORT + 10))
  mkdir -p "$WORKDIR/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$WORKDIR/pg"
  as_postgres "initdb -D '$WORKDIR/pg/data' -U postgres --auth=trust >/dev/null"
  as_postgres "pg_ctl -D '$WORKDIR/pg/data' -l '$WORKDIR/pg/log' -w -o \"-p $PG_PORT -k '$WORKDIR/pg' -c listen_addresses=127.0.0.1\" start >/dev/null"
  pg_stop() { as_postgres "pg_ctl -D '$WORKDIR/pg/data' -m fast stop" >/dev/null 2>&1 || true; }
  DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi
export SIGNALBOX_DATABASE_URL=$DATABASE_URL
export SIGNALBOX_DEMO_KEY=${SIGNALBOX_DEMO_KEY:-sk-sb-v1-local-cluster-demo-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export SIGNALBOX_ADMIN_KEY=${SIGNALBOX_ADMIN_KEY:-sk-sb-v1-local-cluster-admin-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}

"$SIGNALBOX_BIN" migrate >/dev/null
[ -s "$WORKDIR/cluster.key" ] || "$SIGNALBOX_BIN" cluster keygen --out "$WORKDIR/cluster.key" >/dev/null
"$SIGNALBOX_BIN" sim-provider --port "$SIM_PORT" >"$WORKDIR/simulator.log" 2>&1 & pids+=($!)

# name region http-port gossip-port
nodes=("eu-1 eu $((BASE_PORT + 1)) $((BASE_PORT + 21))" "eu-2 eu $((BASE_PORT + 2)) $((BASE_PORT + 22))"
       "us-1 us $((BASE_PORT + 3)) $((BASE_PORT + 23))" "us-2 us $((BASE_PORT + 4)) $((BASE_PORT + 24))")
SEEDS="127.0.0.1:$((BASE_PORT + 21)),127.0.0.1:$((BASE_PORT + 23))"
for node in "${nodes[@]}"; do
  read -r name region port gossip <<<"$node"
  mkdir -p "$WORKDIR/$name"
  "$SIGNALBOX_BIN" serve --node-id "$name" --region "$region" --port "$port" --data-dir "$WORKDIR/$name" \
    --sim-url "http://127.0.0.1:$SIM_PORT" --gossip-bind "127.0.0.1:$gossip" --seeds "$SEEDS" \
    --cluster-key-file "$WORKDIR/cluster.key" --demo-credits 100 --drain-delay 2 \
    --connection-limit-exempt 127.0.0.1 >"$WORKDIR/$name.log" 2>&1 & pids+=($!)
done

for region in eu us; do
  listen=$([ $region = eu ] && echo "127.0.0.1:$LB_EU_PORT" || echo "127.0.0.1:$LB_US_PORT")
  servers=""
  for node in "${nodes[@]}"; do
    read -r name node_region port _ <<<"$node"
    [ "$node_region" = "$region" ] && servers="$servers server 127.0.0.1:$port max_fails=1 fail_timeout=5s;"
  done
  sed -e "s|\${NODES}|$servers|" -e "s|\${LISTEN}|$listen|" -e "s|\${PID_FILE}|$WORKDIR/nginx-$region.pid|" \
    Deploy/nginx/region.conf.template >"$WORKDIR/nginx-$region.conf"
  nginx -c "$WORKDIR/nginx-$region.conf" -g 'daemon off;' >"$WORKDIR/nginx-$region.log" 2>&1 & pids+=($!)
done

ready() { curl -fs "$1" >/dev/null 2>&1; }
for _ in $(seq 1 600); do
  all=1
  for node in "${nodes[@]}"; do read -r _ _ port _ <<<"$node"; ready "http://127.0.0.1:$port/readyz" || all=0; done
  ready "http://127.0.0.1:$LB_EU_PORT/lb-health" && ready "http://127.0.0.1:$LB_US_PORT/lb-health" || all=0
  [ $all = 1 ] && break
  sleep 0.2
done
[ $all = 1 ] || { echo "the cluster did not come up; logs are in $WORKDIR" >&2; exit 1; }

redacted_url=$(printf '%s' "$DATABASE_URL" | sed -E 's|(://[^:/@]+):[^@]*@|\1:***@|')
(umask 077; cat >"$WORKDIR/cluster.env") <<ENV
EU_URL=http://127.0.0.1:$LB_EU_PORT/api/v1
US_URL=http://127.0.0.1:$LB_US_PORT/api/v1
SIM_URL=http://127.0.0.1:$SIM_PORT
DATABASE_URL=$DATABASE_URL
DEMO_KEY=$SIGNALBOX_DEMO_KEY
ADMIN_KEY=$SIGNALBOX_ADMIN_KEY
ENV
touch "$WORKDIR/ready"
cat <<MSG
Two regions are up (logs and state in $WORKDIR):
  EU  http://127.0.0.1:$LB_EU_PORT/api/v1   (eu-1, eu-2)
  US  http://127.0.0.1:$LB_US_PORT/api/v1   (us-1, us-2)
  ledger $redacted_url
  keys   in $WORKDIR/cluster.env (mode 0600): DEMO_KEY, ADMIN_KEY
Try: . $WORKDIR/cluster.env && curl \$EU_URL/admin/cluster/members -H "Authorization: Bearer \$ADMIN_KEY"
Ctrl-C stops the cluster.
MSG
wait "${pids[0]}"
