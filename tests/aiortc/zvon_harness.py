"""What the aiortc tests share: loopback-only ICE, a free port, waiting for a connection, and
a `zvon serve --dev` child on free loopback ports (ended when the test is done)."""

import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
import urllib.request

import aioice.ice
from aiortc import RTCConfiguration

# aiortc skips 127.0.0.1 by design; the test network is loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

CONFIG = RTCConfiguration(iceServers=[])
CONFIG.bundlePolicy = "max-bundle"


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def connected(pc, what, timeout=15):
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not connected after {timeout} s ({pc.connectionState})")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def zvon_server(binary, name, extra_args=()):
    """Yields the server's `host:port`; prints the log's path, and its tail if the body failed."""
    http = f"127.0.0.1:{free_port()}"
    log = tempfile.NamedTemporaryFile(prefix=f"zvon-{name}-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [binary, "serve", "--dev", "--http-addr", http, "--metrics-addr", f"127.0.0.1:{free_port()}",
         "--media-bind-ip", "127.0.0.1", "--media-ip", "127.0.0.1",
         "--media-port", str(free_port(socket.SOCK_DGRAM)),
         # A failed run may leave clients connected: do not wait 30 s for them to leave.
         "--drain-timeout", "1s", *extra_args],
        stdout=log, stderr=subprocess.STDOUT)
    ok = False
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{http}/api/info")
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield http
        ok = True
    finally:
        server.terminate()
        server.wait(10)
        print(f"server log: {log.name}")
        if not ok:
            print(open(log.name).read()[-6000:])
