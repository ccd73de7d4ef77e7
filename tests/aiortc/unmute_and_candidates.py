"""aiortc (a strict, independent WebRTC stack) against a real zvon server, through
docs/protocol.md only.

aiortc's jitter buffer waits for missing sequence numbers. So this checks, as a user
would notice:
- a publisher (audio + video) and a viewer both connect with the SDP the server writes
  (candidate and end-of-candidates in every m-section);
- after the publisher's video is muted for 2 s (while it keeps sending) and unmuted, the
  viewer decodes frames again within 1.5 s, not after a 6-7 s freeze.

Run: python3 -m venv v && v/bin/pip install aiortc websockets
     v/bin/python tests/aiortc/unmute_and_candidates.py target/debug/zvon
Exit code 0 on success. Only loopback is used.
"""

import asyncio
import json
import os
import sys
import time
import urllib.request

import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaStreamError
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from zvon_harness import CONFIG, connected, zvon_server


class Client:
    def __init__(self, http, room, name):
        self.http, self.room, self.name = http, room, name
        self.queue = asyncio.Queue()

    async def join(self):
        url = f"http://{self.http}/api/dev-token?room={self.room}&name={self.name}"
        token = json.loads(urllib.request.urlopen(url).read())["token"]
        self.ws = await websockets.connect(f"ws://{self.http}/rtc")
        self.reader = asyncio.ensure_future(self._read())
        await self.send({"type": "join", "protocol": 1, "token": token, "room": self.room})
        self.joined = await self.wait("joined")
        self.id = self.joined["participant"]["id"]

    async def _read(self):
        try:
            async for text in self.ws:
                await self.queue.put(json.loads(text))
        except websockets.ConnectionClosed:
            pass

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def wait(self, ty, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            msg = await asyncio.wait_for(self.queue.get(), deadline - time.monotonic())
            if msg["type"] == "error":
                raise RuntimeError(f"{self.name}: {msg}")
            if msg["type"] == ty:
                return msg


async def main(binary):
    async with zvon_server(binary, "aiortc") as http:
        await run(http)


async def run(http):
    room = f"aiortc-{os.getpid()}"
    pub = Client(http, room, "pub")
    await pub.join()
    pub_pc = RTCPeerConnection(CONFIG)
    pub_pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pub_pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pub_pc.setLocalDescription(await pub_pc.createOffer())
    mids = [t.mid for t in pub_pc.getTransceivers()]
    await pub.send({"type": "publish_offer", "sdp": pub_pc.localDescription.sdp, "tracks": [
        {"mid": mids[0], "kind": "audio", "source": "microphone", "muted": False},
        {"mid": mids[1], "kind": "video", "source": "camera", "muted": False}]})
    answer = await pub.wait("publish_answer")
    video_track_id = next(t["id"] for t in answer["tracks"] if t["kind"] == "video")
    await pub_pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    await connected(pub_pc, "publisher")
    print("publisher connected")

    viewer = Client(http, room, "viewer")
    await viewer.join()
    sub_pc = RTCPeerConnection(CONFIG)
    frames = []  # arrival time of each decoded video frame

    @sub_pc.on("track")
    def on_track(track):
        if track.kind != "video":
            return

        async def consume():
            try:
                while True:
                    await track.recv()
                    frames.append(time.monotonic())
            except MediaStreamError:
                pass
        asyncio.ensure_future(consume())

    offer = await viewer.wait("subscriber_offer")
    await sub_pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await sub_pc.setLocalDescription(await sub_pc.createAnswer())
    await viewer.send({"type": "subscriber_answer", "sdp": sub_pc.localDescription.sdp})
    await connected(sub_pc, "viewer")
    print("viewer connected")

    deadline = time.monotonic() + 10
    while len(frames) < 30:
        if time.monotonic() > deadline:
            raise RuntimeError(f"viewer decoded only {len(frames)} frames in 10 s")
        await asyncio.sleep(0.05)
    print(f"viewer decodes video ({len(frames)} frames)")

    await pub.send({"type": "mute", "track_id": video_track_id, "muted": True})
    await asyncio.sleep(2.0)
    before = len(frames)
    unmuted_at = time.monotonic()
    await pub.send({"type": "mute", "track_id": video_track_id, "muted": False})
    await asyncio.sleep(3.0)
    after = [t - unmuted_at for t in frames[before:] if t > unmuted_at]
    first = after[0] if after else None
    print(f"after the unmute: first frame at {first} s, {len(after)} frames in 3 s")
    await pub.send({"type": "leave"})
    await viewer.send({"type": "leave"})
    await pub_pc.close()
    await sub_pc.close()
    if first is None or first > 1.5:
        raise RuntimeError(f"viewer froze after the unmute: first frame at {first} s")
    print("OK")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), 60))
