// Cluster end to end: real headless Chromium pages against a real fleet (redis-server, two
// signaling nodes, two media nodes; each a separate `zvon serve --cluster` process).
//   node cluster.mjs [prefix...]     (server binary from $ZVON_BIN, default target/release/zvon)
import { spawn, execFileSync } from 'node:child_process';
import { createConnection, createServer } from 'node:net';
import {
  runSuite, openPage, waitJoined, waitMediaFlowing, startServer, freeTcpPort, freeUdpPort,
  uniqueName, log, sleep,
} from './harness.mjs';

const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 30_000);
const SECRET = 'browser-cluster-secret-0123456789';
// The architecture's promise: media back within 5 s of a media node's death, no reload.
const FAILOVER_LIMIT_MS = 5000;

function portOpen(port) {
  return new Promise((res) => {
    const s = createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); res(true); });
    s.once('error', () => res(false));
  });
}

async function startFleet() {
  const redisPort = await freeTcpPort();
  const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  process.once('exit', () => { try { redis.kill('SIGKILL'); } catch { /* gone */ } });
  for (let i = 0; i < 100 && !(await portOpen(redisPort)); i++) await sleep(50);
  const redisCli = (...args) => execFileSync('redis-cli', ['-p', String(redisPort), ...args]).toString().trim();
  const nodes = {};
  const node = async (id, role) => {
    const quic = await freeUdpPort();
    nodes[id] = await startServer({
      label: id,
      extraArgs: ['--cluster', `redis://127.0.0.1:${redisPort}`, '--node-id', id, '--role', role,
        '--quic-addr', `127.0.0.1:${quic}`, '--drain-timeout', '2s'],
      env: { ZVON_CLUSTER_SECRET: SECRET },
      mediaOnly: role === 'media',
    });
  };
  // Media nodes first: the signaling nodes' health checks need them only for their own port.
  await node('m1', 'media');
  await node('m2', 'media');
  await node('s1', 'signaling');
  await node('s2', 'signaling');
  return {
    nodes,
    redisCli,
    logText: () => Object.entries(nodes).map(([id, n]) => `==== ${id}\n${n.logText()}`).join('\n'),
    async stop() {
      for (const n of Object.values(nodes)) await n.stop();
      redis.kill('SIGKILL');
      return { stopped: Object.keys(nodes) };
    },
  };
}

function roomUrl(node, room, name) {
  return `${node.baseUrl}/?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`;
}

/** Pages A and B (kept in `pages` for the runner's artifacts). */
async function openPair(browser, pages, urlA, urlB) {
  const a = await openPage(browser, urlA, 'A');
  pages.push(a);
  const b = await openPage(browser, urlB, 'B');
  pages.push(b);
  return [a, b];
}

// a) Two tabs opened on two different signaling nodes' URLs see and hear each other.
async function scenarioTwoNodes(browser, fleet, pages, results) {
  const room = uniqueName('cluster-two');
  const [a, b] = await openPair(browser, pages, roomUrl(fleet.nodes.s1, room, 'A'), roomUrl(fleet.nodes.s2, room, 'B'));
  await waitJoined(a, TIMEOUT_MS);
  await waitJoined(b, TIMEOUT_MS);
  for (const [p, other] of [[a, 'B'], [b, 'A']]) {
    const r = await waitMediaFlowing(p, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
    const v = r.growingVideo[0];
    log(`${p.label} decodes ${other}'s video ${v.frameWidth}x${v.frameHeight} and receives audio`);
  }
  const owner = fleet.redisCli('GET', `zvon:room:${room}`).split('|')[0];
  log(`room ${room} owned by ${owner}, media on ${fleet.redisCli('GET', `zvon:room-media:${room}`)}`);
  if (owner !== 's1') throw new Error(`room owned by ${owner}, expected s1 (A joined there first)`);
  results.push({ name: 'a-two-nodes', ok: true, detail: 'pages on s1 and s2 decode each other through one room' });
}

/** In the page: the time (ms since epoch) its client first decodes a video frame after `since`. */
function watchFirstFrame(page, since) {
  return page.evaluate(async (since) => {
    const c = window.zvon.client;
    for (;;) {
      const pc = c.subscriberPc;
      if (pc && pc.signalingState !== 'closed') {
        let decoded = 0;
        (await pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') decoded += s.framesDecoded ?? 0;
        });
        // A fresh connection (made at media_reset) counts from zero.
        if (decoded > 0 && window.__zvonResetAt && window.__zvonResetAt >= since) return Date.now();
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }, since);
}

// b) The media node under a call is killed (SIGKILL): both pages get media_reset on the socket
// they have, make new connections to the other media node and decode again, without a reload.
async function scenarioMediaFailover(browser, fleet, pages, results) {
  const room = uniqueName('cluster-failover');
  const [a, b] = await openPair(browser, pages, roomUrl(fleet.nodes.s1, room, 'A'), roomUrl(fleet.nodes.s1, room, 'B'));
  for (const p of [a, b]) {
    await waitJoined(p, TIMEOUT_MS);
    await p.evaluate(() => {
      window.__zvonResetAt = null;
      window.zvon.client.addEventListener('mediareset', () => { window.__zvonResetAt = Date.now(); });
    });
  }
  for (const p of [a, b]) await waitMediaFlowing(p, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
  const host = fleet.redisCli('GET', `zvon:room-media:${room}`);
  const victim = fleet.nodes[host];
  if (!victim) throw new Error(`room placed on ${host}, not a media node of this fleet`);
  const killedAt = Date.now();
  process.kill(victim.pid, 'SIGKILL');
  log(`killed media node ${host} (pid ${victim.pid})`);
  const firstFrames = await Promise.race([
    Promise.all([watchFirstFrame(a, killedAt), watchFirstFrame(b, killedAt)]),
    sleep(15_000).then(() => null),
  ]);
  if (!firstFrames) throw new Error('no decoded video on both pages within 15 s of the kill');
  const ms = Math.max(...firstFrames) - killedAt;
  log(`media node killed -> both pages decode video again after ${ms} ms`);
  for (const p of [a, b]) await waitMediaFlowing(p, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
  const states = await Promise.all([a, b].map((p) => p.evaluate(() => window.zvon.client.state)));
  if (states.some((s) => s !== 'joined')) throw new Error(`client states after failover: ${states}`);
  if (ms > FAILOVER_LIMIT_MS) throw new Error(`media back after ${ms} ms (limit ${FAILOVER_LIMIT_MS})`);
  results.push({ name: 'b-media-failover', ok: true, detail: `decoding again ${ms} ms after SIGKILL`, failoverMs: ms });
}

/**
 * The one public hostname: a TCP balancer in front of the signaling nodes that sends each new
 * connection to the first node that accepts it (so s1 while it lives, then s2).
 */
async function startBalancer(ports) {
  const server = createServer((client) => {
    const tryPort = (i) => {
      if (i >= ports.length) { client.destroy(); return; }
      const upstream = createConnection({ port: ports[i], host: '127.0.0.1' });
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        client.pipe(upstream);
        upstream.pipe(client);
        upstream.once('close', () => client.destroy());
        client.once('close', () => upstream.destroy());
      });
      upstream.on('error', () => {
        // Refused: that node is down, try the next. Broken later: end the client too.
        if (!connected) tryPort(i + 1); else client.destroy();
      });
    };
    client.on('error', () => {});
    tryPort(0);
  });
  const port = await freeTcpPort();
  await new Promise((res) => server.listen(port, '127.0.0.1', res));
  return { baseUrl: `http://127.0.0.1:${port}`, close: () => server.close() };
}

/** Video frames the page's client decoded on its current subscriber connection. */
function framesDecoded(page) {
  return page.evaluate(async () => {
    const pc = window.zvon.client.subscriberPc;
    let frames = 0;
    if (pc && pc.signalingState !== 'closed') {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? 0;
      });
    }
    return frames;
  });
}

// c) The signaling node serving the room is killed (SIGKILL). Pages behind one hostname keep
// decoding (the media node forwards on), reconnect through the hostname to the other node,
// resume with their token, and that node adopts their sessions: same participants, same peer
// connections, no reload.
async function scenarioSignalingFailover(browser, fleet, pages, results) {
  const lb = await startBalancer([fleet.nodes.s1.httpPort, fleet.nodes.s2.httpPort]);
  try {
    const room = uniqueName('cluster-signaling');
    const [a, b] = await openPair(browser, pages, roomUrl(lb, room, 'A'), roomUrl(lb, room, 'B'));
    const ids = [];
    for (const p of [a, b]) {
      ids.push((await waitJoined(p, TIMEOUT_MS)).me);
      await p.evaluate(() => {
        const c = window.zvon.client;
        window.__zvonPc = c.subscriberPc;
        window.__zvonStates = [];
        c.addEventListener('statechange', ({ detail }) => window.__zvonStates.push([detail.state, Date.now()]));
      });
    }
    for (const p of [a, b]) await waitMediaFlowing(p, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
    const owner = fleet.redisCli('GET', `zvon:room:${room}`).split('|')[0];
    if (owner !== 's1') throw new Error(`room owned by ${owner}, expected s1`);
    const framesAtKill = await Promise.all([a, b].map(framesDecoded));
    const killedAt = Date.now();
    process.kill(fleet.nodes.s1.pid, 'SIGKILL');
    log('killed signaling node s1 (the room owner)');
    const resumedAt = await Promise.race([
      Promise.all([a, b].map((p) => p.evaluate(() => new Promise((resolve) => {
        const c = window.zvon.client;
        const check = () => {
          const back = window.__zvonStates.some(([s]) => s === 'reconnecting') && c.state === 'joined';
          if (back) resolve(Date.now()); else setTimeout(check, 50);
        };
        check();
      })))),
      sleep(20_000).then(() => null),
    ]);
    if (!resumedAt) throw new Error('the pages did not resume within 20 s of the kill');
    const framesAtResume = await Promise.all([a, b].map(framesDecoded));
    const resumeMs = Math.max(...resumedAt) - killedAt;
    log(`signaling node killed -> both pages resumed after ${resumeMs} ms; frames decoded meanwhile: ${framesAtResume.map((f, i) => f - framesAtKill[i])}`);
    for (const [i, p] of [a, b].entries()) {
      const same = await p.evaluate(() => window.zvon.client.subscriberPc === window.__zvonPc);
      if (!same) throw new Error(`${p.label} made a new subscriber connection`);
      const me = await p.evaluate(() => window.zvon.client.localParticipant?.id);
      if (me !== ids[i]) throw new Error(`${p.label} is ${me} after resuming, was ${ids[i]}`);
      // Video went on while signaling was away: at 20+ fps several frames per second.
      if (framesAtResume[i] - framesAtKill[i] < 10) {
        throw new Error(`${p.label} decoded ${framesAtResume[i] - framesAtKill[i]} frames while signaling failed over`);
      }
    }
    for (const p of [a, b]) await waitMediaFlowing(p, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
    const newOwner = fleet.redisCli('GET', `zvon:room:${room}`).split('|')[0];
    if (newOwner !== 's2') throw new Error(`room owned by ${newOwner} after the failover`);
    results.push({ name: 'c-signaling-failover', ok: true, detail: `resumed on s2 after ${resumeMs} ms, video decoded throughout`, resumeMs });
  } finally {
    lb.close();
  }
}

runSuite('cluster', [
  ['a-two-nodes', scenarioTwoNodes],
  ['b-media-failover', scenarioMediaFailover],
  // Last: it kills s1.
  ['c-signaling-failover', scenarioSignalingFailover],
], { start: startFleet, artifactPrefix: 'cluster-' });
