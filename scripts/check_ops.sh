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
stop() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -f "$log"
}
trap stop EXIT

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
  --prometheus "$(command -v prometheus)"

kill "$pid"
wait "$pid" 2>/dev/null || true
pid=""

echo "== container files"
scripts/check_container.sh

echo "== ops checks passed"
