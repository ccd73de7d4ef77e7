#!/usr/bin/env bash
# The forwarding benchmark: the same zvon-loadtest scenario, packets and fan-out against
#   raw   - zvon-rawrelay, plain UDP fan-out with recvmmsg/sendmmsg (the floor: no crypto),
#   zvon  - the all-in-one server (`zvon serve --dev`),
#   janus - Janus 1.1.2 VideoRoom (Debian package `janus`), over its HTTP API,
#   mediasoup - mediasoup 3.12.16's worker behind scripts/bench/mediasoup/server.mjs (optional:
#           only when named in BENCH_SERVERS; skipped when its worker cannot be built),
# one after the other, each server fresh. The server's cost is its own CPU time (utime+stime of
# /proc/PID/stat, all threads, from just before the load test starts to just after it ends)
# divided by the packets its subscribers received. Prints a table and writes everything to
# target/bench/<time>/.
#
# Servers and clients sit in two network namespaces joined by a veth pair (Janus refuses to
# gather on loopback): server 192.0.2.2 (nic0), clients 192.0.2.3 (nic1). Needs root (ip netns).
#
#   scripts/bench/run.sh                      # all scenarios, 15 s each
#   BENCH_SECS=30 BENCH_SCENARIOS="video50 meeting10" scripts/bench/run.sh
#   BENCH_SERVERS="raw zvon" scripts/bench/run.sh      # without Janus
#   BENCH_SERVERS="raw zvon mediasoup" scripts/bench/run.sh
#   BENCH_BIN_DIR=/tmp/bins/base scripts/bench/run.sh  # prebuilt binaries, no cargo build
#   BENCH_BEFORE_DIR=/tmp/bins/base BENCH_SERVERS="raw zvon-before zvon" scripts/bench/run.sh
#                                   # a change's before and after in one run (same load tester)
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
SECS=${BENCH_SECS:-15}
SCENARIOS=${BENCH_SCENARIOS:-"audio video50 video200 meeting10"}
SERVERS=${BENCH_SERVERS:-"raw zvon janus"}
# Joins per second, the same for every server. Zvon admits 20 WebSocket upgrades/s per source
# IP and every client comes from 192.0.2.3.
RAMP=${BENCH_RAMP:-15}
SRV_IP=192.0.2.2
CLI_IP=192.0.2.3
NS_SRV=zvbench-srv-$$
NS_CLI=zvbench-cli-$$
OUT=$ROOT/target/bench/$(date -u +%Y%m%d-%H%M%S)
BIN=$ROOT/target/release
HZ=$(getconf CLK_TCK)
SERVER_PID=""

log() { printf '[bench] %s\n' "$*" >&2; }

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

# shellcheck disable=SC2329 # called by the EXIT trap
cleanup() {
    stop_server
    ip netns del "$NS_SRV" 2>/dev/null || true
    ip netns del "$NS_CLI" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) == 0 ]] || { echo "run.sh needs root (network namespaces)" >&2; exit 2; }
if [[ " $SERVERS " == *" janus "* ]] && ! command -v janus >/dev/null; then
    log "janus not installed: apt-get install -y janus"
    apt-get install -y janus >/dev/null
fi

if [[ " $SERVERS " == *" mediasoup "* ]]; then
    # Optional: the worker is built from source (scripts/bench/mediasoup/build-worker.sh); the
    # benchmark goes on without mediasoup when that or the app's npm install fails.
    if MEDIASOUP_WORKER_BIN=$("$ROOT/scripts/bench/mediasoup/build-worker.sh") &&
        (cd "$ROOT/scripts/bench/mediasoup" && npm ci --silent --ignore-scripts >&2); then
        export MEDIASOUP_WORKER_BIN
    else
        log "SKIPPING mediasoup: its worker or app could not be built (see above)"
        SERVERS=$(echo " $SERVERS " | sed 's/ mediasoup / /')
    fi
fi

if [[ -n ${BENCH_BIN_DIR:-} ]]; then
    # A prebuilt set (zvon, zvon-loadtest, zvon-rawrelay), e.g. the "before" of a change.
    BIN=$BENCH_BIN_DIR
    log "using the binaries in $BIN"
else
    log "building release binaries"
    cargo build --release -p zvon-signaling -p zvon-loadtest --bin zvon --bin zvon-loadtest --bin zvon-rawrelay >&2
fi
mkdir -p "$OUT"

log "network namespaces $NS_SRV ($SRV_IP) <-> $NS_CLI ($CLI_IP)"
ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip -n "$NS_SRV" link set lo up
ip -n "$NS_CLI" link set lo up
ip -n "$NS_SRV" link add nic0 type veth peer name nic1 netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev nic0
ip -n "$NS_CLI" addr add "$CLI_IP/24" dev nic1
ip -n "$NS_SRV" link set nic0 up
ip -n "$NS_CLI" link set nic1 up

# scenario name -> zvon-loadtest arguments, and how many participants it has (for the ramp).
scenario_args() {
    case $1 in
        audio) echo "audio --speakers 2 --listeners 100" ;;
        video50) echo "livestream --viewers 50" ;;
        video200) echo "livestream --viewers 200" ;;
        meeting10) echo "meeting --size 10" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}
scenario_people() {
    case $1 in
        audio) echo 102 ;; video50) echo 51 ;; video200) echo 201 ;; meeting10) echo 10 ;;
    esac
}

# A process and its descendants (mediasoup's worker is a child of its Node app).
tree_pids() {
    local pid=$1 child
    echo "$pid"
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do tree_pids "$child"; done
}
# Sums, over $1's process tree, the number awk program $3 prints from /proc/PID/$2.
tree_sum() {
    local total=0 pid
    for pid in $(tree_pids "$1"); do
        total=$(( total + $(awk "$3" "/proc/$pid/$2" 2>/dev/null || echo 0) ))
    done
    echo "$total"
}
cpu_ticks() { tree_sum "$1" stat '{print $14 + $15}'; }
peak_rss_kib() { tree_sum "$1" status '/^VmHWM:/ {print $2}'; }

# Starts server $1 in the server namespace, sets SERVER_PID, waits until it answers.
start_server() {
    local name=$1 logf=$2
    case $name in
        raw)
            ip netns exec "$NS_SRV" "$BIN/zvon-rawrelay" --bind "$SRV_IP" --port 7400 \
                --workers "${RAW_WORKERS:-1}" >"$logf" 2>&1 &
            SERVER_PID=$!
            for _ in $(seq 100); do grep -q listening "$logf" 2>/dev/null && return 0; sleep 0.1; done
            ;;
        zvon | zvon-before)
            local zvon_bin=$BIN/zvon
            [[ $name == zvon-before ]] && zvon_bin=${BENCH_BEFORE_DIR:?zvon-before needs BENCH_BEFORE_DIR}/zvon
            ip netns exec "$NS_SRV" "$zvon_bin" serve --dev --http-addr "$SRV_IP:7350" \
                --metrics-addr "$SRV_IP:9350" --media-bind-ip "$SRV_IP" --media-ip "$SRV_IP" \
                --media-port 7360 --max-participants 1000 ${ZVON_WORKERS:+--workers $ZVON_WORKERS} \
                >"$logf" 2>&1 &
            SERVER_PID=$!
            for _ in $(seq 100); do
                ip netns exec "$NS_CLI" curl -sf -o /dev/null "http://$SRV_IP:7350/api/info" && return 0
                sleep 0.1
            done
            ;;
        janus)
            ip netns exec "$NS_SRV" janus -F "$ROOT/scripts/bench/janus" -E nic0 -i "$SRV_IP" -o \
                >"$logf" 2>&1 &
            SERVER_PID=$!
            for _ in $(seq 100); do
                ip netns exec "$NS_CLI" curl -sf -o /dev/null -X POST \
                    -d '{"janus":"info","transaction":"ready"}' "http://$SRV_IP:8088/janus" && return 0
                sleep 0.1
            done
            ;;
        mediasoup)
            ip netns exec "$NS_SRV" node "$ROOT/scripts/bench/mediasoup/server.mjs" \
                --ip "$SRV_IP" --port 7450 >"$logf" 2>&1 &
            SERVER_PID=$!
            for _ in $(seq 100); do grep -q listening "$logf" 2>/dev/null && return 0; sleep 0.1; done
            ;;
    esac
    log "$name did not become ready; see $logf"
    return 1
}

target_args() {
    case $1 in
        raw) echo "--target raw --url $SRV_IP:7400" ;;
        zvon | zvon-before) echo "--target zvon --url http://$SRV_IP:7350" ;;
        janus) echo "--target janus --url http://$SRV_IP:8088/janus" ;;
        mediasoup) echo "--target mediasoup --url http://$SRV_IP:7450" ;;
    esac
}

RESULTS=$OUT/results.jsonl
: >"$RESULTS"
for sc in $SCENARIOS; do
    args=$(scenario_args "$sc")
    people=$(scenario_people "$sc")
    limit=$(( people / RAMP + SECS + 90 ))
    for server in $SERVERS; do
        tag=$sc-$server
        log "$tag: $args"
        if ! start_server "$server" "$OUT/$tag.server.log"; then
            stop_server
            echo "{\"scenario\":\"$sc\",\"server\":\"$server\",\"error\":\"server did not start\"}" >>"$RESULTS"
            continue
        fi
        pid=$SERVER_PID
        before=$(cpu_ticks "$pid")
        set +e
        # shellcheck disable=SC2046,SC2086 # word splitting of the argument lists is intended
        timeout "$limit" ip netns exec "$NS_CLI" "$BIN/zvon-loadtest" $args $(target_args "$server") \
            --bind-ip "$CLI_IP" --ramp "$RAMP" --duration "${SECS}s" --quiet \
            --report "$OUT/$tag.report.json" >"$OUT/$tag.loadtest.txt" 2>&1
        rc=$?
        set -e
        after=$(cpu_ticks "$pid" 2>/dev/null || echo "$before")
        rss=$(peak_rss_kib "$pid" 2>/dev/null || echo 0)
        fwd=null
        if [[ $server == zvon* ]]; then
            # Zvon's own count of RTP packets sent to subscribers, to check against the clients'.
            # The whole scrape is kept: allocation pauses, held frames, busy time, latency.
            ip netns exec "$NS_CLI" curl -sf "http://$SRV_IP:9350/metrics" >"$OUT/$tag.metrics.txt" || true
            fwd=$(awk '/^zvon_rtp_packets_sent_total/ {s += $2; n++} END {if (n) printf "%d", s; else print "null"}' \
                "$OUT/$tag.metrics.txt")
            [[ -n $fwd ]] || fwd=null
        fi
        stop_server
        cpu=$(awk -v a="$before" -v b="$after" -v hz="$HZ" 'BEGIN {printf "%.3f", (b - a) / hz}')
        if [[ $server == raw ]]; then
            fwd=$(grep '"final":true' "$OUT/$tag.server.log" | sed 's/.*"forwarded":\([0-9]*\).*/\1/')
            fwd=${fwd:-null}
        fi
        echo "{\"scenario\":\"$sc\",\"server\":\"$server\",\"cpu_s\":$cpu,\"peak_rss_kib\":$rss,\"loadtest_rc\":$rc,\"server_counted_forwarded\":$fwd,\"report\":\"$OUT/$tag.report.json\"}" >>"$RESULTS"
        log "$tag: server cpu ${cpu}s, peak rss ${rss} KiB, loadtest exit $rc"
    done
done

log "results in $OUT"
# Non-zero when a run was unhealthy (a server did not start, participants failed, no packets).
python3 "$ROOT/scripts/bench/table.py" "$RESULTS" >"$OUT/table.md" || status=$?
cat "$OUT/table.md"
exit "${status:-0}"
