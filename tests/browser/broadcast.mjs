// WHIP and WHEP with Chromium pages that speak them with fetch (as any WHIP encoder or WHEP
// player would), next to the Zvon browser client.
// a-whip: a WHIP page publishes camera (simulcast, three RIDs) and mic; a teacher (?admin=1) in
//   the room sees it as a participant, decodes its video and audio, mutes its mic (the audio
//   stops), and sees it leave after the WHIP session's DELETE.
// b-whep: a Zvon client publishes; a WHEP page (recvonly offer) decodes its video and audio.
//   node broadcast.mjs [scenario-prefix...]   (server binary from $ZVON_BIN)
import {
  runSuite, openPage, snapshot, waitFor, waitJoined, waitMediaFlowing, pageUrl, uniqueName, log,
} from './harness.mjs';

const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 30_000);

/** A page of the server's origin (fetch to /whip needs no CORS) with no client on it. */
async function blankPage(browser, server, label) {
  const page = await openPage(browser, `${server.baseUrl}/api/info`, label);
  return page;
}

/** WHIP from the page: returns the session's Location. */
function whipPublish(page, room, identity) {
  return page.evaluate(async ({ room, identity }) => {
    const { token } = await (await fetch(`/api/dev-token?room=${room}&identity=${identity}&name=${identity}`)).json();
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 1280, height: 720 } });
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' });
    pc.addTransceiver(stream.getVideoTracks()[0], {
      direction: 'sendonly',
      sendEncodings: [
        { rid: 'q', scaleResolutionDownBy: 4 }, { rid: 'h', scaleResolutionDownBy: 2 }, { rid: 'f' },
      ],
    });
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`/whip/${room}`, {
      method: 'POST', body: pc.localDescription.sdp,
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    });
    if (res.status !== 201) throw new Error(`WHIP POST: ${res.status} ${await res.text()}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    window.whip = { pc, token, location: res.headers.get('Location') };
    return window.whip.location;
  }, { room, identity });
}

/** WHEP from the page (recvonly audio + video). */
function whepView(page, room, identity) {
  return page.evaluate(async ({ room, identity }) => {
    const { token } = await (await fetch(`/api/dev-token?room=${room}&identity=${identity}`)).json();
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`/whep/${room}`, {
      method: 'POST', body: pc.localDescription.sdp,
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    });
    if (res.status !== 201) throw new Error(`WHEP POST: ${res.status} ${await res.text()}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    window.whep = { pc, token, location: res.headers.get('Location') };
    return window.whep.location;
  }, { room, identity });
}

/** Outbound (WHIP) or inbound (WHEP) RTP stats of the page's own peer connection. */
function rtpStats(page, which) {
  return page.evaluate(async (which) => {
    const pc = window[which].pc;
    const out = { state: pc.connectionState, outbound: [], inbound: [] };
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp') {
        out.outbound.push({ kind: s.kind, rid: s.rid, framesEncoded: s.framesEncoded ?? 0, bytesSent: s.bytesSent });
      } else if (s.type === 'inbound-rtp') {
        out.inbound.push({
          kind: s.kind, framesDecoded: s.framesDecoded ?? 0, frameWidth: s.frameWidth ?? 0,
          packetsReceived: s.packetsReceived,
        });
      }
    });
    return out;
  }, which);
}

const audioPackets = (snap) => snap.inbound.filter((i) => i.kind === 'audio')
  .reduce((n, i) => n + i.packetsReceived, 0);

async function whip(browser, server, pages, results) {
  const room = uniqueName('whip');
  const teacher = await openPage(browser, `${pageUrl(server, room, 'Teacher')}&admin=1`, 'teacher');
  pages.push(teacher);
  teacher.on('dialog', (d) => d.accept());
  await waitJoined(teacher, TIMEOUT_MS);
  const obs = await blankPage(browser, server, 'whip');
  pages.push(obs);
  const location = await whipPublish(obs, room, 'lecturer');
  if (!location?.startsWith(`/whip/${room}/`)) throw new Error(`Location: ${location}`);
  const flowing = await waitMediaFlowing(teacher, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
  const tile = flowing.snap.tiles.find((t) => t.name.includes('lecturer'));
  if (!tile) throw new Error(`no tile for the WHIP publisher: ${JSON.stringify(flowing.snap.tiles)}`);
  log(`the teacher decodes the WHIP publisher after ${flowing.elapsedMs} ms`);
  // Simulcast: all three RIDs were accepted and are being encoded.
  const sent = await waitFor('three simulcast layers encoded by the WHIP page', async () => {
    const s = await rtpStats(obs, 'whip');
    const layers = s.outbound.filter((o) => o.kind === 'video' && o.framesEncoded > 0);
    return { ok: layers.length === 3, seen: s, layers };
  }, { timeoutMs: 15_000 });
  log(`WHIP simulcast: ${sent.layers.map((l) => l.rid).join(', ')} encoded`);

  await teacher.click('#people button:has-text("Mute mic")');
  await waitFor('the WHIP publisher\'s mic to show muted', async () => {
    const s = await snapshot(teacher);
    const t = s.tiles.find((x) => x.name.includes('lecturer'));
    return { ok: !!t?.badges.includes('mic off'), seen: s.tiles };
  }, { timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 1000));
  const before = audioPackets(await snapshot(teacher));
  await new Promise((r) => setTimeout(r, 2000));
  const after = audioPackets(await snapshot(teacher));
  if (after - before > 5) throw new Error(`audio still forwarded after the mute: ${after - before} packets in 2 s`);
  log(`muted by the teacher: ${after - before} audio packets in 2 s`);

  const status = await obs.evaluate(async () => (await fetch(window.whip.location, {
    method: 'DELETE', headers: { Authorization: `Bearer ${window.whip.token}` },
  })).status);
  if (status !== 200) throw new Error(`DELETE: ${status}`);
  await waitFor('the WHIP publisher to leave the teacher\'s room', async () => {
    const s = await snapshot(teacher);
    return { ok: !s.tiles.some((t) => t.name.includes('lecturer')), seen: s.tiles };
  }, { timeoutMs: 5000 });
  log('DELETE: the WHIP publisher left the room');
  results.push({
    name: 'a-whip', ok: true,
    detail: `decoded after ${flowing.elapsedMs} ms, 3 RIDs, muted by an admin, gone after DELETE`,
  });
}

async function whep(browser, server, pages, results) {
  const room = uniqueName('whep');
  const speaker = await openPage(browser, pageUrl(server, room, 'Speaker'), 'speaker');
  pages.push(speaker);
  await waitJoined(speaker, TIMEOUT_MS);
  const player = await blankPage(browser, server, 'whep');
  pages.push(player);
  const location = await whepView(player, room, 'viewer');
  if (!location?.startsWith(`/whep/${room}/`)) throw new Error(`Location: ${location}`);
  const r = await waitFor('the WHEP page to decode the speaker', async (prev) => {
    const s = await rtpStats(player, 'whep');
    const v = s.inbound.find((i) => i.kind === 'video');
    const a = s.inbound.find((i) => i.kind === 'audio');
    const pv = prev?.s?.inbound.find((i) => i.kind === 'video');
    const pa = prev?.s?.inbound.find((i) => i.kind === 'audio');
    const ok = !!(v && pv && a && pa && v.frameWidth > 0 && v.framesDecoded > pv.framesDecoded
      && a.packetsReceived > pa.packetsReceived);
    return { ok, s, seen: s };
  }, { timeoutMs: TIMEOUT_MS, intervalMs: 1000 });
  const v = r.s.inbound.find((i) => i.kind === 'video');
  log(`WHEP: ${v.framesDecoded} frames decoded (${v.frameWidth} wide) after ${r.elapsedMs} ms`);
  // The viewer is hidden: the speaker's room does not list it.
  const s = await snapshot(speaker);
  if (s.participants.length) throw new Error(`the WHEP viewer shows in the room: ${s.participants}`);
  results.push({ name: 'b-whep', ok: true, detail: `decoding after ${r.elapsedMs} ms, hidden from the room` });
}

runSuite('broadcast', [
  ['a-whip', whip],
  ['b-whep', whep],
], { artifactPrefix: 'broadcast-' });
