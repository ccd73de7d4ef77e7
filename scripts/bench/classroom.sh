#!/usr/bin/env bash
# Classroom load: 1 teacher + $STUDENTS students against a release `zvon serve` on loopback.
# Samples the server every 2 s (CPU, worker busy, media-socket drops, shedding level, RSS),
# then prints the load tester's summary and the server's steady-state figures (median over
# the samples with everyone joined). Starts the server itself and ends it by PID.
#   STUDENTS=200 VISIBLE=8 UNMUTED=2 RAMP=20 DURATION=30 scripts/bench/classroom.sh
# SERVER_ARGS adds server flags, e.g. SERVER_ARGS="--media-spread-busy 2" keeps the class on
# one worker (no relay) for a before/after comparison; BIN_DIR=dir runs the binaries in dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
STUDENTS=${STUDENTS:-200}
VISIBLE=${VISIBLE:-8}
UNMUTED=${UNMUTED:-2}
RAMP=${RAMP:-20}
DURATION=${DURATION:-30}
OUT=${OUT:-target/bench/classroom}
PORT_BASE=${PORT_BASE:-27350}
mkdir -p "$OUT"
tag="s${STUDENTS}-v${VISIBLE}-u${UNMUTED}"
metrics="http://127.0.0.1:$((PORT_BASE + 20))/metrics"

# BIN_DIR picks prebuilt binaries (zvon, zvon-loadtest) instead of building, e.g. to
# alternate a before and an after build.
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release -q -p zvon-signaling -p zvon-loadtest
fi
BIN_DIR=${BIN_DIR:-target/release}
"$BIN_DIR/zvon" serve --dev --max-participants $((STUDENTS + 50)) \
  --http-addr 127.0.0.1:$PORT_BASE --media-port $((PORT_BASE + 10)) \
  --media-bind-ip 127.0.0.1 --media-ip 127.0.0.1 \
  --metrics-addr 127.0.0.1:$((PORT_BASE + 20)) ${SERVER_ARGS:-} >"$OUT/server-$tag.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT_BASE/api/info" >/dev/null 2>&1 && break
  sleep 0.1
done

port_hex=$(printf '%04X' $((PORT_BASE + 10)))
sample() {
  local m
  m=$(curl -fs "$metrics" || true)
  echo "$(date +%s.%N)" \
    "$(awk '{print $14 + $15}' "/proc/$server/stat")" \
    "$(echo "$m" | awk '/^zvon_worker_busy_seconds_total/ {s += $2} END {print s + 0}')" \
    "$(echo "$m" | awk '/^zvon_participants / {print $2 + 0}')" \
    "$(echo "$m" | awk '/^zvon_worker_shedding_level/ {if ($2 > s) s = $2} END {print s + 0}')" \
    "$(awk -v port="$port_hex" 'NR > 1 {split($2, a, ":"); if (a[2] == port) s += $NF} END {print s + 0}' /proc/net/udp)" \
    "$(awk '/^VmRSS/ {print $2}' "/proc/$server/status")" \
    "$(echo "$m" | awk -F'[ "]' '/^zvon_worker_busy_seconds_total/ {printf "%s%s", sep, $NF; sep = ","} END {print ""}')" \
    "$(echo "$m" | awk '/^zvon_udp_datagrams_sent_total / {print $2 + 0}')" \
    "$(echo "$m" | awk '/^zvon_rtp_packets_sent_total/ {s += $2} END {print s + 0}')" \
    "$(echo "$m" | awk '/^zvon_retransmissions_sent_total / {print $2 + 0}')" \
    "$(echo "$m" | awk '/^zvon_video_paused_for_bandwidth_total / {print $2 + 0}')" \
    "$(echo "$m" | awk '/^zvon_bandwidth_allocated_bytes_per_second / {print $2 + 0}')" \
    "$(ss -uan 2>/dev/null | awk -v port=":$((PORT_BASE + 10))" 'NR > 1 && $4 !~ port"$" {s += $2} END {print s + 0}')"
}

status=0
"$BIN_DIR/zvon-loadtest" classroom --students "$STUDENTS" --visible "$VISIBLE" \
  --unmuted "$UNMUTED" --url "http://127.0.0.1:$PORT_BASE" --ramp "$RAMP" \
  --duration "${DURATION}s" --report "$OUT/report-$tag.json" --quiet >"$OUT/loadtest-$tag.txt" 2>&1 &
tester=$!
: >"$OUT/samples-$tag.txt"
while kill -0 "$tester" 2>/dev/null; do
  sample >>"$OUT/samples-$tag.txt"
  sleep 2
done
wait "$tester" || status=$?
curl -fs "$metrics" >"$OUT/metrics-end-$tag.txt" || true
cat "$OUT/loadtest-$tag.txt"
python3 - "$OUT/samples-$tag.txt" "$OUT/report-$tag.json" "$((STUDENTS + 1))" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
path, report, planned, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
lines = [l.split() for l in open(path)]
lines = [l for l in lines if len(l) >= 8]
rows = [list(map(float, l[:7])) for l in lines]
per_worker = [list(map(float, l[7].split(","))) for l in lines]
# Egress: datagrams written, RTP forwarded, resends, bandwidth pauses, allocated B/s, and
# the bytes queued unread in every other UDP socket on the host (the tester's receivers).
extra = [list(map(float, l[8:14])) for l in lines if len(l) >= 14]
cpu, busy, shed, workers = [], [], [], []
for i, (a, b) in enumerate(zip(rows, rows[1:])):
    dt = b[0] - a[0]
    if a[3] >= planned and b[3] >= planned and dt > 0:
        cpu.append((b[1] - a[1]) / hz / dt)
        busy.append((b[2] - a[2]) / dt)
        shed.append(b[4])
        wa, wb = per_worker[i], per_worker[i + 1]
        if len(wa) == len(wb):
            workers.append([(y - x) / dt for x, y in zip(wa, wb)])
med = lambda v: statistics.median(v) * 100 if v else float("nan")
print(f"server, everyone joined ({len(cpu)} samples of 2 s): CPU {med(cpu):.0f} % of a core, "
      f"worker busy {med(busy):.0f} %, shedding in {sum(1 for s in shed if s > 0)}/{len(shed)} "
      f"samples (max level {int(max(shed, default=0))})")
if workers:
    per = [statistics.median(w[i] for w in workers) * 100 for i in range(len(workers[0]))]
    print("worker busy per worker (median): " + ", ".join(f"{b:.0f} %" for b in per))
if len(extra) == len(rows) and cpu:
    steady = [i for i, (a, b) in enumerate(zip(rows, rows[1:]))
              if a[3] >= planned and b[3] >= planned and b[0] > a[0]]
    rate = lambda col: statistics.median(
        (extra[i + 1][col] - extra[i][col]) / (rows[i + 1][0] - rows[i][0]) for i in steady)
    dgrams, rtp, resent = rate(0), rate(1), rate(2)
    print(f"egress per second (median): {dgrams:.0f} datagrams, {rtp:.0f} RTP forwarded, "
          f"{resent:.0f} resent, {dgrams - rtp - resent:.0f} other (RTCP, padding, STUN); "
          f"videos paused for bandwidth {int(extra[-1][3])}; allocated "
          f"{statistics.median(extra[i + 1][4] for i in steady) * 8 / 1e6:.1f} Mbit/s; "
          f"unread in the tester's sockets {statistics.median(extra[i + 1][5] for i in steady) / 1024:.0f} KiB")
print(f"server media socket: {int(rows[-1][5]) if rows else 0} kernel drops; "
      f"peak RSS {max((r[6] for r in rows), default=0) / 1024:.0f} MiB")
r = json.load(open(report))
for k in ("teacher_audio", "teacher_video", "student_audio", "student_video"):
    s = r.get("by_source", {}).get(k)
    if s:
        print(f"{k}: received {s['received']} lost {s['lost']} ({s['loss_percent']:.3f} %), "
              f"stalls {s.get('stalls', 0)} ({s.get('stalled_seconds', 0):.0f} s over {s['streams']} streams)")
PY
echo "report: $OUT/report-$tag.json (loadtest exit $status)"
exit "$status"
