// Page wiring: URL parameters, token, camera/mic, and client events -> UI.
import { ZvonClient } from './client.js';
import * as ui from './ui.js';
import { attachClassroom } from './classroom.js';
import { attachRecording } from './recording.js';
import { watchVideo } from './adaptive.js';
import { startCallsMode } from './calls_mode.js';

const LOCAL_TILE = 'local';
const params = new URLSearchParams(location.search);

// Tests read the live client (and in calls mode the call state) from here.
window.zvon = { client: null, calls: null };

class UserError extends Error {}

// Same naming as client.js marks; the first-frame benchmark reads them.
const mark = (name) => performance.mark?.(`zvon:${name}`);
// Every module of the page is loaded and evaluated by now.
mark('app');

/** What index.html started early (see its script), each taken at most once. */
function takeEarly(what) {
  const early = window.zvonEarly;
  const value = early?.[what] ?? null;
  if (early) delete early[what];
  return value;
}

async function fetchToken(room, name) {
  // `?admin=1` asks dev mode for a teacher (room_admin) token.
  return (await fetchDevToken({ room, name, admin: params.get('admin') })).token;
}

/** `GET /api/dev-token` with the given query; returns {token, identity}. */
async function fetchDevToken(query) {
  const qs = Object.entries(query).filter(([, v]) => v != null && v !== '')
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
  const url = `/api/dev-token?${qs}`;
  // index.html may have asked for this very token already, while the modules loaded.
  const early = takeEarly('tokenUrl') === url ? takeEarly('tokenResponse') : null;
  let res;
  for (let attempt = 0; ; attempt++) {
    try {
      res = await (attempt === 0 && early ? early : fetch(url, { cache: 'no-store' }));
      break;
    } catch (e) {
      // A network error is often brief (a connection reset, a link still coming up, as the
      // suite's network-namespace runs saw twice in six): two more tries before giving up.
      if (attempt >= 2) {
        throw new UserError(`Cannot reach the Zvon server (${e.message}). Is it running?`);
      }
      await new Promise((resolve) => setTimeout(resolve, 300 * (attempt + 1)));
    }
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
  let poorConnection = false;
  for (const t of p.tracks.values()) {
    if (t.source?.startsWith('screen')) continue;
    if (!t.muted) byKind[t.kind] = false;
    if (t.kind === 'video' && !t.muted && t.pausedForBandwidth) poorConnection = true;
  }
  return { ...byKind, poorConnection };
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
let detachRecording = null;

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

/**
 * `?mode=classroom`: a large class. The grid scrolls instead of shrinking every tile to fit,
 * and the client subscribes on demand: it receives the cameras of the tiles in view only.
 */
const CLASSROOM = params.get('mode') === 'classroom';

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
    c = new ZvonClient({
      token: tok, room: room || undefined, videoCodec: codecParam(),
      videoSubscription: CLASSROOM ? 'on_demand' : 'auto',
      // ?deadpath=0: restart ICE only on `disconnected`/`failed`, not after 1.5 s of silence.
      detectDeadPath: params.get('deadpath') !== '0',
      // The socket index.html opened while the modules loaded, if any.
      socket: takeEarly('socket'),
    });
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
    detachRecording?.();
    detachRecording = attachRecording(c, document.querySelector('header'), tok);
    c.addEventListener('localmutechanged', refreshControls);

    ui.showCall({ classroom: CLASSROOM });
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
    // A socket opened early for a join that failed before using it.
    takeEarly('socket')?.close(1000);
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

const ROOM_STATE_TEXT = {
  connecting: 'Connecting…', reconnecting: 'Reconnecting…', joined: 'Connected', left: 'Left', error: 'Disconnected',
};

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
});

const room = params.get('room');
const name = params.get('name');
if (params.get('user') || params.get('mode') === 'calls') {
  startCallsMode({
    params, LOCAL_TILE, UserError, fetchDevToken, getLocalMedia, wire, refreshControls, stopLocal,
    client: () => client,
    setClient: (c) => { client = c; window.zvon.client = c; },
    forgetClient: () => { client = null; },
    setLocalStream: (stream) => { localStream = stream; },
  });
} else if (params.get('token') || (room && name)) {
  join(room ?? '', name ?? '');
} else {
  ui.setStatus('');
  ui.showJoinForm({ room: room ?? '', name: name ?? '' }, (r, n) => join(r, n, null));
}
