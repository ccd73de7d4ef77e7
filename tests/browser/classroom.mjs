// Classroom controls in real Chromium pages: a teacher (?admin=1) switches lecture mode on, a
// student raises a hand, the teacher approves it and then sees the student's video, mutes the
// student's mic, they chat, and the teacher removes and bans the student.
//   node classroom.mjs      (server binary from $ZVON_BIN, default target/release/zvon)
import {
  startServer, launchBrowser, openPage, snapshot, waitFor, waitJoined, waitMediaFlowing,
  saveArtifacts, pageUrl, uniqueName, log, tail,
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

async function main() {
  const server = await startServer();
  const browser = await launchBrowser();
  const pages = [];
  let ok = false;
  try {
    await classroom(browser, server, pages);
    ok = true;
    log('PASS classroom');
  } catch (e) {
    log(`FAIL classroom: ${e.message}`);
    await saveArtifacts('classroom', pages, server);
    log(tail(server.logText(), 30));
  } finally {
    await browser.close().catch(() => {});
    await server.stop();
  }
  process.exit(ok ? 0 : 1);
}

main();
