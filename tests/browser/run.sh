#!/bin/sh
# Headless-Chromium end-to-end tests. Needs /usr/bin/chromium and a built server:
#   cargo build --release -p zvon-signaling && tests/browser/run.sh
# ZVON_BIN overrides the server binary (relative to the repo root or absolute).
# Arguments pick e2e.mjs scenarios by name prefix and skip calls.mjs, classroom.mjs, broadcast.mjs,
# cluster.mjs, first_frame.mjs, shaped.mjs, turn.mjs, network_change.mjs and record.mjs (run those as `node calls.mjs [prefix...]` etc.;
# cluster.mjs needs redis-server; `node first_frame.mjs 9` is the first-frame benchmark in
# BENCHMARKS.md; shaped.mjs needs root with ip, tc and nft; turn.mjs root, ip, nft and coturn;
# network_change.mjs root, ip and nft);
# without arguments
# all run, and the exit status is non-zero if any failed. ZVON_WEB_DIR=signaling/web makes the
# pages load the browser client from disk (trying client changes without rebuilding the server).
set -eu
cd "$(dirname "$0")"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
status=0
node e2e.mjs "$@" || status=1
if [ $# -eq 0 ]; then
  node calls.mjs || status=1
  node classroom.mjs || status=1
  # WHIP and WHEP spoken by pages with fetch, next to the browser client.
  node broadcast.mjs || status=1
  node cluster.mjs || status=1
  # Two joins through the whole first-frame path (early socket, join, subscriber offer, first
  # keyframe); it fails only if a frame never comes. Its times are the benchmark's business.
  node first_frame.mjs 2 || status=1
  # Shaped downlinks (network namespace, tbf, nftables): needs root, ip, tc and nft.
  node shaped.mjs || status=1
  # UDP to the media server blocked (netns + nftables): calls through a real coturn.
  node turn.mjs || status=1
  # A participant's network changes mid-call (netns, a second interface, a NAT rebinding).
  node network_change.mjs || status=1
  # Recording a 20 s call (files checked with ffprobe/ffmpeg), a SIGKILL mid-recording, an
  # unwritable record directory.
  node record.mjs || status=1
fi
exit $status
