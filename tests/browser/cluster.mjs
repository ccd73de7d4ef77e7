// Cluster end to end: real headless Chromium pages against a real fleet (redis-server, two
// signaling nodes, two media nodes; each a separate `zvon serve --cluster` process).
//   node cluster.mjs [prefix...]     (server binary from $ZVON_BIN, default target/release/zvon)
import { spawn, execFileSync } from 'node:child_process';
import { createConnection } from 'node:net';
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

// a) Two tabs opened on two different signaling nodes' URLs see and hear each other.
async function scenarioTwoNodes(browser, fleet, pages, results) {
  const room = uniqueName('cluster-two');
  const a = await openPage(browser, roomUrl(fleet.nodes.s1, room, 'A'), 'A');
  pages.push(a);
  const b = await openPage(browser, roomUrl(fleet.nodes.s2, room, 'B'), 'B');
  pages.push(b);
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
  const a = await openPage(browser, roomUrl(fleet.nodes.s1, room, 'A'), 'A');
  pages.push(a);
  const b = await openPage(browser, roomUrl(fleet.nodes.s1, room, 'B'), 'B');
  pages.push(b);
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

runSuite('cluster', [
  ['a-two-nodes', scenarioTwoNodes],
  ['b-media-failover', scenarioMediaFailover],
], { start: startFleet, artifactPrefix: 'cluster-' });
