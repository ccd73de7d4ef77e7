// Sending our media: the publisher connection (first publish, renegotiation when a screen
// share starts or stops, ICE restart, replacement), mute, screen share, simulcast layers and
// publishing permission. A mixin of ZvonClient (client.js), whose socket, state and events
// these methods use; docs/protocol.md, "publish_offer".

import { watchIce } from './ice_restart.js';

function mark(name) {
  // Marks let the first-frame benchmark break the latency down without test-only hooks.
  try { performance.mark(`zvon:${name}`); } catch { /* not fatal */ }
}

/** Offers only `mimeType` (plus its retransmission/FEC helpers) if the browser can send it. */
function preferCodec(transceiver, mimeType) {
  const codecs = RTCRtpSender.getCapabilities('video')?.codecs ?? [];
  const wanted = codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  if (!wanted.length || !transceiver.setCodecPreferences) return;
  const helpers = codecs.filter((c) => /\/(rtx|red|ulpfec)$/i.test(c.mimeType));
  transceiver.setCodecPreferences([...wanted, ...helpers]);
}

/**
 * Puts Opus RED (RFC 2198: each packet also carries the previous one) first, so that the
 * browser sends it: a subscriber on a lossy link then recovers a lost audio packet from the
 * next one instead of concealing it. The server forwards RED to subscribers as it comes.
 */
function preferRed(transceiver) {
  const codecs = RTCRtpSender.getCapabilities('audio')?.codecs ?? [];
  const red = codecs.filter((c) => c.mimeType.toLowerCase() === 'audio/red');
  if (!red.length || !transceiver.setCodecPreferences) return;
  transceiver.setCodecPreferences([...red, ...codecs.filter((c) => !red.includes(c))]);
}

/**
 * The camera's simulcast layers, lowest first (the protocol's order): each subscriber gets the
 * one that fits how big it shows the video.
 */
const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/** ZvonClient's publishing side, on top of `Base` (its events and state). */
export const withPublishing = (Base) => class extends Base {
  constructor(...args) {
    super(...args);
    this.publisherPc = null;
    /** local kind ('audio'|'video', or 'screen' while sharing) -> {mid, id, muted} */
    this.localTracks = new Map();
    /** The screen share's transceiver; kept (inactive) after a share so the next reuses it. */
    this._screenTr = null;
    /** Resolves when the outstanding publish_offer is answered (or refused). */
    this._publishDone = Promise.resolve();
  }

  _newPublisherPc() {
    const pc = new RTCPeerConnection(this._pcConfig());
    this.publisherPc = pc;
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') mark('publisher-connected');
    });
    // Our network changed: the same connection offers new ICE credentials (a publish_offer
    // like any renegotiation) and checks from wherever we are now; tracks and ids stay.
    watchIce(pc, { silence: this.detectDeadPath }, async (reason) => {
      await this._publishDone;
      if (this.publisherPc !== pc || this.state !== 'joined') return;
      this.iceRestarts.publisher += 1;
      this._iceRestartAt = Date.now();
      console.info(`zvon: publisher connection down (${reason}), restarting ICE`);
      pc.restartIce();
      await this._renegotiate();
    });
    return pc;
  }

  // A publish_offer listing every track the publisher connection sends now; the server adds
  // and withdraws tracks to match. One at a time: the next waits for this one's answer.
  async _renegotiate() {
    const pc = this.publisherPc;
    const sources = { audio: 'microphone', video: 'camera', screen: 'screen' };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const tracks = [];
    for (const [key, local] of this.localTracks) {
      const tr = key === 'screen'
        ? this._screenTr
        : pc.getTransceivers().find((t) => t.mid === local.mid && t.mid != null);
      if (!tr || tr.mid == null) continue;
      local.mid = tr.mid;
      tracks.push({ mid: tr.mid, kind: key === 'audio' ? 'audio' : 'video', source: sources[key], muted: !!local.muted });
    }
    const request_id = this._requestId();
    this._expectAnswer(request_id);
    this._send({ type: 'publish_offer', request_id, sdp: pc.localDescription.sdp, tracks });
    await this._publishDone;
    // Refused: back to the last agreed state, so the next offer can be made.
    if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
  }

  /** `_publishDone` resolves at the publish_answer, or at an error for `requestId`. */
  _expectAnswer(requestId) {
    this._publishRequest = requestId;
    let done;
    this._publishDone = new Promise((resolve) => { done = resolve; });
    const onError = ({ detail }) => { if (detail.request_id === requestId) finish(); };
    const timer = setTimeout(() => finish(), 10_000);
    const finish = () => {
      clearTimeout(timer);
      this.removeEventListener('servererror', onError);
      this._answered = null;
      done();
    };
    this.addEventListener('servererror', onError);
    this._answered = finish;
  }

  async _publish() {
    const pc = this._newPublisherPc();
    const sources = { audio: 'microphone', video: 'camera' };
    const transceivers = [];
    // Audio first so mids are stable ("0" mic, "1" camera) when both exist.
    for (const kind of ['audio', 'video']) {
      const track = this._localTrack(kind);
      if (!track) continue;
      const init = { direction: 'sendonly', streams: [this.localStream] };
      const simulcast = kind === 'video' && this.simulcast;
      if (simulcast) init.sendEncodings = SIMULCAST_LAYERS.map((l) => ({ ...l }));
      const tr = pc.addTransceiver(track, init);
      if (kind === 'video' && (this.videoCodec || simulcast)) preferCodec(tr, this.videoCodec ?? 'video/VP8');
      if (kind === 'audio') preferRed(tr);
      transceivers.push({ kind, tr, track });
    }
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const tracks = transceivers.map(({ kind, tr, track }) => {
      const muted = !track.enabled;
      this.localTracks.set(kind, { mid: tr.mid, id: null, muted });
      return { mid: tr.mid, kind, source: sources[kind], muted };
    });
    mark('publish-offer');
    const request_id = this._requestId();
    this._expectAnswer(request_id);
    this._send({ type: 'publish_offer', request_id, sdp: pc.localDescription.sdp, tracks });
  }

  async _onPublishAnswer(msg) {
    // An answer to an offer of a connection closed since (media_reset while an ICE restart's
    // offer was out) must not be applied to the one that replaced it.
    if (msg.request_id && msg.request_id !== this._publishRequest) {
      console.info(`zvon: ignoring publish_answer ${msg.request_id} (waiting for ${this._publishRequest})`);
      return;
    }
    mark('publish-answer');
    await this.publisherPc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    for (const t of msg.tracks ?? []) {
      const local = [...this.localTracks.values()].find((l) => l.mid === t.mid);
      if (local) {
        local.id = t.id;
        local.muted = !!t.muted;
      }
    }
    // The user may have toggled mute while the offer was in flight.
    for (const kind of ['audio', 'video']) if (this.localTracks.has(kind)) this.setMuted(kind, this.isMuted(kind));
    this._answered?.();
    this._emit('published', { tracks: msg.tracks ?? [] });
  }

  /** Mutes or unmutes the local 'audio' or 'video' track. */
  setMuted(kind, muted) {
    const track = this._localTrack(kind);
    if (track) track.enabled = !muted;
    const local = this.localTracks.get(kind);
    // Before publish_answer there is no track id yet; _onPublishAnswer reconciles.
    if (local?.id && local.muted !== muted) {
      local.muted = muted;
      this._send({ type: 'mute', track_id: local.id, muted });
    }
  }

  isMuted(kind) {
    const track = this._localTrack(kind);
    return track ? !track.enabled : true;
  }

  /** True while our screen share is published (or being published). */
  isSharingScreen() {
    return this.localTracks.has('screen');
  }

  /**
   * Publishes `track` (from getDisplayMedia, or any video track) as a screen share: a second
   * video m-line with source `screen`, one layer of VP8 tuned for detail, added by
   * renegotiating the publisher connection. Ending the track (the browser's "Stop sharing")
   * stops the share.
   */
  async shareScreen(track) {
    if (this.state !== 'joined') throw new Error(`shareScreen() in state ${this.state}`);
    if (this.isSharingScreen()) await this.stopScreenShare();
    if ('contentHint' in track) track.contentHint = 'detail';
    this.localTracks.set('screen', { mid: null, id: null, muted: false, track });
    track.addEventListener('ended', () => {
      if (this.localTracks.get('screen')?.track === track) this.stopScreenShare();
    }, { once: true });
    await this._publishDone;
    const pc = this.publisherPc ?? this._newPublisherPc();
    const stream = new MediaStream([track]);
    if (this._screenTr && this._screenTr.currentDirection !== 'stopped') {
      // Same m-line as the last share: no new mid, nothing recycled.
      await this._screenTr.sender.replaceTrack(track);
      this._screenTr.sender.setStreams?.(stream);
      this._screenTr.direction = 'sendonly';
    } else {
      this._screenTr = pc.addTransceiver(track, {
        direction: 'sendonly', streams: [stream],
        sendEncodings: [{ maxBitrate: 2_500_000, networkPriority: 'high', priority: 'high' }],
      });
      preferCodec(this._screenTr, 'video/VP8');
    }
    this._emit('localscreen', { stream });
    await this._renegotiate();
  }

  /** Stops the screen share: its m-line goes inactive and receivers drop the tile. */
  async stopScreenShare() {
    const local = this.localTracks.get('screen');
    if (!local) return;
    this.localTracks.delete('screen');
    local.track.stop();
    this._emit('localscreen', { stream: null });
    await this._publishDone;
    const tr = this._screenTr;
    if (!tr || !this.publisherPc || this.state !== 'joined') return;
    await tr.sender.replaceTrack(null);
    tr.direction = 'inactive';
    await this._renegotiate();
  }

  /**
   * Publishes the camera and microphone again on a new publisher connection, for a page
   * whose publisher connection broke in a way an ICE restart cannot mend. The new
   * connection's offer reaches the server while the old connection still exists, and the
   * server then replaces it (same participant, same track ids); the old one is closed only
   * after the answer. Closing it first would end the session (`media_timeout`), see
   * docs/protocol.md, "Replacing the publisher connection". A screen share is stopped.
   */
  async replacePublisherConnection() {
    if (this.state !== 'joined') throw new Error(`replacePublisherConnection() in state ${this.state}`);
    await this._publishDone;
    const old = this.publisherPc;
    if (this.localTracks.has('screen')) {
      this.localTracks.get('screen').track.stop();
      this._emit('localscreen', { stream: null });
    }
    this._screenTr = null;
    this.localTracks.clear();
    await this._publish();
    await this._publishDone;
    if (old && old !== this.publisherPc) old.close();
  }

  // Dynacast: stop encoding the simulcast layers nobody receives (CPU and uplink).
  async _onPublishLayers(trackId, active) {
    const local = [...this.localTracks.values()].find((l) => l.id === trackId);
    const tr = local && this.publisherPc?.getTransceivers().find((t) => t.mid === local.mid);
    if (!tr) return;
    const params = tr.sender.getParameters();
    if (!params.encodings || params.encodings.length < 2) return;
    let changed = false;
    params.encodings.forEach((e, i) => {
      const on = active[i] ?? true;
      if (e.active !== on) { e.active = on; changed = true; }
    });
    if (!changed) return;
    try {
      await tr.sender.setParameters(params);
      this.publishedLayers = params.encodings.map((e) => e.active);
    } catch (e) {
      console.warn('zvon: cannot change simulcast layers', e);
    }
  }

  // An admin granted or revoked publishing (or lecture mode changed): start or stop sending.
  _onPermissionChanged(grants) {
    if (this.localParticipant) this.localParticipant.grants = grants;
    const may = grants.can_publish !== false && !grants.hidden;
    if (!may && this.publisherPc) {
      // The server already unpublished our tracks; a later grant publishes afresh.
      try { this.publisherPc.close(); } catch { /* already closed */ }
      this.publisherPc = null;
      const screen = this.localTracks.get('screen');
      this.localTracks.clear();
      this._screenTr = null;
      if (screen) { screen.track.stop(); this._emit('localscreen', { stream: null }); }
    } else if (may && !this.publisherPc && this.state === 'joined') {
      this._media
        .then((stream) => {
          if (this.state === 'joined' && !this.publisherPc && stream?.getTracks().length) return this._publish();
        })
        .catch((e) => this._emit('publisherror', { message: e.message }));
    }
  }

  _localTrack(kind) {
    return this.localStream?.getTracks().find((t) => t.kind === kind) ?? null;
  }
};
