// ICE restarts when the network changes (docs/protocol.md, "Network changes").
//
// A peer connection whose path died (Wi-Fi to LTE, a new address, a NAT that forgot us) goes
// `disconnected` within a few seconds and `failed` only some 30 s later. Waiting for `failed`
// means half a minute of frozen video; restarting at the first blip means renegotiating for
// every lost packet burst. So: a short grace after `disconnected` (the path often comes back
// by itself), then a restart, repeated while the connection stays down.

/** How long a `disconnected` connection may come back by itself before ICE restarts. */
export const ICE_RESTART_GRACE_MS = 1000;
/** A restart that has not brought the connection back within this long is tried again. */
export const ICE_RESTART_RETRY_MS = 5000;

/**
 * Calls `restart()` when `pc` stays `disconnected` for ICE_RESTART_GRACE_MS (at once when it
 * is `failed`), and again every ICE_RESTART_RETRY_MS until it is connected. Returns a function
 * that stops watching (the connection is being replaced or closed).
 */
export function watchIce(pc, restart) {
  let timer = null;
  const up = () => ['connected', 'completed'].includes(pc.iceConnectionState);
  const arm = (ms) => {
    if (timer) return;
    timer = setTimeout(async () => {
      timer = null;
      if (pc.signalingState === 'closed' || up()) return;
      try {
        await restart();
      } catch (e) {
        console.warn('zvon: ICE restart failed', e);
      }
      // Still not back: keep trying while the connection exists.
      if (pc.signalingState !== 'closed' && !up()) arm(ICE_RESTART_RETRY_MS);
    }, ms);
  };
  const onChange = () => {
    const state = pc.iceConnectionState;
    if (state === 'failed') {
      clearTimeout(timer);
      timer = null;
      arm(0);
    } else if (state === 'disconnected') {
      arm(ICE_RESTART_GRACE_MS);
    } else if (state === 'connected' || state === 'completed' || state === 'closed') {
      clearTimeout(timer);
      timer = null;
    }
  };
  pc.addEventListener('iceconnectionstatechange', onChange);
  return () => {
    clearTimeout(timer);
    timer = null;
    pc.removeEventListener('iceconnectionstatechange', onChange);
  };
}
