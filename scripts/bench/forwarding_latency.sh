#!/usr/bin/env bash
# Forwarding latency inside the SFU, from its own histogram, and its CPU, in a steady load.
# Starts target/release/zvon with one worker on loopback, runs one zvon-loadtest scenario,
# diffs two scrapes of /metrics 10 s apart after the joins, prints quantiles (bucket upper
# bounds), server CPU and the load test's end-to-end numbers. Kills only the server it started.
#   scripts/bench/forwarding_latency.sh "meeting --size 10 --rooms 2"
#   scripts/bench/forwarding_latency.sh "livestream --viewers 200" 20
#   BENCH_BIN_DIR=/tmp/bins/base scripts/bench/forwarding_latency.sh "meeting --size 10 --rooms 4"
set -euo pipefail
cd "$(dirname "$0")/../.."
SCEN=${1:-"meeting --size 10 --rooms 2"}
SECS=${2:-20}
JOIN_WAIT=${JOIN_WAIT:-10}
# BENCH_BIN_DIR: a prebuilt zvon and zvon-loadtest (e.g. the "before" of a change).
BIN=${BENCH_BIN_DIR:-target/release}
Z=$BIN/zvon
LT=$BIN/zvon-loadtest
OUT=$(mktemp -d)
TCK=$(getconf CLK_TCK)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(port); METRICS=$(port); MEDIA=$(port)
$Z serve --dev --workers 1 --max-participants 1000 --http-addr 127.0.0.1:"$HTTP" \
  --metrics-addr 127.0.0.1:"$METRICS" --media-bind-ip 127.0.0.1 --media-port "$MEDIA" >"$OUT/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 0.5
# shellcheck disable=SC2086
timeout $((SECS + 120)) $LT $SCEN --url http://127.0.0.1:"$HTTP" --ramp 50 --duration "${SECS}s" -q \
  --report "$OUT/report.json" >"$OUT/loadtest.log" 2>&1 &
lt=$!
sleep "$JOIN_WAIT"
scrape() { curl -s "127.0.0.1:$METRICS/metrics" >"$OUT/m$1.txt"; awk '{print $14+$15}' "/proc/$pid/stat" >"$OUT/cpu$1"; date +%s.%N >"$OUT/t$1"; }
scrape 0; sleep 10; scrape 1
wait $lt || true
python3 - "$OUT" "$TCK" "$SCEN" <<'PY'
import json, re, sys
out, tck, scen = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def buckets(f):
    b = {}
    for l in open(f):
        m = re.match(r'zvon_forwarding_latency_seconds_bucket\{le="([^"]+)"\} (\S+)', l)
        if m:
            b[float('inf') if m.group(1) == '+Inf' else float(m.group(1))] = float(m.group(2))
    return b
rd = lambda n: float(open(f"{out}/{n}").read())
cpu = (rd('cpu1') - rd('cpu0')) / tck / (rd('t1') - rd('t0'))
b0, b1 = buckets(f"{out}/m0.txt"), buckets(f"{out}/m1.txt")
les = sorted(b1); d = [b1[l] - b0.get(l, 0) for l in les]; tot = d[-1] or 1
q = lambda p: next(l for l, c in zip(les, d) if c >= p * tot)
fmt = lambda v: "inf" if v == float('inf') else f"{v * 1e6:.0f} us"
def busy(f):
    return sum(float(l.split()[-1]) for l in open(f) if l.startswith('zvon_worker_busy_seconds_total'))
busy_share = (busy(f"{out}/m1.txt") - busy(f"{out}/m0.txt")) / (rd('t1') - rd('t0'))
under_1ms = max((c for l, c in zip(les, d) if l <= 0.001), default=0) / tot
rep = json.load(open(f"{out}/report.json"))
e = rep['e2e_latency_ms']
print(f"{scen}: server CPU {cpu * 100:.0f}% of one core, worker busy {busy_share * 100:.0f}%; "
      f"{tot:.0f} forwarded packets in 10 s; "
      f"forwarding latency p50 <= {fmt(q(.5))}, p99 <= {fmt(q(.99))}, {under_1ms * 100:.1f}% <= 1 ms; "
      f"e2e p50 {e['p50']} ms, p99 {e['p99']} ms; loss {rep['packets']['loss_percent']:.3f}%")
PY
