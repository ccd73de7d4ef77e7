#!/usr/bin/env bash
# Soak: an hour of churn (joins, leaves, mutes, renegotiations, 1:1 calls) against one release
# `zvon serve`, watching the server's RSS, file descriptors and error counters for drift. The
# driver (`tests/interop/src/bin/soak.rs`) starts the server itself and ends it by PID; it
# exits non-zero when RSS drifts ≥ 5 %, descriptors grow, a worker panics, error counters
# grow faster in the second half, or ≥ 2 % of the actions fail.
#   DURATION=3600 ROOMS=3 ROOM_SIZE=4 scripts/bench/soak.sh
# Results: target/bench/soak/soak-<date>.log (the last line is JSON).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-3600}
WARMUP=${WARMUP:-120}
ROOMS=${ROOMS:-3}
ROOM_SIZE=${ROOM_SIZE:-4}
ACTION_MS=${ACTION_MS:-2000}
CALL_SECS=${CALL_SECS:-30}
OUT=${OUT:-target/bench/soak}
mkdir -p "$OUT"
cargo build --release -q -p zvon-signaling -p zvon-interop --bin zvon --bin soak
log="$OUT/soak-$(date -u +%Y%m%dT%H%M%S).log"
echo "soak: ${DURATION}s, log $log"
ZVON_BIN=target/release/zvon target/release/soak \
  --duration-secs "$DURATION" --warmup-secs "$WARMUP" --rooms "$ROOMS" \
  --room-size "$ROOM_SIZE" --action-ms "$ACTION_MS" --call-secs "$CALL_SECS" 2>&1 | tee "$log"
