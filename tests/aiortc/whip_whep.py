"""WHIP in, WHEP out, with aiortc (an independent WebRTC stack) on both ends of a real zvon
server, through docs/protocol.md ("WHIP and WHEP") only. What a user would notice:

- two WHIP publishers (A sends 320x240 video, B 160x120) are accepted (201, Location, SDP
  answer); a WHEP viewer asking for B (?participant=) decodes 160x120 frames;
- a WHEP viewer following the speaker first decodes A (the first to publish video); when B
  talks (loud audio, so its ssrc-audio-level says so) it decodes B's frames, and A's again
  when A talks: switched by the server on the same m-lines, no new offer;
- DELETE of B's session (with B's token) ends it (200), the room forgets B; someone else's
  DELETE is refused (403), an unknown session is 404, PATCH is 405; the backend got
  whip.started and whip.ended (reason "deleted") webhooks for it;
- bad input: no token 401, a token for another room 403, a token without can_publish 403,
  garbage SDP 400, an offer with only AV1 video 406, a flood of POSTs 429.

Run: python3 -m venv v && v/bin/pip install aiortc websockets
     v/bin/python tests/aiortc/whip_whep.py target/debug/zvon
Exit code 0 on success. Only loopback is used.
"""

import asyncio
import fractions
import json
import math
import struct
import os
import subprocess
import sys
import time
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaStreamError
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame, VideoFrame

from zvon_harness import CONFIG, connected, zvon_server


class Video(MediaStreamTrack):
    """Frames of a fixed size, so a viewer can tell whom it receives."""
    kind = "video"

    def __init__(self, width, height):
        super().__init__()
        self.width, self.height, self.pts = width, height, 0

    async def recv(self):
        await asyncio.sleep(1 / 15)
        self.pts += 6000
        frame = VideoFrame(self.width, self.height, "yuv420p")
        shade = (self.pts // 6000) % 200 + 20
        for plane in frame.planes:
            plane.update(bytes([shade]) * plane.buffer_size)
        frame.pts, frame.time_base = self.pts, fractions.Fraction(1, 90000)
        return frame


# 20 ms of a 440 Hz tone at about -8 dBov, and of silence.
TONE = struct.pack("<960h", *(int(12000 * math.sin(2 * math.pi * 440 * i / 48000)) for i in range(960)))
SILENCE = bytes(960 * 2)


class Voice(MediaStreamTrack):
    """A 440 Hz tone while `loud`, silence otherwise (aiortc writes the level it measures)."""
    kind = "audio"

    def __init__(self):
        super().__init__()
        self.loud, self.pts = False, 0

    async def recv(self):
        await asyncio.sleep(0.02)
        frame = AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(TONE if self.loud else SILENCE)
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.pts, fractions.Fraction(1, 48000)
        self.pts += 960
        return frame


class Hooks(BaseHTTPRequestHandler):
    """The app backend: collects the webhooks the server POSTs."""
    events = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.events.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


async def hook(event, identity, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in Hooks.events:
            if e.get("event") == event and e.get("identity", "").startswith(identity):
                return e
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {event} webhook for {identity}: {[e.get('event') for e in Hooks.events]}")


def token(http, room, identity, *grants):
    url = f"http://{http}/api/dev-token?room={room}&identity={identity}"
    t = json.loads(urllib.request.urlopen(url).read())["token"]
    if not grants:
        return t
    # Tokens with other grants are minted like a backend would (the dev secret is known).
    return subprocess.check_output(
        [BINARY, "token", "--dev", "--room", room, "--identity", identity, *grants]).decode().strip()


def http_call(method, url, body=None, bearer=None, content_type="application/sdp"):
    req = urllib.request.Request(url, data=body.encode() if body is not None else None, method=method)
    if bearer:
        req.add_header("Authorization", f"Bearer {bearer}")
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


async def ice_done(pc):
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.05)


async def whip_publish(http, room, identity, width, height):
    pc = RTCPeerConnection(CONFIG)
    voice = Voice()
    pc.addTransceiver(voice, direction="sendonly")
    pc.addTransceiver(Video(width, height), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await ice_done(pc)
    status, headers, answer = await asyncio.to_thread(
        http_call, "POST", f"http://{http}/whip/{room}", pc.localDescription.sdp, token(http, room, identity))
    assert status == 201, (status, answer)
    assert headers["content-type"] == "application/sdp", headers
    location = headers["location"]
    assert location.startswith(f"/whip/{room}/"), location
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await connected(pc, f"WHIP publisher {identity}")
    return pc, voice, location


class Viewer:
    def __init__(self):
        self.pc = RTCPeerConnection(CONFIG)
        self.sizes = []  # (arrival, width, height) of each decoded frame
        self.audio_packets = 0
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track):
            async def consume():
                try:
                    while True:
                        frame = await track.recv()
                        if track.kind == "video":
                            self.sizes.append((time.monotonic(), frame.width, frame.height))
                        else:
                            self.audio_packets += 1
                except MediaStreamError:
                    pass
            asyncio.ensure_future(consume())

    async def start(self, http, room, identity, query=""):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await ice_done(self.pc)
        status, headers, answer = await asyncio.to_thread(
            http_call, "POST", f"http://{http}/whep/{room}{query}", self.pc.localDescription.sdp,
            token(http, room, identity))
        assert status == 201, (status, answer)
        self.location = headers["location"]
        assert self.location.startswith(f"/whep/{room}/"), self.location
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await connected(self.pc, f"WHEP viewer {identity}")
        self.offers = 1

    async def shows(self, width, what, timeout=15, frames=10):
        """Waits until `frames` frames in a row decode at `width`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = [w for (_, w, _) in self.sizes[-frames:]]
            if len(recent) == frames and all(w == width for w in recent):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{what}: last sizes {[s[1:] for s in self.sizes[-frames:]]}, want width {width}")


async def run(http):
    room = f"whip-{os.getpid()}"
    a_pc, a_voice, a_loc = await whip_publish(http, room, "alice", 320, 240)
    b_pc, b_voice, b_loc = await whip_publish(http, room, "bob", 160, 120)
    print("two WHIP publishers connected")

    chosen = Viewer()
    await chosen.start(http, room, "v1", "?participant=bob")
    await chosen.shows(160, "WHEP viewer that chose bob")
    print("WHEP viewer with ?participant=bob decodes bob's 160x120 video")

    follower = Viewer()
    await follower.start(http, room, "v2")
    await follower.shows(320, "WHEP viewer following the speaker, before anyone talks")
    assert follower.audio_packets > 0, "no audio reached the follower"
    print("WHEP viewer following the speaker decodes alice (first to publish)")
    b_voice.loud = True
    started = time.monotonic()
    await follower.shows(160, "follower after bob talks")
    print(f"bob talks: the follower decodes bob's video after {time.monotonic() - started:.1f}s")
    b_voice.loud, a_voice.loud = False, True
    await follower.shows(320, "follower after alice talks")
    print("alice talks: the follower decodes alice's video again (same connection, no new offer)")
    assert follower.pc.signalingState == "stable"

    # Ending sessions: only with the session's own token.
    status, _, _ = http_call("DELETE", f"http://{http}{b_loc}", bearer=token(http, room, "mallory"))
    assert status == 403, status
    status, _, _ = http_call("DELETE", f"http://{http}/whip/{room}/nosuchsession", bearer=token(http, room, "bob"))
    assert status == 404, status
    status, headers, _ = http_call("PATCH", f"http://{http}{b_loc}", "a=end-of-candidates\r\n",
                                   token(http, room, "bob"), "application/trickle-ice-sdpfrag")
    assert status == 405, status
    status, _, _ = http_call("DELETE", f"http://{http}{b_loc}")
    assert status == 401, status
    status, _, _ = http_call("DELETE", f"http://{http}{b_loc}", bearer=token(http, room, "bob"))
    assert status == 200, status
    # The viewer that chose bob now shows nobody: its frames stop.
    await asyncio.sleep(1.5)
    n = len(chosen.sizes)
    await asyncio.sleep(1.5)
    assert len(chosen.sizes) <= n + 2, f"bob's frames still arrive after DELETE ({len(chosen.sizes) - n})"
    print("DELETE ends bob's session (someone else's DELETE 403, unknown 404, PATCH 405)")
    started = await hook("whip.started", "bob")
    ended = await hook("whip.ended", "bob")
    assert ended["session_id"] == started["session_id"] and ended["reason"] == "deleted", ended
    assert b_loc.endswith(ended["session_id"]) and ended["room"] == room, (b_loc, ended)
    await hook("whep.started", "v2")
    print("webhooks: whip.started and whip.ended (reason deleted) for bob's session, whep.started")
    status, _, _ = http_call("DELETE", f"http://{http}{chosen.location}", bearer=token(http, room, "v1"))
    assert status == 200, status

    # Bad input.
    offer = a_pc.localDescription.sdp
    status, headers, _ = http_call("POST", f"http://{http}/whip/{room}", offer)
    assert status == 401 and headers.get("www-authenticate") == "Bearer", status
    status, _, _ = http_call("POST", f"http://{http}/whip/{room}", offer, token(http, "other-room", "eve"))
    assert status == 403, status
    status, _, _ = http_call("POST", f"http://{http}/whip/{room}", offer,
                             token(http, room, "eve", "--no-publish"))
    assert status == 403, status
    status, _, body = http_call("POST", f"http://{http}/whip/{room}", "hello", token(http, room, "eve"))
    assert status == 400, (status, body)
    av1 = offer.replace("VP8/90000", "AV1/90000").replace("H264/90000", "AV1/90000")
    status, _, body = http_call("POST", f"http://{http}/whip/{room}", av1, token(http, room, "eve"))
    assert status == 406, (status, body)
    status, _, body = http_call("POST", f"http://{http}/whip/{room}", offer, token(http, room, "eve"), "text/plain")
    assert status == 415, (status, body)
    print("bad input: 401 without token, 403 other room / no can_publish, 400 garbage, 406 AV1 only, 415 not SDP")
    codes = [http_call("POST", f"http://{http}/whip/{room}", "hello", token(http, room, "eve"))[0]
             for _ in range(60)]
    assert 429 in codes, codes
    print(f"a flood of 60 POSTs: {codes.count(429)} answered 429")

    for pc in (a_pc, b_pc, chosen.pc, follower.pc):
        await pc.close()


async def main():
    hooks = HTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{hooks.server_port}/hooks"
    async with zvon_server(BINARY, "whip", ["--webhook-url", hook_url]) as http:
        await asyncio.wait_for(run(http), 120)


if __name__ == "__main__":
    BINARY = sys.argv[1]
    asyncio.run(main())
    print("whip_whep: PASS")
