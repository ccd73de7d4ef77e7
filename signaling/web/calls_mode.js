// Calls mode of the page (docs/protocol.md "Calls between users"): a device socket, placing and
// answering calls, and the call's room, joined with the room page's own wiring.
import { ZvonClient } from './client.js';
import { ZvonDevice } from './device.js';
import * as ui from './ui.js';

/** The room page's parts lent to calls mode; set by startCallsMode. */
let page = null;

// ---- Calls mode (docs/protocol.md "Calls between users") ----
//
// A device socket (ZvonDevice) registers this page as a device of a user; calls are placed and
// answered on it. An answered call is a room: the page joins it with a ZvonClient on a second
// socket, exactly like room mode, using the room and token from `call_accepted`.

const CALL_END_TEXT = {
  hangup: 'hung up', declined: 'declined', busy: 'busy', missed: 'no answer',
  unreachable: 'unreachable', cancelled: 'cancelled', caller_gone: 'the caller went away',
  member_left: 'the other side left', empty: 'everybody left', ended_by_server: 'ended by the server',
  not_joined: 'the other side never joined',
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

/**
 * Starts calls mode. `hooks` lends it the room page's parts: URL parameters, tokens, local
 * media, the room-client wiring and the page's current room client.
 */
export async function startCallsMode(hooks) {
  page = hooks;
  // Closing the tab: end or refuse the call in progress and close the device socket now.
  window.addEventListener('pagehide', () => {
    if (current?.callId) {
      sendCall({ type: current.accepted ? 'call_hangup' : current.role === 'caller' ? 'call_cancel' : 'call_decline', call_id: current.callId });
    }
    // A close frame tells the server this device is gone now.
    deviceSocket?.close();
  });
  calls = {
    state: 'unregistered', callId: null, lastEvent: null, events: [], sent: [], roomClient: null,
    identity: null, device: null, status: '',
  };
  window.zvon.calls = calls;
  ui.onCallControl('accept-call', acceptIncoming);
  ui.onCallControl('decline-call', declineIncoming);
  ui.onCallControl('cancel-call', cancelOutgoing);
  ui.onCallControl('hangup-call', hangUp);

  const user = page.params.get('user') ?? '';
  const device = page.params.get('device') || storedDeviceId();
  const nm = page.params.get('name') ?? '';
  if (page.params.get('token')) goOnline({ user, name: nm, device, token: page.params.get('token') });
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
    if (!tok) tok = (await page.fetchDevToken({ identity: user, device, name: name || user })).token;
  } catch (e) {
    ui.showMessage(e instanceof page.UserError ? e.message : `Could not get a device token: ${e.message}`);
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
  call.localMedia = page.getLocalMedia({ withVideo: media === 'video' });
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
  call.localMedia = page.getLocalMedia({ withVideo: inv.media !== 'audio' });
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
  page.setClient(c);
  page.wire(c, {
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
  const media = call.localMedia ?? page.getLocalMedia({ withVideo: call.media !== 'audio' });
  call.localMedia = media;
  ui.showCall();
  ui.addTile(page.LOCAL_TILE, myName || 'You', { local: true });
  page.refreshControls();
  media.then((stream) => {
    if (page.client() !== c || ['left', 'error'].includes(c.state)) return;
    page.setLocalStream(stream);
    if (stream) ui.setTileStream(c.localParticipant?.id ?? page.LOCAL_TILE, stream);
    page.refreshControls();
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
    if (page.client() === c) page.forgetClient(); // window.zvon.client keeps the last one
    Promise.resolve(leaveAfter).then(() => c.leave()).catch(() => {});
  }
  call.localMedia?.then((s) => s?.getTracks().forEach((t) => t.stop()));
  page.stopLocal();
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
