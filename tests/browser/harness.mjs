// Shared by e2e.mjs and first_frame.mjs: start/stop a Zvon server, launch headless Chromium,
// read WebRTC stats from pages, and bounded waits that say what they saw when they give up.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(HERE, '..', '..');
export const ARTIFACTS = join(HERE, 'artifacts');
export const DEFAULT_TIMEOUT_MS = 30_000;
// ZVON_WEB_DIR=signaling/web: pages load the browser client from that folder instead of the
// copy compiled into the server, to try client changes without rebuilding the server.
const WEB_DIR = process.env.ZVON_WEB_DIR ? resolve(REPO_ROOT, process.env.ZVON_WEB_DIR) : null;
const WEB_TYPES = { html: 'text/html', js: 'text/javascript', css: 'text/css' };

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--mute-audio',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  // Background pages must keep decoding and running timers at full rate.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

export async function freeTcpPort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export async function freeUdpPort() {
  return new Promise((res, rej) => {
    const s = createSocket('udp4');
    s.once('error', rej);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export function uniqueName(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
}

/**
 * Starts `$ZVON_BIN serve --dev ...` on free ports and waits for /api/info.
 * Returns {baseUrl, pid, logText(), stop()}.
 */
export async function startServer({
  timeoutMs = 20_000, extraArgs = [], env = {}, label = 'server', mediaOnly = false,
  host = '127.0.0.1', mediaBindIp = host, mediaIp = host, metricsPort: fixedMetricsPort = null,
} = {}) {
  const bin = resolve(REPO_ROOT, process.env.ZVON_BIN || 'target/release/zvon');
  if (!existsSync(bin)) {
    throw new Error(`server binary ${bin} not found: build it with \`cargo build --release -p zvon-signaling\` or set ZVON_BIN`);
  }
  const httpPort = await freeTcpPort();
  const udpPort = await freeUdpPort();
  // A media-only node has no HTTP listener: its readiness is on the metrics port.
  const metricsPort = fixedMetricsPort ?? (mediaOnly ? await freeTcpPort() : 0);
  const args = [
    'serve', '--dev',
    '--http-addr', `${host}:${httpPort}`,
    '--media-bind-ip', mediaBindIp,
    '--media-ip', mediaIp,
    '--media-port', String(udpPort),
    '--workers', '1',
    // A free port, so a server already on the default 9350 cannot stop this one from starting.
    '--metrics-addr', `127.0.0.1:${metricsPort}`,
    // stop() must not wait for a drain of the pages a failed scenario left open.
    ...(extraArgs.includes('--drain-timeout') ? [] : ['--drain-timeout', '1s']),
    ...extraArgs,
  ];
  log(`starting ${bin} ${args.join(' ')}`);
  const child = spawn(bin, args, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { RUST_LOG: 'info', ...process.env, ...env },
  });
  const lines = [];
  const collect = (stream) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (lines.length > 20_000) lines.splice(0, 10_000);
      }
    });
  };
  collect(child.stdout);
  collect(child.stderr);

  let exited = null;
  const exitPromise = new Promise((res) => child.once('exit', (code, signal) => {
    exited = { code, signal };
    res(exited);
  }));

  const server = {
    pid: child.pid,
    baseUrl: `http://${host}:${httpPort}`,
    httpPort,
    udpPort,
    metricsPort,
    logText: () => lines.join('\n'),
    exited: () => exited,
    async stop() {
      // For chasing flakes: every run's full server log, not only a failed run's.
      if (process.env.ZVON_KEEP_SERVER_LOG) writeFileSync(process.env.ZVON_KEEP_SERVER_LOG, lines.join('\n'));
      if (exited) return exited;
      // SIGINT is the signal the server shuts down gracefully on (it logs "shutting down").
      try { process.kill(child.pid, 'SIGINT'); } catch { /* already gone */ }
      const res = await Promise.race([exitPromise, sleep(5000).then(() => null)]);
      if (res) return res;
      log(`server pid ${child.pid} ignored SIGINT for 5 s, sending SIGKILL`);
      try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
      return exitPromise;
    },
  };
  // A crashed test run must not leave the server behind.
  process.once('exit', () => { if (!exited) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } });

  const deadline = Date.now() + timeoutMs;
  let lastErr = '';
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(`server exited early (${JSON.stringify(exited)}); log:\n${tail(server.logText())}`);
    }
    try {
      const res = await fetch(mediaOnly ? `http://127.0.0.1:${metricsPort}/readyz` : `${server.baseUrl}/api/info`);
      if (res.ok) {
        const info = mediaOnly ? 'ready' : await res.json();
        log(`${label} up at ${server.baseUrl} (pid ${child.pid}, udp ${udpPort}): ${JSON.stringify(info)}`);
        return server;
      }
      lastErr = `HTTP ${res.status}`;
    } catch (e) {
      lastErr = e.cause?.code || e.message;
    }
    await sleep(100);
  }
  await server.stop();
  throw new Error(`server did not answer /api/info within ${timeoutMs} ms (last: ${lastErr}); log:\n${tail(server.logText())}`);
}

export function tail(text, n = 60) {
  return text.split('\n').slice(-n).join('\n');
}

/**
 * `executablePath` and `extraArgs` let a test run Chromium through a wrapper (e.g. inside a
 * network namespace) or trust a non-loopback test origin.
 */
export async function launchBrowser({ executablePath = null, extraArgs = [] } = {}) {
  // Playwright gives every launch and context a fresh temporary profile and removes it.
  return chromium.launch({
    executablePath: executablePath || process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // A page answered by the test (ZVON_WEB_DIR) has no address, so Chromium's local network
    // access checks would refuse its WebSocket to 127.0.0.1.
    args: [...(WEB_DIR
      ? CHROMIUM_ARGS.map((a) => (a.startsWith('--disable-features=') ? `${a},LocalNetworkAccessChecks` : a))
      : CHROMIUM_ARGS), ...extraArgs],
  });
}

/** Opens a page in its own context (own cookies, own fake devices) and keeps its console. */
export async function openPage(browser, url, label, { viewport = { width: 800, height: 600 } } = {}) {
  const context = await browser.newContext({
    permissions: ['camera', 'microphone'],
    viewport,
  });
  if (WEB_DIR) {
    await context.route(/^http:\/\/127\.0\.0\.1:\d+\/([\w-]+\.(?:js|css))?(?:\?.*)?$/, (route) => {
      const file = new URL(route.request().url()).pathname.slice(1) || 'index.html';
      route.fulfill({
        contentType: `${WEB_TYPES[file.split('.').pop()]}; charset=utf-8`,
        body: readFileSync(join(WEB_DIR, file), 'utf8'),
      });
    });
  }
  const page = await context.newPage();
  page.label = label;
  page.consoleLines = [];
  page.on('console', (m) => page.consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLines.push(`[pageerror] ${e.message}`));
  if (url) await page.goto(url);
  return page;
}

/**
 * One snapshot of what a page's client sees: state, peer connections, inbound RTP, tiles.
 * `calls: true` reads the client of the call's room (window.zvon.calls.roomClient).
 */
export async function snapshot(page, { calls = false } = {}) {
  return page.evaluate(async (calls) => {
    const c = calls ? window.zvon?.calls?.roomClient : window.zvon?.client;
    const out = {
      state: c?.state ?? 'no-client',
      me: c?.localParticipant?.id ?? null,
      pub: c?.publisherPc?.connectionState ?? null,
      sub: c?.subscriberPc?.connectionState ?? null,
      participants: c ? [...c.participants.values()].map((p) => `${p.id}:${p.name}`) : [],
      tiles: [...document.querySelectorAll('#grid .tile.remote')].map((t) => ({
        id: t.dataset.participantId,
        name: t.querySelector('.name')?.textContent ?? '',
        noVideo: t.classList.contains('no-video'),
        badges: [...t.querySelectorAll('.badge')].map((b) => b.textContent),
      })),
      messages: [...document.querySelectorAll('#messages .message')].map((m) => m.textContent),
      inbound: [],
    };
    if (c?.subscriberPc && c.subscriberPc.signalingState !== 'closed') {
      const stats = await c.subscriberPc.getStats();
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        out.inbound.push({
          id: s.id, kind: s.kind, mid: s.mid, ssrc: s.ssrc,
          framesDecoded: s.framesDecoded ?? 0, frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0, packetsReceived: s.packetsReceived ?? 0,
          bytesReceived: s.bytesReceived ?? 0,
        });
      });
    }
    return out;
  }, calls);
}

/**
 * Polls `check()` until it returns {ok: true, ...}; gives up after timeoutMs and throws with
 * the last thing it saw. `check` gets the previous result so it can look at growth.
 */
export async function waitFor(what, check, { timeoutMs = DEFAULT_TIMEOUT_MS, intervalMs = 250 } = {}) {
  const start = Date.now();
  let last = null;
  let lastError = null;
  while (Date.now() - start < timeoutMs) {
    try {
      const r = await check(last);
      if (r?.ok) return { ...r, elapsedMs: Date.now() - start };
      last = r;
      lastError = null;
    } catch (e) {
      lastError = e;
    }
    await sleep(intervalMs);
  }
  const seen = lastError ? `error: ${lastError.stack || lastError}` : JSON.stringify(last?.seen ?? last, null, 1);
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${seen}`);
}

/**
 * Two participants in one call: opens `a` then `b` (each `[browser, url, label]`, added to
 * `pages`), each joined, then waits until `b` decodes one video and one audio stream (and `a`
 * too unless `bothWays` is false). Returns the two pages.
 */
export async function twoInCall(pages, a, b, { joinMs = 20_000, mediaMs = 30_000, bothWays = true } = {}) {
  const opened = [];
  for (const [browser, url, label] of [a, b]) {
    const page = await openPage(browser, url, label);
    pages.push(page);
    await waitJoined(page, joinMs);
    opened.push(page);
  }
  await waitMediaFlowing(opened[1], { videos: 1, audios: 1, timeoutMs: mediaMs });
  if (bothWays) await waitMediaFlowing(opened[0], { videos: 1, audios: 1, timeoutMs: mediaMs });
  return opened;
}

export function waitJoined(page, timeoutMs) {
  return waitFor(`${page.label} to join`, async () => {
    const s = await snapshot(page);
    return { ok: s.state === 'joined' && !!s.me, seen: s, me: s.me };
  }, { timeoutMs });
}

/**
 * Waits until `page` decodes `videos` remote videos and receives `audios` remote audio
 * streams: frames/packets must grow between two samples taken ~1 s apart.
 */
export function waitMediaFlowing(page, { videos, audios = 0, timeoutMs, calls = false } = {}) {
  return waitFor(`${page.label} to decode ${videos} video(s) and receive ${audios} audio(s)`, async (prev) => {
    const s = await snapshot(page, { calls });
    const before = new Map((prev?.snap?.inbound ?? []).map((i) => [i.id, i]));
    const growingVideo = s.inbound.filter((i) => i.kind === 'video' && i.frameWidth > 0
      && before.has(i.id) && i.framesDecoded > before.get(i.id).framesDecoded);
    const growingAudio = s.inbound.filter((i) => i.kind === 'audio'
      && before.has(i.id) && i.packetsReceived > before.get(i.id).packetsReceived);
    const ok = growingVideo.length >= videos && growingAudio.length >= audios;
    return {
      ok, snap: s, growingVideo, growingAudio,
      seen: { ...s, growingVideo: growingVideo.length, growingAudio: growingAudio.length },
    };
  }, { timeoutMs, intervalMs: 1000 });
}

/** Saves screenshots, page consoles and the server log for a failed scenario. */
export async function saveArtifacts(name, pages, server) {
  try {
    mkdirSync(ARTIFACTS, { recursive: true });
    for (const p of pages) {
      if (!p || p.isClosed()) continue;
      await p.screenshot({ path: join(ARTIFACTS, `${name}-${p.label}.png`) }).catch(() => {});
      writeFileSync(join(ARTIFACTS, `${name}-${p.label}.console.txt`), p.consoleLines.join('\n'));
    }
    if (server) writeFileSync(join(ARTIFACTS, `${name}-server.log`), server.logText());
    log(`artifacts in ${ARTIFACTS}/${name}-*`);
  } catch (e) {
    log(`could not save artifacts: ${e.message}`);
  }
}

export function pageUrl(server, room, name) {
  return `${server.baseUrl}/?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs scenarios (`[name, async (browser, server, pages, results) => …]`) against one server (or
 * whatever `start` returns: an object with `logText()` and `stop()`, e.g. a fleet) and one browser, the ones named by the command-line prefixes or all; prints PASS/FAIL per scenario,
 * a JSON summary `{[suite]: "pass"|"fail", results}`, and exits 0 only if all passed. On a failure
 * it prints each page's console (and `describePage(page)` if given) and the server log's tail,
 * and saves artifacts.
 */
export async function runSuite(suite, scenarios, { artifactPrefix = '', describePage = null, start = startServer } = {}) {
  const only = process.argv.slice(2);
  const chosen = scenarios.filter(([n]) => !only.length || only.some((o) => n.startsWith(o)));
  let server = null;
  let browser = null;
  let ok = true;
  const results = [];
  try {
    server = await start();
    browser = await launchBrowser();
    for (const [name, fn] of chosen) {
      ok = (await runScenario(name, fn, browser, server, results, { artifactPrefix, describePage })) && ok;
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
  console.log(JSON.stringify({ [suite]: ok ? 'pass' : 'fail', results }));
  console.log(ok ? 'ALL PASS' : 'SOME FAILED');
  process.exit(ok ? 0 : 1);
}

async function runScenario(name, fn, browser, server, results, { artifactPrefix, describePage }) {
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
      const extra = describePage ? await describePage(p).catch(() => null) : null;
      if (extra) console.log(`--- ${p.label} ---\n${extra}`);
    }
    console.log(`--- server log (tail) ---\n${tail(server.logText(), 40)}`);
    await saveArtifacts(`${artifactPrefix}${name}`, pages, server);
    return false;
  } finally {
    for (const p of pages) await p.context().close().catch(() => {});
  }
}
