#!/usr/bin/env bash
# A local Zvon fleet on loopback, for trying and testing cluster mode (docs/cluster.md).
#
#   scripts/cluster-local.sh start N   redis-server on 127.0.0.1:6390 and N `both` nodes
#   scripts/cluster-local.sh stop      stop what `start` started (by PID)
#   scripts/cluster-local.sh status    one line per node
#
# Node i (1..N): HTTP http://127.0.0.1:(7350+100i), metrics 127.0.0.1:(9350+100i),
# media UDP from 7360+100i, QUIC 7370+100i. Prints `node <i> http://127.0.0.1:<port> pid <pid>`
# per node and returns once every node answers /readyz.
# Environment: ZVON_BIN (default: build target/release/zvon), ZVON_CLUSTER_DIR (state and logs,
# default target/cluster-local), ZVON_WORKERS per node (default 1), ZVON_EXTRA_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${ZVON_CLUSTER_DIR:-target/cluster-local}"
redis_port=6390

die() { echo "cluster-local: $*" >&2; exit 1; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

stop_pid_file() {
  local f="$1"
  [ -f "$f" ] || return 0
  local pid
  pid="$(cat "$f")"
  if alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

wait_ready() {
  local url="$1" pid="$2" log="$3"
  for _ in $(seq 1 150); do
    alive "$pid" || { tail -20 "$log" >&2; die "process $pid exited (log: $log)"; }
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  tail -20 "$log" >&2
  die "$url not ready after 15 s (log: $log)"
}

start() {
  local n="${1:-}"
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "usage: $0 start N"
  command -v curl >/dev/null || die "curl is needed"
  if ! command -v redis-server >/dev/null; then
    echo "cluster-local: installing redis-server" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # The package starts a system service on 6379; we run our own on $redis_port.
  fi
  mkdir -p "$dir"
  ls "$dir"/*.pid >/dev/null 2>&1 && die "already running (see $dir); run '$0 stop' first"
  local bin="${ZVON_BIN:-}"
  if [ -z "$bin" ]; then
    cargo build --release -p zvon-signaling --bin zvon >&2
    bin=target/release/zvon
  fi
  [ -x "$bin" ] || die "no zvon binary at $bin"
  [ -f "$dir/secret" ] || "$bin" cluster-secret > "$dir/secret"

  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no > "$dir/redis.log" 2>&1 &
  echo $! > "$dir/redis.pid"
  for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 || die "redis-server did not start (log: $dir/redis.log)"

  local i
  for i in $(seq 1 "$n"); do
    local http=$((7350 + 100 * i)) metrics=$((9350 + 100 * i))
    local media=$((7360 + 100 * i)) quic=$((7370 + 100 * i))
    # shellcheck disable=SC2086
    ZVON_CLUSTER_SECRET="$(cat "$dir/secret")" "$bin" serve --dev \
      --cluster "redis://127.0.0.1:$redis_port" --node-id "node$i" \
      --http-addr "127.0.0.1:$http" --metrics-addr "127.0.0.1:$metrics" \
      --media-bind-ip 127.0.0.1 --media-ip 127.0.0.1 --media-port "$media" \
      --quic-addr "127.0.0.1:$quic" --workers "${ZVON_WORKERS:-1}" --drain-timeout 3s \
      ${ZVON_EXTRA_ARGS:-} > "$dir/node$i.log" 2>&1 &
    echo $! > "$dir/node$i.pid"
  done
  for i in $(seq 1 "$n"); do
    local pid
    pid="$(cat "$dir/node$i.pid")"
    wait_ready "http://127.0.0.1:$((9350 + 100 * i))/readyz" "$pid" "$dir/node$i.log"
    echo "node $i http://127.0.0.1:$((7350 + 100 * i)) pid $pid"
  done
}

stop() {
  [ -d "$dir" ] || return 0
  local f
  # All nodes drain at once (SIGTERM), then Redis goes.
  for f in "$dir"/node*.pid; do
    [ -e "$f" ] && stop_pid_file "$f" &
  done
  wait
  stop_pid_file "$dir/redis.pid"
}

status() {
  local f
  for f in "$dir"/node*.pid; do
    [ -e "$f" ] || continue
    local i pid state
    i="$(basename "$f" .pid)"; i="${i#node}"
    pid="$(cat "$f")"
    if alive "$pid"; then state=running; else state=dead; fi
    echo "node $i http://127.0.0.1:$((7350 + 100 * i)) pid $pid $state"
  done
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start N | stop | status" ;;
esac
