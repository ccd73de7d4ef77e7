// Calls on bad networks: a Chromium publisher and a Chromium subscriber whose downlink from
// the server is shaped. The subscriber's browser runs in a network namespace of its own,
// joined to the host by a veth pair; the server listens on the host end. `tbf` on the host
// end limits the rate towards the subscriber, an nftables `numgen random` rule on the
// namespace's input hook drops a share of the server's packets (this kernel has no netem),
// and a userspace relay inside the namespace (delay_relay.mjs, reached through an nftables
// DNAT of the browser's media packets) adds the profile's round-trip time, half each way.
//
//   node shaped.mjs [profile...]          the tests (open, thin); needs root, ip, tc, nft
//   node shaped.mjs --bench [profile...]  every profile, SHAPED_SECONDS long each, one JSON
//                                         line per profile, no pass/fail
// SHAPED_SERVER_ARGS adds server flags (e.g. `--bandwidth-allocation=false` for a baseline).
// SHAPED_TRACE=1 logs every subscriber sample (height, frames, keyframes, bytes, NACKs, RTT)
// to line up with a server log (SHAPED_SERVER_LOG=file, RUST_LOG=...=debug).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  launchBrowser, log, median, openPage, pageUrl, saveArtifacts, sleep, startServer, tail,
  uniqueName, waitFor, waitJoined,
} from './harness.mjs';
import { run, SubscriberNamespace } from './netns.mjs';

const BENCH = process.argv.includes('--bench');
const ONLY = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const SECONDS = Number(process.env.SHAPED_SECONDS || 0);
const SERVER_ARGS = (process.env.SHAPED_SERVER_ARGS || '').split(/\s+/).filter(Boolean);

// A second counts as decoding when at least this many frames were decoded in it (the fake
// camera sends 20-30 fps; a frozen tile decodes none).
const DECODING_FPS = 5;

// Profiles: rate in kbit/s (0 = unshaped), loss in percent, added round-trip time in ms,
// and the test's thresholds. `steps` switch the rate during the run: [seconds from the first
// frame, kbit/s].
const PROFILES = [
  { name: 'open', kbps: 0, loss: 0, rttMs: 0, seconds: 20, test: true },
  { name: '2mbit', kbps: 2000, loss: 0, rttMs: 40, seconds: 30 },
  { name: 'thin', kbps: 600, loss: 1, rttMs: 80, seconds: 25, test: true },
  { name: 'poor', kbps: 300, loss: 3, rttMs: 120, seconds: 30 },
  // The drop waits (up to 20 s more) until the top layer has been received for 2 s: it is
  // the step response that is measured, not the climb at the start; the later steps keep
  // their distance from it.
  { name: 'step', kbps: 2000, loss: 0, rttMs: 40, seconds: 30, steps: [[10, 250], [20, 2000]], sampleMs: 250, holdTopS: 2, test: true },
  { name: 'step600', kbps: 600, loss: 0, rttMs: 40, seconds: 36, steps: [[12, 250], [24, 2000]], sampleMs: 250 },
  // Below the lowest layer: video pauses with a badge on the tile, audio goes on; resumes.
  { name: 'pause', kbps: 0, loss: 0, seconds: 34, steps: [[3, 100], [14, 0]], test: true },
];

/** The subscriber's namespace, with its downlink shaped. */
class ShapedLink extends SubscriberNamespace {
  constructor() {
    super('bwe');
  }

  /**
   * Added round-trip time (0 = none): a relay in the namespace holds each media datagram
   * half of it in each direction; the browser's packets to the server are redirected to it.
   */
  async setDelay(rttMs, udpPort) {
    this.stopRelay();
    this.relayRule = '';
    if (rttMs > 0) {
      const relayPort = 39000;
      const upBase = 39001;
      const script = join(dirname(fileURLToPath(import.meta.url)), 'delay_relay.mjs');
      this.relay = spawn('ip', ['netns', 'exec', this.ns, process.execPath, script, this.nsIp,
        String(relayPort), this.hostIp, String(udpPort), String(upBase), String(rttMs / 2)],
      { stdio: ['pipe', 'pipe', 'inherit'] });
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('delay relay did not start')), 10_000);
        this.relay.stdout.once('data', () => { clearTimeout(timer); resolve(); });
        this.relay.once('exit', (code) => { clearTimeout(timer); reject(new Error(`delay relay exited (${code})`)); });
      });
      // The relay's own upstream sockets (upBase and up) are not redirected.
      this.relayRule = `ip daddr ${this.hostIp} udp dport ${udpPort} udp sport != ${upBase}-${upBase + 15} dnat to ${this.nsIp}:${relayPort}`;
    }
    this.applyRules();
  }

  stopRelay() {
    if (this.relay && this.relay.exitCode === null) this.relay.kill('SIGTERM');
    this.relay = null;
  }

  /** The namespace's rules: loss on what arrives over the veth, the DNAT to the relay. */
  applyRules() {
    run('ip', ['netns', 'exec', this.ns, 'nft', '-f', '-'],
      `flush ruleset\ntable inet ${this.tag} {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ${this.lossRule ?? ''}\n }\n}\n`
      + `table ip ${this.tag}nat {\n chain out {\n  type nat hook output priority -100; policy accept;\n  ${this.relayRule ?? ''}\n }\n}\n`);
  }

  down() {
    this.stopRelay();
    super.down();
  }

  /** Rate (kbit/s, 0 = none) from the server to the subscriber, and loss of its UDP. */
  shape(kbps, lossPct, udpPort) {
    if (kbps > 0) {
      // A burst of ~20 ms at the rate and a queue of at most 200 ms: a thin mobile link.
      const burst = Math.max(3000, Math.round((kbps * 1000) / 8 / 50));
      run('tc', ['qdisc', 'replace', 'dev', this.hostIf, 'root', 'tbf', 'rate', `${kbps}kbit`,
        'burst', String(burst), 'latency', '200ms']);
    } else {
      try { run('tc', ['qdisc', 'del', 'dev', this.hostIf, 'root']); } catch { /* none */ }
    }
    const permille = Math.round(lossPct * 10);
    // Only what comes over the veth: the relay's packets to the browser (on lo) carry the
    // server's port too once the DNAT is undone.
    this.lossRule = permille > 0
      ? `iifname "${this.nsIf}" udp sport ${udpPort} numgen random mod 1000 < ${permille} drop`
      : '';
    this.applyRules();
  }
}

/** The subscriber's inbound video and audio as getStats reports them. */
function sampleSubscriber(page) {
  return page.evaluate(async () => {
    const pc = window.zvon?.client?.subscriberPc;
    if (!pc || pc.signalingState === 'closed') return null;
    const stats = await pc.getStats();
    let v = null;
    let a = null;
    let rtt = null;
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) {
        rtt = s.currentRoundTripTime;
      }
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video' && (!v || (s.framesDecoded ?? 0) > v.framesDecoded)) {
        v = {
          framesDecoded: s.framesDecoded ?? 0, height: s.frameHeight ?? 0, width: s.frameWidth ?? 0,
          freezes: s.totalFreezesDuration ?? 0, freezeCount: s.freezeCount ?? 0,
          packetsReceived: s.packetsReceived ?? 0, packetsLost: s.packetsLost ?? 0,
          bytes: s.bytesReceived ?? 0, keyframes: s.keyFramesDecoded ?? 0, nacks: s.nackCount ?? 0,
          plis: s.pliCount ?? 0, rtxBytes: s.retransmittedBytesReceived ?? 0, received: s.framesReceived ?? 0,
          dropped: s.framesDropped ?? 0,
        };
      }
      if (s.kind === 'audio') {
        a = {
          concealed: s.concealedSamples ?? 0, samples: s.totalSamplesReceived ?? 0,
          packetsReceived: s.packetsReceived ?? 0, packetsLost: s.packetsLost ?? 0,
        };
      }
    });
    const paused = [...document.querySelectorAll('#grid .tile.remote .badge')]
      .some((b) => /poor connection/.test(b.textContent));
    return { t: Date.now(), v, a, paused, rtt };
  });
}

/** Whether `audio/red` is in the audio m-lines of both sides of the page's peer connection. */
function redNegotiated(page, which) {
  return page.evaluate((which) => {
    const pc = window.zvon?.client?.[which];
    const red = (sdp) => (sdp ?? '').split(/\r?\nm=/).some((m) => m.startsWith('audio')
      && /a=rtpmap:\d+ red\/48000\/2/i.test(m));
    return !!pc && red(pc.currentLocalDescription?.sdp) && red(pc.currentRemoteDescription?.sdp);
  }, which);
}

/** The height of the publisher's largest simulcast layer that is being sent. */
/** The height the publisher's camera captures at: its top simulcast layer's, even while
 * dynacast has that layer off (nobody receives it yet). */
function publisherCaptureHeight(page) {
  return page.evaluate(() => {
    const pc = window.zvon?.client?.publisherPc;
    const track = pc?.getSenders().find((s) => s.track?.kind === 'video')?.track;
    return track?.getSettings().height ?? 0;
  });
}

function publisherTopHeight(page) {
  return page.evaluate(async () => {
    const pc = window.zvon?.client?.publisherPc;
    if (!pc) return 0;
    const stats = await pc.getStats();
    let top = 0;
    stats.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && (s.framesPerSecond ?? 0) > 0) {
        top = Math.max(top, s.frameHeight ?? 0);
      }
    });
    return top;
  });
}

/** Sums up samples taken once a second: what the table reports. */
function summarize(samples) {
  const vs = samples.filter((s) => s.v && s.a);
  if (vs.length < 2) return null;
  const first = vs[0];
  const last = vs[vs.length - 1];
  const secs = (last.t - first.t) / 1000;
  let decoding = 0;
  const fps = [];
  const heights = [];
  let worstConceal = 0;
  for (let i = 1; i < vs.length; i++) {
    const dt = (vs[i].t - vs[i - 1].t) / 1000;
    const frames = vs[i].v.framesDecoded - vs[i - 1].v.framesDecoded;
    fps.push(frames / dt);
    if (frames / dt >= DECODING_FPS) decoding += 1;
    heights.push(vs[i].v.height);
    // Worst 2 s of audio (samples may come faster than once a second).
    const back = vs.findLastIndex((s, j) => j < i && s.t <= vs[i].t - 1900);
    if (back >= 0) {
      const s = vs[i].a.samples - vs[back].a.samples;
      const c = vs[i].a.concealed - vs[back].a.concealed;
      if (s > 0) worstConceal = Math.max(worstConceal, c / s);
    }
  }
  const d = (f) => f(last) - f(first);
  const vPkts = d((s) => s.v.packetsReceived) + d((s) => s.v.packetsLost);
  const aPkts = d((s) => s.a.packetsReceived) + d((s) => s.a.packetsLost);
  const aSamples = d((s) => s.a.samples);
  return {
    seconds: Math.round(secs),
    decodingShare: decoding / (vs.length - 1),
    medianHeight: median(heights),
    topShare: heights.filter((h) => h === Math.max(...heights)).length / heights.length,
    medianFps: Math.round(median(fps) * 10) / 10,
    freezeSecPerMin: Math.round((d((s) => s.v.freezes) / secs) * 60 * 10) / 10,
    videoLoss: vPkts > 0 ? d((s) => s.v.packetsLost) / vPkts : 0,
    audioConcealed: aSamples > 0 ? d((s) => s.a.concealed) / aSamples : 1,
    audioWorst2s: worstConceal,
    audioLoss: aPkts > 0 ? d((s) => s.a.packetsLost) / aPkts : 0,
    medianRttMs: Math.round(median(vs.filter((s) => s.rtt !== null).map((s) => s.rtt * 1000)) || 0),
    pausedSeconds: Math.round(vs.filter((s) => s.paused).length * (secs / Math.max(1, vs.length - 1))),
  };
}

const pct = (x) => `${(x * 100).toFixed(1)} %`;

async function runProfile(profile, { server, link, pubBrowser, subBrowser, pages }) {
  // Step profiles keep their own length: their steps are timed within it.
  const seconds = profile.steps ? profile.seconds : SECONDS || profile.seconds;
  link.shape(profile.kbps, profile.loss, server.udpPort);
  await link.setDelay(profile.rttMs, server.udpPort);
  const room = uniqueName(`shaped-${profile.name}`);
  const pub = await openPage(pubBrowser, pageUrl(server, room, 'Teacher'), `${profile.name}-pub`);
  pages.push(pub);
  await waitJoined(pub, 20_000);
  // A window large enough for the one remote tile to ask for the top (720p) layer.
  const sub = await openPage(subBrowser, pageUrl(server, room, 'Student'), `${profile.name}-sub`, {
    viewport: { width: 1400, height: 900 },
  });
  pages.push(sub);
  await waitJoined(sub, 20_000);
  await waitFor('the shaped subscriber to decode a first frame', async () => {
    const s = await sampleSubscriber(sub);
    return { ok: (s?.v?.framesDecoded ?? 0) > 0, seen: s };
  }, { timeoutMs: 20_000 });
  const samples = [];
  const steps = [...(profile.steps ?? [])];
  const start = Date.now();
  const stepTimes = [];
  let pubTop = 0;
  // Seconds the steps were pushed back waiting for the top layer (holdTopS).
  let shift = 0;
  let topSince = null;
  let topNotHeld = false;
  // The top layer the step waits for: what the camera captures (the publisher may not be
  // sending it yet when nobody receives it), or what it sends if that is more.
  const captureTop = profile.holdTopS ? await publisherCaptureHeight(pub) : 0;
  while (Date.now() - start < (seconds + shift) * 1000) {
    const at = (Date.now() - start) / 1000;
    const waitTop = profile.holdTopS && !stepTimes.length
      && !(topSince !== null && Date.now() - topSince >= profile.holdTopS * 1000);
    if (steps.length && at >= steps[0][0] + shift && waitTop) {
      if (at - steps[0][0] >= 20) {
        topNotHeld = true;
        break;
      }
      shift = at - steps[0][0];
    } else if (steps.length && at >= steps[0][0] + shift) {
      const [, kbps] = steps.shift();
      link.shape(kbps, profile.loss, server.udpPort);
      stepTimes.push({ at: Date.now(), kbps });
      log(`${profile.name}: downlink now ${kbps} kbit/s`);
    }
    const s = await sampleSubscriber(sub);
    if (s) samples.push(s);
    if (s && process.env.SHAPED_TRACE) {
      log(`${profile.name}: sample h=${s.v?.height} dec=${s.v?.framesDecoded} rcv=${s.v?.received} kf=${s.v?.keyframes} pkts=${s.v?.packetsReceived} lost=${s.v?.packetsLost} kB=${Math.round((s.v?.bytes ?? 0) / 1000)} rtxkB=${Math.round((s.v?.rtxBytes ?? 0) / 1000)} nack=${s.v?.nacks} pli=${s.v?.plis} apkts=${s.a?.packetsReceived} rtt=${s.rtt}`);
    }
    pubTop = Math.max(pubTop, await publisherTopHeight(pub));
    const topTarget = Math.max(pubTop, captureTop);
    if (topTarget && (s?.v?.height ?? 0) >= topTarget) topSince ??= Date.now();
    else topSince = null;
    const every = profile.sampleMs ?? 1000;
    await sleep(every - ((Date.now() - start) % every));
  }
  const summary = summarize(samples);
  if (!summary) throw new Error(`${profile.name}: no video/audio stats from the subscriber`);
  // Recent samples: what the subscriber gets once things settled.
  const recent = samples.slice(-4).map((s) => s.v?.height ?? 0);
  const result = {
    profile: profile.name, kbps: profile.kbps, lossPct: profile.loss, rttMs: profile.rttMs, ...summary,
    recentHeights: recent, publisherTopHeight: pubTop, topNotHeld, stepsDelayedS: shift,
    // Opus RED negotiated on both legs (Chromium's getStats names the decoder, opus, even
    // when the packets are RED).
    redPublisher: await redNegotiated(pub, 'publisherPc'),
    redSubscriber: await redNegotiated(sub, 'subscriberPc'),
    maxHeight: Math.max(...samples.map((s) => s.v?.height ?? 0)),
  };
  if (stepTimes.length) {
    result.steps = stepResponse(samples, stepTimes);
    // Per phase between steps: paused seconds, decoding seconds, audio concealment.
    const bounds = [start, ...stepTimes.map((s) => s.at), Infinity];
    result.phases = bounds.slice(0, -1).map((from, i) => {
      const inPhase = samples.filter((s) => s.t >= from && s.t < bounds[i + 1]);
      // Audio while the tile showed the pause (the drop into it is the link collapsing).
      let conc = 0;
      let total = 0;
      for (let j = 1; j < inPhase.length; j++) {
        if (!inPhase[j].paused || !inPhase[j - 1].paused || !inPhase[j].a || !inPhase[j - 1].a) continue;
        conc += inPhase[j].a.concealed - inPhase[j - 1].a.concealed;
        total += inPhase[j].a.samples - inPhase[j - 1].a.samples;
      }
      return {
        kbps: i ? stepTimes[i - 1].kbps : profile.kbps, ...summarize(inPhase),
        endPaused: inPhase.at(-1)?.paused ?? null,
        audioConcealedWhilePaused: total ? conc / total : null,
      };
    });
  }
  log(`${profile.name}: ${JSON.stringify(result)}`);
  for (const p of [pub, sub]) await p.context().close().catch(() => {});
  return result;
}

/** For each rate step: seconds until the received height changed and settled. */
function stepResponse(samples, steps) {
  return steps.map(({ at, kbps }) => {
    const before = samples.filter((s) => s.t <= at && s.v).slice(-1)[0]?.v.height ?? 0;
    const changed = samples.find((s) => s.t > at && s.v && s.v.height !== before);
    return { kbps, heightBefore: before, secondsToChange: changed ? (changed.t - at) / 1000 : null, heightAfter: changed?.v.height ?? null };
  });
}

function check(result) {
  const fails = [];
  if (result.profile === 'open') {
    // Reached, not held: on a loaded 2-core machine the delay-based estimate still dips now
    // and then (the benchmark reports how much of the time the top layer is held).
    if (result.maxHeight < result.publisherTopHeight) {
      fails.push(`on an open link the subscriber never received the publisher's top layer (${result.publisherTopHeight}p; best ${result.maxHeight}p)`);
    }
    if (result.decodingShare < 0.9) fails.push(`decodes video only ${pct(result.decodingShare)} of the time`);
  }
  if (result.profile === 'pause') {
    const [, thin, open] = result.phases;
    if (!thin.pausedSeconds) fails.push('at 100 kbit/s the tile never showed "video paused: poor connection"');
    // 100 kbit/s is about twice what audio with RED takes; the estimator still probes
    // now and then to find out whether the link came back, which costs some audio.
    if (thin.audioConcealedWhilePaused >= 0.05) fails.push(`audio concealment ${pct(thin.audioConcealedWhilePaused)} while video was paused (want < 5 %)`);
    if (open.endPaused) fails.push('the tile still shows "video paused" once the link is open again');
    if (!open.decodingShare) fails.push('video never decoded again after the link opened');
  }
  if (result.profile === 'step' && result.topNotHeld) {
    fails.push(`on the open 2000 kbit/s link the subscriber never held the top layer (${result.publisherTopHeight}p) for 2 s, so the step was not taken`);
  } else if (result.profile === 'step') {
    // The promise: a lower layer decoded within 2 s of the drop and a higher one
    // within 5 s of the link's return, as the subscriber's decoder sees it (getStats every
    // 250 ms). Measured at 1.5-2.0 s / 1.5-3.3 s under load (BENCHMARKS.md, "Step timings");
    // SHAPED_STEP_DOWN_S / SHAPED_STEP_UP_S loosen them for a machine slower than that.
    const downMax = Number(process.env.SHAPED_STEP_DOWN_S || 2);
    const upMax = Number(process.env.SHAPED_STEP_UP_S || 5);
    const [drop, back] = result.steps;
    if (!(drop.heightAfter < drop.heightBefore) || drop.secondsToChange > downMax) {
      fails.push(`after the drop to ${drop.kbps} kbit/s the received layer went ${drop.heightBefore}p -> ${drop.heightAfter}p after ${drop.secondsToChange} s (want a lower layer within ${downMax} s)`);
    }
    if (!(back.heightAfter > back.heightBefore) || back.secondsToChange > upMax) {
      fails.push(`after the link came back to ${back.kbps} kbit/s the received layer went ${back.heightBefore}p -> ${back.heightAfter}p after ${back.secondsToChange} s (want a higher layer within ${upMax} s)`);
    }
  }
  if (result.profile === 'thin') {
    if (!result.redPublisher || !result.redSubscriber) fails.push(`Opus RED not negotiated (publisher ${result.redPublisher}, subscriber ${result.redSubscriber})`);
    if (result.decodingShare < 0.9) fails.push(`decodes video only ${pct(result.decodingShare)} of the time (want >= 90 %)`);
    if (result.audioConcealed >= 0.01) fails.push(`audio concealment ${pct(result.audioConcealed)} (want < 1 %)`);
  }
  return fails;
}

async function main() {
  // A name picks that profile; any other argument picks the profiles it starts.
  const picks = (p, o) => p.name === o || (p.name.startsWith(o) && !PROFILES.some((q) => q.name === o));
  const chosen = PROFILES.filter((p) => (ONLY.length ? ONLY.some((o) => picks(p, o)) : BENCH || p.test));
  const link = new ShapedLink();
  const dir = mkdtempSync(join(tmpdir(), 'zvon-shaped-'));
  let server = null;
  let pubBrowser = null;
  let subBrowser = null;
  let ok = true;
  const results = [];
  try {
    link.up();
    server = await startServer({ host: link.hostIp, extraArgs: SERVER_ARGS, label: 'server' });
    // The page's origin is not localhost: only a flag lets the publisher use its camera. The
    // subscriber joins without one (watch and listen only), as on a thin phone link.
    pubBrowser = await launchBrowser({ extraArgs: [`--unsafely-treat-insecure-origin-as-secure=${server.baseUrl}`] });
    subBrowser = await link.launchBrowser(dir);
    for (const profile of chosen) {
      const pages = [];
      const t0 = Date.now();
      try {
        let result = await runProfile(profile, { server, link, pubBrowser, subBrowser, pages });
        let fails = BENCH ? [] : check(result);
        // Random loss makes audio concealment vary from run to run (0.1-1.0 % over runs here
        // at 1 % loss); one more run decides, and the log keeps the miss visible.
        if (fails.length && !BENCH) {
          log(`FLAKE: shaped-${profile.name} missed (${fails.join('; ')}); running it once more`);
          for (const p of pages.splice(0)) await p.context().close().catch(() => {});
          result = await runProfile(profile, { server, link, pubBrowser, subBrowser, pages });
          fails = check(result);
        }
        results.push(result);
        if (fails.length) throw new Error(fails.join('; '));
        console.log(`${BENCH ? 'DONE' : 'PASS'} shaped-${profile.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        ok = false;
        console.log(`FAIL shaped-${profile.name}: ${e.message}`);
        console.log(`--- server log (tail) ---\n${tail(server.logText(), 30)}`);
        await saveArtifacts(`shaped-${profile.name}`, pages, server);
      } finally {
        for (const p of pages) await p.context().close().catch(() => {});
      }
    }
  } catch (e) {
    console.log(`FAIL setup: ${e.message}`);
    ok = false;
  } finally {
    await pubBrowser?.close().catch(() => {});
    await subBrowser?.close().catch(() => {});
    if (server) {
      await server.stop();
      if (process.env.SHAPED_SERVER_LOG) writeFileSync(process.env.SHAPED_SERVER_LOG, server.logText());
    }
    link.down();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(JSON.stringify({ shaped: ok ? 'pass' : 'fail', results }));
  console.log(ok ? 'ALL PASS' : 'SOME FAILED');
  process.exit(ok ? 0 : 1);
}

main();
