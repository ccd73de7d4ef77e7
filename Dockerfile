# syntax=docker/dockerfile:1
# Zvon all-in-one server (signaling with the media node embedded).
#   docker build -t zvon .
#   docker run --rm -p 7350:7350 -p 7360-7361:7360-7361/udp -e ZVON_MEDIA_IP=<host IP> zvon serve --dev
# docker-compose.yml runs it with Prometheus and Grafana.

# ---- build ----------------------------------------------------------------------------------
# Same toolchain as development (rust-version in Cargo.toml is the floor, this is what CI uses).
FROM rust:1.95.0-slim-bookworm AS builder

# cmake: the workspace's load generator builds libopus from source, and aws-lc-sys falls back to
# cmake on targets without its prebuilt build. Pinned to bookworm's 3.25.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake=3.25.* \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Every workspace member's manifest must be present for --locked to resolve the workspace.
COPY Cargo.toml Cargo.lock ./
COPY sfu sfu
COPY signaling signaling
COPY loadtest loadtest
COPY tests tests

# The caches keep the registry and build artefacts between builds; the binary is copied out of
# the cached target dir because cache mounts are not part of the image. The release profile
# keeps line tables for profiling on a dev machine; the image drops them (symbols stay, so
# backtraces still name functions) and its binary shrinks several times.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p zvon-signaling --bin zvon \
    && cp target/release/zvon /usr/local/bin/zvon

# ---- run ------------------------------------------------------------------------------------
# Same Debian release as the builder, so the glibc the binary was linked against is there.
# A dated tag: the same base bytes on every build until someone bumps it on purpose.
FROM debian:bookworm-20260918-slim

RUN groupadd --system --gid 10001 zvon \
    && useradd --system --uid 10001 --gid zvon --no-create-home --shell /usr/sbin/nologin zvon

COPY --from=builder /usr/local/bin/zvon /usr/local/bin/zvon

# Inside the container every listener binds all interfaces; docker-compose.yml decides which of
# them the host publishes. Two media workers so the UDP ports below are all there is.
ENV ZVON_HTTP_ADDR=0.0.0.0:7350 \
    ZVON_MEDIA_BIND_IP=0.0.0.0 \
    ZVON_MEDIA_PORT=7360 \
    ZVON_WORKERS=2 \
    ZVON_METRICS_ADDR=0.0.0.0:9350

# Signaling HTTP + WebSocket and the browser client.
EXPOSE 7350/tcp
# WebRTC media: one UDP port per worker (ZVON_MEDIA_PORT + i for i < ZVON_WORKERS).
EXPOSE 7360-7361/udp
# Prometheus /metrics, /healthz, /readyz: keep it on a private network.
EXPOSE 9350/tcp

# Numeric, so runtimes that check for non-root without reading /etc/passwd accept it.
USER 10001:10001

# `zvon healthcheck` GETs /healthz on ZVON_METRICS_ADDR (the image has no curl).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["zvon", "healthcheck"]

ENTRYPOINT ["zvon"]
# Production needs --api-key/--api-secret (or ZVON_API_KEY/ZVON_API_SECRET) and
# ZVON_MEDIA_IP set to the address clients reach; docker-compose.yml adds --dev for a local try.
CMD ["serve"]
