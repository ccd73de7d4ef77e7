//! What one cascade hop costs: relayed RTP packets over a real `CascadeLink` on loopback
//! (encode, staging queue, audio-first queue, quinn encryption and UDP, decode), against the
//! same bytes over a plain UDP socket pair, in one run.
//!
//! Prints, for each carrier: packets, one-way latency p50/p99 (sender to receiver, same
//! clock) and process CPU time per packet (both ends in this process, so it is the cost of
//! sending *and* receiving one packet).
//!
//! `cargo run --release -p zvon-sfu --example cascade_link_bench -- [packets] [pps]`

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zvon_sfu::cascade::datagram::{decode, encode};
use zvon_sfu::cascade::{server_endpoint, CascadeConfig, CascadeLink, Priority};
use zvon_sfu::relay::{FlowId, RelayPacket};

fn cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
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
    let mut payload = vec![0u8; 1100];
    payload[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
    RelayPacket {
        flow: FlowId(1),
        source: 7,
        seq,
        ts: seq as u32 * 3000,
        pt: 96,
        marker: false,
        audio_level: None,
        voice_activity: None,
        video_orientation: None,
        keyframe: None,
        vp8: None,
        received: Instant::now(),
        payload: Arc::from(payload),
    }
}

fn latency_of(payload: &[u8], start: Instant) -> Duration {
    let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
    start.elapsed().saturating_sub(Duration::from_nanos(sent))
}

async fn quic(packets: usize, pps: usize) -> Report {
    let config = CascadeConfig::new("bench-cluster-secret-0123");
    let endpoint = server_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), &config).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let c = config.clone();
    let accept = tokio::spawn(async move {
        let incoming = endpoint.accept().await.unwrap();
        let link = CascadeLink::accept(incoming, &c).await.unwrap();
        (link, endpoint)
    });
    let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let (tx, _rx) = CascadeLink::connect(&client, addr, &config, "a")
        .await
        .unwrap();
    let ((rx, _c, _), _endpoint) = accept.await.unwrap();
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
