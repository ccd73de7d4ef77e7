#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and interop tests, headless-Chromium end to end.
# Installs what a fresh Debian 12 machine lacks. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The load tester's `opus` crate builds libopus from source with cmake.
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# The cluster registry tests start their own redis-server (on a free port) and fail without it.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The shaped-network browser tests drop packets with nftables in a network namespace.
command -v nft >/dev/null 2>&1 || missing+=(nftables)
# The TURN browser test relays through a real coturn.
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
# ffprobe / ffmpeg check the recordings tests/browser/record.mjs makes.
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step() { echo; echo "== $* ($(date +%T))"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, protocol and webrtc-rs interop tests)"
# The cluster tests run real `zvon` processes: the binary must exist before they start.
cargo build -p zvon-signaling --bin zvon --locked
cargo test --workspace --locked

step "soak smoke: 60 s of churn against a child zvon (scripts/bench/soak.sh runs the hour)"
# Joins, leaves, mutes, renegotiations and calls must all succeed; the drift bound is loose
# here because a minute is mostly warm-up (the hour-long bench holds it to 5 %).
cargo build -p zvon-interop --bin soak --locked
ZVON_BIN=target/debug/zvon target/debug/soak --duration-secs 60 --warmup-secs 15 \
  --sample-secs 5 --rooms 2 --room-size 3 --call-secs 15 --max-drift-percent 25

step "a livestream of a single-layer camera: every viewer gets the video (webrtc-rs viewers)"
# A viewer whose first estimate is under the camera starts with audio only and needs str0m's
# probes to raise it; with the pacer's steps deferred they never did (9 of 20 viewers here).
cargo build -p zvon-loadtest --bin zvon-loadtest --locked
live_dir=$(mktemp -d)
target/debug/zvon serve --dev --http-addr 127.0.0.1:7350 --metrics-addr 127.0.0.1:0 \
  --media-bind-ip 127.0.0.1 --media-ip 127.0.0.1 --media-port 7360 >"$live_dir/zvon.log" 2>&1 &
live_pid=$!
trap 'kill $live_pid 2>/dev/null; rm -rf "$live_dir"' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:7350/api/info >/dev/null && break; sleep 0.2; done
target/debug/zvon-loadtest livestream --viewers 20 --target zvon --url http://127.0.0.1:7350 --ramp 10 \
  --duration 8s --quiet --max-failures 0 --report "$live_dir/report.json"
python3 - "$live_dir/report.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["streams"]
assert s["expected"] == 40 and s["received"] == 40, s
PY
kill $live_pid; wait $live_pid 2>/dev/null || true
trap - EXIT
rm -rf "$live_dir"

step "headless Chromium end to end"
cargo build -p zvon-signaling --locked
ZVON_BIN=target/debug/zvon tests/browser/run.sh

step "aiortc (an independent Python WebRTC stack) against the server"
# Kept inside the repo's target/, like every other build product.
venv=target/aiortc-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import aiortc, websockets' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q aiortc websockets
fi
"$venv/bin/python" tests/aiortc/unmute_and_candidates.py target/debug/zvon
# WHIP publishers and WHEP viewers (speaker following, DELETE, the bad-input status codes).
"$venv/bin/python" tests/aiortc/whip_whep.py target/debug/zvon

step "a local fleet with scripts/cluster-local.sh"
cluster_dir=$(mktemp -d)
trap 'ZVON_CLUSTER_DIR=$cluster_dir scripts/cluster-local.sh stop; rm -rf "$cluster_dir"' EXIT
ZVON_BIN=target/debug/zvon ZVON_CLUSTER_DIR=$cluster_dir scripts/cluster-local.sh start 3
for port in 7450 7550 7650; do curl -sf "http://127.0.0.1:$port/api/info" >/dev/null; done
# The load tester through two nodes (a repeated --url): light receivers joining via node 2 are
# proxied to the room's owner and must hear the speaker who joined via node 1, without loss.
target/debug/zvon-loadtest audio --speakers 1 --listeners 4 --light-receivers --light-sample 5 \
  --url http://127.0.0.1:7450 --url http://127.0.0.1:7550 --duration 3s --quiet \
  --max-loss 0% --max-failures 0 --report "$cluster_dir/loadtest.json"
python3 - "$cluster_dir/loadtest.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["streams"], r["packets"]
assert s["expected"] == 4 and s["received"] == 4, s
assert p["received_by_subscribers"] > 4 * 50, p
assert r["e2e_latency_ms"]["p50"] is not None, r["e2e_latency_ms"]
PY
ZVON_CLUSTER_DIR=$cluster_dir scripts/cluster-local.sh stop
trap - EXIT
rm -rf "$cluster_dir"

step "operations: dashboards, alert rules, metrics exposition, container files"
ZVON_BIN=target/debug/zvon scripts/check_ops.sh

step "all tests passed"
