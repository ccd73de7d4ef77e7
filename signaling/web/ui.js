// DOM side of the page: join form, tile grid, controls, messages. Knows nothing of the protocol.

const $ = (id) => document.getElementById(id);

export function showMessage(text, kind = 'error') {
  const li = document.createElement('li');
  li.className = `message ${kind}`;
  const span = document.createElement('span');
  span.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'dismiss';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => li.remove());
  li.append(span, close);
  $('messages').append(li);
  return li;
}

export function clearMessages() {
  $('messages').replaceChildren();
}

export function setStatus(text) {
  $('status').textContent = text;
}

export function setRoomLabel(text) {
  $('room-label').textContent = text;
}

export function showJoinForm({ room = '', name = '' } = {}, onSubmit) {
  const form = $('join-form');
  $('call').hidden = true;
  form.hidden = false;
  form.elements.room.value = room;
  form.elements.name.value = name;
  (room ? form.elements.name : form.elements.room).focus();
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const r = form.elements.room.value.trim();
    const n = form.elements.name.value.trim();
    if (!r || !n) return;
    form.hidden = true;
    onSubmit(r, n);
  };
}

/** `classroom`: tiles keep a minimum size and the grid scrolls (a large class). */
export function showCall({ classroom = false } = {}) {
  $('join-form').hidden = true;
  $('register-form').hidden = true;
  $('call').hidden = false;
  $('grid').classList.toggle('classroom', classroom);
}

export function hideCall() {
  $('call').hidden = true;
  $('grid').replaceChildren();
}

function tile(id) {
  return $('grid').querySelector(`.tile[data-participant-id="${CSS.escape(id)}"]`);
}

export function addTile(id, name, { local = false } = {}) {
  let el = tile(id);
  if (el) { setTileName(id, name); return el; }
  el = document.createElement('div');
  el.className = local ? 'tile local' : 'tile remote';
  el.dataset.participantId = id;

  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  // Own audio must never play back (echo); remote audio plays through the same element.
  video.muted = local;

  const avatar = document.createElement('div');
  avatar.className = 'avatar';

  const label = document.createElement('div');
  label.className = 'label';
  const nameEl = document.createElement('span');
  nameEl.className = 'name';
  const badges = document.createElement('span');
  badges.className = 'badges';
  label.append(nameEl, badges);

  el.append(video, avatar, label);
  $('grid').append(el);
  setTileName(id, name, local);
  setTileMuted(id, { audio: false, video: true });
  updateGridLayout();
  return el;
}

export function setTileId(oldId, newId) {
  const el = tile(oldId);
  if (el) el.dataset.participantId = newId;
}

export function setTileName(id, name, local = tile(id)?.classList.contains('local')) {
  const el = tile(id);
  if (!el) return;
  const shown = name || '…';
  el.querySelector('.name').textContent = local ? `${shown} (you)` : shown;
  el.querySelector('.avatar').textContent = (name || '?').trim().charAt(0).toUpperCase() || '?';
}

export function removeTile(id) {
  const el = tile(id);
  if (!el) return;
  const video = el.querySelector('video');
  video.srcObject = null;
  el.remove();
  updateGridLayout();
}

/** Attaches a stream; returns a promise that rejects if autoplay with sound was blocked. */
export function setTileStream(id, stream) {
  const el = tile(id);
  if (!el) return Promise.resolve();
  const video = el.querySelector('video');
  if (video.srcObject === stream) return Promise.resolve();
  video.srcObject = stream;
  if (!stream) return Promise.resolve();
  return video.play().catch((e) => {
    // AbortError: replaced by a newer srcObject before it started; harmless.
    if (e.name !== 'AbortError') throw e;
  });
}

/**
 * `audio`/`video`: true when that track is muted or absent; `poorConnection`: the server
 * paused the video because this client's link cannot carry it.
 */
export function setTileMuted(id, { audio, video, poorConnection = false }) {
  const el = tile(id);
  if (!el) return;
  el.classList.toggle('no-video', !!video);
  const badges = el.querySelector('.badges');
  badges.replaceChildren();
  if (audio) badges.append(badge('mic off', 'badge-mic'));
  if (video) badges.append(badge('camera off', 'badge-cam'));
  if (poorConnection && !video) badges.append(badge('video paused: poor connection', 'badge-poor'));
}

function badge(text, cls) {
  const b = document.createElement('span');
  b.className = `badge ${cls}`;
  b.textContent = text;
  return b;
}

// The enlarged tile changes at most this often: two people who speak in turns every moment
// (or a fake microphone's beeps) would otherwise reflow the whole grid four times a second.
const DOMINANT_HOLD_MS = 1500;
let enlarged = { id: null, since: -Infinity };
let enlargeLater = null;

/**
 * The speaker shown large: `dominant`, once the one shown has had its time; until then the
 * latest list is applied again when it has.
 */
function enlargedSpeaker(ids, now) {
  const dominant = ids[0] ?? null;
  clearTimeout(enlargeLater);
  enlargeLater = null;
  const wait = enlarged.since + DOMINANT_HOLD_MS - now;
  if (dominant !== enlarged.id) {
    if (wait <= 0) enlarged = { id: dominant, since: now };
    else enlargeLater = setTimeout(() => setActiveSpeakers(ids), wait);
  }
  return enlarged.id;
}

/**
 * Rings the tiles of everyone speaking; the first (dominant) speaker's tile is shown large
 * once there are more than two tiles, so a class sees the teacher or whoever asks a question.
 */
export function setActiveSpeakers(ids) {
  const speaking = new Set(ids);
  const dominant = enlargedSpeaker(ids, performance.now());
  for (const el of $('grid').querySelectorAll('.tile')) {
    const id = el.dataset.participantId;
    el.classList.toggle('speaking', speaking.has(id));
    // The own tile is never enlarged: nobody needs to see themselves big.
    el.classList.toggle('dominant', id === dominant && !el.classList.contains('local'));
  }
}

/**
 * Shows `stream` as the screen share of participant `id`: a tile of its own spanning the
 * grid, first, apart from the person's camera tile. A null stream removes it.
 */
export function setScreenTile(id, name, stream, { local = false } = {}) {
  const grid = $('grid');
  let el = grid.querySelector(`.tile.screen[data-screen-of="${CSS.escape(id)}"]`);
  if (!stream) {
    if (el) {
      el.querySelector('video').srcObject = null;
      el.remove();
      updateGridLayout();
    }
    return;
  }
  if (!el) {
    el = document.createElement('div');
    el.className = local ? 'tile screen mine' : 'tile screen';
    el.dataset.screenOf = id;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    // Screen shares carry no sound here; muted also lets it autoplay without a gesture.
    video.muted = true;
    const label = document.createElement('div');
    label.className = 'label';
    const nameEl = document.createElement('span');
    nameEl.className = 'name';
    label.append(nameEl);
    el.append(video, label);
    grid.prepend(el);
    updateGridLayout();
  }
  el.querySelector('.name').textContent = local ? 'Your screen' : `${name || '…'}'s screen`;
  const video = el.querySelector('video');
  if (video.srcObject !== stream) {
    video.srcObject = stream;
    video.play().catch(() => {});
  }
}

export function setScreenButton({ sharing, available }) {
  const b = $('btn-screen');
  b.hidden = !available;
  b.textContent = sharing ? 'Stop sharing' : 'Share screen';
  b.setAttribute('aria-pressed', String(!!sharing));
}

// Column count from tile count keeps tiles as large as possible for 1–9+ people (a screen
// share spans a row of its own and does not count).
function updateGridLayout() {
  const grid = $('grid');
  const n = grid.querySelectorAll(':scope > .tile:not(.screen)').length;
  grid.style.setProperty('--cols', String(Math.max(1, Math.ceil(Math.sqrt(n)))));
}

/** Unmutes every remote element; needs a user gesture in browsers that block autoplay. */
export function enableRemoteAudio() {
  for (const v of $('grid').querySelectorAll('.tile.remote video')) {
    v.muted = false;
    v.play().catch(() => {});
  }
}

export function muteRemoteElements() {
  for (const v of $('grid').querySelectorAll('.tile.remote video')) v.muted = true;
}

export function setControls({ micMuted, camMuted, hasMic, hasCam }) {
  const mic = $('btn-mic');
  mic.disabled = !hasMic;
  mic.textContent = !hasMic ? 'No mic' : micMuted ? 'Unmute mic' : 'Mute mic';
  mic.setAttribute('aria-pressed', String(!!micMuted));
  const cam = $('btn-cam');
  cam.disabled = !hasCam;
  cam.textContent = !hasCam ? 'No camera' : camMuted ? 'Start camera' : 'Stop camera';
  cam.setAttribute('aria-pressed', String(!!camMuted));
}

export function onControl(name, handler) {
  $(`btn-${name}`).addEventListener('click', handler);
}

export function showAudioButton(show) {
  $('btn-audio').hidden = !show;
}

// ---- Calls mode ----

export function showRegisterForm({ user = '', name = '', device = '' } = {}, onSubmit) {
  const form = $('register-form');
  $('join-form').hidden = true;
  $('calls').hidden = true;
  $('call').hidden = true;
  form.hidden = false;
  form.elements.user.value = user;
  form.elements.name.value = name;
  form.elements.device.value = device;
  (user ? form.elements.name : form.elements.user).focus();
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const u = form.elements.user.value.trim();
    const n = form.elements.name.value.trim();
    const d = form.elements.device.value.trim();
    if (!u || !d) return;
    form.hidden = true;
    onSubmit({ user: u, name: n, device: d });
  };
}

/** Shows the calls bar; `onCall(identity, media)` when the user places a call. */
export function showCallsPanel(onCall) {
  $('join-form').hidden = true;
  $('register-form').hidden = true;
  $('calls').hidden = false;
  // In a call the grid's Leave button becomes Hang up.
  $('btn-leave').hidden = true;
  $('hangup-call').hidden = false;
  const form = $('call-form');
  const place = (media) => {
    const to = $('call-to').value.trim();
    if (!to) { $('call-to').focus(); return; }
    onCall(to, media);
  };
  form.onsubmit = (ev) => { ev.preventDefault(); place('video'); };
  $('audio-call').onclick = () => place('audio');
}

export function hideCallsPanel() {
  $('calls').hidden = true;
}

export function setCallStatus(text) {
  $('call-status').textContent = text;
}

/** `canCall`: the call form is usable; `canCancel`: an outgoing call rings. */
export function setCallButtons({ canCall, canCancel }) {
  for (const id of ['call-to', 'audio-call', 'video-call']) $(id).disabled = !canCall;
  $('cancel-call').hidden = !canCancel;
}

export function showIncoming({ name, identity, media, waiting = false, group = false, members = [] }) {
  $('incoming-from').textContent = name && name !== identity ? `${name} (${identity})` : (name || identity || 'Someone');
  let what = media === 'audio' ? 'Audio call' : 'Video call';
  if (group) what += ` with ${members.length} people`;
  if (waiting) what += ' (ends your current call)';
  $('incoming-media').textContent = `${what}…`;
  $('incoming-call').dataset.media = media ?? '';
  $('incoming-call').hidden = false;
}

export function hideIncoming() {
  $('incoming-call').hidden = true;
}

export function onCallControl(id, handler) {
  $(id).addEventListener('click', handler);
}
