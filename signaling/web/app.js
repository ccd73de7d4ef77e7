// Page wiring: URL parameters, token, camera/mic, and client events -> UI.
import { ZvonClient } from './client.js';
import * as ui from './ui.js';

const LOCAL_TILE = 'local';
const params = new URLSearchParams(location.search);

// Tests read the live client from here.
window.zvon = { client: null };

class UserError extends Error {}

// Same naming as client.js marks; the first-frame benchmark reads them.
const mark = (name) => performance.mark?.(`zvon:${name}`);

async function fetchToken(room, name) {
  const url = `/api/dev-token?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`;
  let res;
  try {
    res = await fetch(url, { cache: 'no-store' });
  } catch (e) {
    throw new UserError(`Cannot reach the Zvon server (${e.message}). Is it running?`);
  }
  if (res.status === 403) {
    throw new UserError(
      'This server runs in production mode, so it does not hand out tokens. ' +
      'Open this page with ?token=<access token> (mint one with `zvon token --room ROOM --identity ID`).');
  }
  if (!res.ok) throw new UserError(`Could not get a token: HTTP ${res.status} from ${url}.`);
  const body = await res.json();
  if (!body.token) throw new UserError('The server answered without a token.');
  return body.token;
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
async function getLocalMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    ui.showMessage('Camera and microphone need a secure page (https or localhost). Joining to watch and listen only.', 'warning');
    return null;
  }
  const video = { width: { ideal: 640 }, height: { ideal: 480 } };
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video });
  } catch (both) {
    const tracks = [];
    for (const [kind, what, constraints] of [['audio', 'Microphone', { audio: true }], ['video', 'Camera', { video }]]) {
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
  for (const t of p.tracks.values()) if (!t.muted) byKind[t.kind] = false;
  return byKind;
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
    c = new ZvonClient({ token: tok, room: room || undefined });
    client = c;
    window.zvon.client = c;
    wire(c);

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

function wire(c) {
  c.addEventListener('statechange', ({ detail }) => {
    ui.setStatus({ connecting: 'Connecting…', joined: 'Connected', left: 'Left', error: 'Disconnected' }[detail.state] ?? detail.state);
  });
  c.addEventListener('joined', ({ detail }) => {
    ui.setTileId(LOCAL_TILE, detail.participant.id);
    ui.setTileName(detail.participant.id, detail.participant.name || detail.participant.identity, true);
    if (detail.room?.name) ui.setRoomLabel(`Room: ${detail.room.name}`);
    refreshControls();
  });
  c.addEventListener('participantjoined', ({ detail: { participant: p } }) => {
    ui.addTile(p.id, p.name);
    ui.setTileMuted(p.id, mutedState(p));
    if (p.stream) playOrOfferSound(p.id, p.stream);
  });
  c.addEventListener('participantupdated', ({ detail: { participant: p } }) => {
    ui.setTileName(p.id, p.name);
    ui.setTileMuted(p.id, mutedState(p));
  });
  c.addEventListener('media', ({ detail: { participant: p } }) => {
    ui.addTile(p.id, p.name);
    playOrOfferSound(p.id, p.stream);
  });
  c.addEventListener('participantleft', ({ detail: { participant: p } }) => {
    ui.removeTile(p.id);
  });
  c.addEventListener('servererror', ({ detail: e }) => {
    ui.showMessage(`Server error ${e.code}: ${e.message}`);
  });
  c.addEventListener('publisherror', ({ detail }) => {
    ui.showMessage(`Could not send your camera and microphone: ${detail.message}`);
  });
  c.addEventListener('connectionerror', ({ detail }) => {
    ui.showMessage(detail.message);
  });
  c.addEventListener('statechange', ({ detail }) => {
    // A session that dies after joining: let the user start over.
    if (detail.state === 'error' && !joining) {
      stopLocal();
      ui.hideCall();
      ui.showJoinForm({ room: c.room ?? '', name: '' }, (r, n) => join(r, n, null));
    }
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
if (params.get('token') || (room && name)) {
  join(room ?? '', name ?? '');
} else {
  ui.setStatus('');
  ui.showJoinForm({ room: room ?? '', name: name ?? '' }, (r, n) => join(r, n, null));
}
