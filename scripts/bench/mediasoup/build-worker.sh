#!/usr/bin/env bash
# Builds mediasoup's C++ worker for the forwarding benchmark, offline: the sources come from the
# npm package (which ships worker/), the libraries from Debian 12, meson from PyPI.
#
# Why 3.12.16: every newer worker needs libraries Debian does not package (versatica's libsrtp3
# fork, flatbuffers 23+/24, unordered_dense) and its meson.build pulls them as wraps from the
# internet; 3.12's wraps are exactly Debian 12's versions (abseil 20220623, libsrtp 2.5.0,
# libuv 1.44.2, OpenSSL 3.0, usrsctp, nlohmann-json), so system_deps.py points meson.build at
# them. Prints the binary's path; the binary is kept in target/mediasoup/ and reused.
#
#   scripts/bench/mediasoup/build-worker.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
VERSION=3.12.16
OUT=${MEDIASOUP_BUILD_DIR:-$ROOT/target/mediasoup}
BIN=$OUT/mediasoup-worker-$VERSION
if [[ -x $BIN ]]; then
    echo "$BIN"
    exit 0
fi

log() { printf '[mediasoup] %s\n' "$*" >&2; }

pkgs=(g++ pkg-config ninja-build python3-venv libssl-dev libuv1-dev libsrtp2-dev libabsl-dev
    libusrsctp-dev nlohmann-json3-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >&2
fi

mkdir -p "$OUT"
cd "$OUT"
rm -rf src build package
log "npm pack mediasoup@$VERSION"
tarball=$(npm pack --silent "mediasoup@$VERSION")
tar xzf "$tarball"
mv package/worker src
rm -rf package "$tarball"
python3 "$HERE/system_deps.py" src
if [[ ! -x venv/bin/meson ]]; then
    python3 -m venv venv
    venv/bin/pip install --quiet 'meson>=1.1' >&2
fi
log "meson setup (system libraries, no wraps)"
venv/bin/meson setup --wrap-mode=nodownload --buildtype=release src build >&2
log "building mediasoup-worker (~40 min at nice 10 on 2 busy cores)"
nice -n 10 ninja -C build mediasoup-worker >&2
cp build/mediasoup-worker "$BIN"
rm -rf src build
echo "$BIN"
