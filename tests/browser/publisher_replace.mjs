// A page replaces its publisher RTCPeerConnection mid-call (docs/protocol.md, "Replacing the
// publisher connection"): a publish_offer from a new connection, the old one closed after the
// answer. The server must replace the connection in place: same participant id, the other
// side decodes the camera and hears the microphone again, nobody is told the participant
// left. Then the contract's other half: a page that closes its publisher connection without
// a replacement is cut with `media_timeout` (the session cannot carry on without it).
import { log, pageUrl, twoInCall, uniqueName, waitFor, waitMediaFlowing } from './harness.mjs';

export async function scenarioNewPublisherConnection(browser, server, pages, results) {
  const room = uniqueName('e2e-newpc');
  const [a, b] = await twoInCall(pages, [browser, pageUrl(server, room, 'A'), 'A'], [browser, pageUrl(server, room, 'B'), 'B']);
  const before = await b.evaluate(() => ({
    id: window.zvon.client.localParticipant.id,
    tracks: [...window.zvon.client.localTracks.values()].map((t) => t.id).sort(),
  }));
  const replaced = await b.evaluate(async () => {
    const c = window.zvon.client;
    const old = c.publisherPc;
    await c.replacePublisherConnection();
    return { newPc: c.publisherPc !== old, oldState: old.signalingState };
  });
  if (!replaced.newPc || replaced.oldState !== 'closed') throw new Error(`no new publisher connection: ${JSON.stringify(replaced)}`);
  const t0 = Date.now();
  // A decodes B again: the new connection's media reaches the room.
  await waitMediaFlowing(a, { videos: 1, audios: 1, timeoutMs: 15_000 });
  const back = Date.now() - t0;
  const after = await b.evaluate(() => ({
    id: window.zvon.client.localParticipant.id,
    state: window.zvon.client.state,
    pub: window.zvon.client.publisherPc.connectionState,
    tracks: [...window.zvon.client.localTracks.values()].map((t) => t.id).sort(),
  }));
  if (after.id !== before.id || after.state !== 'joined') throw new Error(`B did not stay the same participant: ${JSON.stringify({ before, after })}`);
  if (JSON.stringify(after.tracks) !== JSON.stringify(before.tracks)) throw new Error(`B's track ids changed: ${JSON.stringify({ before, after })}`);
  const listed = await a.evaluate((id) => window.zvon.client.participants.has(id), before.id);
  if (!listed) throw new Error('A no longer lists B');
  if (!/old publisher connection is replaced/.test(server.logText())) throw new Error('the server did not log the replacement');
  log(`B's publisher connection replaced; A decodes B again ${back} ms later; B publishing on ${after.pub}`);

  // Closing the publisher connection with no new one: the session ends with media_timeout.
  const code = await b.evaluate(() => new Promise((resolve) => {
    const c = window.zvon.client;
    c.addEventListener('servererror', ({ detail }) => resolve(detail.code), { once: true });
    setTimeout(() => resolve(`none (state ${c.state})`), 8000);
    c.publisherPc.close();
  }));
  if (code !== 'media_timeout') throw new Error(`closing the publisher connection gave ${code}, not media_timeout`);
  await waitFor('A to see B leave', async () => {
    const has = await a.evaluate((id) => window.zvon.client.participants.has(id), before.id);
    return { ok: !has, seen: { listed: has } };
  }, { timeoutMs: 5000 });
  results.push({ name: 'g-new-publisher-connection', ok: true, detail: `media back ${back} ms after a new publisher connection; closing it alone: media_timeout` });
}
