// First-frame benchmark: a publisher is already sending in a fresh room; a second page opens
// `/?room=...` and we time navigation start -> first decoded remote video frame.
//   node first_frame.mjs [runs]      (default 7; env FF_RUNS works too)
import {
  startServer, launchBrowser, openPage, waitFor, waitJoined, pageUrl, uniqueName, log, median,
  saveArtifacts, tail, snapshot,
} from './harness.mjs';
import { writeFileSync } from 'node:fs';

const RUNS = Number(process.argv[2] || process.env.FF_RUNS || 7);
const TIMEOUT_MS = 30_000;
// The breakdown, in the order a join normally passes them (ms from navigation start).
const MARK_NAMES = [
  'html', 'modules', 'app', 'token', 'connect', 'ws-open', 'joined', 'subscriber-offer',
  'subscriber-answer', 'subscriber-connected', 'media',
];

// Runs in the subscriber page before any of its scripts. Times are performance.now(), i.e.
// milliseconds since this document's navigation start.
function firstFrameProbe() {
  const ff = { decodedAt: null, renderedAt: null, firstPacketAt: null };
  window.__ff = ff;
  const poll = async () => {
    const pc = window.zvon?.client?.subscriberPc;
    if (pc && pc.signalingState !== 'closed') {
      try {
        const stats = await pc.getStats();
        stats.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.packetsReceived > 0 && ff.firstPacketAt == null) {
            // The first video packet seen: splits "nothing arrives" from "arrives, not decodable".
            ff.firstPacketAt = performance.now();
            ff.firstPacket = { packets: s.packetsReceived, frames: s.framesReceived, width: s.frameWidth };
          }
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0 && ff.decodedAt == null) {
            ff.decodedAt = performance.now();
            // What the decoder went through: did it have to ask for a keyframe itself?
            ff.video = {
              pli: s.pliCount, fir: s.firCount, nack: s.nackCount, frames: s.framesReceived,
              keyframes: s.keyFramesDecoded, width: s.frameWidth, lost: s.packetsLost,
              packets: s.packetsReceived, jitterBufferDelay: s.jitterBufferDelay,
              jitterBufferEmitted: s.jitterBufferEmittedCount,
            };
          }
        });
      } catch { /* pc closed under us */ }
    }
    if (ff.decodedAt == null) setTimeout(poll, 20);
  };
  setTimeout(poll, 20);
  // requestVideoFrameCallback: when the frame is actually presented in the remote tile.
  new MutationObserver(() => {
    for (const v of document.querySelectorAll('.tile.remote video')) {
      if (v.__ffWatched || !v.requestVideoFrameCallback) continue;
      v.__ffWatched = true;
      v.requestVideoFrameCallback(() => { if (ff.renderedAt == null) ff.renderedAt = performance.now(); });
    }
  }).observe(document, { subtree: true, childList: true });
}

async function publisherSending(page) {
  return waitFor('publisher to send video', async (prev) => {
    const r = await page.evaluate(async () => {
      const pc = window.zvon?.client?.publisherPc;
      if (!pc) return { frames: 0, state: window.zvon?.client?.state };
      let frames = 0;
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') frames += s.framesEncoded ?? 0;
      });
      return { frames, state: pc.connectionState };
    });
    return { ok: r.state === 'connected' && r.frames > (prev?.seen.frames ?? Infinity), seen: r };
  }, { timeoutMs: TIMEOUT_MS, intervalMs: 200 });
}

async function oneRun(browser, server, i) {
  const room = uniqueName(`ff${i}`);
  const pages = [];
  try {
    const pub = await openPage(browser, pageUrl(server, room, 'Publisher'), 'pub');
    pages.push(pub);
    await waitJoined(pub, TIMEOUT_MS);
    await publisherSending(pub);

    const pubKeyframes = () => pub.evaluate(async () => {
      const out = {};
      (await window.zvon.client.publisherPc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          out[s.rid ?? s.ssrc] = { key: s.keyFramesEncoded, frames: s.framesEncoded, pli: s.pliCount, fir: s.firCount };
        }
      });
      return out;
    });
    const pubBefore = process.env.FF_VERBOSE ? await pubKeyframes() : null;
    const sub = await openPage(browser, null, 'sub');
    pages.push(sub);
    await sub.addInitScript(firstFrameProbe);
    const t0 = Date.now();
    await sub.goto(pageUrl(server, room, 'Viewer'));
    const r = await waitFor('first decoded remote frame', async () => {
      const ff = await sub.evaluate(() => ({
        ...window.__ff,
        timeOrigin: performance.timeOrigin,
        // Every request of the page (start -> end, ms from navigation start), for FF_VERBOSE.
        resources: performance.getEntriesByType('resource').map((e) => ({
          name: new URL(e.name).pathname, start: Math.round(e.startTime), end: Math.round(e.responseEnd),
        })),
        marks: {
          ...Object.fromEntries(performance.getEntriesByType('mark')
            .filter((m) => m.name.startsWith('zvon:'))
            .map((m) => [m.name.slice(5), Math.round(m.startTime)])),
          // The page itself: HTML received, and the last script module received.
          html: Math.round(performance.getEntriesByType('navigation')[0]?.responseEnd ?? NaN),
          modules: Math.round(Math.max(...performance.getEntriesByType('resource')
            .filter((e) => e.name.endsWith('.js')).map((e) => e.responseEnd))),
        },
      }));
      return { ok: ff.decodedAt != null, ff, seen: { ff, snap: await snapshot(sub) } };
    }, { timeoutMs: TIMEOUT_MS, intervalMs: 50 });
    // Give requestVideoFrameCallback a moment if the frame was decoded but not yet presented.
    let { ff } = r;
    if (ff.renderedAt == null) {
      await waitFor('first rendered frame', async () => {
        ff = { ...ff, ...(await sub.evaluate(() => ({ renderedAt: window.__ff.renderedAt }))) };
        return { ok: ff.renderedAt != null, seen: ff };
      }, { timeoutMs: 3000, intervalMs: 50 }).catch(() => {});
    }
    // A presented frame was decoded too; stats polling can lag the compositor by a few ms.
    const firstMs = Math.round(Math.min(ff.decodedAt, ff.renderedAt ?? Infinity));
    if (process.env.FF_VERBOSE) {
      // Wall-clock navigation start, to line the marks up with a server log.
      console.log(`run ${i}: navigation start ${new Date(ff.timeOrigin).toISOString()};` +
        ` first video packet at ${Math.round(ff.firstPacketAt)} ms ${JSON.stringify(ff.firstPacket)};` +
        ` decoder at first frame: ${JSON.stringify(ff.video)}; publisher keyframes before` +
        ` ${JSON.stringify(pubBefore)} after ${JSON.stringify(await pubKeyframes())};` +
        ` requests (start-end ms): ${ff.resources.map((e) => `${e.name} ${e.start}-${e.end}`).join(', ')}`);
    }
    return {
      firstMs,
      decodedMs: Math.round(ff.decodedAt),
      renderedMs: ff.renderedAt == null ? null : Math.round(ff.renderedAt),
      // Node-side view of the same: goto() call -> decode, including CDP latency.
      wallMs: Math.round(ff.timeOrigin + ff.decodedAt - t0),
      marks: ff.marks,
    };
  } catch (e) {
    await saveArtifacts(`first-frame-run${i}`, pages, server);
    throw e;
  } finally {
    for (const p of pages) await p.context().close().catch(() => {});
  }
}

async function main() {
  let server = null;
  let browser = null;
  const runs = [];
  let ok = true;
  try {
    server = await startServer();
    browser = await launchBrowser();
    for (let i = 1; i <= RUNS; i++) {
      const r = await oneRun(browser, server, i);
      runs.push(r);
      const m = r.marks;
      console.log(`run ${i}: first remote frame ${r.firstMs} ms after navigation start` +
        ` (getStats decoded ${r.decodedMs} ms, rendered ${r.renderedMs ?? '?'} ms; marks: ` +
        MARK_NAMES.filter((n) => m[n] != null).map((n) => `${n} ${m[n]}`).join(', ') + ')');
    }
  } catch (e) {
    ok = false;
    console.log(`FAIL first_frame: ${e.message}`);
    if (server) console.log(`--- server log (tail) ---\n${tail(server.logText(), 40)}`);
  } finally {
    await browser?.close().catch(() => {});
    await server?.stop();
    // The server's whole log, to line its timestamps up with the marks (FF_VERBOSE's wall clock).
    if (server && process.env.FF_SERVER_LOG) writeFileSync(process.env.FF_SERVER_LOG, server.logText());
  }
  if (runs.length) {
    const first = runs.map((r) => r.firstMs);
    const dec = runs.map((r) => r.decodedMs);
    const ren = runs.map((r) => r.renderedMs).filter((x) => x != null);
    const marksMedian = Object.fromEntries(MARK_NAMES.map((n) => [n, median(runs.map((r) => r.marks[n]).filter((x) => x != null))]));
    console.log(`median first remote frame: ${median(first)} ms (min ${Math.min(...first)}, max ${Math.max(...first)}, n=${first.length});` +
      ` getStats decoded median ${median(dec)} ms` + (ren.length ? `, rendered median ${median(ren)} ms` : ''));
    console.log(JSON.stringify({
      benchmark: 'first_frame', from: 'navigation_start', to: 'first_remote_video_frame',
      runs: first.length, ms: first, median_ms: median(first),
      decoded_ms: dec, median_decoded_ms: median(dec),
      rendered_ms: ren, median_rendered_ms: ren.length ? median(ren) : null,
      median_marks_ms: marksMedian, run_marks_ms: runs.map((r) => r.marks), ok,
    }));
  }
  process.exit(ok ? 0 : 1);
}

main();
