//! Cubic against BBR on one cascade link carrying a lecture-like mix: many audio flows and a
//! few video layers, through whatever the caller made of the network (run it inside a network
//! namespace whose loopback has tbf and an nftables random-drop rule:
//! `scripts/bench/cascade_congestion.sh`). Both controllers run in one process, alternating,
//! on the same shaped path.
//!
//! Per controller and round it prints what reached the far end of each class (audio, video),
//! one-way latency p50/p99 per class, what the audio-first send queue dropped because the
//! controller did not let it out, and quinn's own loss count and congestion window.
//!
//! `cargo run --example cascade_congestion_bench -- [seconds] [video kbit/s] [audio flows] [rounds]`

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zvon_sfu::cascade::datagram::{decode, encode};
use zvon_sfu::cascade::{CascadeConfig, Congestion, Priority};
use zvon_sfu::relay::{FlowId, RelayPacket};

mod common;
use common::{delay_of, loopback_link, percentile, stamped};

const VIDEO_PAYLOAD: usize = 1100;
const AUDIO_PAYLOAD: usize = 100;

fn packet(flow: u32, seq: u64, len: usize, start: Instant) -> RelayPacket {
    stamped(flow, flow, seq, seq as u32 * 960, 111, len, start)
}

#[derive(Default)]
struct Class {
    sent: usize,
    latencies: Vec<Duration>,
}

impl Class {
    fn line(&mut self, name: &str) -> String {
        self.latencies.sort();
        format!(
            "{name} {:>6}/{:<6} ({:>6.2} %) p50 {:>7.1?} p99 {:>7.1?}",
            self.latencies.len(),
            self.sent,
            100.0 * self.latencies.len() as f64 / self.sent.max(1) as f64,
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
        )
    }
}

async fn run(congestion: Congestion, seconds: u64, video_kbps: u64, audio_flows: u32) -> String {
    let mut config = CascadeConfig::new("bench-cluster-secret-0123");
    config.congestion = congestion;
    let (tx, rx, _endpoints) = loopback_link(&config).await;
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let (mut audio, mut video) = (vec![], vec![]);
        while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(2), rx.read_datagram()).await
        {
            if let Ok(p) = decode(&d) {
                let Some(l) = delay_of(p.payload, start) else {
                    continue;
                };
                if p.flow.0 >= 1000 {
                    video.push(l);
                } else {
                    audio.push(l);
                }
            }
        }
        (audio, video)
    });
    // Every 10 ms: half the audio flows send (20 ms packets), and the video's share.
    let video_per_tick = (video_kbps * 1000 / 8 / 100) as usize / VIDEO_PAYLOAD;
    let (mut a, mut v) = (Class::default(), Class::default());
    let mut buf = Vec::with_capacity(1500);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut cwnd_max = 0u64;
    for t in 0..seconds * 100 {
        let seq = t;
        tick.tick().await;
        for f in (0..audio_flows).filter(|f| u64::from(*f) % 2 == t % 2) {
            encode(
                FlowId(1 + f),
                &packet(1 + f, seq, AUDIO_PAYLOAD, start),
                &mut buf,
            );
            tx.send(Priority::Audio, Bytes::copy_from_slice(&buf));
            a.sent += 1;
        }
        for i in 0..video_per_tick {
            let flow = 1000 + (i % 3) as u32;
            encode(
                FlowId(flow),
                &packet(flow, seq, VIDEO_PAYLOAD, start),
                &mut buf,
            );
            tx.send(Priority::Video, Bytes::copy_from_slice(&buf));
            v.sent += 1;
        }
        if t % 10 == 0 {
            cwnd_max = cwnd_max.max(tx.connection_stats().path.cwnd);
        }
    }
    let path = tx.connection_stats().path;
    let (audio, video) = receiver.await.unwrap();
    a.latencies = audio;
    v.latencies = video;
    let s = &config.stats;
    format!(
        "{:<5} {} | {} | queue dropped audio {} video {} | quinn lost {} ({} congestion events) | cwnd max {} KiB | rtt {:?}",
        format!("{congestion:?}"),
        a.line("audio"),
        v.line("video"),
        s.dropped_audio.load(Ordering::Relaxed),
        s.dropped_video.load(Ordering::Relaxed),
        path.lost_packets,
        path.congestion_events,
        cwnd_max / 1024,
        path.rtt,
    )
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = args.first().copied().unwrap_or(15);
    let video_kbps = args.get(1).copied().unwrap_or(12_000);
    let audio_flows = args.get(2).copied().unwrap_or(40) as u32;
    let rounds = args.get(3).copied().unwrap_or(2);
    println!(
        "{seconds} s per run: {audio_flows} audio flows (50 pps, {AUDIO_PAYLOAD} B) + video \
         {video_kbps} kbit/s ({VIDEO_PAYLOAD} B), {rounds} rounds, alternating"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 1..=rounds {
        for c in [Congestion::Cubic, Congestion::Bbr] {
            let line = runtime.block_on(run(c, seconds, video_kbps, audio_flows));
            println!("round {round} {line}");
        }
    }
}
