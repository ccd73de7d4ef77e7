#!/usr/bin/env bash
# A lecture across three media nodes: one teacher, STUDENTS light receivers (BENCHMARKS.md says
# what they check) joining through the three nodes of a fleet of our own (redis-server + three
# `both` nodes on loopback, ports from PORT_BASE; --room-spread-after puts a third of the room
# on each node, so two thirds of the students receive the teacher across the QUIC cascade).
# Then the same load on one node, for the latency the hop adds. Then a small livestream with
# full receivers (video decrypted and checked) over the three nodes: the teacher's video across.
# Per run: the load tester's report (loss, e2e latency) and per node: CPU seconds, cascade
# datagrams sent/received, repair counters, links (which node feeds which), the hop latency
# its workers measured from the datagrams' send stamps (zvon_cascade_hop_latency_seconds: origin
# worker's receive -> a worker here taking the packet; p50/p99 interpolated within the
# histogram's buckets) and the CPU time of its cascade gateway thread (`zvon-cascade`; quinn's
# work for a link this node accepted runs on the main runtime instead, not counted there).
#   STUDENTS=600 RAMP=40 DURATION=30 scripts/bench/lecture.sh
# ZVON_BIN / LOADTEST_BIN: binaries to use (default: build release here).
set -euo pipefail
cd "$(dirname "$0")/../.."
STUDENTS=${STUDENTS:-600}
RAMP=${RAMP:-40}
DURATION=${DURATION:-30}
VIEWERS=${VIEWERS:-30}
PORT_BASE=${PORT_BASE:-31000}
OUT=${OUT:-target/bench/lecture-$(date +%H%M%S)}
mkdir -p "$OUT"
if [ -z "${ZVON_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ]; then
  cargo build --release -q -p zvon-signaling -p zvon-loadtest
fi
ZVON_BIN=${ZVON_BIN:-target/release/zvon}
LOADTEST_BIN=${LOADTEST_BIN:-target/release/zvon-loadtest}
hz=$(getconf CLK_TCK)
redis_port=$((PORT_BASE + 99))
secret=$("$ZVON_BIN" cluster-secret)

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

# start_fleet NODES SPREAD: redis + NODES nodes, node i on PORT_BASE + 100*i + {0 http, 10 media, 20 quic, 30 metrics}
start_fleet() {
  local n=$1 spread=$2
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  for i in $(seq 1 "$n"); do
    local b=$((PORT_BASE + 100 * i))
    ZVON_CLUSTER_SECRET="$secret" RUST_LOG=warn "$ZVON_BIN" serve --dev \
      --cluster "redis://127.0.0.1:$redis_port" --node-id "node$i" \
      --http-addr "127.0.0.1:$b" --media-port $((b + 10)) --quic-addr "127.0.0.1:$((b + 20))" \
      --metrics-addr "127.0.0.1:$((b + 30))" --media-bind-ip 127.0.0.1 --media-ip 127.0.0.1 \
      --workers 1 --drain-timeout 2s --max-participants 2000 \
      --room-spread-after "$spread" >"$OUT/node$i-$run.log" 2>&1 &
    pids+=($!)
    node_pid[$i]=$!
  done
  for i in $(seq 1 "$n"); do
    for _ in $(seq 1 150); do
      curl -fs "http://127.0.0.1:$((PORT_BASE + 100 * i + 30))/readyz" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Run time in ns of the threads of process $1 named $2.
thread_ns_of() {
  local s=0 t
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] && s=$((s + $(awk '{print $1}' "$t/schedstat")))
  done
  echo "$s"
}
# hop_latency NODE: count, p50 and p99 (ms) of zvon_cascade_hop_latency_seconds.
hop_latency() {
  curl -fs "http://127.0.0.1:$((PORT_BASE + 100 * $1 + 30))/metrics" | python3 -c '
import re, sys
b = []
for l in sys.stdin:
    m = re.match(r"zvon_cascade_hop_latency_seconds_bucket\{le=\"([^\"]+)\"\} (\S+)", l)
    if m:
        b.append((float(m.group(1)), float(m.group(2))))
b.sort()
n = b[-1][1] if b else 0
def q(p):
    lo, below = 0.0, 0.0
    for le, c in b:
        if c >= p * n:
            if le == float("inf"):
                return None
            return (lo + (le - lo) * (p * n - below) / max(c - below, 1)) * 1e3
        lo, below = le, c
    return 0.0
top = "> %g ms" % (b[-2][0] * 1e3) if len(b) > 1 else "?"
ms = lambda v: top if v is None else "%.3f ms" % v
print("hop latency %d packets, p50 %s, p99 %s" % (n, ms(q(0.5)), ms(q(0.99))) if n else "hop latency: none")
'
}
metric() { curl -fs "http://127.0.0.1:$((PORT_BASE + 100 * $1 + 30))/metrics" | awk -v m="$2" '$1 ~ "^"m {s += $2} END {print s + 0}'; }

# run NAME NODES SPREAD PARTICIPANTS SCENARIO...: one load test against the fleet, and the
# nodes' figures.
run_one() {
  run=$1; local n=$2 spread=$3 everyone=$4; shift 4
  start_fleet "$n" "$spread"
  local urls=()
  for i in $(seq 1 "$n"); do urls+=(--url "http://127.0.0.1:$((PORT_BASE + 100 * i))"); done
  declare -A cpu0 gw0
  for i in $(seq 1 "$n"); do
    cpu0[$i]=$(cpu_of "${node_pid[$i]}")
    gw0[$i]=$(thread_ns_of "${node_pid[$i]}" zvon-cascade)
  done
  "$LOADTEST_BIN" "$@" "${urls[@]}" --ramp "$RAMP" --duration "${DURATION}s" --quiet \
    --report "$OUT/$run.json" >"$OUT/$run.txt" 2>&1 &
  local tester=$!
  # Everybody joined, halfway through the steady state: who sits where.
  sleep $(( everyone / RAMP + DURATION / 2 ))
  local placed=""
  for i in $(seq 1 "$n"); do placed+="node$i $(metric "$i" zvon_worker_peers) peers, "; done
  wait "$tester" || true
  echo "== $run: $* ($n node(s), spread after $spread)"
  echo "  mid-run: $placed"
  python3 - "$OUT/$run.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("  participants", f"{r.get('participants_connected')}/{r.get('participants_planned')}", "| loss %", r.get("packets", {}).get("loss_percent"), "| e2e ms", json.dumps(r.get("e2e_latency_ms")))
for k, v in sorted(r.get("by_source", {}).items()):
    print("  by source", k, json.dumps(v))
PY
  for i in $(seq 1 "$n"); do
    local cpu=$(( $(cpu_of "${node_pid[$i]}") - ${cpu0[$i]} ))
    echo "  node$i cpu $(echo "scale=2; $cpu / $hz" | bc) s | peers $(metric "$i" zvon_worker_peers) |" \
      "cascade sent $(metric "$i" zvon_cascade_datagrams_sent_total) received $(metric "$i" zvon_cascade_datagrams_received_total)" \
      "links $(metric "$i" zvon_cascade_links) | repair $(curl -fs "http://127.0.0.1:$((PORT_BASE + 100 * i + 30))/metrics" | awk '/^zvon_cascade_repair_total/ {printf "%s=%s ", $1, $2}')"
    echo "  node$i $(hop_latency "$i") | gateway thread cpu" \
      "$(echo "scale=3; ($(thread_ns_of "${node_pid[$i]}" zvon-cascade) - ${gw0[$i]}) / 1000000000" | bc) s"
    grep -h "cascade link up" "$OUT/node$i-$run.log" | sed "s/^/  node$i: /" | cut -c1-200 || true
  done
  stop_all
  sleep 1
}

third=$(( (STUDENTS + 1 + 2) / 3 ))
run_one lecture-3nodes 3 "$third" $((STUDENTS + 1)) audio --speakers 1 --listeners "$STUDENTS" --light-receivers
# The same fleet and joins, the whole room on the first node: the latency without the hop.
run_one lecture-1node 3 100000 $((STUDENTS + 1)) audio --speakers 1 --listeners "$STUDENTS" --light-receivers
run_one video-3nodes 3 $(( (VIEWERS + 1 + 2) / 3 )) $((VIEWERS + 1)) livestream --viewers "$VIEWERS"
echo "reports in $OUT"
