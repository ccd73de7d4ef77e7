// Resuming a room session on a new socket after the old one dropped. The peer connections are
// left alone meanwhile: media flows on (in a fleet even when the signaling node died: the next
// node owning the room adopts the session from its media node).

// How long a dropped socket is retried with the resume token before the session is given up
// (the server keeps the participant for its reconnect grace, 10 s by default; in a fleet the
// next room owner takes over within a few seconds).
export const RESUME_WINDOW_MS = 20_000;

/**
 * Opens new sockets with `client`'s resume token until one is taken (the same server after a
 * network blip, or in a fleet whichever node owns the room now), for up to RESUME_WINDOW_MS;
 * then gives the session up with a `connectionerror`.
 */
export async function resumeSession(client, env) {
  if (client._resuming) return;
  client._resuming = true;
  client._setState('reconnecting');
  client._emit('reconnecting', {});
  env.mark('reconnecting');
  const deadline = Date.now() + RESUME_WINDOW_MS;
  let refused = false;
  while (Date.now() < deadline && client.state === 'reconnecting' && !refused) {
    const outcome = await tryResume(client, env);
    if (outcome === 'resumed') { client._resuming = false; return; }
    refused = outcome === 'refused';
    if (!refused) await new Promise((r) => setTimeout(r, 1000));
  }
  client._resuming = false;
  if (client.state !== 'reconnecting') return;
  client._fail(refused
    ? 'The server could not resume this session; join again.'
    : `Connection to the server was lost and could not be resumed within ${RESUME_WINDOW_MS / 1000} s.`);
}

/** One attempt: 'resumed', 'refused' (resume_failed) or 'failed' (no answer, or another error). */
function tryResume(client, env) {
  return new Promise((resolve) => {
    let ws;
    try { ws = new WebSocket(client.url); } catch { resolve('failed'); return; }
    client.ws = ws;
    let done = false;
    const finish = (outcome) => { if (!done) { done = true; resolve(outcome); } };
    ws.onopen = () => {
      const join = {
        type: 'join', protocol: env.protocol, token: client.token, resume: client._resumeToken,
        request_id: 'resume',
      };
      if (client.room) join.room = client.room;
      client._send(join);
      client._stopPing();
      client._pingTimer = setInterval(() => client._send({ type: 'ping' }), env.pingIntervalMs);
    };
    ws.onmessage = (ev) => {
      let msg = null;
      try { msg = JSON.parse(ev.data); } catch { /* the client's handler reports it */ }
      if (msg?.type === 'error' && msg.code === 'resume_failed') { finish('refused'); return; }
      // Any other refusal (the fleet is still taking the room over): try again shortly.
      if (msg?.type === 'error' && !done) { finish('failed'); return; }
      client._onSocketMessage(ev);
      if (msg?.type === 'joined') finish('resumed');
    };
    ws.onerror = () => {};
    ws.onclose = () => {
      client._stopPing();
      if (!done) { finish('failed'); return; }
      // Resumed, then dropped again: start over.
      if (client.ws === ws && client.state === 'joined') resumeSession(client, env);
    };
  });
}
