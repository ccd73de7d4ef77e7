// Calls from networks that block UDP to the media server, through a real coturn.
//
// A Chromium publisher on the host and a Chromium subscriber in a network namespace of its
// own (a veth pair to the host, where the server and coturn listen). The server hands out
// TURN REST credentials (`--turn-url`, `--turn-secret`) in `joined`; coturn checks them with
// `use-auth-secret`. nftables in the subscriber's namespace then blocks:
//   udp-to-sfu   UDP from the SFU's media port: ICE must fall back to a TURN/UDP relay
//   all-udp      all UDP: only TURN over TCP is left
//   tls-only     all UDP and plain TCP to the TURN server: only TURN over TLS (turns:) is left
// and the subscriber must still decode the publisher's video, over a selected candidate pair
// whose local candidate is a relay (getStats), and nothing forces relay-only.
//   ice-tcp      all UDP, and a second server with `--ice-tcp` and no TURN at all: the
//                subscriber must decode over a pair whose local and remote candidates are
//                TCP (the server's ICE-TCP passive candidate, RFC 6544); it also publishes
//                (over its publisher connection's TCP pair) and the host page decodes that.
//
//   node turn.mjs [scenario...]   needs root, ip, nft and turnserver (Debian `coturn`)
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  freeTcpPort, launchBrowser, log, openPage, pageUrl, saveArtifacts, sleep, startServer, tail,
  uniqueName, waitFor, waitJoined, waitMediaFlowing,
} from './harness.mjs';
import { run, SubscriberNamespace } from './netns.mjs';

const ONLY = process.argv.slice(2);
const SECRET = `turn-test-${Math.random().toString(36).slice(2)}-${Date.now()}`;

/** The subscriber's namespace, behind a firewall the scenario sets. */
class Link extends SubscriberNamespace {
  constructor() {
    super('turn');
  }

  /** nftables rules on the namespace's input hook: silent drops, as a firewall does. */
  block(rule) {
    this.filterInput(rule);
  }
}

/** A coturn on the host end of the link, configured as docs/turn.md says. */
async function startCoturn(dir, ip, port, tlsPort) {
  // Relay ports: a range of its own per run (other tests may run coturn too).
  const minPort = 40000 + (process.pid % 200) * 50;
  // A self-signed certificate for the host's IP: the subscriber's Chromium is told to accept it.
  const cert = join(dir, 'turn.crt');
  const key = join(dir, 'turn.key');
  run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', `/CN=${ip}`, '-addext', `subjectAltName=IP:${ip}`,
    '-keyout', key, '-out', cert]);
  const conf = join(dir, 'turnserver.conf');
  writeFileSync(conf, [
    `listening-ip=${ip}`,
    `listening-port=${port}`,
    `tls-listening-port=${tlsPort}`,
    `cert=${cert}`,
    `pkey=${key}`,
    'no-tlsv1',
    'no-tlsv1_1',
    `relay-ip=${ip}`,
    `min-port=${minPort}`,
    `max-port=${minPort + 49}`,
    'use-auth-secret',
    `static-auth-secret=${SECRET}`,
    'realm=zvon.test',
    'fingerprint',
    'no-dtls',
    'no-cli',
    'no-multicast-peers',
    // Relays may reach the media server and nothing else on its network.
    'denied-peer-ip=198.51.100.0-198.51.100.255',
    `allowed-peer-ip=${ip}`,
    `userdb=${join(dir, 'turndb')}`,
    `pidfile=${join(dir, 'turnserver.pid')}`,
    'log-file=stdout',
    'simple-log',
    'verbose',
  ].join('\n') + '\n');
  const child = spawn('turnserver', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  for (const s of [child.stdout, child.stderr]) {
    s.setEncoding('utf8');
    s.on('data', (d) => { lines.push(...d.split('\n')); if (lines.length > 20_000) lines.splice(0, 10_000); });
  }
  let exited = null;
  child.once('exit', (code, signal) => { exited = { code, signal }; });
  process.once('exit', () => { if (!exited) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } });
  const turn = {
    pid: child.pid,
    logText: () => lines.join('\n'),
    async stop() {
      if (exited) return;
      try { process.kill(child.pid, 'SIGTERM'); } catch { /* gone */ }
      for (let i = 0; i < 50 && !exited; i++) await sleep(100);
      if (!exited) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
    },
  };
  await waitFor('turnserver to listen', async () => {
    if (exited) throw new Error(`turnserver exited ${JSON.stringify(exited)}:\n${tail(turn.logText(), 20)}`);
    const tcp = run('ss', ['-Htlnp']).split('\n').filter((l) => l.includes(`pid=${child.pid},`));
    const listening = [port, tlsPort].every((p) => tcp.some((l) => l.includes(`${ip}:${p} `)));
    return { ok: listening, seen: tail(turn.logText(), 5) };
  }, { timeoutMs: 10_000 });
  log(`turnserver up on ${ip}:${port}, TLS ${tlsPort} (pid ${child.pid}, relay ports ${minPort}-${minPort + 49})`);
  return turn;
}

/** The subscriber's selected candidate pair: its local candidate's type and relay protocol. */
function selectedPair(page, which = 'subscriberPc') {
  return page.evaluate(async (which) => {
    const pc = window.zvon?.client?.[which];
    if (!pc || pc.signalingState === 'closed') return null;
    const stats = await pc.getStats();
    let pairId = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
    const pair = pairId ? stats.get(pairId) : null;
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    const remoteCands = [];
    stats.forEach((s) => {
      if (s.type === 'remote-candidate') remoteCands.push(`${s.candidateType}/${s.protocol}@${s.address}:${s.port}`);
    });
    const pairs = [];
    stats.forEach((s) => {
      if (s.type !== 'candidate-pair') return;
      const l = stats.get(s.localCandidateId);
      pairs.push(`${l?.candidateType}/${l?.relayProtocol ?? l?.protocol}:${s.state}${s.nominated ? '*' : ''}`);
    });
    const cands = [];
    stats.forEach((s) => {
      if (s.type === 'local-candidate') cands.push(`${s.candidateType}/${s.protocol}/${s.relayProtocol ?? ''}@${s.address}:${s.port}`);
    });
    return {
      cands,
      remoteCands,
      pairs,
      state: pair.state,
      localType: local?.candidateType, relayProtocol: local?.relayProtocol ?? null,
      localProtocol: local?.protocol, remoteProtocol: remote?.protocol,
      local: `${local?.address}:${local?.port}`, remote: `${remote?.address}:${remote?.port}`,
      bytesReceived: pair.bytesReceived,
    };
  }, which);
}

// Offered TURN/UDP, TURN/TCP and TURN/TLS, Chromium keeps whichever relay is ready first (often
// TCP, pruning the others), so each scenario also closes the TURN paths it does not test.
const SCENARIOS = [
  {
    name: 'udp-to-sfu',
    rule: (p) => `udp sport ${p.media} drop\n  tcp sport { ${p.turn}, ${p.tls} } drop`,
    relayProtocol: 'udp',
  },
  {
    name: 'all-udp',
    rule: (p) => `meta l4proto udp drop\n  tcp sport ${p.tls} drop`,
    relayProtocol: 'tcp',
  },
  // Only HTTPS-like traffic gets out: all UDP and plain TURN/TCP dropped, TURN over TLS left.
  {
    name: 'tls-only',
    rule: (p) => `meta l4proto udp drop\n  tcp sport ${p.turn} drop`,
    relayProtocol: 'tls',
  },
  // No TURN, no UDP: only the media server's own TCP listener (ICE-TCP) is left. Runs on a
  // server of its own started with `--ice-tcp` and without `--turn-url`.
  {
    name: 'ice-tcp',
    iceTcp: true,
    rule: () => 'meta l4proto udp drop',
  },
];

async function runScenario(sc, { server, turnPort, tlsPort, link, pubBrowser, subBrowser, pages }) {
  link.block(sc.rule({ media: server.udpPort, turn: turnPort, tls: tlsPort }));
  const room = uniqueName(`turn-${sc.name}`);
  const pub = await openPage(pubBrowser, pageUrl(server, room, 'Publisher'), `${sc.name}-pub`);
  pages.push(pub);
  await waitJoined(pub, 20_000);
  const sub = await openPage(subBrowser, pageUrl(server, room, 'Blocked'), `${sc.name}-sub`);
  pages.push(sub);
  await waitJoined(sub, 20_000);
  const iceServers = await sub.evaluate(() => window.zvon?.client?._iceServers ?? null);
  if (sc.iceTcp) return checkIceTcp(sc, pub, sub, iceServers);
  // TURN REST API username: `<expiry unix seconds>:<identity>`, expiring in the default 6 h.
  const expiry = Number(/^(\d+):./.exec(iceServers?.[0]?.username ?? '')?.[1]);
  const hoursLeft = (expiry - Date.now() / 1000) / 3600;
  if (!(hoursLeft > 5.9 && hoursLeft < 6.1) || !iceServers[0].credential) {
    throw new Error(`joined carried no usable ice_servers: ${JSON.stringify(iceServers)}`);
  }
  await waitMediaFlowing(sub, { videos: 1, timeoutMs: 30_000 });
  const pair = await selectedPair(sub);
  log(`${sc.name}: selected pair ${JSON.stringify(pair)}`);
  if (pair?.localType !== 'relay') {
    throw new Error(`decoding, but over a ${pair?.localType} candidate, not a TURN relay: ${JSON.stringify(pair)}`);
  }
  if (pair.relayProtocol !== sc.relayProtocol) {
    throw new Error(`relayed over ${pair.relayProtocol}, want ${sc.relayProtocol}`);
  }
  return { scenario: sc.name, pair };
}

/** The ice-tcp scenario: no TURN offered, and video decoded over TCP straight to the server. */
async function checkIceTcp(sc, pub, sub, iceServers) {
  if (iceServers?.length) throw new Error(`a server without TURN offered ice_servers: ${JSON.stringify(iceServers)}`);
  const overTcp = (pair) => pair?.localProtocol === 'tcp' && pair?.remoteProtocol === 'tcp' && pair?.localType !== 'relay';
  await waitMediaFlowing(sub, { videos: 1, timeoutMs: 30_000 });
  const pair = await selectedPair(sub);
  log(`${sc.name}: selected pair ${JSON.stringify(pair)}`);
  if (!overTcp(pair)) throw new Error(`decoding, but not over ICE-TCP to the server: ${JSON.stringify(pair)}`);
  // The other way: what the blocked page publishes (over TCP) reaches the host page.
  await waitMediaFlowing(pub, { videos: 1, timeoutMs: 30_000 });
  const up = await selectedPair(sub, 'publisherPc');
  log(`${sc.name}: publisher's selected pair ${JSON.stringify(up)}`);
  if (!overTcp(up)) throw new Error(`published, but not over ICE-TCP to the server: ${JSON.stringify(up)}`);
  return { scenario: sc.name, pair, publisherPair: up };
}

/** A server with ICE-TCP and no TURN, on the host end of the link. */
function startIceTcpServer(link) {
  return startServer({ host: link.hostIp, label: 'server-ice-tcp', extraArgs: ['--ice-tcp'] });
}

async function main() {
  const chosen = SCENARIOS.filter((s) => !ONLY.length || ONLY.some((o) => s.name.startsWith(o)));
  const link = new Link();
  const dir = mkdtempSync(join(tmpdir(), 'zvon-turn-'));
  let server = null;
  let tcpServer = null;
  let turn = null;
  let turnPort = 0;
  let tlsPort = 0;
  let pubBrowser = null;
  let subBrowser = null;
  let tcpSubBrowser = null;
  let ok = true;
  const results = [];
  try {
    link.up();
    turnPort = await freeTcpPort();
    tlsPort = await freeTcpPort();
    turn = await startCoturn(dir, link.hostIp, turnPort, tlsPort);
    server = await startServer({
      host: link.hostIp,
      label: 'server',
      extraArgs: [
        '--turn-url', `turn:${link.hostIp}:${turnPort}?transport=udp`,
        '--turn-url', `turn:${link.hostIp}:${turnPort}?transport=tcp`,
        '--turn-url', `turns:${link.hostIp}:${tlsPort}?transport=tcp`,
      ],
      env: { ZVON_TURN_SECRET: SECRET },
    });
    if (server.logText().includes(SECRET)) throw new Error('the server logged the TURN secret');
    if (chosen.some((sc) => sc.iceTcp)) tcpServer = await startIceTcpServer(link);
    const origins = [server, tcpServer].filter(Boolean).map((s) => s.baseUrl).join(',');
    pubBrowser = await launchBrowser({ extraArgs: [`--unsafely-treat-insecure-origin-as-secure=${origins}`] });
    // The TURN server's certificate is self-signed (for its IP): this Chromium accepts it.
    subBrowser = await link.launchBrowser(dir, ['--ignore-certificate-errors']);
    for (const sc of chosen) {
      const pages = [];
      const t0 = Date.now();
      try {
        const s = sc.iceTcp ? tcpServer : server;
        // The ice-tcp page publishes too: its own Chromium may use the camera on plain http.
        if (sc.iceTcp && !tcpSubBrowser) {
          tcpSubBrowser = await link.launchBrowser(dir, [`--unsafely-treat-insecure-origin-as-secure=${tcpServer.baseUrl}`]);
        }
        const sb = sc.iceTcp ? tcpSubBrowser : subBrowser;
        results.push(await runScenario(sc, { server: s, turnPort, tlsPort, link, pubBrowser, subBrowser: sb, pages }));
        console.log(`PASS turn-${sc.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        ok = false;
        console.log(`FAIL turn-${sc.name}: ${e.message}`);
        for (const p of pages) console.log(`--- console of ${p.label} (last 20) ---\n${p.consoleLines.slice(-20).join('\n')}`);
        console.log(`--- server log (tail) ---\n${tail((sc.iceTcp ? tcpServer ?? server : server).logText(), 30)}`);
        console.log(`--- turnserver log (tail) ---\n${tail(turn.logText(), 30)}`);
        await saveArtifacts(`turn-${sc.name}`, pages, sc.iceTcp ? tcpServer ?? server : server);
      } finally {
        for (const p of pages) await p.context().close().catch(() => {});
      }
    }
  } catch (e) {
    console.log(`FAIL setup: ${e.message}`);
    if (turn) console.log(`--- turnserver log (tail) ---\n${tail(turn.logText(), 30)}`);
    ok = false;
  } finally {
    await pubBrowser?.close().catch(() => {});
    await subBrowser?.close().catch(() => {});
    await tcpSubBrowser?.close().catch(() => {});
    await tcpServer?.stop();
    if (server) {
      await server.stop();
      if (server.logText().includes(SECRET)) { console.log('FAIL the server logged the TURN secret'); ok = false; }
    }
    await turn?.stop();
    link.down();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(JSON.stringify({ turn: ok ? 'pass' : 'fail', results }));
  console.log(ok ? 'ALL PASS' : 'SOME FAILED');
  process.exit(ok ? 0 : 1);
}

main();
