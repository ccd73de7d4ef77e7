#!/usr/bin/env bash
# One publisher -> N audio subscribers on one release `zvon serve` on loopback, the subscribers
# being the load tester's light receivers (BENCHMARKS.md says what they check). For each N in
# $LISTENERS: samples the server and the tester every 2 s (CPU, worker busy, media-socket drops,
# RSS) and prints one line with loss, latency, server figures (medians over the samples with
# everyone joined) and the tester's cost per receiver. Starts the server itself, ends it by PID.
#   LISTENERS="250 500 1000" RAMP=50 DURATION=30 scripts/bench/fanout_audio.sh
# LIGHT=0 runs full receivers instead (every packet decrypted by str0m), for comparison.
# PERF=1 also records `perf record -g` of the server for 10 s in the steady state of each run.
# On a machine shared with builds, run it under `nice -n -10` (root) so that background
# compiles do not starve the server and the tester.
# BIN_DIR=dir runs the `zvon` and `zvon-loadtest` found there instead of building them (to
# compare builds). Each line also says how the media worker's busy time splits into on-CPU and
# waiting for a CPU (its thread's /proc schedstat): busy far above the process's CPU with
# the wait making up the difference is a saturated machine, not the worker blocking.
set -euo pipefail
cd "$(dirname "$0")/../.."
LISTENERS=${LISTENERS:-"250 500 1000"}
RAMP=${RAMP:-50}
DURATION=${DURATION:-30}
SAMPLE=${SAMPLE:-10}
OUT=${OUT:-target/bench/fanout_audio}
PORT_BASE=${PORT_BASE:-28350}
mkdir -p "$OUT"
hz=$(getconf CLK_TCK)
metrics="http://127.0.0.1:$((PORT_BASE + 20))/metrics"
port_hex=$(printf '%04X' $((PORT_BASE + 10)))

if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release -q -p zvon-signaling -p zvon-loadtest
fi
BIN_DIR=${BIN_DIR:-target/release}

server=""
stop_server() {
  [ -n "$server" ] || return 0
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
}
trap stop_server EXIT

# The media worker's thread: on-CPU ns and run-queue wait ns (schedstat fields 1 and 2).
worker_sched() {
  local t
  for t in /proc/"$server"/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = zvon-media-0 ]; then
      awk '{print $1, $2}' "$t/schedstat"
      return
    fi
  done
  echo 0 0
}

# time, server cpu ticks, worker busy s, participants, media-socket drops, server RSS KiB,
# tester cpu ticks, tester RSS KiB, worker on-CPU ns, worker run-queue wait ns
sample() {
  local m
  m=$(curl -fs "$metrics" || true)
  echo "$(date +%s.%N)" \
    "$(awk '{print $14 + $15}' "/proc/$server/stat")" \
    "$(echo "$m" | awk '/^zvon_worker_busy_seconds_total/ {s += $2} END {print s + 0}')" \
    "$(echo "$m" | awk '/^zvon_participants / {print $2 + 0}')" \
    "$(awk -v port="$port_hex" 'NR > 1 {split($2, a, ":"); if (a[2] == port) s += $NF} END {print s + 0}' /proc/net/udp)" \
    "$(awk '/^VmRSS/ {print $2}' "/proc/$server/status")" \
    "$(awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0)" \
    "$(awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0)" \
    "$(worker_sched)"
}

status=0
for n in $LISTENERS; do
  tag="l$n-light${LIGHT:-1}"
  "$BIN_DIR/zvon" serve --dev --max-participants $((n + 50)) \
    --http-addr 127.0.0.1:$PORT_BASE --media-port $((PORT_BASE + 10)) \
    --media-bind-ip 127.0.0.1 --media-ip 127.0.0.1 \
    --metrics-addr 127.0.0.1:$((PORT_BASE + 20)) >"$OUT/server-$tag.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT_BASE/api/info" >/dev/null 2>&1 && break
    sleep 0.1
  done
  light=(--light-receivers --light-sample "$SAMPLE")
  [ "${LIGHT:-1}" = 1 ] || light=()
  cmd=("$BIN_DIR/zvon-loadtest" audio --speakers 1 --listeners "$n" "${light[@]}"
    --url "http://127.0.0.1:$PORT_BASE" --ramp "$RAMP"
    --duration "${DURATION}s" --report "$OUT/report-$tag.json" --quiet)
  echo "== ${cmd[*]}"
  rc=0
  "${cmd[@]}" >"$OUT/loadtest-$tag.txt" 2>&1 &
  tester=$!
  : >"$OUT/samples-$tag.txt"
  profiled=0
  while kill -0 "$tester" 2>/dev/null; do
    sample "$tester" >>"$OUT/samples-$tag.txt"
    joined=$(tail -1 "$OUT/samples-$tag.txt" | awk '{print $4}')
    if [ "${PERF:-0}" = 1 ] && [ $profiled = 0 ] && [ "${joined%.*}" -ge $((n * 9 / 10)) ]; then
      profiled=1
      perf record -g -o "$OUT/perf-$tag.data" -p "$server" -- sleep 10 >/dev/null 2>&1 || true
    fi
    sleep 2
  done
  wait "$tester" || rc=$?
  [ $rc -le 1 ] || status=$rc
  stop_server
  cat "$OUT/loadtest-$tag.txt"
  python3 - "$OUT/samples-$tag.txt" "$OUT/report-$tag.json" "$((n + 1))" "$hz" "$n" "$rc" <<'PY'
import json, statistics, sys
path, report, planned, hz, n, rc = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rows = [list(map(float, l.split())) for l in open(path) if len(l.split()) == 10]
# Steady state: everybody who will get in is in (with failures, fewer than planned).
planned = min(planned, max((x[3] for x in rows), default=planned))
cpu, busy, tcpu, won, wwait = [], [], [], [], []
for a, b in zip(rows, rows[1:]):
    dt = b[0] - a[0]
    if a[3] >= planned and b[3] >= planned and dt > 0:
        cpu.append((b[1] - a[1]) / hz / dt)
        busy.append((b[2] - a[2]) / dt)
        tcpu.append((b[6] - a[6]) / hz / dt)
        won.append((b[8] - a[8]) / 1e9 / dt)
        wwait.append((b[9] - a[9]) / 1e9 / dt)
med = lambda v: statistics.median(v) * 100 if v else float("nan")
r = json.load(open(report))
p = r["packets"]
lat = r["e2e_latency_ms"]
f = lambda v: "-" if v is None else f"{v:.1f}"
tester_rss = max((x[7] for x in rows), default=0) / 1024
print(f"RESULT listeners={n} connected={r['participants_connected']}/{r['participants_planned']} "
      f"loss={p['loss_percent']:.3f}% received={p['received_by_subscribers']} "
      f"latency_p50={f(lat['p50'])}ms p99={f(lat['p99'])}ms "
      f"server_cpu={med(cpu):.0f}% worker_busy={med(busy):.0f}% "
      f"worker_on_cpu={med(won):.0f}% worker_runqueue_wait={med(wwait):.0f}% "
      f"server_drops={int(rows[-1][4]) if rows else 0} server_rss={max((x[5] for x in rows), default=0) / 1024:.0f}MiB "
      f"tester_cpu={med(tcpu):.0f}% ({med(tcpu) / n * 10:.3f} ms of CPU per second per receiver) "
      f"tester_peak_rss={tester_rss:.0f}MiB "
      f"({tester_rss * 1024 / n:.0f} KiB per receiver) steady_samples={len(cpu)} exit={rc}")
PY
done
exit "$status"
