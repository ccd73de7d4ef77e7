// Zvon device socket (docs/protocol.md "Calls between users"). No UI here: the page listens
// to events.
//
// One per signed-in device: `register`, then call messages both ways. Media of an answered
// call goes through a ZvonClient (client.js) on a second socket (the media socket).
//
// Events (CustomEvent, payload in `detail`):
//   statechange      {state}    idle -> connecting -> registered -> closed | error
//   registered       {identity, device, protocol}
//   message          {msg}      every server message except pong (errors included)
//   servererror      {code, message, fatal, request_id}
//   connectionerror  {message, code, reconnectable}   socket closed other than by close()

import {
  PING_INTERVAL_MS, PROTOCOL_VERSION, StatefulEmitter, signalingUrl,
} from './client.js';

// Closing errors of a device socket (same codes as for `join`; call errors are not fatal).
const DEVICE_FATAL_ERRORS = new Set([
  'message_too_large', 'unsupported_protocol', 'join_timeout', 'unauthorized',
  'token_expired', 'rate_limited',
]);

export class ZvonDevice extends StatefulEmitter {
  constructor({ url = signalingUrl(), token } = {}) {
    super();
    this.url = url;
    this.token = token;
    this.state = 'idle';
    this.identity = null;
    this.device = null;
    this.ws = null;
    this._pingTimer = null;
    this._nextRequestId = 1;
    this._fatal = null;
  }

  /** Opens the socket and registers; resolves with the `registered` message. */
  connect() {
    if (!['idle', 'closed', 'error'].includes(this.state)) throw new Error(`connect() in state ${this.state}`);
    this._fatal = null;
    this._setState('connecting');
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (err, value) => {
        if (settled) return;
        settled = true;
        if (err) reject(err); else resolve(value);
      };
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        this._setState('error');
        settle(new Error(`Cannot open ${this.url}: ${e.message}`));
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        this._send({ type: 'register', protocol: PROTOCOL_VERSION, token: this.token, request_id: 'register' });
        this._pingTimer = setInterval(() => this._send({ type: 'ping' }), PING_INTERVAL_MS);
      };
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { console.warn('zvon device: non-JSON frame', ev.data); return; }
        if (!msg || typeof msg !== 'object' || msg.type === 'pong') return;
        if (msg.type === 'registered') {
          this.identity = msg.identity ?? null;
          this.device = msg.device ?? null;
          this._setState('registered');
          this._emit('registered', { identity: this.identity, device: this.device, protocol: msg.protocol });
          settle(null, msg);
        }
        if (msg.type === 'error') {
          const fatal = DEVICE_FATAL_ERRORS.has(msg.code);
          if (fatal) this._fatal = msg;
          this._emit('servererror', { code: msg.code, message: msg.message ?? '', fatal, request_id: msg.request_id });
        }
        this._emit('message', { msg });
      };
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        this._stopPing();
        // close() already moved on (and may have opened nothing new yet): only settle.
        if (this.ws !== ws || this.state === 'closed') { settle(new Error('closed')); return; }
        this.ws = null;
        const wasRegistered = this.state === 'registered';
        const why = this._fatal
          ? `${this._fatal.code}: ${this._fatal.message ?? ''}`
          : (ev.reason ? `${ev.code} ${ev.reason}` : `code ${ev.code}`);
        const message = wasRegistered
          ? `Connection to the server was lost (${why}).`
          : `Could not register this device with ${this.url} (${why}).`;
        // Worth retrying: a drop or a server restart after a successful register. Not: a
        // refused token, or a normal close by the server (e.g. the same device registered
        // elsewhere), which would only make two tabs take turns.
        const reconnectable = wasRegistered && !this._fatal && ev.code !== 1000 && ev.code < 4000;
        this._setState('error');
        this._emit('connectionerror', { message, code: ev.code, reconnectable });
        settle(new Error(message));
      };
    });
  }

  /** Sends a message; returns false if the socket is not open. */
  send(msg) {
    return this._send(msg);
  }

  /** Sends with a fresh `request_id` and returns that id (null if not sent). */
  request(msg) {
    const request_id = `r${this._nextRequestId++}`;
    return this._send({ ...msg, request_id }) ? request_id : null;
  }

  /** Closes with a close frame, so the server drops this device at once. */
  close() {
    if (this.state === 'closed') return;
    this._setState('closed');
    this._stopPing();
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try { ws.close(1000); } catch { /* ignore */ }
    }
  }

  _send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }
}
