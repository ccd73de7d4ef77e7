#!/usr/bin/env bash
# Cluster benchmark: what a fleet costs and how fast it heals (release build, loopback).
#
# 1. Failover times, real Chromium (tests/browser/cluster.mjs), CLUSTER_RUNS fresh fleets
#    (default 7): media node SIGKILL -> both pages decode video again; signaling node SIGKILL ->
#    both pages resumed (video decoded throughout). Medians and ranges.
# 2. The CPU cost of QUIC control traffic: the same zvon-loadtest meeting load against the
#    all-in-one server and against a fleet of one signaling node + one media node (+ Redis),
#    alternating, COST_RUNS times each (default 3). Server CPU = utime+stime of the processes
#    over the load test; the signaling node's share is what the control plane costs, next to
#    the QUIC bytes and requests it carried.
#
#   scripts/bench/cluster.sh                 # both parts
#   CLUSTER_PARTS=cost scripts/bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNS=${CLUSTER_RUNS:-7}
COST_RUNS=${COST_RUNS:-3}
PARTS=${CLUSTER_PARTS:-"failover cost"}
OUT=$ROOT/target/bench/cluster-$(date -u +%Y%m%d-%H%M%S)
BIN=$ROOT/target/release
HZ=$(getconf CLK_TCK)
mkdir -p "$OUT"
PIDS=()

log() { printf '[cluster-bench] %s\n' "$*" >&2; }
# shellcheck disable=SC2329 # called by the EXIT trap
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

log "building release binaries"
cargo build --release -p zvon-signaling -p zvon-loadtest --bin zvon --bin zvon-loadtest >&2

median() { python3 -c 'import sys, statistics; xs = [float(x) for x in sys.argv[1:]]; print(f"{statistics.median(xs):.0f} (min {min(xs):.0f}, max {max(xs):.0f}, n={len(xs)})")' "$@"; }

if [[ " $PARTS " == *" failover "* ]]; then
    media=(); resume=()
    for i in $(seq "$RUNS"); do
        log "failover run $i/$RUNS"
        (cd tests/browser && [ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null)
        ZVON_BIN=$BIN/zvon node tests/browser/cluster.mjs b-media c-signaling >"$OUT/failover-$i.txt" 2>&1 || true
        line=$(grep '^{"cluster"' "$OUT/failover-$i.txt" || true)
        m=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1])["results"]; print(next((x["failoverMs"] for x in r if "failoverMs" in x), ""))' "$line" 2>/dev/null || true)
        s=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1])["results"]; print(next((x["resumeMs"] for x in r if "resumeMs" in x), ""))' "$line" 2>/dev/null || true)
        [[ -n $m ]] && media+=("$m")
        [[ -n $s ]] && resume+=("$s")
        log "run $i: media failover ${m:-FAILED} ms, signaling failover ${s:-FAILED} ms"
    done
    {
        echo "media node SIGKILL -> both Chromium pages decode again, ms: $(median "${media[@]}")"
        echo "signaling node SIGKILL -> both pages resumed (video on throughout), ms: $(median "${resume[@]}")"
    } | tee "$OUT/failover.txt"
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 100); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
metric_sum() { curl -sf "$1" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {printf "%d", s}'; }

LOAD=(meeting --size 4 --rooms 8 --ramp 10 --duration 20s --quiet)

if [[ " $PARTS " == *" cost "* ]]; then
    echo "mode run server_cpu_s signaling_cpu_s media_cpu_s link_bytes control_requests loss" >"$OUT/cost.txt"
    for run in $(seq "$COST_RUNS"); do
        for mode in allinone fleet; do
            PIDS=()
            http=$(free_port); metrics=$(free_port)
            if [[ $mode == allinone ]]; then
                "$BIN/zvon" serve --dev --http-addr "127.0.0.1:$http" --metrics-addr "127.0.0.1:$metrics" \
                    --media-bind-ip 127.0.0.1 --media-port 0 --workers 1 >"$OUT/$mode-$run.log" 2>&1 &
                PIDS+=($!); sig=$!; med=$!
                wait_ready "http://127.0.0.1:$metrics/readyz"
            else
                rport=$(free_port); mmetrics=$(free_port)
                redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
                PIDS+=($!)
                sleep 0.3
                export ZVON_CLUSTER_SECRET=bench-cluster-secret-0123456789
                "$BIN/zvon" serve --dev --cluster "redis://127.0.0.1:$rport" --role media --node-id m \
                    --metrics-addr "127.0.0.1:$mmetrics" --quic-addr "127.0.0.1:$(free_port)" \
                    --media-bind-ip 127.0.0.1 --media-port 0 --workers 1 >"$OUT/$mode-$run-media.log" 2>&1 &
                PIDS+=($!); med=$!
                wait_ready "http://127.0.0.1:$mmetrics/readyz"
                "$BIN/zvon" serve --dev --cluster "redis://127.0.0.1:$rport" --role signaling --node-id s \
                    --http-addr "127.0.0.1:$http" --metrics-addr "127.0.0.1:$metrics" \
                    >"$OUT/$mode-$run.log" 2>&1 &
                PIDS+=($!); sig=$!
                wait_ready "http://127.0.0.1:$metrics/readyz"
                sleep 1.5 # the warm link to the media node
            fi
            s0=$(cpu_ticks "$sig"); m0=$(cpu_ticks "$med")
            "$BIN/zvon-loadtest" --url "http://127.0.0.1:$http" "${LOAD[@]}" \
                --report "$OUT/$mode-$run.json" >"$OUT/$mode-$run.loadtest.txt" 2>&1 || true
            s1=$(cpu_ticks "$sig"); m1=$(cpu_ticks "$med")
            bytes=0; requests=0
            if [[ $mode == fleet ]]; then
                bytes=$(metric_sum "http://127.0.0.1:$metrics/metrics" zvon_cluster_link_bytes_total)
                requests=$(metric_sum "http://127.0.0.1:$mmetrics/metrics" zvon_cluster_control_requests_total)
            fi
            loss=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(round(r["packets"]["loss_percent"], 4))' "$OUT/$mode-$run.json" 2>/dev/null || echo "?")
            for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
            if [[ $mode == allinone ]]; then
                total=$(awk -v a="$s0" -v b="$s1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}')
                echo "$mode $run $total - - 0 0 $loss" | tee -a "$OUT/cost.txt"
            else
                sc=$(awk -v a="$s0" -v b="$s1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}')
                mc=$(awk -v a="$m0" -v b="$m1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}')
                total=$(awk -v a="$sc" -v b="$mc" 'BEGIN {printf "%.2f", a + b}')
                echo "$mode $run $total $sc $mc $bytes $requests $loss" | tee -a "$OUT/cost.txt"
            fi
        done
    done
fi
log "results in $OUT"
