// ICE restarts when the network changes (docs/protocol.md, "Network changes").
//
// A path that dies silently (Wi-Fi gone, a new address, a NAT that forgot us) is noticed two
// ways:
// - Silence: the server sends RTCP reports at least twice a second on every connection with
//   a live m-line, even in a silent room, and answers our consent checks. So a connection
//   that has been hearing from the server regularly and then hears nothing at all (no packet,
//   no check response on its selected candidate pair) for DEAD_PATH_SILENCE_MS has lost its
//   path: restart. Chromium itself would report `disconnected` only ~7 s after the path died.
// - State: a connection that goes `disconnected` and stays so for ICE_RESTART_GRACE_MS (at
//   once when `failed`) is restarted too, and again every ICE_RESTART_RETRY_MS while down.
//   This covers connections the silence rule is not armed for (no live m-line, or traffic
//   not yet regular) and restarts that did not bring the path back.

/** How long a `disconnected` connection may come back by itself before ICE restarts. */
export const ICE_RESTART_GRACE_MS = 1000;
/** A restart that has not brought the connection back within this long is tried again. */
export const ICE_RESTART_RETRY_MS = 5000;
/** Nothing received for this long on a connection that heard from the server regularly. */
export const DEAD_PATH_SILENCE_MS = 1500;
/** How often the selected candidate pair's counters are read. */
export const DEAD_PATH_SAMPLE_MS = 500;
/** Gaps between changes up to this long count as regular traffic (arming the silence rule). */
const REGULAR_GAP_MS = 1200;
/** Changes in a row with regular gaps before the silence rule is armed. */
const REGULAR_CHANGES = 3;

const up = (pc) => ['connected', 'completed'].includes(pc.iceConnectionState);

/** A connection with an m-line that carries media, whose server side sends reports. */
function hasLiveMline(pc) {
  return pc.getTransceivers().some((t) => t.currentDirection && !['inactive', 'stopped'].includes(t.currentDirection));
}

/** What the selected candidate pair has received so far, as one comparable string. */
async function receivedSignature(pc) {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) return null;
  return `${pair.id}|${pair.packetsReceived}|${pair.bytesReceived}|${pair.responsesReceived}`;
}

/**
 * Watches `pc` and calls `restart(reason)` (reason `silent`, `disconnected` or `failed`) when
 * its path looks dead; see the top of this file (`silence: false`: the state rule only).
 * Returns a function that stops watching (the connection is being replaced or closed).
 */
export function watchIce(pc, { silence = true }, restart) {
  let timer = null;
  let stopped = false;
  const run = async (reason) => {
    if (stopped || pc.signalingState === 'closed') return;
    try {
      await restart(reason);
    } catch (e) {
      console.warn('zvon: ICE restart failed', e);
    }
  };
  const arm = (ms, reason) => {
    if (timer) return;
    timer = setTimeout(async () => {
      timer = null;
      if (stopped || pc.signalingState === 'closed' || up(pc)) return;
      await run(reason);
      // Still not back: keep trying while the connection exists.
      if (!stopped && pc.signalingState !== 'closed' && !up(pc)) arm(ICE_RESTART_RETRY_MS, 'disconnected');
    }, ms);
  };
  const onChange = () => {
    const state = pc.iceConnectionState;
    if (state === 'failed') {
      clearTimeout(timer);
      timer = null;
      arm(0, 'failed');
    } else if (state === 'disconnected') {
      arm(ICE_RESTART_GRACE_MS, 'disconnected');
    } else if (state === 'connected' || state === 'completed' || state === 'closed') {
      clearTimeout(timer);
      timer = null;
    }
  };
  pc.addEventListener('iceconnectionstatechange', onChange);

  // The silence rule.
  let last = null;
  let lastChange = performance.now();
  let regular = 0;
  let sampler = null;
  const sample = async () => {
    sampler = null;
    if (stopped || pc.signalingState === 'closed') return;
    const now = performance.now();
    let sig = null;
    try {
      sig = up(pc) ? await receivedSignature(pc) : null;
    } catch { /* closed meanwhile */ }
    if (sig === null) {
      // Not connected (the state rule's business) or no pair yet: start over once it is.
      last = null;
      regular = 0;
      lastChange = now;
    } else if (sig !== last) {
      regular = now - lastChange <= REGULAR_GAP_MS ? regular + 1 : 0;
      last = sig;
      lastChange = now;
    } else if (regular >= REGULAR_CHANGES && now - lastChange >= DEAD_PATH_SILENCE_MS && hasLiveMline(pc)) {
      // Fires once; armed again only by regular traffic, so a restart that did not help
      // is followed up by the state rule (retries every ICE_RESTART_RETRY_MS), not by a loop.
      regular = 0;
      await run('silent');
    }
    if (!stopped) sampler = setTimeout(sample, DEAD_PATH_SAMPLE_MS);
  };
  if (silence) sampler = setTimeout(sample, DEAD_PATH_SAMPLE_MS);

  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(sampler);
    timer = null;
    pc.removeEventListener('iceconnectionstatechange', onChange);
  };
}
