#!/usr/bin/env bash
# Operations checks: starts the server, checks the Grafana dashboards, Prometheus config and
# alert rules against its live /metrics and in a real Prometheus scraping it (every dashboard
# query returns series, no alert fires on the idle server), probes it the way the container
# HEALTHCHECK does, then checks the container files (scripts/check_container.sh).
# Installs Prometheus and promtool (Debian package prometheus) if missing. Needs root for
# check_container.sh's network namespace. Takes about 15 s.
# Usage: scripts/check_ops.sh          (ZVON_BIN=path/to/zvon, default target/debug/zvon)
set -euo pipefail
cd "$(dirname "$0")/.."
ZVON_BIN=${ZVON_BIN:-target/debug/zvon}
export ZVON_BIN

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "== installing Prometheus and promtool (Debian package prometheus)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (the cluster dashboard is checked against a live fleet)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if [ ! -x "$ZVON_BIN" ]; then
  echo "== building $ZVON_BIN"
  cargo build -p zvon-signaling --bin zvon --locked
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
metrics_port=$(free_port)
log=$(mktemp)
pid=""
cluster_pids=()
cluster_logs=$(mktemp -d)
stop() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  for p in "${cluster_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$log" "$cluster_logs"
}
trap stop EXIT

wait_url() { # url, seconds: until it answers 2xx
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

metric() { # url name: the first sample's value, or nothing
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
for line in body.splitlines():
    if line.startswith(sys.argv[2] + " ") or line.startswith(sys.argv[2] + "{"):
        print(line.rsplit(" ", 1)[1]); break
PY
}

# A small live fleet for the Cluster dashboard and the cluster alert rules: Redis, a `both`
# node (which opens QUIC links to itself and to the other) and a media-only node.
echo "== starting a fleet: redis-server, a both node and a media node"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  >"$cluster_logs/redis.log" 2>&1 &
cluster_pids+=($!)
both_metrics=$(free_port)
media_metrics=$(free_port)
for role in both media; do
  if [ "$role" = both ]; then m=$both_metrics; else m=$media_metrics; fi
  ZVON_CLUSTER_SECRET=check-ops-cluster-secret-0123456789 "$ZVON_BIN" serve --dev \
    --cluster "redis://127.0.0.1:$redis_port" --role "$role" --node-id "ops-$role" \
    --http-addr 127.0.0.1:0 --metrics-addr "127.0.0.1:$m" --quic-addr "127.0.0.1:$(free_port)" \
    --media-bind-ip 127.0.0.1 --media-port 0 --workers 1 >"$cluster_logs/$role.log" 2>&1 &
  cluster_pids+=($!)
done
fleet_ready=""
for _ in $(seq 1 100); do
  if wait_url "http://127.0.0.1:$both_metrics/readyz" 1 && wait_url "http://127.0.0.1:$media_metrics/readyz" 1 \
    && [ "$(metric "http://127.0.0.1:$both_metrics/metrics" zvon_cluster_links)" = 2 ] \
    && [ "$(metric "http://127.0.0.1:$media_metrics/metrics" zvon_cluster_node_lease_up)" = 1 ] \
    && [ "$(metric "http://127.0.0.1:$both_metrics/metrics" zvon_cluster_redis_up)" = 1 ]; then
    fleet_ready=yes
    break
  fi
  sleep 0.2
done
if [ -z "$fleet_ready" ]; then
  echo "the fleet did not come up with its links within 20 s; logs:"; tail -n 20 "$cluster_logs"/*.log; exit 1
fi

echo "== starting $ZVON_BIN (metrics on 127.0.0.1:$metrics_port)"
"$ZVON_BIN" serve --dev --http-addr 127.0.0.1:0 --media-bind-ip 127.0.0.1 --media-port 0 \
  --workers 2 --metrics-addr "127.0.0.1:$metrics_port" >"$log" 2>&1 &
pid=$!
ready=""
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$metrics_port/readyz" 2>/dev/null; then
    ready=yes
    break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "the server did not become ready within 20 s; its log:"; cat "$log"; exit 1
fi

echo "== zvon healthcheck against the live server (the container HEALTHCHECK)"
"$ZVON_BIN" healthcheck --metrics-addr "0.0.0.0:$metrics_port"

echo "== dashboards, alerts, Prometheus config against the live /metrics and a real Prometheus"
python3 scripts/check_dashboards.py --metrics-url "http://127.0.0.1:$metrics_port/metrics" \
  --cluster-metrics-url "http://127.0.0.1:$both_metrics/metrics" \
  --cluster-metrics-url "http://127.0.0.1:$media_metrics/metrics" \
  --prometheus "$(command -v prometheus)"

kill "$pid"
wait "$pid" 2>/dev/null || true
pid=""

echo "== container files"
scripts/check_container.sh

echo "== ops checks passed"
