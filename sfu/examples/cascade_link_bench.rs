//! What one cascade hop costs: relayed RTP packets over a real `CascadeLink` on loopback
//! (encode with the send stamp, staging queue, audio-first queue, quinn encryption and UDP,
//! decode), against the same packets through `zvon-rawrelay` (the forwarding benchmark's
//! floor: recvmmsg/sendmmsg, no crypto) and over a plain UDP socket pair, in one run,
//! carriers interleaved round by round.
//!
//! Per carrier it prints one-way latency p50/p99 (sender to receiver, same clock) and CPU
//! time per packet:
//! * `bench` — this process: the sender and receiver loops (making, encoding and decoding
//!   each packet) and, for the QUIC link, **both ends of the link**;
//! * `relay` — the `zvon-rawrelay` process (its threads' run time from
//!   `/proc/PID/task/*/schedstat`, ns resolution): one receive and one send per packet;
//! * `null` — making, encoding and decoding a packet with no carrier at all, so that
//!   `QUIC bench − null` is what the link itself costs to send **and** receive one packet,
//!   to be set against what the raw relay costs to receive and send one.
//!
//! `cargo run --release -p zvon-sfu --example cascade_link_bench -- [packets] [pps] [rounds]`
//! (`RAWRELAY_BIN`, default `target/release/zvon-rawrelay`; without it the raw relay is
//! skipped.)

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zvon_sfu::cascade::datagram::{decode, encode_stamped};
use zvon_sfu::cascade::stamp::LinkClock;
use zvon_sfu::cascade::{CascadeConfig, Priority};
use zvon_sfu::relay::{FlowId, RelayPacket};

mod common;
use common::{delay_of, loopback_link, percentile, stamped};

fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// Run time of every thread of `pid` (the first field of each task's schedstat, ns).
fn process_run_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

struct Report {
    received: usize,
    latencies: Vec<Duration>,
    /// This process's CPU time.
    cpu: Duration,
    /// The raw relay's, for that carrier.
    relay_cpu: Option<Duration>,
}

impl Report {
    fn print(&mut self, name: &str, sent: usize) {
        self.latencies.sort();
        let relay = self.relay_cpu.map_or(String::new(), |c| {
            format!("  relay CPU/packet {:>5.2} us", per_packet(c, sent))
        });
        println!(
            "{name:<14} sent {sent:>7} received {:>7}  one-way p50 {:>8.1?} p99 {:>8.1?}  bench CPU/packet {:>6.2} us{relay}",
            self.received,
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            per_packet(self.cpu, sent),
        );
    }
}

fn per_packet(cpu: Duration, packets: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / packets.max(1) as f64
}

fn packet(seq: u64, start: Instant) -> RelayPacket {
    stamped(1, 7, seq, seq as u32 * 3000, 96, 1100, start)
}

/// Encodes packet `seq` as the gateway does (with its send stamp) into `buf`.
fn encode_packet(seq: usize, start: Instant, clock: &LinkClock, buf: &mut Vec<u8>) {
    let p = packet(seq as u64, start);
    encode_stamped(FlowId(1), &p, Some(clock.stamp(p.received)), buf);
}

fn latency_of(datagram: &[u8], start: Instant) -> Option<Duration> {
    decode(datagram)
        .ok()
        .and_then(|p| delay_of(p.payload, start))
}

/// The same work as the carriers' sender and receiver loops, with no carrier between.
fn null(packets: usize) -> Duration {
    let start = Instant::now();
    let clock = LinkClock::now();
    let mut buf = Vec::with_capacity(1500);
    let mut latencies = Vec::with_capacity(packets);
    let cpu = cpu_time();
    for seq in 0..packets {
        encode_packet(seq, start, &clock, &mut buf);
        let d = Bytes::copy_from_slice(&buf);
        latencies.push(latency_of(&d, start).unwrap_or_default());
    }
    std::hint::black_box(&latencies);
    cpu_time() - cpu
}

async fn quic(packets: usize, pps: usize) -> Report {
    let config = CascadeConfig::new("bench-cluster-secret-0123");
    let (tx, rx, _endpoints) = loopback_link(&config).await;
    let start = Instant::now();
    let cpu = cpu_time();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(packets);
        while latencies.len() < packets {
            match tokio::time::timeout(Duration::from_secs(2), rx.read_datagram()).await {
                Ok(Ok(d)) => latencies.extend(latency_of(&d, start)),
                _ => break,
            }
        }
        latencies
    });
    let clock = LinkClock::now();
    let mut buf = Vec::with_capacity(1500);
    let batch = (pps / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut seq = 0;
    while seq < packets {
        tick.tick().await;
        for _ in 0..batch.min(packets - seq) {
            encode_packet(seq, start, &clock, &mut buf);
            tx.send(Priority::Video, Bytes::copy_from_slice(&buf));
            seq += 1;
        }
    }
    let latencies = receiver.await.unwrap();
    Report {
        received: latencies.len(),
        latencies,
        cpu: cpu_time() - cpu,
        relay_cpu: None,
    }
}

/// Sends `packets` paced from `tx` to `to`, one `send_to` each (as the carriers' sender
/// loop), while a thread receives them on `rx`.
fn udp_through(
    tx: &UdpSocket,
    to: SocketAddr,
    rx: UdpSocket,
    packets: usize,
    pps: usize,
) -> (Vec<Duration>, Duration) {
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let start = Instant::now();
    let cpu = cpu_time();
    let receiver = std::thread::spawn(move || {
        let mut latencies = Vec::with_capacity(packets);
        let mut buf = [0u8; 2048];
        while latencies.len() < packets {
            match rx.recv(&mut buf) {
                Ok(n) => latencies.extend(latency_of(&buf[..n], start)),
                Err(_) => break,
            }
        }
        latencies
    });
    let clock = LinkClock::now();
    let batch = (pps / 100).max(1);
    let mut buf = Vec::with_capacity(1500);
    let mut seq = 0;
    let mut next = Instant::now();
    while seq < packets {
        next += Duration::from_millis(10);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for _ in 0..batch.min(packets - seq) {
            encode_packet(seq, start, &clock, &mut buf);
            let _ = tx.send_to(&buf, to);
            seq += 1;
        }
    }
    let latencies = receiver.join().unwrap();
    (latencies, cpu_time() - cpu)
}

fn udp(packets: usize, pps: usize) -> Report {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (latencies, cpu) = udp_through(&tx, to, rx, packets, pps);
    Report {
        received: latencies.len(),
        latencies,
        cpu,
        relay_cpu: None,
    }
}

/// A `zvon-rawrelay` of one worker on a free loopback port.
struct RawRelay {
    child: Child,
    addr: SocketAddr,
}

impl RawRelay {
    fn start(bin: &str) -> Option<Self> {
        // A free port: bind, note it, release it (the relay binds it right after).
        let port = UdpSocket::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--workers", "1", "--stats-every", "0"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("{bin}: {e}: the raw relay is skipped"))
            .ok()?;
        let relay = RawRelay {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // Wait until it answers.
        let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .ok()?;
        let mut buf = [0u8; 64];
        for _ in 0..50 {
            let _ = probe.send_to(b"leave", relay.addr);
            if probe.recv(&mut buf).is_ok() {
                return Some(relay);
            }
        }
        eprintln!("{bin} did not answer: the raw relay is skipped");
        None
    }

    /// Asks `verb` (publish/subscribe) for `socket` in a room of its own per round.
    fn join(&self, socket: &UdpSocket, verb: &str, room: usize, participant: u32) {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..20 {
            let msg = format!("{verb} bench{room} {participant}");
            socket.send_to(msg.as_bytes(), self.addr).unwrap();
            if let Ok(n) = socket.recv(&mut buf) {
                if buf[..n].starts_with(b"ok") {
                    return;
                }
            }
        }
        panic!("the raw relay did not answer {verb}");
    }

    fn run(&self, round: usize, packets: usize, pps: usize) -> Report {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        self.join(&rx, "subscribe", round, 2);
        self.join(&tx, "publish", round, 1);
        let relay = process_run_time(self.child.id());
        let (latencies, cpu) = udp_through(&tx, self.addr, rx, packets, pps);
        let relay_cpu = process_run_time(self.child.id()) - relay;
        let _ = tx.send_to(b"leave", self.addr);
        Report {
            received: latencies.len(),
            latencies,
            cpu,
            relay_cpu: Some(relay_cpu),
        }
    }
}

impl Drop for RawRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let packets = args.first().copied().unwrap_or(50_000);
    let pps = args.get(1).copied().unwrap_or(5_000);
    let rounds = args.get(2).copied().unwrap_or(3).max(1);
    println!(
        "{packets} packets of 1100-byte payload at {pps} packets/s, loopback, {rounds} round(s)"
    );
    let bin =
        std::env::var("RAWRELAY_BIN").unwrap_or_else(|_| "target/release/zvon-rawrelay".into());
    let raw = RawRelay::start(&bin);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut link_own, mut relay_own, mut ratio, mut path_ratio) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        println!("-- round {}", round + 1);
        let null_cpu = per_packet(null(packets), packets);
        let mut q = runtime.block_on(quic(packets, pps));
        q.print("QUIC cascade", packets);
        let link = per_packet(q.cpu, packets) - null_cpu;
        link_own.push(link);
        if let Some(raw) = &raw {
            let mut r = raw.run(round, packets, pps);
            r.print("zvon-rawrelay", packets);
            let relay = per_packet(r.relay_cpu.unwrap_or_default(), packets);
            relay_own.push(relay);
            ratio.push(link / relay);
            // The whole path, sender loop to receiver loop, the same work at both ends.
            path_ratio.push(per_packet(q.cpu, packets) / (per_packet(r.cpu, packets) + relay));
        }
        let mut u = udp(packets, pps);
        u.print("plain UDP", packets);
        println!("null (make, encode, decode; no carrier): {null_cpu:.2} us/packet");
    }
    println!(
        "medians of {rounds}: QUIC link's own CPU (bench - null, both ends) {:.2} us/packet",
        median(link_own)
    );
    if raw.is_some() {
        println!(
            "  zvon-rawrelay's CPU {:.2} us/packet; link / raw relay {:.2}; whole path QUIC / (UDP ends + raw relay) {:.2}",
            median(relay_own),
            median(ratio),
            median(path_ratio)
        );
    }
}
