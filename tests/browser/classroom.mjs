// Classroom in real Chromium pages.
// a-controls: a teacher (?admin=1) switches lecture mode on, a student raises a hand, the
//   teacher approves it and then sees the student's video, mutes the student's mic, they chat,
//   and the teacher removes and bans the student.
// b-on-demand: a student in classroom mode (?mode=classroom, video_subscription on_demand)
//   receives the camera of a tile in view and none for a tile scrolled out of view, gets it
//   when the tile comes into view and pauses it when it leaves again.
//   node classroom.mjs [scenario-prefix...]   (server binary from $ZVON_BIN, default target/release/zvon)
import {
  runSuite, openPage, snapshot, waitFor, waitJoined, waitMediaFlowing, pageUrl, uniqueName, log,
} from './harness.mjs';

const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 30_000);
const text = (page, sel) => page.evaluate((s) => document.querySelector(s)?.textContent ?? '', sel);

async function classroom(browser, server, pages) {
  const room = uniqueName('class');
  const teacher = await openPage(browser, `${pageUrl(server, room, 'Teacher')}&admin=1`, 'teacher');
  pages.push(teacher);
  await waitJoined(teacher, TIMEOUT_MS);
  await teacher.check('#lecture-toggle');
  await waitFor('lecture mode to be on', async () => {
    const t = await text(teacher, '.lecture-state');
    return { ok: t.startsWith('Lecture mode'), seen: t };
  }, { timeoutMs: 5000 });

  // A fixed identity (a fresh dev token would be a new guest): the ban is by identity.
  const res = await fetch(`${server.baseUrl}/api/dev-token?room=${room}&name=Sam&identity=sam`);
  const { token } = await res.json();
  const student = await openPage(browser, `${pageUrl(server, room, 'Sam')}&token=${token}`, 'student');
  pages.push(student);
  student.on('dialog', (d) => d.accept());
  teacher.on('dialog', (d) => d.accept());
  await waitJoined(student, TIMEOUT_MS);
  const idle = await student.evaluate(() => ({
    pc: !!window.zvon.client.publisherPc,
    grants: window.zvon.client.localParticipant.grants,
  }));
  if (idle.pc || idle.grants.can_publish) throw new Error(`student may publish in lecture mode: ${JSON.stringify(idle)}`);
  log('lecture mode: the student joined without publishing');

  await student.click('#btn-hand');
  await waitFor('the teacher to see Sam in the hand queue', async () => {
    const t = await text(teacher, '#hand-queue');
    return { ok: t.includes('Sam'), seen: t };
  }, { timeoutMs: 5000 });
  await teacher.click('#hand-queue button:has-text("Approve")');
  const r = await waitMediaFlowing(teacher, { videos: 1, audios: 1, timeoutMs: TIMEOUT_MS });
  log(`approved: the teacher decodes the student's video after ${r.elapsedMs} ms`);
  const queue = await text(teacher, '#hand-queue');
  if (queue.includes('Sam')) throw new Error(`hand still queued after approval: ${queue}`);

  await teacher.click('#people button:has-text("Mute mic")');
  await waitFor('the student\'s mic to follow the teacher\'s mute', async () => {
    const muted = await student.evaluate(() => window.zvon.client.isMuted('audio'));
    const s = await snapshot(teacher);
    return { ok: muted && s.tiles[0]?.badges.includes('mic off'), seen: { muted, tiles: s.tiles } };
  }, { timeoutMs: 5000 });
  log('teacher mute: the student\'s mic is off and shown as such');
  await student.click('#btn-mic');
  await waitFor('the student\'s unmute to be refused while the teacher holds the mic', async () => {
    const s = await snapshot(student);
    const muted = await student.evaluate(() => window.zvon.client.isMuted('audio'));
    return { ok: muted && s.messages.some((m) => m.includes('only an admin can release')), seen: { muted, s } };
  }, { timeoutMs: 5000 });

  await student.fill('#chat-text', 'May I ask a question?');
  await student.click('#chat-form button');
  await waitFor('the teacher to read the chat', async () => {
    const t = await text(teacher, '#chat-log');
    return { ok: t.includes('Sam: May I ask a question?'), seen: t };
  }, { timeoutMs: 5000 });
  log('chat delivered');

  await teacher.click('#people button:has-text("Remove and ban")');
  await waitFor('the student to be removed', async () => {
    const s = await snapshot(student);
    return { ok: s.state === 'error' && s.messages.some((m) => m.includes('removed')), seen: s };
  }, { timeoutMs: 5000 });
  await student.reload();
  await waitFor('the banned student to be refused', async () => {
    const s = await snapshot(student);
    return { ok: s.messages.some((m) => m.includes('banned')), seen: s };
  }, { timeoutMs: 10_000 });
  log('removed and banned: rejoining is refused');
}

/**
 * What a page's subscriber connection negotiated: the video m-lines of the server's last
 * offer, whose participant each active one carries, and each inbound video's decoded frames
 * by participant.
 */
async function subscriberView(page) {
  return page.evaluate(async () => {
    const c = window.zvon.client;
    const sdp = c.subscriberPc?.remoteDescription?.sdp ?? '';
    const byMid = new Map([...c.subscriberTracks.values()].map((t) => [t.mid, t]));
    const frames = {};
    const stats = await c.subscriberPc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
      const t = byMid.get(s.mid);
      if (t) frames[t.participant_id] = s.framesDecoded ?? 0;
    });
    // The tiles whose <video> element shows a picture (what the user sees).
    const showing = [...document.querySelectorAll('#grid .tile.remote')]
      .filter((t) => { const v = t.querySelector('video'); return v.videoWidth > 0 && !v.paused; })
      .map((t) => t.dataset.participantId);
    return {
      videoMlines: (sdp.match(/^m=video /gm) ?? []).length,
      videoOf: [...byMid.values()].filter((t) => t.kind === 'video').map((t) => t.participant_id),
      frames,
      showing,
    };
  });
}

/** A style that puts participant `id`'s tile below the fold: laid out and sized, not in view. */
const offscreenCss = (id) => `.tile[data-participant-id=${JSON.stringify(id)}] {
  position: fixed !important; top: 300vh; left: 0; width: 320px; height: 180px; }`;

/** Applies `css` as the page's one test style (null removes it). */
function setTestStyle(page, css) {
  return page.evaluate((css) => {
    document.getElementById('test-style')?.remove();
    if (css == null) return;
    const st = Object.assign(document.createElement('style'), { id: 'test-style', textContent: css });
    document.head.append(st);
  }, css);
}

async function onDemand(browser, server, pages, results) {
  const room = uniqueName('ondemand');
  const teacher = await openPage(browser, `${pageUrl(server, room, 'Teacher')}&admin=1`, 'teacher');
  pages.push(teacher);
  const ann = await openPage(browser, pageUrl(server, room, 'Ann'), 'ann');
  pages.push(ann);
  const { me: teacherId } = await waitJoined(teacher, TIMEOUT_MS);
  const { me: annId } = await waitJoined(ann, TIMEOUT_MS);
  await waitFor('Ann\'s camera to be published', async () => {
    const id = await ann.evaluate(() => window.zvon.client.localTracks.get('video')?.id ?? null);
    return { ok: !!id, seen: id };
  }, { timeoutMs: TIMEOUT_MS });

  // Sam's page has Ann's tile below the fold from the first layout on: the style is in place
  // before the page has joined, so no report ever saw the tile in view.
  const sam = await openPage(browser, null, 'sam');
  pages.push(sam);
  await sam.addInitScript((css) => {
    document.addEventListener('DOMContentLoaded', () => {
      document.head.append(Object.assign(document.createElement('style'), { id: 'test-style', textContent: css }));
    });
  }, offscreenCss(annId));
  await sam.goto(`${pageUrl(server, room, 'Sam')}&mode=classroom`);
  const { me: samId } = await waitJoined(sam, TIMEOUT_MS);

  // Audio comes from everyone; video only from the teacher, whose tile is in view.
  const first = await waitMediaFlowing(sam, { videos: 1, audios: 2, timeoutMs: TIMEOUT_MS });
  const tiles = (await snapshot(sam)).tiles.map((t) => t.name);
  if (!tiles.includes('Ann') || !tiles.includes('Teacher')) throw new Error(`Sam's page lacks a named tile: ${JSON.stringify(tiles)}`);
  const hidden = await subscriberView(sam);
  if (hidden.videoMlines !== 1 || hidden.videoOf.join() !== teacherId || !(hidden.frames[teacherId] > 0)
      || hidden.showing.join() !== teacherId) {
    throw new Error(`Sam should receive the teacher's camera only (teacher ${teacherId}, Ann ${annId}): ${JSON.stringify(hidden)}`);
  }
  // The same room in auto mode: the teacher's page has an m-line for every camera.
  const auto = await subscriberView(teacher);
  if (auto.videoMlines !== 2 || !auto.videoOf.includes(annId) || !auto.videoOf.includes(samId)) {
    throw new Error(`the teacher's page (auto) should receive Ann's and Sam's cameras: ${JSON.stringify(auto)}`);
  }
  log(`on demand: Sam decodes the teacher's camera (${hidden.frames[teacherId]} frames after ${first.elapsedMs} ms) over 1 video m-line; Ann's tile is shown by name without one (the auto-mode teacher has ${auto.videoMlines})`);

  const t0 = Date.now();
  await setTestStyle(sam, null);
  const both = await waitFor('Sam to decode Ann\'s camera once her tile is in view', async (prev) => {
    const v = await subscriberView(sam);
    const grew = (id) => prev && v.frames[id] > (prev.v.frames[id] ?? 0);
    return { ok: grew(annId) && grew(teacherId) && v.showing.includes(annId), v, seen: v };
  }, { timeoutMs: TIMEOUT_MS, intervalMs: 500 });
  if (both.v.videoMlines !== 2) throw new Error(`expected 2 video m-lines once Ann is in view: ${JSON.stringify(both.v)}`);
  const shownMs = Date.now() - t0;
  log(`Ann's tile in view: Sam decodes her camera ${shownMs} ms later`);

  await setTestStyle(sam, offscreenCss(annId));
  // Paused: Ann's frames stop growing (after the 300 ms debounce and frames in flight) while
  // the teacher's keep growing; the m-line stays.
  const paused = await waitFor('Ann\'s camera to pause on Sam\'s page once her tile leaves the view', async (prev) => {
    const v = await subscriberView(sam);
    const ok = !!prev && v.frames[annId] === prev.v.frames[annId] && v.frames[teacherId] > prev.v.frames[teacherId];
    return { ok, v, seen: v };
  }, { timeoutMs: 10_000, intervalMs: 1000 });
  if (paused.v.videoMlines !== 2) throw new Error(`a paused camera keeps its m-line: ${JSON.stringify(paused.v)}`);
  log(`Ann's tile out of view: her camera paused on Sam's page within ${paused.elapsedMs} ms`);
  results.push({
    name: 'b-on-demand', ok: true,
    detail: `hidden tile: 1 video m-line (auto: 2); in view: decoding after ${shownMs} ms; out of view: paused`,
  });
}

runSuite('classroom', [
  ['a-controls', classroom],
  ['b-on-demand', onDemand],
], { artifactPrefix: 'classroom-' });
