#!/usr/bin/env bash
# Side-by-side CPU per forwarded packet of two (or more) `zvon` builds, alternating rounds so
# that the machine's load weighs on each alike (issue 11: every change to the packet path is
# judged by one run like this, not against numbers from another day).
#
#   AB_BINS="/tmp/poll-bins/base /tmp/poll-bins/new" ROUNDS=3 \
#     AB_SCENARIO="livestream --viewers 100" scripts/bench/ab.sh
#
# Each directory holds a `zvon` binary; the load tester is the first directory's
# `zvon-loadtest` for every build, so only the server differs. Every round starts each server
# fresh on loopback (free ports picked per run), runs the scenario for AB_SECS of steady state
# and charges the server's own CPU (utime + stime of /proc/PID/stat, all threads, from just
# before the load test to just after) to the packets its subscribers received, as
# scripts/bench/run.sh does. AB_WORKERS media workers (default 1: the room stays on one).
# Prints one line per run and the median per build; writes target/bench/ab-<time>/.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
read -r -a BINS <<<"${AB_BINS:?set AB_BINS to the directories of the builds to compare}"
ROUNDS=${ROUNDS:-3}
SCENARIO=${AB_SCENARIO:-"livestream --viewers 100"}
SECS=${AB_SECS:-15}
RAMP=${AB_RAMP:-20}
WORKERS=${AB_WORKERS:-1}
OUT=$ROOT/target/bench/ab-$(date -u +%Y%m%d-%H%M%S)
HZ=$(getconf CLK_TCK)
LOADTEST=${BINS[0]}/zvon-loadtest
SERVER_PID=""
mkdir -p "$OUT"

log() { printf '[ab] %s\n' "$*" >&2; }

stop_server() {
    local pid=$SERVER_PID
    [[ -n $pid ]] || return 0
    SERVER_PID=""
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# A free TCP/UDP port from the kernel (another process may take it before us: rare, and the
# run then fails visibly rather than measuring the wrong thing).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
free_udp_pair() {
    python3 - <<'EOF'
import socket
for _ in range(200):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0))
    p = a.getsockname()[1]
    try:
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", p + 1))
    except OSError:
        continue
    print(p); break
EOF
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

people=$(awk '{for (i = 1; i < NF; i++) if ($i ~ /^--(viewers|listeners|size)$/) s += $(i + 1)} END {print s + 2}' <<<"$SCENARIO")
limit=$(( people / RAMP + SECS + 90 ))
RESULTS=$OUT/results.tsv
printf 'round\tbuild\tcpu_s\tpackets\tus_per_pkt\tloss\tload1\n' >"$RESULTS"
log "scenario: $SCENARIO, ${SECS}s, $ROUNDS rounds of ${BINS[*]}; results in $OUT"
for round in $(seq "$ROUNDS"); do
    for dir in "${BINS[@]}"; do
        name=$(basename "$dir")
        tag=r$round-$name
        http=$(free_port)
        metrics=$(free_port)
        media=$(free_udp_pair)
        "$dir/zvon" serve --dev --http-addr "127.0.0.1:$http" --metrics-addr "127.0.0.1:$metrics" \
            --media-bind-ip 127.0.0.1 --media-ip 127.0.0.1 --media-port "$media" \
            --max-participants 1000 --workers "$WORKERS" >"$OUT/$tag.server.log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 100); do
            curl -sf -o /dev/null "http://127.0.0.1:$http/api/info" && break
            sleep 0.1
        done
        pid=$SERVER_PID
        load1=$(cut -d' ' -f1 /proc/loadavg)
        before=$(cpu_ticks "$pid")
        set +e
        # shellcheck disable=SC2086 # the scenario's words are arguments
        timeout "$limit" "$LOADTEST" $SCENARIO --url "http://127.0.0.1:$http" --ramp "$RAMP" \
            --duration "${SECS}s" --quiet --report "$OUT/$tag.report.json" >"$OUT/$tag.loadtest.txt" 2>&1
        set -e
        after=$(cpu_ticks "$pid" 2>/dev/null || echo "$before")
        stop_server
        python3 - "$OUT/$tag.report.json" "$before" "$after" "$HZ" "$round" "$name" "$load1" >>"$RESULTS" <<'EOF'
import json, sys
path, before, after, hz, rnd, name, load1 = sys.argv[1:]
cpu = (int(after) - int(before)) / int(hz)
try:
    r = json.load(open(path))
    pk = r["packets"]["received_by_subscribers"]
    loss = r["packets"].get("loss_percent", "")
except (OSError, ValueError, KeyError):
    pk, loss = 0, ""
us = cpu * 1e6 / pk if pk else float("nan")
print(f"{rnd}\t{name}\t{cpu:.2f}\t{pk}\t{us:.2f}\t{loss}\t{load1}")
EOF
        tail -n 1 "$RESULTS" >&2
    done
done
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
builds = list(dict.fromkeys(r[1] for r in rows))
med = {}
for b in builds:
    v = [float(r[4]) for r in rows if r[1] == b and r[4] != "nan"]
    med[b] = statistics.median(v) if v else float("nan")
    print(f"{b}: median {med[b]:.2f} µs/pkt over {len(v)} runs {sorted(round(x, 2) for x in v)}")
if len(builds) > 1:
    base = med[builds[0]]
    for b in builds[1:]:
        print(f"{b} / {builds[0]} = {med[b] / base:.3f}")
EOF
