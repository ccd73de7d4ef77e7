//! The raw UDP relay (`zvon-rawrelay`) as a load-test target: the benchmark's floor. The same
//! scenario, pacing and media (the shared Opus clip, the synthetic VP8 source, the same send
//! stamps) go out as plain RTP over UDP, without ICE, DTLS or SRTP, so the relay's CPU per
//! forwarded packet is what moving the bytes costs and nothing else.
//!
//! A participant here has two sockets, like the two peer connections of a WebRTC participant:
//! one registered with `publish <room> <n>`, one with `subscribe <room> <n>`, where `n` is the
//! participant's number (the relay does not send anybody their own packets).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::net::UdpSocket;

use crate::client::sender::SentCounts;
use crate::client::{received_bitrate, Env, ParticipantResult, StreamResult};
use crate::measure::histogram::Histogram;
use crate::measure::latency::{now_micros, one_way_us};
use crate::measure::loss::StreamStats;
use crate::media::opus_source::{OpusClip, FRAME_MS, FRAME_SAMPLES};
use crate::media::stamp::{read_opus_stamp, read_vp8_stamp, stamp_opus};
use crate::media::video_source::{VideoConfig, Vp8Source};
use crate::progress::LiveCounters;
use crate::scenario::ParticipantPlan;

use super::{JoinRequest, Kind, SignalSession, Target, TargetError};

/// Payload types as a browser would offer them; the relay does not care.
const PT_OPUS: u8 = 111;
const PT_VP8: u8 = 96;
const REGISTER_TRIES: u32 = 50;
const REGISTER_WAIT: Duration = Duration::from_millis(100);
/// Same rule as the WebRTC sender: an overloaded tester skips ahead instead of bursting.
const MAX_BEHIND: Duration = Duration::from_millis(200);
const FLUSH_EVERY: Duration = Duration::from_millis(500);

pub struct RawTarget {
    relay: SocketAddr,
}

impl RawTarget {
    pub fn new(relay: SocketAddr) -> Self {
        RawTarget { relay }
    }
}

impl Target for RawTarget {
    fn name(&self) -> &str {
        "raw"
    }

    /// The relay has no signaling: participants of this target run [`run`] instead of the
    /// WebRTC client.
    fn connect(&self, _req: JoinRequest) -> BoxFuture<'static, Result<SignalSession, TargetError>> {
        Box::pin(async {
            Err(TargetError::new(
                "raw_no_signaling",
                "the raw relay target runs targets::raw::run",
            ))
        })
    }

    fn raw_relay(&self) -> Option<SocketAddr> {
        Some(self.relay)
    }
}

/// One participant against the raw relay; the counterpart of [`crate::client::run`].
pub async fn run(plan: ParticipantPlan, relay: SocketAddr, env: Env) -> ParticipantResult {
    // Raw packets carry no header extensions, so `audio_with_level` stays 0.
    let mut result = ParticipantResult::new(&plan);
    if let Err(reason) = session(&plan, relay, &env, &mut result).await {
        result.failure = Some(reason);
        LiveCounters::add(&env.live.failed, 1);
    }
    LiveCounters::add(&env.live.finished, 1);
    result
}

async fn session(
    plan: &ParticipantPlan,
    relay: SocketAddr,
    env: &Env,
    result: &mut ParticipantResult,
) -> Result<(), String> {
    let number = participant_number(&plan.identity);
    result.participant_id = Some(number.to_string());
    let sub = UdpSocket::bind(SocketAddr::new(env.bind_ip, 0))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let start = Instant::now();
    register(&sub, relay, &format!("subscribe {} {number}", plan.room)).await?;
    let publishing = plan.audio.is_some_and(|a| !a.muted) || plan.video.is_some();
    let publ = if publishing {
        let s = UdpSocket::bind(SocketAddr::new(env.bind_ip, 0))
            .await
            .map_err(|e| format!("bind: {e}"))?;
        register(&s, relay, &format!("publish {} {number}", plan.room)).await?;
        Some(s)
    } else {
        None
    };
    result.join_latency = Some(start.elapsed());
    LiveCounters::add(&env.live.connected, 1);

    let now = Instant::now();
    let seed: u64 = rand::random();
    let mut audio = plan
        .audio
        .filter(|a| !a.muted && publ.is_some())
        .map(|_| RawAudio::new(env.clip.clone(), seed, number << 1, now));
    let mut video = plan
        .video
        .as_ref()
        .filter(|_| publ.is_some())
        .map(|cfg| RawVideo::new(cfg, seed, number << 1 | 1, now));
    if audio.is_some() {
        result.sending.push(Kind::Audio);
    }
    if video.is_some() {
        result.sending.push(Kind::Video);
    }

    let mut recv = RawReceiver::new(env.epoch);
    let mut buf = vec![0u8; 2048];
    let mut stop = env.stop.clone();
    let mut flush_at = now + FLUSH_EVERY;
    let mut flushed = (0u64, 0u64, 0u64);
    let mut out = Vec::with_capacity(1300);
    loop {
        let now = Instant::now();
        if now >= env.end_at || *stop.borrow() {
            break;
        }
        if let Some(p) = &publ {
            if let Some(a) = audio.as_mut() {
                a.tick(p, relay, now, &mut result.sent, &mut out).await;
            }
            if let Some(v) = video.as_mut() {
                v.tick(p, relay, now, &mut result.sent, &mut out).await;
            }
        }
        if now >= flush_at {
            flush_at = now + FLUSH_EVERY;
            flush(&env.live, &mut flushed, &result.sent, &recv);
        }
        let mut next = flush_at.min(env.end_at);
        if let Some(a) = &audio {
            next = next.min(a.next_at);
        }
        if let Some(v) = &video {
            next = next.min(v.next_at);
        }
        tokio::select! {
            r = sub.recv_from(&mut buf) => {
                if let Ok((n, _)) = r {
                    recv.on_datagram(&buf[..n]);
                    // Drain what else is queued without waking the scheduler per packet.
                    while let Ok((n, _)) = sub.try_recv_from(&mut buf) {
                        recv.on_datagram(&buf[..n]);
                    }
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => break,
        }
    }
    flush(&env.live, &mut flushed, &result.sent, &recv);
    // Best effort: the relay forgets the sockets anyway when the run ends.
    let _ = sub.send_to(b"leave", relay).await;
    if let Some(p) = &publ {
        let _ = p.send_to(b"leave", relay).await;
    }
    recv.finish(result);
    Ok(())
}

/// Sends `msg` until the relay answers `ok …` (bounded).
async fn register(socket: &UdpSocket, relay: SocketAddr, msg: &str) -> Result<(), String> {
    let mut buf = [0u8; 64];
    for _ in 0..REGISTER_TRIES {
        socket
            .send_to(msg.as_bytes(), relay)
            .await
            .map_err(|e| format!("relay_send: {e}"))?;
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(REGISTER_WAIT, socket.recv_from(&mut buf)).await
        {
            if from == relay && buf[..n].starts_with(b"ok ") {
                return Ok(());
            }
        }
    }
    Err("relay_register_timeout".into())
}

/// FNV-1a of the identity, 31 bits: the participant's streams are SSRC `n << 1` (audio) and
/// `n << 1 | 1` (video), so a receiver knows who sent a stream without any signaling.
fn participant_number(identity: &str) -> u32 {
    let h = identity.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h as u32) >> 1
}

/// A 12-byte RTP header (no CSRC, no extension) followed by `payload`.
fn rtp_packet(
    out: &mut Vec<u8>,
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &[u8],
) {
    out.clear();
    out.push(0x80);
    out.push(pt | if marker { 0x80 } else { 0 });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

struct RawAudio {
    clip: Arc<OpusClip>,
    pos: usize,
    seq: u16,
    ts: u32,
    ssrc: u32,
    next_at: Instant,
    buf: Vec<u8>,
}

impl RawAudio {
    fn new(clip: Arc<OpusClip>, seed: u64, ssrc: u32, now: Instant) -> Self {
        RawAudio {
            pos: (seed >> 8) as usize % clip.frames.len().max(1),
            clip,
            seq: seed as u16,
            ts: (seed >> 16) as u32,
            ssrc,
            next_at: now,
            buf: Vec::with_capacity(256),
        }
    }

    async fn tick(
        &mut self,
        socket: &UdpSocket,
        relay: SocketAddr,
        now: Instant,
        sent: &mut SentCounts,
        out: &mut Vec<u8>,
    ) {
        while self.next_at <= now {
            if now - self.next_at > MAX_BEHIND {
                self.next_at = now;
            }
            self.next_at += Duration::from_millis(FRAME_MS);
            let Some(frame) = self.clip.frames.get(self.pos) else {
                return;
            };
            self.pos = (self.pos + 1) % self.clip.frames.len();
            self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
            stamp_opus(&frame.packet, now_micros(), &mut self.buf);
            rtp_packet(out, PT_OPUS, false, self.seq, self.ts, self.ssrc, &self.buf);
            if socket.send_to(out, relay).await.is_ok() {
                sent.audio_packets += 1;
                sent.bytes += self.buf.len() as u64;
            }
            self.seq = self.seq.wrapping_add(1);
        }
    }
}

struct RawVideo {
    source: Vp8Source,
    interval: Duration,
    ts_step: u32,
    seq: u16,
    ts: u32,
    ssrc: u32,
    next_at: Instant,
    payloads: Vec<Vec<u8>>,
}

impl RawVideo {
    fn new(cfg: &VideoConfig, seed: u64, ssrc: u32, now: Instant) -> Self {
        RawVideo {
            source: Vp8Source::new(cfg, seed as u16),
            interval: cfg.frame_interval(),
            ts_step: 90_000 / cfg.fps.max(1),
            seq: (seed >> 20) as u16,
            ts: (seed >> 32) as u32,
            ssrc,
            next_at: now,
            payloads: Vec::new(),
        }
    }

    async fn tick(
        &mut self,
        socket: &UdpSocket,
        relay: SocketAddr,
        now: Instant,
        sent: &mut SentCounts,
        out: &mut Vec<u8>,
    ) {
        while self.next_at <= now {
            if now - self.next_at > MAX_BEHIND {
                self.next_at = now;
            }
            self.next_at += self.interval;
            self.ts = self.ts.wrapping_add(self.ts_step);
            self.payloads.clear();
            let key = self.source.next_frame(now_micros(), &mut self.payloads);
            let last = self.payloads.len().saturating_sub(1);
            for (i, p) in self.payloads.iter().enumerate() {
                rtp_packet(out, PT_VP8, i == last, self.seq, self.ts, self.ssrc, p);
                if socket.send_to(out, relay).await.is_ok() {
                    sent.video_packets += 1;
                    sent.bytes += p.len() as u64;
                }
                self.seq = self.seq.wrapping_add(1);
            }
            sent.video_frames += 1;
            sent.keyframes += u64::from(key);
        }
    }
}

struct RawStream {
    ssrc: u32,
    kind: Kind,
    /// Extended sequence number of the last packet (16-bit RTP seq + rollovers).
    last_seq: u64,
    stats: StreamStats,
    keyframes: u64,
}

struct RawReceiver {
    epoch: Instant,
    streams: Vec<RawStream>,
    latency: Histogram,
    unstamped: u64,
}

impl RawReceiver {
    fn new(epoch: Instant) -> Self {
        RawReceiver {
            epoch,
            streams: Vec::new(),
            latency: Histogram::default(),
            unstamped: 0,
        }
    }

    fn on_datagram(&mut self, d: &[u8]) {
        let Some((pt, seq, ts, ssrc, payload)) = parse_rtp(d) else {
            return;
        };
        let kind = match pt {
            PT_OPUS => Kind::Audio,
            PT_VP8 => Kind::Video,
            _ => return,
        };
        let now = Instant::now();
        let idx = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                let clock = if kind == Kind::Audio { 48_000 } else { 90_000 };
                // Start high enough that a reordered first packet cannot go below zero.
                let first = (1u64 << 32) + u64::from(seq);
                self.streams.push(RawStream {
                    ssrc,
                    kind,
                    last_seq: first,
                    stats: StreamStats::new(clock, first, now),
                    keyframes: 0,
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[idx];
        let delta = seq.wrapping_sub(s.last_seq as u16) as i16;
        let ext = s.last_seq.wrapping_add_signed(i64::from(delta));
        if delta > 0 {
            s.last_seq = ext;
        }
        let arrival_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        s.stats.on_packet(ext, ts, arrival_us, payload.len(), now);
        let stamp = match kind {
            Kind::Audio => read_opus_stamp(payload),
            Kind::Video => read_vp8_stamp(payload).map(|(us, key)| {
                s.keyframes += u64::from(key);
                us
            }),
        };
        match stamp.and_then(|sent| one_way_us(sent, now_micros())) {
            Some(us) => self.latency.record(us),
            None => self.unstamped += 1,
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.streams.iter().fold((0, 0), |(e, r), s| {
            (e + s.stats.expected(), r + s.stats.received)
        })
    }

    fn finish(self, result: &mut ParticipantResult) {
        result.streams = self
            .streams
            .iter()
            .map(|s| {
                let from = (s.ssrc >> 1).to_string();
                StreamResult::new(from, "peer", s.kind, true, &s.stats, s.keyframes)
            })
            .collect();
        result.recv_bitrate_bps = received_bitrate(self.streams.iter().map(|s| &s.stats));
        result.unstamped = self.unstamped;
        result.latency = self.latency;
    }
}

/// (payload type, seq, timestamp, SSRC, payload) of an RTP packet; `None` for anything else.
fn parse_rtp(d: &[u8]) -> Option<(u8, u16, u32, u32, &[u8])> {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(d[0] & 0x0f) * 4;
    let mut at = 12 + csrc;
    if d[0] & 0x10 != 0 {
        let ext = d.get(at + 2..at + 4)?;
        at += 4 + usize::from(u16::from_be_bytes([ext[0], ext[1]])) * 4;
    }
    let payload = d.get(at..)?;
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ts = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    Some((d[1] & 0x7f, seq, ts, ssrc, payload))
}

fn flush(
    live: &LiveCounters,
    flushed: &mut (u64, u64, u64),
    sent: &SentCounts,
    recv: &RawReceiver,
) {
    let (expected, received) = recv.totals();
    LiveCounters::add(&live.packets_sent, sent.packets().saturating_sub(flushed.0));
    LiveCounters::add(&live.packets_received, received.saturating_sub(flushed.1));
    LiveCounters::add(&live.packets_expected, expected.saturating_sub(flushed.2));
    *flushed = (sent.packets(), received, expected);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_round_trip_keeps_header_and_payload() {
        let mut out = Vec::new();
        rtp_packet(
            &mut out,
            PT_VP8,
            true,
            65_535,
            90_000,
            0xdead_beef,
            b"frame",
        );
        let (pt, seq, ts, ssrc, payload) = parse_rtp(&out).expect("valid RTP");
        assert_eq!((pt, seq, ts, ssrc), (PT_VP8, 65_535, 90_000, 0xdead_beef));
        assert_eq!(payload, b"frame");
        assert!(parse_rtp(b"subscribe room 1").is_none());
    }

    #[test]
    fn sequence_rollover_is_not_loss() {
        let mut r = RawReceiver::new(Instant::now());
        let mut out = Vec::new();
        for i in 0..10u16 {
            let seq = 65_530u16.wrapping_add(i);
            rtp_packet(&mut out, PT_OPUS, false, seq, 0, 7, &[0x78, 0, 0]);
            r.on_datagram(&out);
        }
        let (expected, received) = r.totals();
        assert_eq!((expected, received), (10, 10));
    }
}
