// Replays one recording: a <video> or <audio> per track file, each started at its own offset
// on one clock (the manifest's wall-clock `start` of each file). Muted stretches are gaps in
// the files, so the elements stay in step through them.
//   /replay.html?recording=REC_...#token=<room_admin or server_api token>
// In dev mode, `&room=R` without a token asks /api/dev-token for a room_admin token.

const params = new URLSearchParams(location.search);
const id = params.get('recording');
const fragment = new URLSearchParams(location.hash.slice(1));
const $ = (s) => document.querySelector(s);
const fmt = (ms) => `${Math.floor(ms / 60000)}:${String(Math.floor(ms / 1000) % 60).padStart(2, '0')}`;

async function token() {
  if (fragment.get('token')) return fragment.get('token');
  const room = params.get('room');
  const res = await fetch(`/api/dev-token?room=${encodeURIComponent(room ?? '')}&admin=1`);
  if (!res.ok) throw new Error('give the page a token: replay.html?recording=ID#token=TOKEN');
  return (await res.json()).token;
}

/** Elements of the recording and their offsets (ms) from the earliest file's start. */
const players = [];
let t0 = null; // performance.now() at recording time 0 while playing
let pausedAt = 0;
let length = 0;

function position() {
  return t0 === null ? pausedAt : performance.now() - t0;
}

/** Keeps every element where the clock says it should be (started, waiting or ended). */
function sync() {
  const now = position();
  for (const p of players) {
    const local = (now - p.offset) / 1000;
    const inside = local >= 0 && local < p.el.duration + 0.5;
    if (t0 === null || !inside) {
      if (!p.el.paused) p.el.pause();
      if (local < 0) p.el.currentTime = 0;
      continue;
    }
    if (Math.abs(p.el.currentTime - local) > 0.3) p.el.currentTime = local;
    if (p.el.paused) p.el.play().catch(() => {});
  }
  $('#clock').textContent = fmt(now);
  if (t0 !== null && now > length + 500) { pausedAt = 0; t0 = null; }
}

async function main() {
  if (!id) throw new Error('no ?recording= given');
  const tok = await token();
  const res = await fetch(`/api/recordings/${encodeURIComponent(id)}`, { headers: { Authorization: `Bearer ${tok}` } });
  if (!res.ok) throw new Error(`manifest: HTTP ${res.status} ${await res.text()}`);
  const m = await res.json();
  $('#title').textContent = `${m.room}, ${new Date(m.started_at).toLocaleString()}`;
  const files = m.tracks.filter((t) => t.file && t.start);
  if (!files.length) throw new Error('this recording has no files');
  const origin = Math.min(...files.map((t) => t.start));
  for (const t of files) {
    const el = document.createElement(t.kind === 'video' ? 'video' : 'audio');
    el.src = `/api/recordings/${encodeURIComponent(id)}/${encodeURIComponent(t.file)}?token=${encodeURIComponent(tok)}`;
    el.preload = 'auto';
    el.playsInline = true;
    el.dataset.file = t.file;
    const fig = document.createElement('figure');
    const cap = document.createElement('figcaption');
    cap.textContent = `${t.name ?? t.participant_id} — ${t.source}${t.mutes.length ? ` (${t.mutes.length} mute changes)` : ''}`;
    fig.append(el, cap);
    $('#tracks').append(fig);
    players.push({ el, offset: t.start - origin, track: t });
    length = Math.max(length, (t.end ?? t.start) - origin);
  }
  $('#length').textContent = fmt(length);
  $('#play').disabled = false;
  $('#play').onclick = () => { t0 = performance.now() - pausedAt; sync(); };
  $('#pause').onclick = () => { pausedAt = position(); t0 = null; sync(); };
  setInterval(sync, 250);
  window.zvonReplay = { players, position, manifest: m };
}

main().catch((e) => { $('#error').textContent = String(e.message ?? e); });
