// mediasoup as a forwarding-benchmark server: one mediasoup worker, one router per room, and
// the smallest signaling zvon-loadtest's `--target mediasoup` can speak (loadtest/src/targets/
// mediasoup.rs). mediasoup speaks ORTC parameters, the load tester SDP (str0m), so this file
// translates: a publisher's SDP offer becomes a WebRtcTransport and one Producer per m-line,
// and each subscriber gets one WebRtcTransport whose consumers are offered to it in SDP.
//
// Protocol: one WebSocket per participant, JSON messages.
//   → {type:"join", room, identity}          ← {type:"joined", participant_id}
//   → {type:"publish", sdp}                   ← {type:"publish_answer", sdp, tracks:[{mid,id,kind}]}
//   ← {type:"subscriber_offer", sdp, tracks:[{mid, track_id, participant_id, kind}]}
//   → {type:"subscriber_answer", sdp}         (one offer in flight at a time)
//   → {type:"leave"} or the socket closes
//   ← {type:"error", code, message}
//
//   MEDIASOUP_WORKER_BIN=… node server.mjs --ip 192.0.2.2 --port 7450
import { parseArgs } from 'node:util';
import * as mediasoup from 'mediasoup';
import * as sdpTransform from 'sdp-transform';
import { WebSocketServer } from 'ws';

const { values: args } = parseArgs({
  options: {
    ip: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '7450' },
  },
});

const MEDIA_CODECS = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
  { kind: 'video', mimeType: 'video/VP8', clockRate: 90000 },
];
// Header extensions the producers keep (mediasoup drops the rest from what it forwards anyway).
const EXTENSIONS = new Set([
  'urn:ietf:params:rtp-hdrext:sdes:mid',
  'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
  'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
  'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
]);

const worker = await mediasoup.createWorker({ logLevel: 'warn', rtcMinPort: 20000, rtcMaxPort: 59999 });
worker.on('died', () => {
  console.error('mediasoup worker died');
  process.exit(1);
});
// The benchmark stops us with SIGTERM: take the worker down with us.
process.on('SIGTERM', () => {
  worker.close();
  process.exit(0);
});
const rooms = new Map(); // name -> { router, peers: Map<id, Peer> }
let nextId = 1;

async function room(name) {
  let r = rooms.get(name);
  if (!r) {
    r = { router: null, peers: new Map() };
    rooms.set(name, r);
    r.router = worker.createRouter({ mediaCodecs: MEDIA_CODECS });
  }
  if (r.router instanceof Promise) r.router = await r.router;
  return r;
}

function transportOptions() {
  return {
    listenIps: [{ ip: args.ip }],
    enableUdp: true,
    enableTcp: false,
    preferUdp: true,
    initialAvailableOutgoingBitrate: 2_000_000,
  };
}

// The DTLS role the remote side takes, from its a=setup.
function remoteDtls(sdp, media) {
  const fp = media.fingerprint ?? sdp.fingerprint;
  const setup = media.setup ?? sdp.setup;
  return {
    role: setup === 'active' ? 'client' : setup === 'passive' ? 'server' : 'client',
    fingerprints: [{ algorithm: fp.type, value: fp.hash }],
  };
}

// Session-level and transport attributes shared by our offers and answers.
function transportMedia(transport, setup) {
  const ice = transport.iceParameters;
  const fp = transport.dtlsParameters.fingerprints.find((f) => f.algorithm === 'sha-256');
  return {
    connection: { version: 4, ip: '0.0.0.0' },
    iceUfrag: ice.usernameFragment,
    icePwd: ice.password,
    fingerprint: { type: fp.algorithm, hash: fp.value },
    setup,
    candidates: transport.iceCandidates.map((c) => ({
      foundation: c.foundation,
      component: 1,
      transport: c.protocol,
      priority: c.priority,
      ip: c.ip,
      port: c.port,
      type: c.type,
    })),
    endOfCandidates: 'end-of-candidates',
    rtcpMux: 'rtcp-mux',
    rtcpRsize: 'rtcp-rsize',
  };
}

function session(media) {
  return sdpTransform.write({
    version: 0,
    origin: { username: '-', sessionId: '1', sessionVersion: 1, netType: 'IN', ipVer: 4, address: '0.0.0.0' },
    name: '-',
    timing: { start: 0, stop: 0 },
    icelite: 'ice-lite',
    groups: [{ type: 'BUNDLE', mids: media.map((m) => m.mid).join(' ') }],
    msidSemantic: { semantic: 'WMS', token: '*' },
    media,
  });
}

// An m-line's codec lines from ORTC codecs.
function codecLines(codecs) {
  return {
    payloads: codecs.map((c) => c.payloadType).join(' '),
    rtp: codecs.map((c) => ({
      payload: c.payloadType,
      codec: c.mimeType.split('/')[1],
      rate: c.clockRate,
      encoding: c.channels > 1 ? c.channels : undefined,
    })),
    fmtp: codecs
      .filter((c) => Object.keys(c.parameters ?? {}).length)
      .map((c) => ({
        payload: c.payloadType,
        config: Object.entries(c.parameters).map(([k, v]) => `${k}=${v}`).join(';'),
      })),
    rtcpFb: codecs.flatMap((c) =>
      (c.rtcpFeedback ?? []).map((fb) => ({ payload: c.payloadType, type: fb.type, subtype: fb.parameter || undefined })),
    ),
  };
}

// A publisher m-line → the Producer's RTP parameters (the codec we forward, its RTX, SSRCs).
function producerParameters(sdp, m) {
  const want = m.type === 'audio' ? 'opus' : 'vp8';
  const rtp = m.rtp.find((r) => r.codec.toLowerCase() === want);
  if (!rtp) throw new Error(`no ${want} in m-line ${m.mid}`);
  const fmtp = (pt) => sdpTransform.parseParams(m.fmtp?.find((f) => f.payload === pt)?.config ?? '');
  const feedback = (pt) =>
    (m.rtcpFb ?? []).filter((f) => f.payload == pt).map((f) => ({ type: f.type, parameter: f.subtype ?? '' }));
  const codecs = [
    {
      mimeType: `${m.type}/${rtp.codec}`,
      payloadType: rtp.payload,
      clockRate: rtp.rate,
      ...(m.type === 'audio' ? { channels: rtp.encoding ? Number(rtp.encoding) : 2 } : {}),
      parameters: fmtp(rtp.payload),
      rtcpFeedback: feedback(rtp.payload),
    },
  ];
  const rtx = m.rtp.find((r) => r.codec.toLowerCase() === 'rtx' && Number(fmtp(r.payload).apt) === rtp.payload);
  const ssrcs = [...new Set((m.ssrcs ?? []).map((s) => s.id))];
  const fid = (m.ssrcGroups ?? []).find((g) => g.semantics === 'FID');
  const encoding = {};
  if (fid) {
    const [main, repair] = fid.ssrcs.split(' ').map(Number);
    encoding.ssrc = main;
    if (rtx) {
      encoding.rtx = { ssrc: repair };
      codecs.push({ mimeType: `${m.type}/rtx`, payloadType: rtx.payload, clockRate: rtx.rate, parameters: { apt: rtp.payload } });
    }
  } else if (ssrcs.length) {
    encoding.ssrc = ssrcs[0];
  }
  const cname = (m.ssrcs ?? []).find((s) => s.attribute === 'cname')?.value ?? `c-${m.mid}`;
  return {
    mid: String(m.mid),
    codecs,
    headerExtensions: (m.ext ?? [])
      .filter((e) => EXTENSIONS.has(e.uri))
      .map((e) => ({ uri: e.uri, id: e.value })),
    encodings: [encoding],
    rtcp: { cname, reducedSize: true },
  };
}

class Peer {
  constructor(ws, r, id) {
    this.ws = ws;
    this.room = r;
    this.id = id;
    this.producers = []; // { producer, mid }
    this.pubTransport = null;
    this.subTransport = null;
    this.subConnected = false;
    this.offered = []; // m-lines already in the subscriber session, in order
    this.inFlight = []; // consumers in the offer awaiting its answer
    this.waiting = []; // producers to consume at the next chance
    this.negotiating = false;
    this.closed = false;
  }

  send(msg) {
    if (!this.closed) this.ws.send(JSON.stringify(msg));
  }

  async publish(offerSdp) {
    const offer = sdpTransform.parse(offerSdp);
    const router = this.room.router;
    this.pubTransport = await router.createWebRtcTransport(transportOptions());
    await this.pubTransport.connect({ dtlsParameters: remoteDtls(offer, offer.media[0]) });
    const answered = [];
    const tracks = [];
    for (const m of offer.media) {
      const rtpParameters = producerParameters(offer, m);
      const producer = await this.pubTransport.produce({ kind: m.type, rtpParameters });
      this.producers.push({ producer, mid: String(m.mid) });
      tracks.push({ mid: String(m.mid), id: producer.id, kind: m.type });
      answered.push({
        type: m.type,
        port: 9,
        protocol: 'UDP/TLS/RTP/SAVPF',
        mid: String(m.mid),
        direction: 'recvonly',
        ...transportMedia(this.pubTransport, 'passive'),
        ...codecLines(rtpParameters.codecs),
        ext: rtpParameters.headerExtensions.map((e) => ({ value: e.id, uri: e.uri })),
      });
    }
    this.send({ type: 'publish_answer', sdp: session(answered), tracks });
    for (const other of this.room.peers.values()) {
      if (other === this) continue;
      for (const { producer } of this.producers) other.waiting.push({ producer, owner: this });
      other.negotiate().catch((e) => other.fail('subscribe_failed', e));
    }
  }

  // Offers the waiting producers' consumers, unless an offer is already out.
  async negotiate() {
    if (this.negotiating || this.closed || !this.waiting.length) return;
    this.negotiating = true;
    const router = this.room.router;
    if (!this.subTransport) this.subTransport = await router.createWebRtcTransport(transportOptions());
    const batch = this.waiting.splice(0);
    const tracks = [];
    for (const { producer, owner } of batch) {
      if (producer.closed) continue;
      const consumer = await this.subTransport.consume({
        producerId: producer.id,
        rtpCapabilities: router.rtpCapabilities,
        paused: true,
      });
      const mid = String(this.offered.length);
      const p = consumer.rtpParameters;
      const enc = p.encodings[0];
      const msid = `${owner.id} ${producer.id}`;
      const ssrcs = [
        { id: enc.ssrc, attribute: 'cname', value: p.rtcp.cname },
        { id: enc.ssrc, attribute: 'msid', value: msid },
      ];
      const ssrcGroups = [];
      if (enc.rtx) {
        ssrcs.push({ id: enc.rtx.ssrc, attribute: 'cname', value: p.rtcp.cname });
        ssrcs.push({ id: enc.rtx.ssrc, attribute: 'msid', value: msid });
        ssrcGroups.push({ semantics: 'FID', ssrcs: `${enc.ssrc} ${enc.rtx.ssrc}` });
      }
      this.offered.push({
        type: consumer.kind,
        port: 9,
        protocol: 'UDP/TLS/RTP/SAVPF',
        mid,
        direction: 'sendonly',
        msid,
        ...codecLines(p.codecs),
        ext: p.headerExtensions.map((e) => ({ value: e.id, uri: e.uri })),
        ssrcs,
        ssrcGroups,
      });
      this.inFlight.push(consumer);
      tracks.push({ mid, track_id: producer.id, participant_id: owner.id, kind: consumer.kind });
    }
    if (!tracks.length) {
      this.negotiating = false;
      return;
    }
    const setup = this.subConnected ? 'passive' : 'actpass';
    const media = this.offered.map((m) => ({ ...m, ...transportMedia(this.subTransport, setup) }));
    this.send({ type: 'subscriber_offer', sdp: session(media), tracks });
  }

  async answer(answerSdp) {
    if (!this.negotiating) return;
    const answer = sdpTransform.parse(answerSdp);
    if (!this.subConnected) {
      await this.subTransport.connect({ dtlsParameters: remoteDtls(answer, answer.media[0]) });
      this.subConnected = true;
    }
    for (const c of this.inFlight.splice(0)) await c.resume();
    this.negotiating = false;
    await this.negotiate();
  }

  fail(code, e) {
    console.error(`${this.id} ${code}: ${e?.stack ?? e}`);
    this.send({ type: 'error', code, message: String(e?.message ?? e) });
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.room.peers.delete(this.id);
    this.pubTransport?.close();
    this.subTransport?.close();
  }
}

const wss = new WebSocketServer({ host: args.ip, port: Number(args.port) });
wss.on('connection', (ws) => {
  let peer = null;
  // Messages of one participant are handled in order.
  let chain = Promise.resolve();
  ws.on('message', (data) => {
    chain = chain.then(async () => {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      try {
        switch (msg.type) {
          case 'join': {
            const r = await room(String(msg.room));
            peer = new Peer(ws, r, `p${nextId++}`);
            // Everyone already publishing is offered to the newcomer.
            for (const other of r.peers.values()) {
              for (const { producer } of other.producers) peer.waiting.push({ producer, owner: other });
            }
            r.peers.set(peer.id, peer);
            peer.send({ type: 'joined', participant_id: peer.id });
            await peer.negotiate();
            break;
          }
          case 'publish':
            await peer.publish(msg.sdp);
            break;
          case 'subscriber_answer':
            await peer.answer(msg.sdp);
            break;
          case 'leave':
            peer?.close();
            ws.close();
            break;
          default:
        }
      } catch (e) {
        peer?.fail(`${msg.type}_failed`, e);
      }
    });
  });
  ws.on('close', () => peer?.close());
});
wss.on('listening', () => console.log(`mediasoup bench server listening on ${args.ip}:${args.port}, worker pid ${worker.pid}`));
