//! What one cascade hop costs: relayed RTP packets over a real `CascadeLink` on loopback
//! (encode, staging queue, audio-first queue, quinn encryption and UDP, decode), against the
//! same bytes over a plain UDP socket pair, in one run.
//!
//! Prints, for each carrier: packets, one-way latency p50/p99 (sender to receiver, same
//! clock) and process CPU time per packet (both ends in this process, so it is the cost of
//! sending *and* receiving one packet).
//!
//! `cargo run --release -p zvon-sfu --example cascade_link_bench -- [packets] [pps]`

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zvon_sfu::cascade::datagram::{decode, encode};
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

struct Report {
    name: &'static str,
    received: usize,
    latencies: Vec<Duration>,
    cpu: Duration,
}

impl Report {
    fn print(&mut self, sent: usize) {
        self.latencies.sort();
        println!(
            "{:<14} sent {sent:>7} received {:>7}  one-way p50 {:>8.1?} p99 {:>8.1?}  CPU/packet {:>6.2} us",
            self.name,
            self.received,
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            self.cpu.as_secs_f64() * 1e6 / sent as f64,
        );
    }
}

fn packet(seq: u64, start: Instant) -> RelayPacket {
    stamped(1, 7, seq, seq as u32 * 3000, 96, 1100, start)
}

fn latency_of(payload: &[u8], start: Instant) -> Duration {
    delay_of(payload, start).unwrap_or_default()
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
                Ok(Ok(d)) => {
                    if let Ok(p) = decode(&d) {
                        latencies.push(latency_of(p.payload, start));
                    }
                }
                _ => break,
            }
        }
        latencies
    });
    let mut buf = Vec::with_capacity(1500);
    let batch = (pps / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut seq = 0;
    while seq < packets {
        tick.tick().await;
        for _ in 0..batch.min(packets - seq) {
            encode(FlowId(1), &packet(seq as u64, start), &mut buf);
            tx.send(Priority::Video, Bytes::copy_from_slice(&buf));
            seq += 1;
        }
    }
    let latencies = receiver.await.unwrap();
    Report {
        name: "QUIC cascade",
        received: latencies.len(),
        latencies,
        cpu: cpu_time() - cpu,
    }
}

fn udp(packets: usize, pps: usize) -> Report {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let addr = rx.local_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let cpu = cpu_time();
    let receiver = std::thread::spawn(move || {
        let mut latencies = Vec::with_capacity(packets);
        let mut buf = [0u8; 2048];
        while latencies.len() < packets {
            match rx.recv(&mut buf) {
                Ok(n) => {
                    if let Ok(p) = decode(&buf[..n]) {
                        latencies.push(latency_of(p.payload, start));
                    }
                }
                Err(_) => break,
            }
        }
        latencies
    });
    let batch = (pps / 100).max(1);
    let mut buf = Vec::with_capacity(1500);
    let mut seq = 0;
    let mut next = Instant::now();
    while seq < packets {
        next += Duration::from_millis(10);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        for _ in 0..batch.min(packets - seq) {
            encode(FlowId(1), &packet(seq as u64, start), &mut buf);
            let _ = tx.send_to(&buf, addr);
            seq += 1;
        }
    }
    let latencies = receiver.join().unwrap();
    Report {
        name: "plain UDP",
        received: latencies.len(),
        latencies,
        cpu: cpu_time() - cpu,
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let packets = args.first().copied().unwrap_or(50_000);
    let pps = args.get(1).copied().unwrap_or(5_000);
    println!("{packets} packets of 1100-byte payload at {pps} packets/s, loopback");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut q = runtime.block_on(quic(packets, pps));
    let mut u = udp(packets, pps);
    q.print(packets);
    u.print(packets);
}
