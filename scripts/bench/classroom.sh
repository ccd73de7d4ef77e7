#!/usr/bin/env bash
# Classroom load: 1 teacher + $STUDENTS students against a release `zvon serve` on loopback.
# Prints the loadtest's summary plus server CPU (steady phase) and peak RSS, and keeps the JSON
# report. Starts the server itself and ends it by PID.
#   STUDENTS=200 VISIBLE=4 UNMUTED=1 RAMP=20 DURATION=30 scripts/bench/classroom.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
STUDENTS=${STUDENTS:-200}
VISIBLE=${VISIBLE:-4}
UNMUTED=${UNMUTED:-1}
RAMP=${RAMP:-20}
DURATION=${DURATION:-30}
OUT=${OUT:-target/bench/classroom}
PORT_BASE=${PORT_BASE:-27350}
mkdir -p "$OUT"
tag="s${STUDENTS}-v${VISIBLE}-u${UNMUTED}"

cargo build --release -q -p zvon-signaling -p zvon-loadtest
target/release/zvon serve --dev --max-participants $((STUDENTS + 50)) \
  --http-addr 127.0.0.1:$PORT_BASE --media-port $((PORT_BASE + 10)) \
  --media-bind-ip 127.0.0.1 --media-ip 127.0.0.1 \
  --metrics-addr 127.0.0.1:$((PORT_BASE + 20)) >"$OUT/server-$tag.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT_BASE/api/info" >/dev/null 2>&1 && break
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }

status=0
target/release/zvon-loadtest classroom --students "$STUDENTS" --visible "$VISIBLE" \
  --unmuted "$UNMUTED" --url "http://127.0.0.1:$PORT_BASE" --ramp "$RAMP" \
  --duration "${DURATION}s" --report "$OUT/report-$tag.json" --quiet >"$OUT/loadtest-$tag.txt" 2>&1 &
tester=$!
sleep $((RAMP + 3))
busy() { curl -fs "http://127.0.0.1:$((PORT_BASE + 20))/metrics" |
  awk '/^zvon_worker_busy_seconds_total/ { printf "%s ", $2 }'; }
t0=$(cpu_ticks); s0=$(date +%s.%N); peak=0; b0=$(busy)
for _ in $(seq 1 $(((DURATION - 6) / 2))); do
  r=$(rss_kib); [ "$r" -gt "$peak" ] && peak=$r
  sleep 2
done
t1=$(cpu_ticks); s1=$(date +%s.%N); b1=$(busy)
# Kernel receive-buffer drops so far, per socket (last column of /proc/net/udp): the server's
# media socket apart from everything else (the tester's sockets; other users of the machine).
udp_drops=$(awk -v port="$(printf '%04X' $((PORT_BASE + 10)))" 'NR > 1 {
  split($2, a, ":"); if (a[2] == port) s += $NF; else o += $NF } END { print s + 0, o + 0 }' /proc/net/udp)
wait "$tester" || status=$?
hz=$(getconf CLK_TCK)
cat "$OUT/loadtest-$tag.txt"
python3 - "$t0" "$t1" "$s0" "$s1" "$hz" "$peak" "$OUT/report-$tag.json" $udp_drops "$b0" "$b1" <<'PY'
import json, sys
t0, t1, s0, s1, hz, peak, path, server_drops, other_drops = sys.argv[1:10]
cpu = (float(t1) - float(t0)) / float(hz) / (float(s1) - float(s0))
print(f"server CPU (steady) {cpu*100:.0f} % of a core, peak RSS {int(peak)/1024:.0f} MiB")
print(f"kernel UDP receive drops: server media socket {server_drops}, other sockets {other_drops}")
b0, b1 = (list(map(float, b.split())) for b in (sys.argv[-2], sys.argv[-1]))
print("worker busy:", ", ".join(f"{(y - x) / (float(s1) - float(s0)) * 100:.0f} %" for x, y in zip(b0, b1)))
r = json.load(open(path))
ta = r.get("by_source", {}).get("teacher_audio", {})
print("teacher_audio:", json.dumps(ta))
PY
echo "report: $OUT/report-$tag.json (loadtest exit $status)"
exit "$status"
