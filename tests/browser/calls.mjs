// Calls between users, in real headless Chromium pages against a real Zvon server
// (docs/protocol.md "Calls between users"). Each page is one device in calls mode
// (`/?user=ID&device=DEV&name=NAME`): a device socket for the call, a room for the media.
//   node calls.mjs [scenario-prefix...]     (server binary from $ZVON_BIN, default target/release/zvon)
import {
  runSuite, openPage, snapshot, waitFor, waitMediaFlowing, uniqueName, log,
} from './harness.mjs';

const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 30_000);
// Signaling-only steps (ringing, stop ringing, call ended) are fast; media gets TIMEOUT_MS.
const SIGNAL_TIMEOUT_MS = 10_000;
const CALL_END_LIMIT_MS = 5_000;

function callsUrl(server, user, device, name) {
  const q = new URLSearchParams({ user, device, name });
  return `${server.baseUrl}/?${q}`;
}

/** What a calls-mode page shows and has received, in one evaluate. */
async function callsView(page) {
  return page.evaluate(() => {
    const c = window.zvon?.calls;
    const inc = document.getElementById('incoming-call');
    return {
      state: c?.state ?? 'no-calls',
      callId: c?.callId ?? null,
      status: document.getElementById('call-status')?.textContent ?? '',
      identity: c?.identity ?? null,
      device: c?.device ?? null,
      events: (c?.events ?? []).map((e) => ({
        type: e.type, call_id: e.call_id, reason: e.reason, identity: e.identity, code: e.code,
        message: e.message, from: e.from, media: e.media, room: e.room, token: e.token,
        to: e.to, request_id: e.request_id, duration_s: e.duration_s,
      })),
      sent: (c?.sent ?? []).map((m) => ({ type: m.type, call_id: m.call_id })),
      incomingVisible: !!inc && !inc.hidden,
      incomingText: inc && !inc.hidden ? inc.textContent.replace(/\s+/g, ' ').trim() : '',
      roomClient: c?.roomClient ? c.roomClient.state : null,
      // Set by the test before hanging up: the room client of the call that is ending.
      savedRoomClient: window.__callRoom ? window.__callRoom.state : null,
      callSectionVisible: !document.getElementById('call')?.hidden,
      messages: [...document.querySelectorAll('#messages .message')].map((m) => m.textContent),
      errors: [...document.querySelectorAll('#messages .message.error')].map((m) => m.textContent),
    };
  });
}

function findEvent(view, type, fields = {}) {
  return view.events.find((e) => e.type === type
    && Object.entries(fields).every(([k, v]) => e[k] === v));
}

/** Compact view for "last seen" in timeouts: no tokens, no SDP. */
function brief(view) {
  return {
    ...view,
    events: view.events.map((e) => [e.type, e.call_id, e.reason ?? e.identity ?? e.code ?? '']
      .filter(Boolean).join(' ')),
  };
}

async function waitRegistered(page, user, device) {
  const r = await waitFor(`${page.label} to register as ${user}/${device}`, async () => {
    const v = await callsView(page);
    const reg = findEvent(v, 'registered');
    return { ok: !!reg && v.state === 'idle', seen: brief(v), view: v };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  const reg = findEvent(r.view, 'registered');
  if (reg.identity !== user) throw new Error(`${page.label}: registered.identity is ${reg.identity}, expected ${user}`);
  if (r.view.device !== device) throw new Error(`${page.label}: registered.device is ${r.view.device}, expected ${device}`);
  log(`${page.label} registered as ${user}/${device} in ${r.elapsedMs} ms`);
}

async function openDevices(browser, server, pages, specs) {
  const out = [];
  for (const [label, user, device, name] of specs) {
    const p = await openPage(browser, callsUrl(server, user, device, name), label);
    pages.push(p);
    out.push(p);
  }
  for (let i = 0; i < out.length; i++) await waitRegistered(out[i], specs[i][1], specs[i][2]);
  return out;
}

async function placeCall(page, to, media) {
  await page.fill('#call-to', to);
  await page.click(media === 'audio' ? '#audio-call' : '#video-call');
  const r = await waitFor(`${page.label} to get call_created`, async () => {
    const v = await callsView(page);
    const err = findEvent(v, 'error');
    if (err) throw new Error(`${page.label} got error ${err.code}: ${err.message}`);
    return { ok: !!findEvent(v, 'call_created'), seen: brief(v), view: v };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  const created = findEvent(r.view, 'call_created');
  log(`${page.label} placed ${media} call ${created.call_id} to ${to}: ${JSON.stringify(created.to)}`);
  if (!created.call_id) throw new Error('call_created has no call_id');
  if (created.media && created.media !== media) throw new Error(`call_created.media is ${created.media}, expected ${media}`);
  return created.call_id;
}

async function waitRinging(page, callId, callerName, media) {
  const r = await waitFor(`${page.label} to ring for call ${callId}`, async () => {
    const v = await callsView(page);
    const ok = v.incomingVisible && !!findEvent(v, 'call_incoming', { call_id: callId })
      && v.sent.some((s) => s.type === 'call_ack' && s.call_id === callId)
      && v.state === 'incoming';
    return { ok, seen: brief(v), view: v };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  const inc = findEvent(r.view, 'call_incoming', { call_id: callId });
  if (inc.media !== media) throw new Error(`${page.label}: call_incoming.media is ${inc.media}, expected ${media}`);
  if (!r.view.incomingText.includes(callerName)) {
    throw new Error(`${page.label}: incoming call prompt "${r.view.incomingText}" does not name ${callerName}`);
  }
  const kind = media === 'audio' ? /audio/i : /video/i;
  if (!kind.test(r.view.incomingText)) {
    throw new Error(`${page.label}: incoming call prompt "${r.view.incomingText}" does not say ${media}`);
  }
  log(`${page.label} rings: "${r.view.incomingText}" (from ${JSON.stringify(inc.from)}), acked`);
  return inc;
}

async function waitInCall(page, callId) {
  const r = await waitFor(`${page.label} to be in call ${callId}'s room`, async () => {
    const v = await callsView(page);
    const err = v.events.find((e) => e.type === 'error');
    if (err) throw new Error(`${page.label} got error ${err.code}: ${err.message}`);
    const ok = v.state === 'active' && v.roomClient === 'joined' && v.callId === callId;
    return { ok, seen: brief(v), view: v };
  }, { timeoutMs: TIMEOUT_MS });
  const acc = findEvent(r.view, 'call_accepted', { call_id: callId });
  if (!acc?.room || !acc?.token) throw new Error(`${page.label}: call_accepted without room/token: ${JSON.stringify(acc)}`);
  log(`${page.label} joined call room ${acc.room} (accepted by ${acc.identity}) in ${r.elapsedMs} ms`);
  return acc;
}

// a) A calls B, who has two devices; B answers on b1; media both ways; b2 stops ringing;
//    A hangs up and B1 leaves the room.
async function scenarioAnswer(browser, server, pages, results) {
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  const [a, b1, b2] = await openDevices(browser, server, pages, [
    ['A', alice, 'a1', 'Alice'], ['B1', bob, 'b1', 'Bob'], ['B2', bob, 'b2', 'Bob'],
  ]);

  const callId = await placeCall(a, bob, 'video');
  await waitRinging(b1, callId, 'Alice', 'video');
  await waitRinging(b2, callId, 'Alice', 'video');
  await waitFor('A to show "ringing"', async () => {
    const v = await callsView(a);
    return { ok: v.state === 'ringing' && !!findEvent(v, 'call_ringing', { call_id: callId, identity: bob }), seen: brief(v) };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  results.push({ name: 'a-ring', ok: true, detail: 'both devices of B ring and ack; A sees ringing' });

  await b1.click('#accept-call');
  const accA = await waitInCall(a, callId);
  const accB = await waitInCall(b1, callId);
  if (accA.room !== accB.room) throw new Error(`A and B1 were sent different rooms: ${accA.room} vs ${accB.room}`);
  if (accA.token === accB.token) throw new Error('A and B1 got the same room token (must be personal to each device)');

  for (const [p, other] of [[a, 'B1'], [b1, 'A']]) {
    const r = await waitMediaFlowing(p, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS, calls: true });
    const v = r.growingVideo[0];
    log(`${p.label} decodes ${other}'s video ${v.frameWidth}x${v.frameHeight} (${v.framesDecoded} frames) and receives audio (${r.growingAudio[0]?.packetsReceived} packets) after ${r.elapsedMs} ms more`);
    const s = await snapshot(p, { calls: true });
    if (s.tiles.length !== 1 || s.tiles[0].noVideo) {
      throw new Error(`${p.label} should show one remote tile with video, shows ${JSON.stringify(s.tiles)}`);
    }
  }
  results.push({ name: 'a-media', ok: true, detail: 'A and B1 decode each other\'s video and receive audio in the call room' });

  const r2 = await waitFor('B2 to stop ringing (answered_elsewhere)', async () => {
    const v = await callsView(b2);
    const ok = !v.incomingVisible && v.roomClient === null && v.state !== 'active'
      && !!findEvent(v, 'call_stopped_ringing', { call_id: callId, reason: 'answered_elsewhere' });
    return { ok, seen: brief(v), view: v };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  if (findEvent(r2.view, 'call_accepted', { call_id: callId })) {
    // Not in the contract's diagram: b2 is not a member device, so it should get no room token.
    log('WARNING: B2 (not in the call) received call_accepted for it');
  }
  log(`B2 stopped ringing; status "${r2.view.status}"`);
  results.push({ name: 'a-b2-stops', ok: true, detail: 'b2 stopped ringing with answered_elsewhere' });

  for (const p of [a, b1]) await p.evaluate(() => { window.__callRoom = window.zvon.calls.roomClient; });
  const t0 = Date.now();
  await a.click('#hangup-call');
  const r3 = await waitFor('B1 to get call_ended and leave the room', async () => {
    const v = await callsView(b1);
    const ended = findEvent(v, 'call_ended', { call_id: callId });
    const ok = !!ended && v.roomClient === null && v.savedRoomClient === 'left' && !v.callSectionVisible
      && v.state === 'ended';
    return { ok, seen: brief(v), view: v, ended };
  }, { timeoutMs: CALL_END_LIMIT_MS, intervalMs: 50 });
  const endMs = Date.now() - t0;
  log(`B1 got call_ended (reason ${r3.ended.reason}, duration_s ${r3.ended.duration_s}) and left the room ${endMs} ms after A clicked hang up; status "${r3.view.status}"`);
  if (r3.ended.reason !== 'hangup') throw new Error(`B1's call_ended.reason is ${r3.ended.reason}, expected hangup`);
  const r4 = await waitFor('A to get call_ended and leave the room', async () => {
    const v = await callsView(a);
    const ended = findEvent(v, 'call_ended', { call_id: callId });
    const ok = !!ended && v.roomClient === null && v.savedRoomClient === 'left' && v.state === 'ended';
    return { ok, seen: brief(v), ended };
  }, { timeoutMs: CALL_END_LIMIT_MS });
  log(`A got call_ended (reason ${r4.ended.reason}) and left the room`);
  // A normal call, answered and hung up, shows nobody an error (a closed call room is not one).
  await new Promise((r) => setTimeout(r, 1500));
  for (const p of [a, b1, b2]) {
    const v = await callsView(p);
    if (v.errors.length) throw new Error(`${p.label} shows error message(s): ${JSON.stringify(v.errors)}`);
  }
  results.push({ name: 'a-hangup', ok: true, detail: `B1 saw call_ended and left the room ${endMs} ms after A hung up`, callEndMs: endMs });
}

// b) B declines: A sees declined, then the call ends (declined); B's prompt goes away.
async function scenarioDecline(browser, server, pages, results) {
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  const [a, b] = await openDevices(browser, server, pages, [['A', alice, 'a1', 'Alice'], ['B', bob, 'b1', 'Bob']]);
  const callId = await placeCall(a, bob, 'audio');
  await waitRinging(b, callId, 'Alice', 'audio');
  await b.click('#decline-call');
  await waitFor('A to see the call declined and ended', async () => {
    const v = await callsView(a);
    const ok = !!findEvent(v, 'call_declined', { call_id: callId, identity: bob })
      && !!findEvent(v, 'call_ended', { call_id: callId, reason: 'declined' })
      && v.state === 'ended' && v.roomClient === null;
    return { ok, seen: brief(v) };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  await waitFor('B to hide the prompt', async () => {
    const v = await callsView(b);
    return { ok: !v.incomingVisible && v.roomClient === null, seen: brief(v) };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  results.push({ name: 'b-decline', ok: true, detail: 'decline reaches the caller as call_declined + call_ended(declined)' });
}

// c) A cancels while B rings: B stops ringing (cancelled), A's call ends (cancelled).
async function scenarioCancel(browser, server, pages, results) {
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  const [a, b] = await openDevices(browser, server, pages, [['A', alice, 'a1', 'Alice'], ['B', bob, 'b1', 'Bob']]);
  const callId = await placeCall(a, bob, 'video');
  await waitRinging(b, callId, 'Alice', 'video');
  await waitFor('A to show the Cancel button', async () => {
    const visible = await a.isVisible('#cancel-call');
    return { ok: visible, seen: { cancelVisible: visible } };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  await a.click('#cancel-call');
  await waitFor('B to stop ringing (cancelled)', async () => {
    const v = await callsView(b);
    const ok = !v.incomingVisible
      && !!findEvent(v, 'call_stopped_ringing', { call_id: callId, reason: 'cancelled' });
    return { ok, seen: brief(v) };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  await waitFor('A to get call_ended (cancelled)', async () => {
    const v = await callsView(a);
    const ok = !!findEvent(v, 'call_ended', { call_id: callId, reason: 'cancelled' }) && v.state === 'ended';
    return { ok, seen: brief(v) };
  }, { timeoutMs: SIGNAL_TIMEOUT_MS });
  results.push({ name: 'c-cancel', ok: true, detail: 'cancel stops the callee ringing and ends the call (cancelled)' });
}

// d) Audio-only call: mic only both ways, audio flows, no video m-line is published.
async function scenarioAudio(browser, server, pages, results) {
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  const [a, b] = await openDevices(browser, server, pages, [['A', alice, 'a1', 'Alice'], ['B', bob, 'b1', 'Bob']]);
  const callId = await placeCall(a, bob, 'audio');
  await waitRinging(b, callId, 'Alice', 'audio');
  await b.click('#accept-call');
  await waitInCall(a, callId);
  await waitInCall(b, callId);
  for (const p of [a, b]) {
    const r = await waitMediaFlowing(p, { videos: 0, audios: 1, timeoutMs: TIMEOUT_MS, calls: true });
    const sent = await p.evaluate(() => {
      const pc = window.zvon.calls.roomClient?.publisherPc;
      return pc ? pc.getSenders().filter((s) => s.track).map((s) => s.track.kind) : [];
    });
    const video = r.snap.inbound.filter((i) => i.kind === 'video');
    if (sent.join() !== 'audio') throw new Error(`${p.label} publishes ${JSON.stringify(sent)} in an audio call, expected ["audio"]`);
    if (video.length) throw new Error(`${p.label} receives video in an audio call: ${JSON.stringify(video)}`);
    log(`${p.label} sends ${JSON.stringify(sent)} and receives audio (${r.growingAudio[0].packetsReceived} packets)`);
  }
  await b.click('#hangup-call');
  await waitFor('A to get call_ended', async () => {
    const v = await callsView(a);
    return { ok: !!findEvent(v, 'call_ended', { call_id: callId }) && v.roomClient === null, seen: brief(v) };
  }, { timeoutMs: CALL_END_LIMIT_MS });
  results.push({ name: 'd-audio', ok: true, detail: 'audio-only call sends and receives audio only' });
}

// e) Glare: while A's call rings at B, B calls A. The server makes B's invite answer A's call:
//    one call, both in its room, B's prompt gone.
async function scenarioGlare(browser, server, pages, results) {
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');
  const [a, b] = await openDevices(browser, server, pages, [['A', alice, 'a1', 'Alice'], ['B', bob, 'b1', 'Bob']]);
  const callId = await placeCall(a, bob, 'video');
  await waitRinging(b, callId, 'Alice', 'video');
  await b.fill('#call-to', alice);
  await b.click('#video-call');
  await waitInCall(a, callId);
  await waitInCall(b, callId);
  const v = await callsView(b);
  if (v.incomingVisible) throw new Error('B still shows the incoming prompt after its invite answered the call');
  const created = v.events.filter((e) => e.type === 'call_created').map((e) => e.call_id);
  log(`B's invite got call_created for ${JSON.stringify(created)} (A's call is ${callId})`);
  if (created.some((id) => id !== callId)) throw new Error(`B's invite created another call: ${JSON.stringify(created)}`);
  await waitMediaFlowing(b, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS, calls: true });
  await b.click('#hangup-call');
  await waitFor('A to get call_ended', async () => {
    const w = await callsView(a);
    return { ok: !!findEvent(w, 'call_ended', { call_id: callId }) && w.roomClient === null, seen: brief(w) };
  }, { timeoutMs: CALL_END_LIMIT_MS });
  results.push({ name: 'e-glare', ok: true, detail: 'calling each other at once gives one call' });
}

runSuite('calls', [
  ['a-answer-two-devices', scenarioAnswer],
  ['b-decline', scenarioDecline],
  ['c-cancel', scenarioCancel],
  ['d-audio-only', scenarioAudio],
  ['e-glare', scenarioGlare],
], {
  artifactPrefix: 'calls-',
  describePage: async (p) => `calls view: ${JSON.stringify(brief(await callsView(p)))}`,
});
