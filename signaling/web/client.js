// Zvon protocol v1 client (docs/protocol.md). No UI here: the page listens to events.
//
// Events (all CustomEvent, payload in `detail`):
//   statechange        {state}
//   joined             {participant, room, resumed}
//   participantjoined  {participant}
//   participantleft    {participant, reason}
//   participantupdated {participant}          tracks published/unpublished/muted
//   media              {participant}          participant.stream changed (new MediaStream)
//   screen             {participant}          participant.screenStream changed (their screen
//                                              share, shown apart from the camera; null = none)
//   localscreen        {stream}               our own screen share started (stream) or
//                                              stopped (null)
//   published          {tracks}
//   publisherror       {message}              could not start sending (local WebRTC failure)
//   servererror        {code, message, fatal, request_id}
//   connectionerror    {message}              socket failed or closed unexpectedly
//   mediareset         {reason}               the media node changed (cluster failover/drain);
//                                              media resumes by itself
//   serverdraining     {timeoutMs}            the server is shutting down; the socket is closed
//                                              (1001) within timeoutMs, then the client resumes
//   reconnecting       {}                     the socket dropped; resuming on a new one
//   resumed            {participant}          back, same participant and media connections
//   classroom          {msg}                  a classroom message (chat, hand, hand_queue,
//                                              lecture_mode, admin_muted, permission_changed)
//   left               {reason?}               reason only when the server removed us
//                                              (participant_left with our own id: replaced,
//                                              room_closed, ...)

import { watchIce } from './ice_restart.js';
import { withPublishing } from './publisher.js';
import { resumeSession } from './reconnect.js';

export const PROTOCOL_VERSION = 1;
export const PING_INTERVAL_MS = 15000;
const LEAVE_TIMEOUT_MS = 1000;
// Adaptive-stream reports arriving this close together go out as one message.
const SETTINGS_COALESCE_MS = 30;
// The server takes at most this many entries per track_settings_batch.
const MAX_SETTINGS_BATCH = 100;

// The server closes the socket after these (protocol table "fatal").
const FATAL_ERRORS = new Set([
  'message_too_large', 'unsupported_protocol', 'join_timeout', 'unauthorized',
  'token_expired', 'wrong_room', 'room_full', 'resume_failed', 'rate_limited',
  'media_unavailable', 'removed', 'banned', 'cluster_unavailable', 'room_moved',
]);

/** How long a media_unavailable answering our own ICE restart waits for a media_reset. */
const RESTART_GRACE_MS = 15_000;

export function signalingUrl(loc = window.location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/rtc`;
}

function mark(name) {
  // Marks let the first-frame benchmark break the latency down without test-only hooks.
  try { performance.mark(`zvon:${name}`); } catch { /* not fatal */ }
}

/** Events and a `state` with 'statechange' events: what the room and device clients share. */
export class StatefulEmitter extends EventTarget {
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('statechange', { state });
  }
}

// Publishing (publisher connection, mute, screen share): publisher.js.
export class ZvonClient extends withPublishing(StatefulEmitter) {
  /**
   * `videoCodec`: a mime type such as 'video/VP9' or 'video/H264' to publish the camera with,
   * when the browser can encode it (else VP8). `simulcast`: send the camera in three layers;
   * only with VP8, which every browser can send as simulcast. `videoSubscription`:
   * 'auto' (default) receives every camera in the room; 'on_demand' (a large class) receives
   * audio and screen shares, and a camera only while `setVideoSettings` shows it (asked for
   * with track_settings, added to the subscriber connection by a renegotiation), so each
   * browser negotiates the cameras in view instead of one m-line per participant.
   * `socket`: a WebSocket to `url` opened before this client existed (the page opens it
   * while its scripts load); connect() joins on it instead of opening one.
   * `detectDeadPath`: restart ICE after 1.5 s of silence on a connection (ice_restart.js),
   * which brings media back ~2.4 s after a network change instead of ~8 s (on by default;
   * false, `?deadpath=0` in the app, leaves only the restart on `disconnected`/`failed`).
   * When the silence was a fleet's media node dying, the restart is refused with the
   * non-fatal `media_moving` and `media_reset` follows (docs/protocol.md).
   */
  constructor({
    url = signalingUrl(), token, room, videoCodec = null, simulcast = true, videoSubscription = 'auto',
    socket = null, detectDeadPath = true,
  } = {}) {
    super();
    if (!['auto', 'on_demand'].includes(videoSubscription)) {
      throw new Error(`videoSubscription must be 'auto' or 'on_demand', not ${videoSubscription}`);
    }
    this.videoSubscription = videoSubscription;
    this.detectDeadPath = detectDeadPath;
    this.url = url;
    this.token = token;
    this.room = room;
    this.videoCodec = videoCodec;
    this.simulcast = simulcast && (!videoCodec || videoCodec.toLowerCase() === 'video/vp8');
    /** participant id -> {width, height, enabled} of its video as shown (adaptive stream) */
    this._videoSettings = new Map();
    /** track id -> the track_settings last sent for it */
    this._sentSettings = new Map();
    this.state = 'idle';
    this.localParticipant = null;
    this.roomInfo = null;
    /** @type {Map<string, object>} remote participants by id */
    this.participants = new Map();
    this.subscriberPc = null;
    this.localStream = null;
    /** mid -> {track_id, participant_id, kind} of the last subscriber offer */
    this.subscriberTracks = new Map();
    this.ws = null;
    this._earlySocket = socket;
    this._queue = Promise.resolve();
    this._pingTimer = null;
    this._nextRequestId = 1;
    // Participants that left: a late subscriber_offer must not bring their tile back.
    this._gone = new Set();
    /** ICE restarts asked for so far, per connection (network changes survived). */
    this.iceRestarts = { publisher: 0, subscriber: 0 };
    this._iceRestartAt = 0;
    this._restartGraceTimer = null;
  }

  /**
   * Opens the socket, joins, and publishes `media` once joined. `media` is a MediaStream, null
   * (receive only) or a promise of either: joining need not wait for the camera prompt, so
   * remote video can start while the user is still deciding.
   */
  connect(media = null) {
    if (this.state !== 'idle') throw new Error(`connect() in state ${this.state}`);
    this._media = Promise.resolve(media)
      .catch(() => null)
      .then((stream) => { this.localStream = stream; return stream; });
    this._setState('connecting');
    mark('connect');
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (err) => {
        if (settled) return;
        settled = true;
        if (err) reject(err); else resolve(this.localParticipant);
      };
      this.addEventListener('joined', () => settle(), { once: true });

      let ws = this._earlySocket;
      this._earlySocket = null;
      // An early socket that already failed is no use; a new one may still work.
      if (ws && (ws.readyState > WebSocket.OPEN || ws.url !== new URL(this.url, location.href).href)) {
        ws.close(1000);
        ws = null;
      }
      try {
        ws ??= new WebSocket(this.url);
      } catch (e) {
        this._fail(`Cannot open ${this.url}: ${e.message}`);
        settle(e);
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        mark('ws-open');
        const join = { type: 'join', protocol: PROTOCOL_VERSION, token: this.token, request_id: 'join' };
        if (this.room) join.room = this.room;
        // Left out in auto mode: the join stays what servers have always seen.
        if (this.videoSubscription === 'on_demand') join.video_subscription = 'on_demand';
        this._send(join);
        this._pingTimer = setInterval(() => this._send({ type: 'ping' }), PING_INTERVAL_MS);
      };
      ws.onmessage = (ev) => this._onSocketMessage(ev);
      // onerror carries no detail in browsers; onclose follows and decides.
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        this._stopPing();
        if (this.state === 'left' || this.state === 'error') { settle(new Error(this.state)); return; }
        const wasJoined = this.state === 'joined';
        // A dropped socket is not a dropped call: the media connections go on by themselves
        // (in a fleet, even when the signaling node died), so resume on a new socket.
        if (wasJoined && this._resumeToken) { this._resume(); return; }
        const why = ev.reason ? `${ev.code} ${ev.reason}` : `code ${ev.code}`;
        const message = wasJoined
          ? `Connection to the server was lost (${why}).`
          : `Cannot reach the Zvon server at ${this.url} (${why}).`;
        this._fail(message);
        settle(new Error(message));
      };
      // An early socket may be open already: it will not fire `open` again.
      if (ws.readyState === WebSocket.OPEN) ws.onopen();
    });
  }

  _onSocketMessage(ev) {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { console.warn('zvon: non-JSON frame', ev.data); return; }
    // Errors skip the queue: a fatal one is followed by a close, which must find the
    // state already set even while an SDP operation is still pending.
    if (msg.type === 'error') { this._onError(msg); return; }
    // So do the ends of a session (ours, or the server removing us), for the same reason.
    if (msg.type === 'left' || (msg.type === 'participant_left' && this.localParticipant
        && msg.participant_id === this.localParticipant.id)) {
      this._handle(msg).catch((e) => console.error('zvon: handling', msg.type, e));
      return;
    }
    // Strictly in order: SDP handling is async and must not interleave.
    this._queue = this._queue
      .then(() => this._handle(msg))
      .catch((e) => console.error('zvon: handling', msg.type, e));
  }

  // The socket dropped while joined: resume on new sockets (reconnect.js).
  _resume() {
    return resumeSession(this, { protocol: PROTOCOL_VERSION, pingIntervalMs: PING_INTERVAL_MS, mark });
  }

  /** Sends a protocol message (classroom requests); returns its request id. */
  send(msg) {
    const request_id = this._requestId();
    this._send({ ...msg, request_id });
    return request_id;
  }

  /**
   * Adaptive stream: `participantId`'s video is shown at `width`x`height` device pixels, or
   * not at all (`enabled: false` / 0x0). Sent as track_settings for its video tracks, now and
   * for video tracks it publishes later.
   */
  setVideoSettings(participantId, { width, height, enabled }) {
    this._videoSettings.set(participantId, { width, height, enabled });
    // Tiles report one by one (a scrolled gallery: dozens within a few ms); one flush a
    // moment later sends them as one track_settings_batch.
    if (this._settingsTimer) return;
    this._settingsTimer = setTimeout(() => {
      this._settingsTimer = null;
      this._flushTrackSettings();
    }, SETTINGS_COALESCE_MS);
  }

  _flushTrackSettings() {
    const changed = this.videoSubscription === 'on_demand' ? this._onDemandChanges() : this._autoChanges();
    for (let i = 0; i < changed.length; i += MAX_SETTINGS_BATCH) {
      const chunk = changed.slice(i, i + MAX_SETTINGS_BATCH);
      this._send(chunk.length === 1
        ? { type: 'track_settings', ...chunk[0] }
        : { type: 'track_settings_batch', tracks: chunk });
    }
  }

  _autoChanges() {
    const changed = [];
    for (const t of this.subscriberTracks.values()) {
      // A screen share is shown large and gets its one full layer; the camera tile's size
      // must not pause it.
      if (t.kind !== 'video' || t.source === 'screen') continue;
      const s = this._videoSettings.get(t.participant_id);
      if (!s) continue;
      const key = `${s.width}x${s.height}:${s.enabled}`;
      if (this._sentSettings.get(t.track_id) === key) continue;
      this._sentSettings.set(t.track_id, key);
      changed.push({ track_id: t.track_id, ...s });
    }
    return changed;
  }

  // On demand a camera has no m-line until asked for, so settings go to every *announced*
  // camera (joined / participant_joined / track_published), not only to the received ones.
  // A camera never asked for is left alone while its tile is hidden or the camera is off:
  // asking would cost an m-line that shows nothing. Once asked for, every change is sent,
  // so hiding the tile pauses it (the m-line stays).
  _onDemandChanges() {
    const changed = [];
    const cameras = new Map(); // track id -> {participantId, muted}
    for (const p of this.participants.values()) {
      for (const t of p.tracks.values()) {
        if (t.kind === 'video' && t.source !== 'screen') cameras.set(t.id, { participantId: p.id, muted: !!t.muted });
      }
    }
    for (const t of this.subscriberTracks.values()) {
      if (t.kind !== 'video' || t.source === 'screen' || cameras.has(t.track_id)) continue;
      cameras.set(t.track_id, { participantId: t.participant_id, muted: false });
    }
    for (const [trackId, { participantId, muted }] of cameras) {
      const s = this._videoSettings.get(participantId);
      if (!s) continue;
      const key = `${s.width}x${s.height}:${s.enabled}`;
      const sent = this._sentSettings.get(trackId);
      if (sent === key) continue;
      const shown = s.enabled !== false && s.width > 0 && s.height > 0;
      if (sent === undefined && (!shown || muted)) continue;
      this._sentSettings.set(trackId, key);
      changed.push({ track_id: trackId, ...s });
    }
    return changed;
  }

  /** Sends `leave`, waits briefly for `left`, then tears everything down. */
  async leave() {
    if (this.state === 'left') return;
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN && this.state === 'joined') {
      const gotLeft = new Promise((resolve) => {
        this._onLeft = resolve;
        ws.addEventListener('close', resolve, { once: true });
        setTimeout(resolve, LEAVE_TIMEOUT_MS);
      });
      this._send({ type: 'leave' });
      this._setState('left');
      await gotLeft;
    }
    this._teardown();
    this._setState('left');
    this._emit('left', {});
  }

  // ---- internals ----

  _send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  _requestId() {
    return String(this._nextRequestId++);
  }

  _fail(message) {
    this._teardown();
    this._setState('error');
    this._emit('connectionerror', { message });
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  _teardown() {
    this._stopPing();
    clearTimeout(this._restartGraceTimer);
    this._restartGraceTimer = null;
    for (const pc of [this.publisherPc, this.subscriberPc]) {
      try { pc?.close(); } catch { /* already closed */ }
    }
    // onclose stays: it settles a pending connect() (state is already left/error by now).
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
      try { this.ws.close(1000); } catch { /* ignore */ }
    }
  }

  async _handle(msg) {
    switch (msg.type) {
      case 'joined': return this._onJoined(msg);
      case 'publish_answer': return this._onPublishAnswer(msg);
      case 'subscriber_offer': return this._onSubscriberOffer(msg);
      case 'participant_joined': return this._onParticipantJoined(msg.participant);
      case 'participant_left': return this._onParticipantLeft(msg.participant_id, msg.reason);
      case 'track_published': return this._onTrackPublished(msg.participant_id, msg.track);
      case 'track_unpublished': return this._onTrackUnpublished(msg.participant_id, msg.track_id);
      case 'track_muted': return this._onTrackMuted(msg.participant_id, msg.track_id, msg.muted);
      case 'video_paused': return this._onVideoPaused(msg.track_id, !!msg.paused, msg.reason);
      case 'left':
        if (this._onLeft) { this._onLeft(); return; }
        // Not an answer to our leave: the server ended the session (the room was closed,
        // e.g. at the end of a call). A normal close follows; that is not an error.
        this._removed('room_closed');
        return;
      case 'publish_layers': return this._onPublishLayers(msg.track_id, msg.active ?? []);
      case 'active_speakers':
        // Loudest first; the first is the dominant speaker. Ids may include our own.
        this.activeSpeakers = msg.speakers ?? [];
        this._emit('activespeakers', { speakers: this.activeSpeakers });
        return;
      case 'permission_changed':
        this._onPermissionChanged(msg.grants ?? {});
        this._emit('classroom', { msg });
        return;
      case 'admin_muted': case 'hand': case 'hand_queue': case 'lecture_mode': case 'chat':
        this._emit('classroom', { msg });
        return;
      case 'recording':
        this.recording = msg.active ? msg : null;
        this._emit('recording', { msg });
        return;
      case 'media_reset': return this._onMediaReset(msg.reason);
      // The server replaced our subscriber connection (too many stopped m-lines): the next
      // subscriber_offer is for a new one. Publishing goes on untouched.
      case 'subscriber_reset':
        try { this.subscriberPc?.close(); } catch { /* already closed */ }
        this.subscriberTracks = new Map();
        this._createSubscriber();
        return;
      // The server shuts down within timeout_ms; at the end it closes with 1001 and the
      // socket's close handler resumes (reconnect.js) as after any drop.
      case 'server_draining': this._emit('serverdraining', { timeoutMs: msg.timeout_ms }); return;
      case 'pong': return;
      default:
        // Additive protocol changes may bring new events; old clients ignore them.
        console.debug('zvon: ignoring message type', msg.type);
    }
  }

  _removed(reason) {
    if (this.state === 'left' || this.state === 'error') return;
    this._teardown();
    this._setState('left');
    this._emit('left', { reason });
  }

  _onError(msg) {
    // A path that went silent is often a media node that died. A fleet refuses our restart
    // with media_moving (not fatal) and sends media_reset; a request that met a failed media
    // worker of a single node (or an older server) gets media_unavailable first, and the
    // media_reset comes once the server has moved us (on the resumed socket if it closed
    // this one). Wait for that before giving up.
    if (msg.code === 'media_unavailable' && this._iceRestartAt
        && Date.now() - this._iceRestartAt < RESTART_GRACE_MS) {
      if (!this._restartGraceTimer) {
        const resets = this._mediaResets ?? 0;
        this._restartGraceTimer = setTimeout(() => {
          this._restartGraceTimer = null;
          if ((this._mediaResets ?? 0) !== resets) return;
          this._iceRestartAt = 0;
          this._onError(msg);
        }, RESTART_GRACE_MS);
      }
      this._emit('servererror', { code: msg.code, message: msg.message ?? '', fatal: false, request_id: msg.request_id });
      return;
    }
    const fatal = FATAL_ERRORS.has(msg.code);
    this._emit('servererror', {
      code: msg.code, message: msg.message ?? '', fatal, request_id: msg.request_id,
    });
    if (fatal) {
      this._teardown();
      this._setState('error');
    }
  }

  // TURN relays from `joined` (docs/protocol.md): on a network that blocks UDP to the media
  // server, ICE falls back to a relay through them.
  _pcConfig() {
    return { iceServers: this._iceServers ?? [], bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
  }

  async _onJoined(msg) {
    mark('joined');
    this._resumeToken = msg.resume_token;
    this._iceServers = msg.ice_servers ?? [];
    if (msg.resumed && this.subscriberPc) return this._onResumed(msg);
    this.localParticipant = msg.participant;
    this.roomInfo = msg.room;
    for (const p of msg.participants ?? []) this._addParticipant(p);
    this._createSubscriber();
    this._setState('joined');
    this._emit('joined', {
      participant: msg.participant, room: msg.room, resumed: !!msg.resumed, classroom: msg.classroom,
    });
    for (const p of this.participants.values()) this._emit('participantjoined', { participant: p });

    const grants = msg.participant?.grants ?? {};
    const mayPublish = grants.can_publish !== false && !grants.hidden;
    if (!mayPublish) return;
    // Not awaited: subscriber offers must not queue behind the camera prompt.
    this._media
      .then((stream) => {
        if (this.state === 'joined' && stream && stream.getTracks().length > 0) return this._publish();
      })
      .catch((e) => this._emit('publisherror', { message: e.message }));
  }

  // Back on a new socket with the same participant and the same peer connections: bring the
  // room up to date (people may have left or come meanwhile) and carry on.
  _onResumed(msg) {
    this.localParticipant = msg.participant;
    // Fresh TURN credentials for any later ICE restart of the connections we keep.
    for (const pc of [this.publisherPc, this.subscriberPc]) {
      if (pc && pc.signalingState !== 'closed') {
        try { pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this._iceServers }); } catch (e) {
          console.warn('zvon: could not update ICE servers', e);
        }
      }
    }
    const present = new Set((msg.participants ?? []).map((p) => p.id));
    for (const id of [...this.participants.keys()]) {
      if (!present.has(id)) this._onParticipantLeft(id, 'disconnected');
    }
    for (const p of msg.participants ?? []) {
      const known = this.participants.has(p.id);
      this._addParticipant(p);
      if (!known) this._emit('participantjoined', { participant: this.participants.get(p.id) });
    }
    this._setState('joined');
    this._emit('resumed', { participant: msg.participant });
  }

  // The media node serving us was replaced (cluster failover or drain). The socket and the
  // room stay; both peer connections start over against the new node, and publishing the
  // same tracks again keeps their ids, so the others' tiles just resume.
  async _onMediaReset(reason) {
    mark('media-reset');
    this._mediaResets = (this._mediaResets ?? 0) + 1;
    for (const pc of [this.publisherPc, this.subscriberPc]) {
      try { pc?.close(); } catch { /* already closed */ }
    }
    this.publisherPc = null;
    this.subscriberTracks = new Map();
    this._sentSettings.clear();
    this._createSubscriber();
    const screen = this.localTracks.get('screen');
    this.localTracks.clear();
    this._screenTr = null;
    if (screen) { screen.track.stop(); this._emit('localscreen', { stream: null }); }
    this._reconcileMedia();
    this._emit('mediareset', { reason });
    const grants = this.localParticipant?.grants ?? {};
    if (grants.can_publish === false || grants.hidden) return;
    if (this.localStream?.getTracks().length) await this._publish();
  }

  _createSubscriber() {
    const pc = new RTCPeerConnection(this._pcConfig());
    this.subscriberPc = pc;
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') mark('subscriber-connected');
    });
    // The server is this connection's offerer: ask it for an offer with new ICE credentials.
    watchIce(pc, { silence: this.detectDeadPath }, async (reason) => {
      if (this.subscriberPc !== pc || this.state !== 'joined') return;
      this.iceRestarts.subscriber += 1;
      this._iceRestartAt = Date.now();
      console.info(`zvon: subscriber connection down (${reason}), asking for an ICE restart`);
      this._send({ type: 'subscriber_ice_restart' });
    });
  }

  async _onSubscriberOffer(msg) {
    mark('subscriber-offer');
    const pc = this.subscriberPc;
    this.subscriberTracks = new Map((msg.tracks ?? []).map((t) => [t.mid, t]));
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const answer = await pc.createAnswer();
    // Sent before it is applied: the server (ICE-lite, no candidates needed) then knows the
    // answer before our first connectivity check and DTLS hello reach it, instead of queuing
    // or dropping them until the answer arrives behind them.
    this._send({ type: 'subscriber_answer', sdp: answer.sdp });
    mark('subscriber-answer');
    await pc.setLocalDescription(answer);
    this._reconcileMedia();
    this._flushTrackSettings();
  }

  // Rebuilds every participant's MediaStream from the transceivers of the current offer.
  // Doing it from the offer's `tracks` list (not only from `track` events) also covers
  // m-lines that were recycled for another participant or set inactive.
  _reconcileMedia() {
    const wanted = new Map(); // participant id -> [MediaStreamTrack]
    const screens = new Map(); // participant id -> [MediaStreamTrack] of its screen share
    for (const tr of this.subscriberPc.getTransceivers()) {
      if (tr.mid == null) continue;
      const entry = this.subscriberTracks.get(tr.mid);
      if (!entry || this._gone.has(entry.participant_id)) continue;
      if (!this.participants.has(entry.participant_id)) {
        // Offer raced ahead of participant_joined; the event will fill in the name.
        this._addParticipant({ id: entry.participant_id, name: '', tracks: [] });
        this._emit('participantjoined', { participant: this.participants.get(entry.participant_id) });
      }
      const into = entry.source === 'screen' || entry.source === 'screen_audio' ? screens : wanted;
      const list = into.get(entry.participant_id) ?? [];
      list.push(tr.receiver.track);
      into.set(entry.participant_id, list);
    }
    for (const p of this.participants.values()) {
      const next = wanted.get(p.id) ?? [];
      const cur = p.stream ? p.stream.getTracks() : [];
      const same = next.length === cur.length && next.every((t) => cur.includes(t));
      if (same) continue;
      // A fresh MediaStream per change: media elements reliably pick up a new srcObject.
      p.stream = next.length ? new MediaStream(next) : null;
      this._emit('media', { participant: p });
    }
    for (const p of this.participants.values()) {
      const next = screens.get(p.id) ?? [];
      const cur = p.screenStream ? p.screenStream.getTracks() : [];
      if (next.length === cur.length && next.every((t) => cur.includes(t))) continue;
      p.screenStream = next.length ? new MediaStream(next) : null;
      this._emit('screen', { participant: p });
    }
  }

  _addParticipant(info) {
    const existing = this.participants.get(info.id);
    const p = existing ?? { id: info.id, stream: null, tracks: new Map() };
    p.identity = info.identity ?? p.identity ?? info.id;
    p.name = info.name || p.name || p.identity;
    for (const t of info.tracks ?? []) p.tracks.set(t.id, { ...t });
    this.participants.set(p.id, p);
    return p;
  }

  _onParticipantJoined(info) {
    if (!info?.id) return;
    this._gone.delete(info.id);
    const known = this.participants.has(info.id);
    const p = this._addParticipant(info);
    this._emit(known ? 'participantupdated' : 'participantjoined', { participant: p });
    if (this.videoSubscription === 'on_demand') this._flushTrackSettings();
  }

  _onParticipantLeft(id, reason) {
    if (id && id === this.localParticipant?.id) {
      // The server removed us (same identity joined elsewhere); a normal close follows.
      this._removed(reason ?? 'removed');
      return;
    }
    const p = this.participants.get(id);
    this._gone.add(id);
    this._videoSettings.delete(id);
    if (!p) return;
    for (const trackId of p.tracks.keys()) this._sentSettings.delete(trackId);
    this.participants.delete(id);
    this._emit('participantleft', { participant: p, reason });
  }

  _onTrackPublished(pid, track) {
    const p = this.participants.get(pid);
    if (!p || !track) return;
    p.tracks.set(track.id, { ...track });
    this._emit('participantupdated', { participant: p });
    // On demand a camera published into a shown tile is asked for now.
    if (this.videoSubscription === 'on_demand') this._flushTrackSettings();
  }

  _onTrackUnpublished(pid, trackId) {
    const p = this.participants.get(pid);
    if (!p) return;
    p.tracks.delete(trackId);
    this._sentSettings.delete(trackId);
    this._emit('participantupdated', { participant: p });
  }

  /** The server paused (or resumed) a video for this client because its link is too thin. */
  _onVideoPaused(trackId, paused, reason) {
    for (const p of this.participants.values()) {
      const t = p.tracks.get(trackId);
      if (!t) continue;
      t.pausedForBandwidth = paused;
      this._emit('videopaused', { participant: p, trackId, paused, reason });
      this._emit('participantupdated', { participant: p });
      return;
    }
  }

  _onTrackMuted(pid, trackId, muted) {
    const p = this.participants.get(pid);
    const t = p?.tracks.get(trackId);
    if (!t) return;
    t.muted = !!muted;
    this._emit('participantupdated', { participant: p });
    // On demand a camera that was off when its tile showed is asked for once it turns on.
    if (this.videoSubscription === 'on_demand' && !muted) this._flushTrackSettings();
  }
}
