// Recording a room, in real Chromium pages with fake camera and microphone.
// a-record: a teacher (room_admin) starts recording with the page's button; everyone (and a
//   late joiner) sees the indicator; the teacher mutes and unmutes the mic; after ~20 s the
//   server API stops it. Each file's duration (ffprobe) is within 1 s of what the manifest
//   says it holds, ffmpeg decodes >= 90 % of its frames, the mute is in the manifest, the
//   server API lists the recording and serves a file with Range, and the replay page plays
//   the videos.
// b-kill: the server is SIGKILLed 8 s into a recording: the files decode up to the kill.
// c-unwritable: the record directory is replaced by a file: starting a recording fails with
//   a `recording` event carrying the error, zvon_recording_errors_total counts it, and a
//   subscriber keeps receiving media.
//   node record.mjs [scenario-prefix...]   (needs ffmpeg/ffprobe; server from $ZVON_BIN)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  runSuite, startServer, openPage, snapshot, twoInCall, waitFor, waitJoined, waitMediaFlowing, pageUrl,
  uniqueName, log, sleep, freeTcpPort, REPO_ROOT,
} from './harness.mjs';

const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 30_000);
const RECORD_MS = 20_000;
const bin = resolve(REPO_ROOT, process.env.ZVON_BIN || 'target/release/zvon');
const serverToken = execFileSync(bin, ['token', '--dev', '--server-api', '--identity', 'backend'], { encoding: 'utf8' }).trim();
const auth = { Authorization: `Bearer ${serverToken}` };

/** Every server the scenarios start, as one for runSuite (logs, stop). */
const servers = [];
const fleet = {
  logText: () => servers.map((s) => s.logText()).join('\n'),
  stop: async () => { for (const s of servers) await s.stop(); return {}; },
};
async function recordingServer(dir) {
  const metricsPort = await freeTcpPort();
  const s = await startServer({ extraArgs: ['--record-dir', dir], metricsPort, label: `server ${servers.length}` });
  servers.push(s);
  return s;
}

async function api(server, method, path, body) {
  const res = await fetch(`${server.baseUrl}${path}`, {
    method, headers: { ...auth, 'Content-Type': 'application/json' }, body: body && JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
  return JSON.parse(text);
}

const visible = (page, sel) => page.evaluate((s) => {
  const e = document.querySelector(s);
  return !!e && !e.hidden && e.offsetParent !== null;
}, sel);

function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-count_packets', '-show_entries',
    'format=duration:stream=codec_name,nb_read_frames,nb_read_packets,width,height', '-of', 'json', file], { encoding: 'utf8' });
  const j = JSON.parse(out);
  const s = j.streams[0];
  return {
    duration: Number(j.format.duration), codec: s.codec_name, width: s.width,
    frames: Number(s.nb_read_frames), packets: Number(s.nb_read_packets),
  };
}

/** The last packet's end time in a file (a killed recording has no Duration). */
function lastPacketEnd(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'packet=pts_time,duration_time', '-of', 'csv=p=0', file], { encoding: 'utf8' });
  const rows = out.trim().split('\n').map((l) => l.split(',').map(Number)).filter((r) => !Number.isNaN(r[0]));
  const [pts, dur] = rows[rows.length - 1];
  return pts + (dur || 0);
}

/** ffmpeg decodes the whole file without an error exit. */
function decodes(file) {
  execFileSync('ffmpeg', ['-nostdin', '-v', 'error', '-i', file, '-fps_mode', 'passthrough', '-f', 'null', '-'], { encoding: 'utf8' });
}

async function record(browser, _s, pages, results) {
  const dir = mkdtempSync(join(tmpdir(), 'zvon-rec-'));
  const server = await recordingServer(dir);
  const room = uniqueName('rec');
  const [teacher, student] = await twoInCall(pages,
    [browser, `${pageUrl(server, room, 'Teacher')}&admin=1`, 'teacher'],
    [browser, pageUrl(server, room, 'Sam'), 'student'],
    { joinMs: TIMEOUT_MS, mediaMs: TIMEOUT_MS, bothWays: false });
  if (await visible(student, '#btn-record')) throw new Error('a student is offered the record button');

  await teacher.click('#btn-record');
  const startedAt = Date.now();
  await waitFor('everyone to see the recording indicator', async () => {
    const seen = [await visible(teacher, '#recording-indicator'), await visible(student, '#recording-indicator')];
    return { ok: seen.every(Boolean), seen };
  }, { timeoutMs: 5000 });
  log('recording: the indicator shows on both pages');
  const late = await openPage(browser, pageUrl(server, room, 'Late'), 'late');
  pages.push(late);
  await waitJoined(late, TIMEOUT_MS);
  await waitFor('a late joiner to see the indicator', async () => ({ ok: await visible(late, '#recording-indicator') }), { timeoutMs: 5000 });
  await late.close();
  log('late joiner sees the indicator');

  await sleep(6000);
  await teacher.click('#btn-mic');
  await sleep(3000);
  await teacher.click('#btn-mic');
  await sleep(Math.max(0, RECORD_MS - (Date.now() - startedAt)));
  const stopped = await api(server, 'POST', `/api/rooms/${room}/recording`, { enabled: false });
  const stoppedAt = Date.now();
  if (stopped.active) throw new Error(`still recording: ${JSON.stringify(stopped)}`);
  await waitFor('the indicator to go away', async () => ({ ok: !(await visible(student, '#recording-indicator')) }), { timeoutMs: 5000 });

  const list = await api(server, 'GET', `/api/recordings?room=${room}`);
  const id = list.recordings[0]?.recording_id;
  if (!id) throw new Error(`no recording listed: ${JSON.stringify(list)}`);
  const m = await waitFor('the manifest to be closed', async () => {
    const man = await api(server, 'GET', `/api/recordings/${id}`);
    return { ok: !!man.ended_at && man.tracks.every((t) => !t.file || t.stopped_at), man, seen: man };
  }, { timeoutMs: 10_000 }).then((r) => r.man);
  const teacherId = (await snapshot(teacher)).me;
  const mic = m.tracks.find((t) => t.participant_id === teacherId && t.kind === 'audio');
  if (!mic || mic.mutes.map((x) => x.muted).join() !== 'true,false' || mic.name !== 'Teacher') {
    throw new Error(`the teacher's mic should show one mute and one unmute: ${JSON.stringify(mic)}`);
  }
  const mutedFor = mic.mutes[1].at - mic.mutes[0].at;
  const checked = [];
  for (const t of m.tracks.filter((x) => x.file && x.stopped_at >= stoppedAt - 2000)) {
    const file = join(dir, id, t.file);
    const p = probe(file);
    decodes(file);
    const held = (t.end - t.start) / 1000 + (t.kind === 'audio' ? 0.02 : 0.033);
    const expected = (stoppedAt - t.start) / 1000;
    if (Math.abs(p.duration - held) > 1 || Math.abs(p.duration - expected) > 1 || p.duration < RECORD_MS / 1000 - 3) {
      throw new Error(`${t.file}: ffprobe says ${p.duration} s, the manifest ${held.toFixed(2)} s, the call ${expected.toFixed(2)} s`);
    }
    if (p.frames < 0.9 * p.packets || p.packets < 0.9 * t.frames) {
      throw new Error(`${t.file}: decoded ${p.frames} of ${p.packets} frames (manifest: ${t.frames})`);
    }
    checked.push(`${t.name} ${t.kind} ${p.codec}${p.width ? ` ${p.width}px` : ''} ${p.duration.toFixed(2)} s ${p.frames}/${p.packets}`);
  }
  if (checked.filter((c) => c.includes('vp8')).length < 2 || checked.filter((c) => c.includes('opus')).length < 2) {
    throw new Error(`expected a video and an audio file per person: ${JSON.stringify(checked)}`);
  }
  log(`files: ${checked.join('; ')}; mic muted for ${mutedFor} ms`);

  const first = m.tracks.find((t) => t.file && t.kind === 'video');
  const ranged = await fetch(`${server.baseUrl}/api/recordings/${id}/${first.file}`, { headers: { ...auth, Range: 'bytes=0-99' } });
  if (ranged.status !== 206 || (await ranged.arrayBuffer()).byteLength !== 100) throw new Error(`Range request: HTTP ${ranged.status}`);
  const anon = await fetch(`${server.baseUrl}/api/recordings/${id}`);
  if (anon.status !== 401) throw new Error(`a manifest without a token: HTTP ${anon.status}`);

  const { token: adminToken } = await (await fetch(`${server.baseUrl}/api/dev-token?room=${room}&admin=1`)).json();
  const replay = await openPage(browser, `${server.baseUrl}/replay.html?recording=${id}#token=${adminToken}`, 'replay');
  pages.push(replay);
  await waitFor('the replay page to load the manifest', async () => ({
    ok: await replay.evaluate(() => !!window.zvonReplay && !document.querySelector('#play').disabled),
    seen: await replay.evaluate(() => document.querySelector('#error')?.textContent),
  }), { timeoutMs: 10_000 });
  await replay.click('#play');
  const played = await waitFor('the replay page to play both videos', async () => {
    const v = await replay.evaluate(() => window.zvonReplay.players.filter((p) => p.el.tagName === 'VIDEO')
      .map((p) => ({ w: p.el.videoWidth, t: p.el.currentTime, frames: p.el.getVideoPlaybackQuality().totalVideoFrames })));
    return { ok: v.length >= 2 && v.every((x) => x.w > 0 && x.t > 1 && x.frames > 10), seen: v };
  }, { timeoutMs: 15_000 });
  log(`replay: ${JSON.stringify(played.seen)}`);
  results.push({ name: 'a-record', ok: true, detail: `${checked.length} files; ${checked.join('; ')}; mute ${mutedFor} ms` });
  rmSync(dir, { recursive: true, force: true });
}

async function kill(browser, _s, pages, results) {
  const dir = mkdtempSync(join(tmpdir(), 'zvon-rec-'));
  const server = await recordingServer(dir);
  const room = uniqueName('kill');
  const ann = await openPage(browser, pageUrl(server, room, 'Ann'), 'ann');
  pages.push(ann);
  await waitJoined(ann, TIMEOUT_MS);
  await waitFor('Ann to publish', async () => ({ ok: await ann.evaluate(() => window.zvon.client.localTracks.size === 2) }), { timeoutMs: TIMEOUT_MS });
  await sleep(1000);
  const started = await api(server, 'POST', `/api/rooms/${room}/recording`, { enabled: true });
  if (!started.active) throw new Error(`not recording: ${JSON.stringify(started)}`);
  await sleep(8000);
  process.kill(server.pid, 'SIGKILL');
  const killedAt = Date.now();
  await waitFor('the server to die', async () => ({ ok: !!server.exited() }), { timeoutMs: 5000 });
  const recDir = join(dir, started.recording_id);
  const files = readdirSync(recDir).filter((f) => f.endsWith('.webm'));
  const manifest = JSON.parse(execFileSync('cat', [join(recDir, 'manifest.json')], { encoding: 'utf8' }));
  if (files.length !== 2) throw new Error(`expected 2 files after the kill: ${files}`);
  const seen = [];
  for (const f of files) {
    const file = join(recDir, f);
    decodes(file);
    const t = manifest.tracks.find((x) => x.file === f);
    const end = lastPacketEnd(file);
    const upToKill = (killedAt - t.start) / 1000;
    // Lost at most: the open cluster (1 s) and what the recording thread had queued.
    if (end < upToKill - 1.6 || end > upToKill + 0.5) throw new Error(`${f}: plays to ${end} s, the kill came at ${upToKill.toFixed(2)} s`);
    const p = probe(file);
    if (p.frames < 0.9 * p.packets) throw new Error(`${f}: decoded ${p.frames} of ${p.packets}`);
    seen.push(`${p.codec} to ${end.toFixed(2)} s of ${upToKill.toFixed(2)} s`);
  }
  log(`after SIGKILL: ${seen.join('; ')}`);
  results.push({ name: 'b-kill', ok: true, detail: seen.join('; ') });
  rmSync(dir, { recursive: true, force: true });
}

async function metric(server, name) {
  const text = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

async function unwritable(browser, _s, pages, results) {
  const dir = mkdtempSync(join(tmpdir(), 'zvon-rec-'));
  const recordDir = join(dir, 'rec');
  const server = await recordingServer(recordDir);
  const room = uniqueName('full');
  const [teacher, student] = await twoInCall(pages,
    [browser, `${pageUrl(server, room, 'Teacher')}&admin=1`, 'teacher'],
    [browser, pageUrl(server, room, 'Sam'), 'student'],
    { joinMs: TIMEOUT_MS, mediaMs: TIMEOUT_MS, bothWays: false });
  // A file where the directory was: nothing can be written under it, not even by root.
  rmSync(recordDir, { recursive: true, force: true });
  writeFileSync(recordDir, 'not a directory');
  if (await metric(server, 'zvon_recording_errors_total') !== 0) throw new Error('errors before recording');
  await teacher.click('#btn-record');
  await waitFor('the student to be told the recording failed', async () => {
    const t = await student.evaluate(() => document.querySelector('#recording-notice')?.textContent ?? '');
    return { ok: t.includes('Recording stopped') && !(await visible(student, '#recording-indicator')), seen: t };
  }, { timeoutMs: 10_000 });
  const errors = await metric(server, 'zvon_recording_errors_total');
  if (errors !== 1) throw new Error(`zvon_recording_errors_total = ${errors}`);
  await waitMediaFlowing(student, { videos: 1, audios: 1, timeoutMs: 10_000 });
  if (!existsSync(recordDir)) throw new Error('the test file vanished');
  log('unwritable record dir: error event, zvon_recording_errors_total 1, media still flows');
  results.push({ name: 'c-unwritable', ok: true, detail: 'error event + metric; the subscriber still decodes' });
  rmSync(dir, { recursive: true, force: true });
}

runSuite('record', [
  ['a-record', record],
  ['b-kill', kill],
  ['c-unwritable', unwritable],
], { artifactPrefix: 'record-', start: async () => fleet });
