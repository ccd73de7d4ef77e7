//! `zvon-rawrelay`: the floor the benchmark measures Zvon against. A UDP relay that does
//! nothing but fan packets out: no ICE, no DTLS, no SRTP, no RTP parsing, no rewriting. It uses
//! the same syscall strategy as the SFU's workers (`recvmmsg`/`sendmmsg`, 32 datagrams per call,
//! one socket and thread per worker), so Zvon's CPU per forwarded packet divided by this one's is
//! the price of everything an SFU does beyond moving bytes.
//!
//! Protocol (text datagrams, answered `ok <what>`):
//! - `publish <room> <participant>`: later datagrams from this address go to the room's
//!   subscribers.
//! - `subscribe <room> <participant>`: this address receives the room's packets, except those of
//!   publishers with the same participant number (nobody receives their own media).
//! - `leave`: forget this address.
//!
//! Any other datagram from a publisher's address is media and is copied to every subscriber.
//! A room lives on one worker (port), like a room on one SFU worker.
//!
//! Counters go to stdout, one JSON line per `--stats-every` and a final line with
//! `"final":true` on SIGTERM/SIGINT: `received`, `forwarded` (datagrams sent to subscribers),
//! `dropped` (sends the kernel refused), `control`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

const BATCH: usize = 32;
const MAX_DATAGRAM: usize = 2048;
/// How long a worker blocks in `poll` before it looks at the stop flag again.
const POLL_MS: i32 = 100;

#[derive(Parser)]
#[command(
    name = "zvon-rawrelay",
    about = "Plain UDP fan-out relay: the benchmark's baseline"
)]
struct Args {
    /// Address to bind (IPv4).
    #[arg(long, default_value = "127.0.0.1")]
    bind: Ipv4Addr,
    /// First port; worker i uses port + i.
    #[arg(long, default_value_t = 7400)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    workers: u16,
    /// Seconds between stats lines (0: only the final one).
    #[arg(long, default_value_t = 1)]
    stats_every: u64,
}

#[derive(Default)]
struct Stats {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    control: AtomicU64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let stats = Arc::new(Stats::default());
    let mut threads = Vec::new();
    for i in 0..args.workers {
        let addr = SocketAddrV4::new(args.bind, args.port + i);
        let socket = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
        socket.set_nonblocking(true)?;
        let stats = stats.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("relay-{i}"))
                .spawn(move || Worker::new(socket, stats).run())?,
        );
    }
    println!(
        "{{\"listening\":\"{}:{}\",\"workers\":{}}}",
        args.bind, args.port, args.workers
    );
    let start = Instant::now();
    let mut next = start + Duration::from_secs(args.stats_every.max(1));
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if args.stats_every > 0 && Instant::now() >= next {
            next += Duration::from_secs(args.stats_every);
            print_stats(&stats, start, false);
        }
    }
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("zvon-rawrelay: worker failed: {e}"),
            Err(_) => eprintln!("zvon-rawrelay: worker panicked"),
        }
    }
    print_stats(&stats, start, true);
    Ok(())
}

fn print_stats(stats: &Stats, start: Instant, last: bool) {
    let line = format!(
        "{{\"t\":{:.1},\"received\":{},\"forwarded\":{},\"dropped\":{},\"control\":{},\"final\":{}}}",
        start.elapsed().as_secs_f64(),
        stats.received.load(Ordering::Relaxed),
        stats.forwarded.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        stats.control.load(Ordering::Relaxed),
        last
    );
    let mut out = io::stdout().lock();
    // Stats are best effort: a closed stdout must not stop the relay.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Subscriber {
    addr: libc::sockaddr_in,
    participant: u64,
}

#[derive(Default)]
struct Room {
    subscribers: Vec<Subscriber>,
}

enum Role {
    Publisher { room: usize, participant: u64 },
    Subscriber { room: usize },
}

struct Worker {
    socket: UdpSocket,
    stats: Arc<Stats>,
    rooms: Vec<Room>,
    room_index: HashMap<Vec<u8>, usize>,
    peers: HashMap<SocketAddr, Role>,
    bufs: Vec<[u8; MAX_DATAGRAM]>,
}

impl Worker {
    fn new(socket: UdpSocket, stats: Arc<Stats>) -> Self {
        Worker {
            socket,
            stats,
            rooms: Vec::new(),
            room_index: HashMap::new(),
            peers: HashMap::new(),
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
        }
    }

    fn run(mut self) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        while !STOP.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if n == 0 {
                continue;
            }
            // Drain what is queued, a batch at a time; bounded by the socket buffer's contents.
            loop {
                let (count, lens, froms) = match self.recv() {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.stats
                    .received
                    .fetch_add(count as u64, Ordering::Relaxed);
                self.forward(count, &lens, &froms);
                if count < BATCH {
                    break;
                }
            }
        }
        Ok(())
    }

    fn recv(&mut self) -> io::Result<(usize, [usize; BATCH], [Option<SocketAddr>; BATCH])> {
        // SAFETY: all-zero is a valid bit pattern for these plain C structs.
        let mut storages: [libc::sockaddr_in; BATCH] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            msgs[i].msg_hdr.msg_name = (&mut storages[i] as *mut libc::sockaddr_in).cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovecs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer refers to a live local or to our buffers, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut lens = [0usize; BATCH];
        let mut froms = [None; BATCH];
        for i in 0..n {
            lens[i] = msgs[i].msg_len as usize;
            if storages[i].sin_family as libc::c_int == libc::AF_INET {
                froms[i] = Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(storages[i].sin_addr.s_addr)),
                    u16::from_be(storages[i].sin_port),
                )));
            }
        }
        Ok((n, lens, froms))
    }

    /// Copies each media datagram of the batch to its room's subscribers, 32 datagrams per
    /// `sendmmsg`, straight from the receive buffers: no copy, no allocation.
    fn forward(
        &mut self,
        count: usize,
        lens: &[usize; BATCH],
        froms: &[Option<SocketAddr>; BATCH],
    ) {
        // SAFETY: as above, zeroed C structs.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut queued = 0usize;
        let mut forwarded = 0u64;
        let mut dropped = 0u64;
        // Control first: it may change the subscriber lists the send headers below point into.
        let mut media = [false; BATCH];
        for i in 0..count {
            let Some(from) = froms[i] else { continue };
            let publisher = matches!(self.peers.get(&from), Some(Role::Publisher { .. }));
            if publisher && !is_control(&self.bufs[i][..lens[i]]) {
                media[i] = true;
            } else {
                self.control(from, i, lens[i]);
            }
        }
        for i in 0..count {
            let Some(from) = froms[i].filter(|_| media[i]) else {
                continue;
            };
            let Some(&Role::Publisher {
                room,
                participant: sender,
            }) = self.peers.get(&from)
            else {
                continue;
            };
            iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_ptr() as *mut libc::c_void,
                iov_len: lens[i],
            };
            for sub in &self.rooms[room].subscribers {
                if sub.participant == sender {
                    continue;
                }
                msgs[queued].msg_hdr.msg_name = &sub.addr as *const libc::sockaddr_in as *mut _;
                msgs[queued].msg_hdr.msg_namelen =
                    size_of::<libc::sockaddr_in>() as libc::socklen_t;
                msgs[queued].msg_hdr.msg_iov = &mut iovecs[i];
                msgs[queued].msg_hdr.msg_iovlen = 1;
                queued += 1;
                if queued == BATCH {
                    let (s, d) = send_all(&self.socket, &mut msgs[..queued]);
                    forwarded += s;
                    dropped += d;
                    queued = 0;
                }
            }
        }
        if queued > 0 {
            let (s, d) = send_all(&self.socket, &mut msgs[..queued]);
            forwarded += s;
            dropped += d;
        }
        self.stats.forwarded.fetch_add(forwarded, Ordering::Relaxed);
        self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    /// A control datagram (or junk from an unknown address, which is ignored).
    fn control(&mut self, from: SocketAddr, buf: usize, len: usize) {
        let text = String::from_utf8_lossy(&self.bufs[buf][..len]).into_owned();
        let mut words = text.split_ascii_whitespace();
        let verb = words.next().unwrap_or("");
        let room_name = words.next().unwrap_or("").as_bytes().to_vec();
        let participant = words.next().and_then(|p| p.parse::<u64>().ok());
        let SocketAddr::V4(v4) = from else { return };
        let reply = match verb {
            "publish" | "subscribe" if !room_name.is_empty() => {
                self.forget(from);
                let next = self.rooms.len();
                let room = *self.room_index.entry(room_name).or_insert(next);
                if room == next {
                    self.rooms.push(Room::default());
                }
                // Without a participant number, the address is its own participant.
                let participant = participant.unwrap_or_else(|| addr_key(v4));
                if verb == "publish" {
                    self.peers
                        .insert(from, Role::Publisher { room, participant });
                } else {
                    self.rooms[room].subscribers.push(Subscriber {
                        addr: sockaddr(v4),
                        participant,
                    });
                    self.peers.insert(from, Role::Subscriber { room });
                }
                format!("ok {verb}")
            }
            "leave" => {
                self.forget(from);
                "ok leave".to_string()
            }
            _ => return,
        };
        self.stats.control.fetch_add(1, Ordering::Relaxed);
        // A lost reply makes the client ask again; nothing to do here.
        let _ = self.socket.send_to(reply.as_bytes(), from);
    }

    fn forget(&mut self, addr: SocketAddr) {
        if let Some(Role::Subscriber { room }) = self.peers.remove(&addr) {
            let SocketAddr::V4(v4) = addr else { return };
            let key = sockaddr(v4);
            self.rooms[room].subscribers.retain(|s| {
                s.addr.sin_addr.s_addr != key.sin_addr.s_addr || s.addr.sin_port != key.sin_port
            });
        }
    }
}

fn is_control(data: &[u8]) -> bool {
    data.starts_with(b"publish ") || data.starts_with(b"subscribe ") || data == b"leave"
}

fn addr_key(a: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port()) | (1 << 63)
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut out: libc::sockaddr_in = unsafe { zeroed() };
    out.sin_family = libc::AF_INET as libc::sa_family_t;
    out.sin_port = a.port().to_be();
    out.sin_addr = libc::in_addr {
        s_addr: u32::from(*a.ip()).to_be(),
    };
    out
}

/// Sends every message, waiting (bounded) for socket space when the kernel says `EAGAIN`.
/// Returns (sent, dropped): a destination the kernel refuses is skipped, not retried forever.
fn send_all(socket: &UdpSocket, msgs: &mut [libc::mmsghdr]) -> (u64, u64) {
    let mut at = 0usize;
    let mut sent = 0u64;
    let mut dropped = 0u64;
    let mut waits = 0u32;
    while at < msgs.len() {
        let rest = &mut msgs[at..];
        // SAFETY: the headers point at subscriber addresses and receive buffers that outlive
        // this call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                rest.as_mut_ptr(),
                rest.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock if waits < 10 => {
                    waits += 1;
                    let mut pfd = libc::pollfd {
                        fd: socket.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 10) };
                }
                io::ErrorKind::Interrupted => {}
                _ => {
                    dropped += 1;
                    at += 1;
                }
            }
            continue;
        }
        sent += n as u64;
        at += n as usize;
    }
    (sent, dropped)
}
