#!/bin/sh
# Headless-Chromium end-to-end tests. Needs /usr/bin/chromium and a built server:
#   cargo build --release -p zvon-signaling && tests/browser/run.sh
# ZVON_BIN overrides the server binary (relative to the repo root or absolute).
set -eu
cd "$(dirname "$0")"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
exec node e2e.mjs "$@"
