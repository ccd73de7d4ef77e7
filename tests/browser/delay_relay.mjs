// A UDP relay that delays every datagram by a fixed time in each direction: the delay half
// of a bad mobile link (this kernel has no netem). shaped.mjs runs it inside the subscriber's
// network namespace and points the browser's media packets at it with an nftables DNAT, so
// the browser still believes it talks to the server, and the server sees the relay's address.
//
//   node delay_relay.mjs LISTEN_IP LISTEN_PORT SERVER_IP SERVER_PORT UP_PORT_BASE ONE_WAY_MS
//
// Each browser socket gets its own upstream socket, bound from UP_PORT_BASE up (the DNAT rule
// leaves those ports alone), so replies go back to the socket that sent. Prints `ready` once
// listening; exits when stdin closes (the test ended) or on SIGTERM.
import dgram from 'node:dgram';

const [listenIp, listenPort, serverIp, serverPort, upBase, oneWayMs] = process.argv.slice(2);
const DELAY = Number(oneWayMs);
const MAX_CLIENTS = 16;

/** A FIFO of datagrams released DELAY ms after they came in (constant delay keeps order). */
class DelayLine {
  constructor() {
    this.queue = [];
    this.timer = null;
  }

  push(send) {
    this.queue.push({ due: performance.now() + DELAY, send });
    if (!this.timer) this.arm();
  }

  arm() {
    const wait = Math.max(0, this.queue[0].due - performance.now());
    this.timer = setTimeout(() => this.release(), wait);
  }

  release() {
    this.timer = null;
    const now = performance.now();
    while (this.queue.length && this.queue[0].due <= now + 0.5) this.queue.shift().send();
    if (this.queue.length) this.arm();
  }
}

const down = new DelayLine();
const up = new DelayLine();
const listen = dgram.createSocket('udp4');
const clients = new Map();

function upstreamFor(rinfo) {
  const key = `${rinfo.address}:${rinfo.port}`;
  let c = clients.get(key);
  if (c) return c;
  if (clients.size >= MAX_CLIENTS) return null;
  const sock = dgram.createSocket('udp4');
  c = { sock, ready: false, pending: [] };
  clients.set(key, c);
  sock.on('message', (msg) => {
    down.push(() => listen.send(msg, rinfo.port, rinfo.address));
  });
  sock.bind(Number(upBase) + clients.size - 1, listenIp, () => {
    c.ready = true;
    for (const m of c.pending.splice(0)) sock.send(m, Number(serverPort), serverIp);
  });
  return c;
}

listen.on('message', (msg, rinfo) => {
  const c = upstreamFor(rinfo);
  if (!c) return;
  up.push(() => {
    if (c.ready) c.sock.send(msg, Number(serverPort), serverIp);
    else c.pending.push(msg);
  });
});

listen.bind(Number(listenPort), listenIp, () => console.log('ready'));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
