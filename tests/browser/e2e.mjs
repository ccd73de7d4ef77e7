// End-to-end tests: real headless Chromium pages talking to a real Zvon server.
//   node e2e.mjs            (server binary from $ZVON_BIN, default target/release/zvon)
import {
  startServer, launchBrowser, openPage, snapshot, waitFor, waitJoined, waitMediaFlowing,
  saveArtifacts, pageUrl, uniqueName, log, tail,
} from './harness.mjs';

const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 30_000);
const TILE_DROP_LIMIT_MS = 2000;

// a) Two people see and hear each other; mute shows remotely; leaving drops the tile fast.
async function scenarioTwoParty(browser, server, pages, results) {
  const room = uniqueName('e2e-two');
  const a = await openPage(browser, pageUrl(server, room, 'A'), 'A');
  pages.push(a);
  const b = await openPage(browser, pageUrl(server, room, 'B'), 'B');
  pages.push(b);

  const { me: idA } = await waitJoined(a, TIMEOUT_MS);
  const { me: idB } = await waitJoined(b, TIMEOUT_MS);
  log(`A=${idA} B=${idB} in ${room}`);

  for (const [p, other] of [[a, 'B'], [b, 'A']]) {
    const r = await waitMediaFlowing(p, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
    const v = r.growingVideo[0];
    log(`${p.label} decodes ${other}'s video ${v.frameWidth}x${v.frameHeight} (${v.framesDecoded} frames) and receives audio (${r.growingAudio[0]?.packetsReceived} packets) after ${r.elapsedMs} ms more`);
    await waitFor(`${p.label} to show a tile named ${other}`, async () => {
      const s = await snapshot(p);
      return { ok: s.tiles.length === 1 && s.tiles[0].name === other && !s.tiles[0].noVideo, seen: s.tiles };
    }, { timeoutMs: 5000 });
  }
  results.push({ name: 'a-media', ok: true, detail: 'A and B decode each other\'s video and receive audio' });

  // Mute travels as track_muted and shows as a badge on the other side; unmute clears it.
  await a.click('#btn-mic');
  await waitFor('B to show A as "mic off"', async () => {
    const s = await snapshot(b);
    return { ok: s.tiles[0]?.badges.includes('mic off'), seen: s.tiles };
  }, { timeoutMs: 5000 });
  await a.click('#btn-mic');
  await waitFor('B to show A unmuted', async () => {
    const s = await snapshot(b);
    return { ok: s.tiles[0] && !s.tiles[0].badges.includes('mic off'), seen: s.tiles };
  }, { timeoutMs: 5000 });
  results.push({ name: 'a-mute', ok: true, detail: 'mic mute/unmute shown remotely' });

  // Time the tile drop from A's own clock: a MutationObserver notes when B's tile goes.
  await a.evaluate((id) => {
    window.__tileGoneAt = null;
    const grid = document.getElementById('grid');
    const obs = new MutationObserver(() => {
      if (!grid.querySelector(`.tile[data-participant-id="${CSS.escape(id)}"]`)) {
        window.__tileGoneAt = Date.now();
        obs.disconnect();
      }
    });
    obs.observe(grid, { childList: true });
  }, idB);
  // Click from inside the page so the time excludes Playwright's actionability checks.
  const clickedAt = await b.evaluate(() => {
    const t = Date.now();
    document.getElementById('btn-leave').click();
    return t;
  });
  const r = await waitFor(`A to drop B's tile (${idB})`, async () => {
    const goneAt = await a.evaluate(() => window.__tileGoneAt);
    return { ok: goneAt != null, goneAt, seen: await snapshot(a) };
  }, { timeoutMs: 5000, intervalMs: 20 });
  const dropMs = r.goneAt - clickedAt;
  const bState = (await snapshot(b)).state;
  log(`A dropped B's tile ${dropMs} ms after B clicked leave (B state: ${bState})`);
  if (bState !== 'left') throw new Error(`B's client state is ${bState} after leave, expected left`);
  if (dropMs > TILE_DROP_LIMIT_MS) throw new Error(`tile dropped after ${dropMs} ms (limit ${TILE_DROP_LIMIT_MS})`);
  results.push({ name: 'a-leave', ok: true, detail: `tile dropped in ${dropMs} ms`, tileDropMs: dropMs });
  return { tileDropMs: dropMs };
}

// b) Four people: everybody decodes the three others.
async function scenarioFour(browser, server, pages, results) {
  const room = uniqueName('e2e-four');
  const names = ['P1', 'P2', 'P3', 'P4'];
  const ps = [];
  for (const n of names) {
    const p = await openPage(browser, pageUrl(server, room, n), n);
    pages.push(p);
    ps.push(p);
  }
  for (const p of ps) await waitJoined(p, TIMEOUT_MS);
  // Sequential waits share one deadline budget each; media should already flow for later pages.
  for (const p of ps) {
    const r = await waitMediaFlowing(p, { videos: 3, audios: 3, timeoutMs: TIMEOUT_MS });
    const dims = r.growingVideo.map((v) => `${v.frameWidth}x${v.frameHeight}`).join(', ');
    log(`${p.label} decodes 3 remote videos (${dims}) and 3 audios`);
    const s = await snapshot(p);
    const want = names.filter((n) => n !== p.label).sort();
    const got = s.tiles.map((t) => t.name).sort();
    if (JSON.stringify(want) !== JSON.stringify(got)) {
      throw new Error(`${p.label} shows tiles ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    }
  }
  results.push({ name: 'b-four', ok: true, detail: 'all 4 pages decode 3 remote videos + 3 audios' });
}

// c) Every video codec the SFU forwards: both pages publish with it and decode each other.
async function scenarioCodecs(browser, server, pages, results) {
  for (const [param, mime] of [['vp9', 'video/VP9'], ['h264', 'video/H264']]) {
    const room = uniqueName(`e2e-${param}`);
    const a = await openPage(browser, `${pageUrl(server, room, 'A')}&codec=${param}`, `A-${param}`);
    pages.push(a);
    const canSend = await a.evaluate((m) => (RTCRtpSender.getCapabilities('video')?.codecs ?? [])
      .some((c) => c.mimeType.toLowerCase() === m.toLowerCase()), mime);
    if (!canSend) throw new Error(`this Chromium cannot encode ${mime}`);
    const b = await openPage(browser, `${pageUrl(server, room, 'B')}&codec=${param}`, `B-${param}`);
    pages.push(b);
    await waitJoined(a, TIMEOUT_MS);
    await waitJoined(b, TIMEOUT_MS);
    for (const p of [a, b]) {
      await waitMediaFlowing(p, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
      const got = await p.evaluate(async () => {
        const stats = await window.zvon.client.subscriberPc.getStats();
        const codecs = new Map();
        stats.forEach((s) => { if (s.type === 'codec') codecs.set(s.id, s.mimeType); });
        const out = [];
        stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') out.push(codecs.get(s.codecId)); });
        return out;
      });
      if (got.length !== 1 || got[0].toLowerCase() !== mime.toLowerCase()) {
        throw new Error(`${p.label} decodes ${JSON.stringify(got)}, expected ${mime}`);
      }
      log(`${p.label} decodes ${mime} through the SFU`);
    }
    results.push({ name: `c-${param}`, ok: true, detail: `A and B exchange ${mime} video` });
    for (const p of [a, b]) await p.context().close();
  }
}

async function runScenario(name, fn, browser, server, results) {
  const pages = [];
  const t0 = Date.now();
  try {
    await fn(browser, server, pages, results);
    console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    return true;
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    results.push({ name, ok: false, detail: e.message });
    for (const p of pages) {
      if (p.consoleLines.length) console.log(`--- console of ${p.label} (last 20) ---\n${p.consoleLines.slice(-20).join('\n')}`);
    }
    console.log(`--- server log (tail) ---\n${tail(server.logText(), 40)}`);
    await saveArtifacts(name, pages, server);
    return false;
  } finally {
    for (const p of pages) await p.context().close().catch(() => {});
  }
}

async function main() {
  const only = process.argv.slice(2);
  const scenarios = [
    ['a-two-party', scenarioTwoParty],
    ['b-four-party', scenarioFour],
    ['c-codecs', scenarioCodecs],
  ].filter(([n]) => !only.length || only.some((o) => n.startsWith(o)));

  let server = null;
  let browser = null;
  let ok = true;
  const results = [];
  try {
    server = await startServer();
    browser = await launchBrowser();
    for (const [name, fn] of scenarios) {
      ok = (await runScenario(name, fn, browser, server, results)) && ok;
    }
  } catch (e) {
    console.log(`FAIL setup: ${e.message}`);
    ok = false;
  } finally {
    await browser?.close().catch(() => {});
    if (server) {
      const exit = await server.stop();
      log(`server stopped: ${JSON.stringify(exit)}`);
      const panics = server.logText().split('\n').filter((l) => /panicked|ERROR/.test(l));
      if (panics.length) console.log(`server log has ${panics.length} ERROR/panic line(s):\n${panics.slice(0, 10).join('\n')}`);
    }
  }
  console.log(JSON.stringify({ e2e: ok ? 'pass' : 'fail', results }));
  console.log(ok ? 'ALL PASS' : 'SOME FAILED');
  process.exit(ok ? 0 : 1);
}

main();
