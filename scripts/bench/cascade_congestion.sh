#!/usr/bin/env bash
# Cubic against BBR on the QUIC cascade link over a lossy, rate-limited path: a network
# namespace of its own whose loopback is limited by tbf (RATE) and drops LOSS % of the packets
# at random on input (nftables; this kernel has no netem), both ends of one CascadeLink inside
# it (sfu/examples/cascade_congestion_bench.rs). Deletes the namespace when done.
#   RATE=20mbit LOSS=2 SECONDS=15 VIDEO_KBPS=12000 AUDIO_FLOWS=40 ROUNDS=2 \
#     scripts/bench/cascade_congestion.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RATE=${RATE:-20mbit}
LOSS=${LOSS:-2}
SECONDS_PER_RUN=${SECONDS:-15}
VIDEO_KBPS=${VIDEO_KBPS:-12000}
AUDIO_FLOWS=${AUDIO_FLOWS:-40}
ROUNDS=${ROUNDS:-2}
PROFILE=${PROFILE:-release}
ns="zvcc$$"

flag=()
[ "$PROFILE" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p zvon-sfu --example cascade_congestion_bench
bin="target/$PROFILE/examples/cascade_congestion_bench"

cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
# Loopback's MTU is 64 KiB; a real link's is 1500 (and tbf's burst must hold one packet).
ip -n "$ns" link set lo mtu 1500
ip netns exec "$ns" tc qdisc add dev lo root tbf rate "$RATE" burst 32kb latency 50ms
ip netns exec "$ns" nft -f - <<NFT
table inet lossy {
  chain input {
    type filter hook input priority 0; policy accept;
    meta l4proto udp numgen random mod 100 < $LOSS counter drop
  }
}
NFT
echo "path: loopback in netns $ns, tbf $RATE (burst 32kb, latency 50ms), $LOSS % random drop on input"
ip netns exec "$ns" "$bin" "$SECONDS_PER_RUN" "$VIDEO_KBPS" "$AUDIO_FLOWS" "$ROUNDS"
ip netns exec "$ns" nft list table inet lossy | grep -o 'packets [0-9]*' | sed 's/^/dropped by the path: /'
