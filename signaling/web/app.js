// Page wiring: URL parameters, token, camera/mic, and client events -> UI.
import { ZvonClient, ZvonDevice } from './client.js';
import * as ui from './ui.js';
import { attachClassroom } from './classroom.js';
import { watchVideo } from './adaptive.js';

const LOCAL_TILE = 'local';
const params = new URLSearchParams(location.search);

// Tests read the live client (and in calls mode the call state) from here.
window.zvon = { client: null, calls: null };

class UserError extends Error {}

// Same naming as client.js marks; the first-frame benchmark reads them.
const mark = (name) => performance.mark?.(`zvon:${name}`);

async function fetchToken(room, name) {
  // `?admin=1` asks dev mode for a teacher (room_admin) token.
  return (await fetchDevToken({ room, name, admin: params.get('admin') })).token;
}

/** `GET /api/dev-token` with the given query; returns {token, identity}. */
async function fetchDevToken(query) {
  const qs = Object.entries(query).filter(([, v]) => v != null && v !== '')
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
  const url = `/api/dev-token?${qs}`;
  let res;
  try {
    res = await fetch(url, { cache: 'no-store' });
  } catch (e) {
    throw new UserError(`Cannot reach the Zvon server (${e.message}). Is it running?`);
  }
  if (res.status === 403) {
    throw new UserError(
      'This server runs in production mode, so it does not hand out tokens. ' +
      (query.device
        ? 'Open this page with ?token=<device token> (mint one with `zvon token --identity ID --device DEV`).'
        : 'Open this page with ?token=<access token> (mint one with `zvon token --room ROOM --identity ID`).'));
  }
  if (!res.ok) {
    const detail = await res.json().then((b) => b?.error).catch(() => null);
    throw new UserError(`Could not get a token: HTTP ${res.status} from ${url}${detail ? ` (${detail})` : ''}.`);
  }
  const body = await res.json();
  if (!body.token) throw new UserError('The server answered without a token.');
  return body;
}

function describeMediaError(e, what) {
  switch (e?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `${what} access was denied, so others will not ${what === 'Camera' ? 'see' : 'hear'} you. ` +
        'Allow it in the browser\'s site settings and join again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what.toLowerCase()} was found.`;
    case 'NotReadableError':
      return `The ${what.toLowerCase()} is in use by another program or cannot be opened.`;
    default:
      return `${what} unavailable: ${e?.message || e}`;
  }
}

// Asks for both devices in one prompt; if that fails, each on its own so a missing
// camera does not also cost the microphone.
async function getLocalMedia({ withVideo = true } = {}) {
  if (!navigator.mediaDevices?.getUserMedia) {
    ui.showMessage('Camera and microphone need a secure page (https or localhost). Joining to watch and listen only.', 'warning');
    return null;
  }
  // 720p so that all three simulcast layers (1/4, 1/2, full) are worth sending.
  const video = { width: { ideal: 1280 }, height: { ideal: 720 } };
  try {
    return await navigator.mediaDevices.getUserMedia(withVideo ? { audio: true, video } : { audio: true });
  } catch (both) {
    const tracks = [];
    const wanted = [['audio', 'Microphone', { audio: true }]];
    if (withVideo) wanted.push(['video', 'Camera', { video }]);
    for (const [, what, constraints] of wanted) {
      try {
        const s = await navigator.mediaDevices.getUserMedia(constraints);
        tracks.push(...s.getTracks());
      } catch (e) {
        ui.showMessage(describeMediaError(e, what), 'warning');
      }
    }
    if (tracks.length === 0 && !['NotAllowedError', 'NotFoundError', 'SecurityError'].includes(both?.name)) {
      ui.showMessage(describeMediaError(both, 'Camera and microphone'), 'warning');
    }
    return tracks.length ? new MediaStream(tracks) : null;
  }
}

function mutedState(p) {
  // A kind with no published track counts as muted, so the tile shows "camera off".
  const byKind = { audio: true, video: true };
  // A screen share is a tile of its own: it does not turn the camera tile on.
  for (const t of p.tracks.values()) if (!t.muted && !t.source?.startsWith('screen')) byKind[t.kind] = false;
  return byKind;
}

/** Reports the size of a remote tile's video to `c` (adaptive stream); once per element. */
function watchTile(c, id) {
  const v = document.querySelector(`.tile[data-participant-id="${CSS.escape(id)}"] video`);
  if (!v || v.zvonUnwatch) return;
  v.zvonUnwatch = watchVideo(v, (s) => c.setVideoSettings(id, s));
}

function unwatchTile(id) {
  const v = document.querySelector(`.tile[data-participant-id="${CSS.escape(id)}"] video`);
  v?.zvonUnwatch?.();
  if (v) v.zvonUnwatch = null;
}

function playOrOfferSound(id, stream) {
  ui.setTileStream(id, stream).catch((e) => {
    if (e.name !== 'NotAllowedError') return;
    // Autoplay with sound blocked (no user gesture yet): play muted, offer a button.
    const v = document.querySelector(`.tile[data-participant-id="${CSS.escape(id)}"] video`);
    if (v) { v.muted = true; v.play().catch(() => {}); }
    ui.showAudioButton(true);
  });
}

let client = null;
let localStream = null;
let joining = false;
let detachClassroom = null;

function refreshControls() {
  const hasMic = !!localStream?.getAudioTracks().length;
  const hasCam = !!localStream?.getVideoTracks().length;
  ui.setControls({
    hasMic, hasCam,
    micMuted: hasMic && !localStream.getAudioTracks()[0].enabled,
    camMuted: hasCam && !localStream.getVideoTracks()[0].enabled,
  });
  const localId = client?.localParticipant?.id ?? LOCAL_TILE;
  ui.setTileMuted(localId, {
    audio: !hasMic || !localStream.getAudioTracks()[0].enabled,
    video: !hasCam || !localStream.getVideoTracks()[0].enabled,
  });
}

function stopLocal() {
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
}

/** `?codec=vp8|vp9|h264` picks the camera's codec (for trying codecs, and the tests). */
function codecParam() {
  const c = (params.get('codec') || '').toLowerCase();
  return { vp8: 'video/VP8', vp9: 'video/VP9', h264: 'video/H264' }[c] ?? null;
}

async function join(room, name, token = params.get('token')) {
  if (joining) return;
  joining = true;
  ui.clearMessages();
  ui.setStatus('Connecting…');
  ui.setRoomLabel(room ? `Room: ${room}` : '');
  // The camera prompt runs alongside token and join: remote media does not wait for it.
  const media = getLocalMedia().then((s) => { mark('media'); return s; });
  let c = null;
  try {
    const tok = token || await fetchToken(room, name);
    mark('token');
    c = new ZvonClient({ token: tok, room: room || undefined, videoCodec: codecParam() });
    client = c;
    window.zvon.client = c;
    wire(c, {
      onDead: () => {
        // A session that dies after joining: let the user start over.
        if (joining) return;
        stopLocal();
        ui.hideCall();
        ui.showJoinForm({ room: c.room ?? '', name: '' }, (r, n) => join(r, n, null));
      },
      onRemoved: (reason) => {
        stopLocal();
        ui.hideCall();
        ui.setStatus('Left');
        ui.showMessage(REMOVED_TEXT[reason] ?? `You were removed from the room (${reason}).`, 'info');
        ui.showJoinForm({ room: c.room ?? '', name: '' }, (r, n) => join(r, n, null));
      },
    });

    detachClassroom?.();
    detachClassroom = attachClassroom(c, document.getElementById('call'));
    c.addEventListener('localmutechanged', refreshControls);

    ui.showCall();
    ui.addTile(LOCAL_TILE, name || 'You', { local: true });
    refreshControls();
    media.then((stream) => {
      if (client !== c || ['left', 'error'].includes(c.state)) {
        stream?.getTracks().forEach((t) => t.stop());
        return;
      }
      localStream = stream;
      if (stream) ui.setTileStream(c.localParticipant?.id ?? LOCAL_TILE, stream);
      refreshControls();
    });

    await c.connect(media);
  } catch (e) {
    if (e instanceof UserError) ui.showMessage(e.message);
    else if (!c || !['error', 'left'].includes(c.state)) ui.showMessage(`Could not join: ${e.message}`);
    // connectionerror/servererror events already said why.
    ui.setStatus('Not connected');
    media.then((stream) => stream?.getTracks().forEach((t) => t.stop()));
    stopLocal();
    ui.hideCall();
    ui.showJoinForm({ room, name }, (r, n) => join(r, n, null));
  } finally {
    joining = false;
  }
}

const REMOVED_TEXT = {
  replaced: 'You joined this room again somewhere else, so this page left it.',
  room_closed: 'The room was closed.',
};

const ROOM_STATE_TEXT = { connecting: 'Connecting…', joined: 'Connected', left: 'Left', error: 'Disconnected' };

// Room client events -> UI. `setStatus` shows the room state; `showError` shows an error of
// the session; `onDead` runs when the session fails (state `error`); `onRemoved(reason)` when
// the server removed us (participant_left with our own id).
function wire(c, {
  setStatus = ui.setStatus, showError = (text) => ui.showMessage(text), onDead, onRemoved, showRoom = true,
} = {}) {
  // A client that is no longer the page's (a call that ended) must not touch the grid.
  const live = () => client === c;
  c.addEventListener('statechange', ({ detail }) => {
    setStatus(ROOM_STATE_TEXT[detail.state] ?? detail.state);
  });
  c.addEventListener('joined', ({ detail }) => {
    if (!live()) return;
    ui.setTileId(LOCAL_TILE, detail.participant.id);
    ui.setTileName(detail.participant.id, detail.participant.name || detail.participant.identity, true);
    if (showRoom && detail.room?.name) ui.setRoomLabel(`Room: ${detail.room.name}`);
    refreshControls();
  });
  c.addEventListener('participantjoined', ({ detail: { participant: p } }) => {
    if (!live()) return;
    ui.addTile(p.id, p.name);
    watchTile(c, p.id);
    ui.setTileMuted(p.id, mutedState(p));
    if (p.stream) playOrOfferSound(p.id, p.stream);
  });
  c.addEventListener('participantupdated', ({ detail: { participant: p } }) => {
    if (!live()) return;
    ui.setTileName(p.id, p.name);
    ui.setTileMuted(p.id, mutedState(p));
  });
  c.addEventListener('media', ({ detail: { participant: p } }) => {
    if (!live()) return;
    ui.addTile(p.id, p.name);
    watchTile(c, p.id);
    playOrOfferSound(p.id, p.stream);
  });
  c.addEventListener('participantleft', ({ detail: { participant: p } }) => {
    if (!live()) return;
    unwatchTile(p.id);
    ui.removeTile(p.id);
    ui.setScreenTile(p.id, null, null);
  });
  c.addEventListener('screen', ({ detail: { participant: p } }) => {
    if (!live()) return;
    ui.setScreenTile(p.id, p.name, p.screenStream);
  });
  c.addEventListener('localscreen', ({ detail: { stream } }) => {
    if (!live()) return;
    ui.setScreenTile(c.localParticipant?.id ?? LOCAL_TILE, null, stream, { local: true });
    refreshScreenButton(c);
  });
  c.addEventListener('activespeakers', ({ detail: { speakers } }) => {
    if (!live()) return;
    ui.setActiveSpeakers(speakers.map((s) => s.participant_id));
  });
  c.addEventListener('servererror', ({ detail: e }) => {
    if (!live()) return;
    showError(`Server error ${e.code}: ${e.message}`);
  });
  c.addEventListener('publisherror', ({ detail }) => {
    if (!live()) return;
    showError(`Could not send your camera and microphone: ${detail.message}`);
  });
  c.addEventListener('connectionerror', ({ detail }) => {
    if (!live()) return;
    showError(detail.message);
  });
  c.addEventListener('statechange', ({ detail }) => {
    if (detail.state === 'error') onDead?.();
    if (live()) refreshScreenButton(c);
  });
  c.addEventListener('classroom', ({ detail: { msg } }) => {
    if (live() && msg.type === 'permission_changed') refreshScreenButton(c);
  });
  c.addEventListener('left', ({ detail }) => {
    if (detail?.reason && live()) onRemoved?.(detail.reason);
  });
}

ui.onControl('mic', () => {
  if (!client || !localStream?.getAudioTracks().length) return;
  client.setMuted('audio', !client.isMuted('audio'));
  refreshControls();
});
ui.onControl('cam', () => {
  if (!client || !localStream?.getVideoTracks().length) return;
  client.setMuted('video', !client.isMuted('video'));
  refreshControls();
});
function refreshScreenButton(c) {
  const grants = c.localParticipant?.grants ?? {};
  const may = grants.can_publish !== false && !grants.hidden;
  ui.setScreenButton({
    sharing: c.isSharingScreen(),
    available: c.state === 'joined' && may && !!navigator.mediaDevices?.getDisplayMedia,
  });
}

ui.onControl('screen', async () => {
  const c = client;
  if (!c || c.state !== 'joined') return;
  if (c.isSharingScreen()) {
    await c.stopScreenShare();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  } catch (e) {
    // The user closed the picker: not an error worth a message.
    if (e?.name !== 'NotAllowedError') ui.showMessage(`Cannot share the screen: ${e?.message || e}`, 'warning');
    return;
  }
  const [track] = stream.getVideoTracks();
  if (!track) return;
  try {
    await c.shareScreen(track);
  } catch (e) {
    track.stop();
    ui.showMessage(`Cannot share the screen: ${e.message}`);
  }
});
ui.onControl('audio', () => {
  ui.enableRemoteAudio();
  ui.showAudioButton(false);
});
ui.onControl('leave', async () => {
  const c = client;
  if (!c) return;
  await c.leave();
  stopLocal();
  ui.hideCall();
  ui.setStatus('');
  ui.showMessage('You left the room.', 'info');
  ui.showJoinForm({ room: c.room ?? params.get('room') ?? '', name: '' }, (r, n) => join(r, n, null));
});

// Closing the tab: say goodbye so others drop the tile now, not after the grace period.
window.addEventListener('pagehide', () => {
  // leave() sends synchronously before its first await, which is all a closing page allows.
  if (client?.state === 'joined') client.leave();
  if (current?.callId) {
    sendCall({ type: current.accepted ? 'call_hangup' : current.role === 'caller' ? 'call_cancel' : 'call_decline', call_id: current.callId });
  }
  // A close frame tells the server this device is gone now.
  deviceSocket?.close();
});

// ---- Calls mode (docs/protocol.md "Calls between users") ----
//
// A device socket (ZvonDevice) registers this page as a device of a user; calls are placed and
// answered on it. An answered call is a room: the page joins it with a ZvonClient on a second
// socket, exactly like room mode, using the room and token from `call_accepted`.

const CALL_END_TEXT = {
  hangup: 'hung up', declined: 'declined', busy: 'busy', missed: 'no answer',
  unreachable: 'unreachable', cancelled: 'cancelled', caller_gone: 'the caller went away',
  member_left: 'the other side left', empty: 'everybody left', ended_by_server: 'ended by the server',
};
const STOPPED_RINGING_TEXT = {
  answered_elsewhere: 'Answered on another device',
  declined_elsewhere: 'Declined on another device',
  cancelled: 'The caller hung up',
  missed: 'Missed call',
  ended: 'The call ended',
};
// Outcome for one callee, as the caller sees it.
const CALLEE_OUTCOME = { call_declined: 'declined', call_busy: 'busy', call_missed: 'missed', call_unreachable: 'unreachable' };
const CALLEE_OUTCOME_TEXT = { declined: 'declined', busy: 'is busy', missed: 'did not answer', unreachable: 'is unreachable' };
const CALL_ERROR_TEXT = {
  cannot_call_self: 'You cannot call yourself.',
  too_many_calls: 'Too many calls in a minute; wait a little.',
  call_already_answered: 'Answered on another device',
  unknown_call: 'That call is over.',
  not_registered: 'This device is not registered yet.',
};
const STATUS_REVERT_MS = 5000;
const HANGUP_LEAVE_WAIT_MS = 1000;
const EVENTS_KEPT = 1000;

/** Exposed as window.zvon.calls: plain data the tests (and curious people) can read. */
let calls = null;
let deviceSocket = null;
let myName = '';
let reconnectAttempt = 0;
/** The call this device places or takes part in: see placeCall / acceptIncoming. */
let current = null;
/** call_id -> call_incoming message, for calls ringing on this device. */
const incoming = new Map();
let shownIncomingId = null;
/** call_ids this device is done with (a late call_incoming must not ring again). */
const finished = new Set();
/** request_ids of invites cancelled before their call_created came back. */
const cancelledInvites = new Set();
/** call_id -> [resolve] waiting for that call's call_ended. */
const endWaiters = new Map();
let statusTimer = null;

function storedDeviceId() {
  try {
    let id = localStorage.getItem('zvon.device');
    if (!id) {
      id = `web-${Math.random().toString(36).slice(2, 8)}`;
      localStorage.setItem('zvon.device', id);
    }
    return id;
  } catch {
    return `web-${Math.random().toString(36).slice(2, 8)}`;
  }
}

function sendCall(msg) {
  const rid = deviceSocket?.request(msg) ?? null;
  if (rid) calls.sent.push({ ...msg, request_id: rid, at: Date.now() });
  return rid;
}

function showCallStatus(text, { revert = false } = {}) {
  clearTimeout(statusTimer);
  calls.status = text;
  ui.setCallStatus(text);
  if (revert) {
    statusTimer = setTimeout(() => {
      if (!current && incoming.size === 0) showCallStatus(readyText());
    }, STATUS_REVERT_MS);
  }
}

function readyText() {
  return deviceSocket?.state === 'registered' ? 'Ready for calls' : 'Offline';
}

function setCallState(state, text, opts) {
  calls.state = state;
  if (text !== undefined) showCallStatus(text, opts);
  refreshCallButtons();
}

function refreshCallButtons() {
  ui.setCallButtons({
    canCall: deviceSocket?.state === 'registered' && !current,
    canCancel: !!current && current.role === 'caller' && !current.accepted && !current.ended,
  });
}

function peerLabel(call) {
  if (call.peerNames?.size) return [...call.peerNames.values()].join(', ');
  if (call.role === 'callee') return call.from?.name || call.from?.identity || 'the caller';
  return call.to.join(', ');
}

async function startCallsMode() {
  calls = {
    state: 'unregistered', callId: null, lastEvent: null, events: [], sent: [], roomClient: null,
    identity: null, device: null, status: '',
  };
  window.zvon.calls = calls;
  ui.onCallControl('accept-call', acceptIncoming);
  ui.onCallControl('decline-call', declineIncoming);
  ui.onCallControl('cancel-call', cancelOutgoing);
  ui.onCallControl('hangup-call', hangUp);

  const user = params.get('user') ?? '';
  const device = params.get('device') || storedDeviceId();
  const nm = params.get('name') ?? '';
  if (params.get('token')) goOnline({ user, name: nm, device, token: params.get('token') });
  else if (user) goOnline({ user, name: nm, device });
  else {
    ui.setStatus('');
    ui.showRegisterForm({ user, name: nm, device }, goOnline);
  }
}

async function goOnline({ user, name, device, token = null }) {
  ui.clearMessages();
  ui.setStatus('Connecting…');
  myName = name || user;
  ui.setRoomLabel(user ? `${myName} · ${device}` : '');
  let tok = token;
  try {
    if (!tok) tok = (await fetchDevToken({ identity: user, device, name: name || user })).token;
  } catch (e) {
    ui.showMessage(e instanceof UserError ? e.message : `Could not get a device token: ${e.message}`);
    ui.setStatus('Not connected');
    ui.showRegisterForm({ user, name, device }, goOnline);
    return;
  }
  setCallState('registering');
  ui.showCallsPanel(placeCall);
  showCallStatus('Connecting…');
  connectDevice(tok, { user, name, device });
}

async function connectDevice(token, form) {
  const d = new ZvonDevice({ token });
  deviceSocket = d;
  d.addEventListener('message', ({ detail: { msg } }) => {
    if (deviceSocket === d) onDeviceMessage(msg);
  });
  d.addEventListener('connectionerror', ({ detail }) => {
    if (deviceSocket !== d) return;
    refreshCallButtons();
    if (detail.reconnectable) {
      const delay = Math.min(1000 * 2 ** reconnectAttempt++, 10000);
      ui.setStatus('Offline, reconnecting…');
      if (!current) showCallStatus('Offline, reconnecting…');
      setTimeout(() => { if (deviceSocket === d) connectDevice(token, form); }, delay);
      return;
    }
    ui.setStatus('Offline');
    ui.showMessage(detail.message);
    if (calls.state === 'registering') {
      // Never got in (bad token, no such endpoint): back to the form.
      setCallState('unregistered');
      ui.hideCallsPanel();
      ui.showRegisterForm(form, goOnline);
    } else if (!current) {
      setCallState('unregistered', 'Offline');
    }
  });
  try {
    const reg = await d.connect();
    reconnectAttempt = 0;
    calls.identity = reg.identity ?? null;
    calls.device = reg.device ?? null;
    ui.setStatus('Online');
    ui.setRoomLabel(`${myName}${reg.identity && reg.identity !== myName ? ` (${reg.identity})` : ''} · ${reg.device ?? form.device}`);
    if (['registering', 'unregistered'].includes(calls.state)) setCallState('idle', readyText());
    else refreshCallButtons();
  } catch {
    // connectionerror has dealt with it.
  }
}

function onDeviceMessage(msg) {
  calls.events.push(msg);
  if (calls.events.length > EVENTS_KEPT) calls.events.splice(0, calls.events.length - EVENTS_KEPT);
  calls.lastEvent = msg;
  switch (msg.type) {
    case 'registered': return; // connectDevice
    case 'call_created': return onCallCreated(msg);
    case 'call_ringing': return onCallRinging(msg);
    case 'call_incoming': return onCallIncoming(msg);
    case 'call_accepted': return onCallAccepted(msg);
    case 'call_declined':
    case 'call_busy':
    case 'call_missed':
    case 'call_unreachable': return onCalleeOutcome(msg);
    case 'call_stopped_ringing': return onStoppedRinging(msg);
    case 'call_ended': return onCallEnded(msg);
    case 'error': return onCallError(msg);
    default:
      console.debug('zvon: ignoring device message', msg.type);
  }
}

// -- placing a call --

function placeCall(to, media) {
  if (current || deviceSocket?.state !== 'registered') return;
  const call = {
    role: 'caller', callId: null, media, to: [to], from: null, accepted: false, ended: false,
    requestId: null, roomClient: null, localMedia: null, outcomes: new Map(),
  };
  call.requestId = sendCall({ type: 'call_invite', to: [to], media });
  if (!call.requestId) { showCallStatus('Not connected to the server.', { revert: true }); return; }
  current = call;
  calls.callId = null;
  // The camera/mic prompt runs while it rings, so an answer connects without waiting for it.
  call.localMedia = getLocalMedia({ withVideo: media === 'video' });
  setCallState('calling', `Calling ${to}…`);
}

function onCallCreated(msg) {
  const call = current;
  if (msg.request_id && cancelledInvites.has(msg.request_id)) {
    cancelledInvites.delete(msg.request_id);
    sendCall({ type: 'call_cancel', call_id: msg.call_id });
    return;
  }
  if (!call || call.role !== 'caller' || call.ended) return;
  if (msg.request_id && call.requestId && msg.request_id !== call.requestId) return;
  if (call.callId && call.callId !== msg.call_id) return;
  call.callId = msg.call_id;
  calls.callId = msg.call_id;
  if (msg.media) call.media = msg.media;
  // Glare: the callee was calling us at the same moment, and the server made our invite answer
  // their call (this call_id rang here).
  if (incoming.delete(msg.call_id)) showIncomingCall();
  const ringing = [];
  for (const t of msg.to ?? []) {
    call.outcomes.set(t.identity, t.state);
    if (t.state === 'ringing') ringing.push(t.identity);
  }
  if (ringing.length && !call.accepted) setCallState('ringing', `Ringing ${ringing.join(', ')}…`);
}

function onCallRinging(msg) {
  const call = current;
  if (!call || call.role !== 'caller' || call.accepted) return;
  if (call.callId == null) { call.callId = msg.call_id; calls.callId = msg.call_id; }
  if (call.callId !== msg.call_id) return;
  call.outcomes.set(msg.identity, 'ringing');
  setCallState('ringing', `Ringing ${msg.identity}…`);
}

function onCalleeOutcome(msg) {
  const call = current;
  if (!call || call.callId !== msg.call_id) return;
  const outcome = CALLEE_OUTCOME[msg.type];
  call.outcomes.set(msg.identity, outcome);
  const text = `${msg.identity} ${CALLEE_OUTCOME_TEXT[outcome]}`;
  // 1:1: this decides the call (call_ended follows). Group: only news about one person.
  if (call.to.length === 1 && !call.accepted) setCallState(outcome, text);
  else ui.showMessage(text, 'info');
}

function cancelOutgoing() {
  const call = current;
  if (!call || call.role !== 'caller' || call.accepted) return;
  if (call.callId) sendCall({ type: 'call_cancel', call_id: call.callId });
  else cancelledInvites.add(call.requestId);
  endCallLocally(call, { text: `Call ended (${CALL_END_TEXT.cancelled})` });
}

// -- incoming calls --

function onCallIncoming(msg) {
  if (current?.callId === msg.call_id || finished.has(msg.call_id)) return;
  // Tell the caller this device rings, before anything else.
  sendCall({ type: 'call_ack', call_id: msg.call_id });
  incoming.set(msg.call_id, msg);
  showIncomingCall();
  if (!current) {
    calls.callId = msg.call_id;
    const from = msg.from?.name || msg.from?.identity || 'Someone';
    setCallState('incoming', `${from} is calling (${msg.media === 'audio' ? 'audio' : 'video'})…`);
  }
}

/** Shows the newest call ringing here, or hides the prompt when none rings. */
function showIncomingCall() {
  const last = [...incoming.values()].pop();
  shownIncomingId = last?.call_id ?? null;
  if (!last) { ui.hideIncoming(); return; }
  ui.showIncoming({
    name: last.from?.name, identity: last.from?.identity, media: last.media,
    waiting: !!last.waiting || !!current, group: !!last.group, members: last.members ?? [],
  });
}

function acceptIncoming() {
  const inv = incoming.get(shownIncomingId);
  if (!inv) return;
  incoming.delete(inv.call_id);
  showIncomingCall();
  // Call waiting: taking this call ends the one we are in.
  if (current) hangUp();
  const call = {
    role: 'callee', callId: inv.call_id, media: inv.media, to: [], from: inv.from ?? null,
    accepted: true, ended: false, requestId: null, roomClient: null, localMedia: null,
    outcomes: new Map(),
  };
  current = call;
  calls.callId = call.callId;
  call.requestId = sendCall({ type: 'call_accept', call_id: call.callId });
  call.localMedia = getLocalMedia({ withVideo: inv.media !== 'audio' });
  setCallState('connecting', `Connecting to ${peerLabel(call)}…`);
}

function declineIncoming() {
  const inv = incoming.get(shownIncomingId);
  if (!inv) return;
  incoming.delete(inv.call_id);
  finished.add(inv.call_id);
  sendCall({ type: 'call_decline', call_id: inv.call_id });
  showIncomingCall();
  if (!current && incoming.size === 0) {
    setCallState('idle', `Declined the call from ${inv.from?.name || inv.from?.identity || 'someone'}`, { revert: true });
  }
}

function onStoppedRinging(msg) {
  const inv = incoming.get(msg.call_id);
  incoming.delete(msg.call_id);
  finished.add(msg.call_id);
  showIncomingCall();
  let text = STOPPED_RINGING_TEXT[msg.reason] ?? `Stopped ringing (${msg.reason})`;
  if (msg.reason === 'missed' && inv?.from) text = `Missed call from ${inv.from.name || inv.from.identity}`;
  if (current?.callId === msg.call_id && current.role === 'callee' && !current.roomClient) {
    // We pressed Accept but another device of ours was first.
    endCallLocally(current, { state: 'idle', text, revert: true });
  } else if (!current) {
    if (incoming.size === 0) setCallState('idle', text, { revert: true });
    else setCallState('incoming');
  } else if (inv) {
    const li = ui.showMessage(text, 'info');
    setTimeout(() => li.remove(), STATUS_REVERT_MS);
  }
}

// -- an answered call: the room --

function onCallAccepted(msg) {
  let call = current;
  if (call && call.callId == null && call.role === 'caller') {
    // call_accepted raced ahead of call_created, or our invite met the callee's invite to us
    // ("the second invite accepts the first") and this is their call.
    call.callId = msg.call_id;
  }
  if (!call || call.callId !== msg.call_id || call.ended) {
    if (call?.role === 'caller' && !call.accepted && incoming.has(msg.call_id) && msg.identity === calls.identity) {
      // Crossing invites: our invite accepted their call, which rang here.
      incoming.delete(msg.call_id);
      showIncomingCall();
      call.callId = msg.call_id;
    } else {
      console.debug('zvon: call_accepted for a call this device is not in', msg.call_id);
      return;
    }
  }
  calls.callId = call.callId;
  call.accepted = true;
  // Glare: our invite answered their call, whose prompt may still show here.
  if (incoming.delete(call.callId)) showIncomingCall();
  if (call.roomClient) return; // group call: someone else joined; we are in the room already
  if (!msg.room || !msg.token) {
    ui.showMessage('The server accepted the call without a room or token.');
    hangUp();
    return;
  }
  if (call.role === 'caller') showCallStatus(`${msg.identity} answered, connecting…`);
  enterCallRoom(call, msg.room, msg.token);
}

async function enterCallRoom(call, room, token) {
  setCallState('connecting');
  const c = new ZvonClient({ token, room });
  call.roomClient = c;
  calls.roomClient = c;
  client = c;
  window.zvon.client = c;
  wire(c, {
    setStatus: () => {}, // the header shows the device socket; the call bar shows the call
    showRoom: false,
    // The server closes the call's room when the call ends, and that may reach the media
    // socket just before call_ended reaches the device socket: room errors and drops wait a
    // moment for call_ended before they count.
    showError: (text) => {
      waitCallEnded(call.callId, HANGUP_LEAVE_WAIT_MS).then(() => {
        if (current === call || call.dropped) ui.showMessage(text);
      });
    },
    onDead: () => roomGone(call, 'Call dropped: lost the connection to the call'),
    onRemoved: (reason) => roomGone(call, reason === 'replaced'
      ? 'Call moved: this call\'s room was joined from somewhere else'
      : `Call ended (${reason})`),
  });
  // The room knows the others' display names; the call bar uses them once they are in.
  call.peerNames = new Map();
  const showPeers = () => {
    if (current === call && c.state === 'joined') setCallState('active', `In call with ${peerLabel(call)}`);
  };
  c.addEventListener('joined', showPeers);
  c.addEventListener('participantjoined', ({ detail: { participant: p } }) => {
    if (p.name) call.peerNames.set(p.id, p.name);
    showPeers();
  });
  c.addEventListener('participantleft', ({ detail: { participant: p } }) => {
    call.peerNames.delete(p.id);
    showPeers();
  });
  const media = call.localMedia ?? getLocalMedia({ withVideo: call.media !== 'audio' });
  call.localMedia = media;
  ui.showCall();
  ui.addTile(LOCAL_TILE, myName || 'You', { local: true });
  refreshControls();
  media.then((stream) => {
    if (client !== c || ['left', 'error'].includes(c.state)) return;
    localStream = stream;
    if (stream) ui.setTileStream(c.localParticipant?.id ?? LOCAL_TILE, stream);
    refreshControls();
  });
  try {
    await c.connect(media);
  } catch (e) {
    if (current !== call) return;
    // connectionerror / servererror have shown why.
    sendCall({ type: 'call_hangup', call_id: call.callId });
    endCallLocally(call, { text: `Could not connect the call (${e.message})` });
  }
}

function roomGone(call, text) {
  waitCallEnded(call.callId, HANGUP_LEAVE_WAIT_MS).then(() => {
    if (current !== call) return;
    call.dropped = true;
    sendCall({ type: 'call_hangup', call_id: call.callId });
    endCallLocally(call, { text });
  });
}

function hangUp() {
  const call = current;
  if (!call) return;
  if (call.callId) {
    const type = call.accepted ? 'call_hangup' : call.role === 'caller' ? 'call_cancel' : 'call_decline';
    sendCall({ type, call_id: call.callId });
  } else if (call.requestId) {
    cancelledInvites.add(call.requestId);
  }
  // Leave the room once the server has ended the call (so the others hear "hung up", not
  // "left"), or after a moment; media stops now either way.
  const ended = call.callId ? waitCallEnded(call.callId, HANGUP_LEAVE_WAIT_MS) : null;
  endCallLocally(call, { text: `Call ended (${CALL_END_TEXT.hangup})`, leaveAfter: ended });
}

function waitCallEnded(callId, ms) {
  return new Promise((resolve) => {
    const list = endWaiters.get(callId) ?? [];
    list.push(resolve);
    endWaiters.set(callId, list);
    setTimeout(resolve, ms);
  });
}

function onCallEnded(msg) {
  for (const resolve of endWaiters.get(msg.call_id) ?? []) resolve();
  endWaiters.delete(msg.call_id);
  const text = `Call ended (${CALL_END_TEXT[msg.reason] ?? msg.reason ?? 'ended'})`;
  if (current?.callId === msg.call_id) {
    endCallLocally(current, { text });
    return;
  }
  finished.add(msg.call_id);
  if (incoming.delete(msg.call_id)) {
    showIncomingCall();
    if (!current) setCallState(incoming.size ? 'incoming' : 'ended', text, { revert: true });
  }
}

/** Ends `call` on this page: room left, media stopped, UI back to the calls bar. */
function endCallLocally(call, { state = 'ended', text, revert = false, leaveAfter = null }) {
  if (call.ended) return;
  call.ended = true;
  if (call.callId) finished.add(call.callId);
  if (current === call) current = null;
  const c = call.roomClient;
  call.roomClient = null;
  if (calls.roomClient === c) calls.roomClient = null;
  if (c) {
    if (client === c) client = null; // window.zvon.client keeps the last one for inspection
    Promise.resolve(leaveAfter).then(() => c.leave()).catch(() => {});
  }
  call.localMedia?.then((s) => s?.getTracks().forEach((t) => t.stop()));
  stopLocal();
  ui.hideCall();
  ui.showAudioButton(false);
  if (call.callId) calls.callId = call.callId;
  setCallState(state, text, { revert });
  // Another call may still ring here (call waiting).
  showIncomingCall();
  if (!current && incoming.size) setCallState('incoming');
}

function onCallError(msg) {
  const call = current;
  const text = CALL_ERROR_TEXT[msg.code] ?? `${msg.code}: ${msg.message ?? ''}`;
  if (call && msg.request_id && msg.request_id === call.requestId) {
    if (call.role === 'caller') {
      endCallLocally(call, { text: `Could not call: ${msg.message || text}`, revert: false });
    } else {
      endCallLocally(call, { state: 'idle', text, revert: true });
    }
    return;
  }
  // Late answers to hang-ups and cancels of calls that are already over are harmless.
  if (msg.code === 'unknown_call') { console.debug('zvon:', msg); return; }
  ui.showMessage(`Server error ${msg.code}: ${msg.message ?? ''}`);
}

const room = params.get('room');
const name = params.get('name');
if (params.get('user') || params.get('mode') === 'calls') {
  startCallsMode();
} else if (params.get('token') || (room && name)) {
  join(room ?? '', name ?? '');
} else {
  ui.setStatus('');
  ui.showJoinForm({ room: room ?? '', name: name ?? '' }, (r, n) => join(r, n, null));
}
