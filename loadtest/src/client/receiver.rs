//! The subscriber side's accounting: one entry per received SSRC (loss, jitter, bytes), one
//! latency histogram per participant, and which publisher each stream belongs to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use str0m::media::{MediaKind, Mid};
use str0m::rtp::RtpPacket;
use str0m::Rtc;

use crate::measure::histogram::Histogram;
use crate::measure::latency::{now_micros, one_way_us};
use crate::measure::loss::StreamStats;
use crate::media::stamp::{read_opus_stamp, read_vp8_stamp};
use crate::targets::{Kind, RemoteTrack};

use super::light::{extend_seq, RtpHead};
use super::peer::kind_of_pt;
use super::view::View;

pub struct RecvStream {
    pub ssrc: u32,
    pub participant: Arc<str>,
    /// The published track it carries (empty when no offer named its m-line).
    pub track_id: Arc<str>,
    /// The publisher's role as the view sees it (`teacher`, `student`, `peer`).
    pub source: &'static str,
    pub kind: Kind,
    pub stats: StreamStats,
    pub keyframes: u64,
    /// The highest extended sequence number seen, to extend a light receiver's plain headers.
    last_seq: u64,
}

/// What a subscriber offer says an m-line carries.
struct OfferedTrack {
    participant: Arc<str>,
    /// The publisher's role as the view sees it.
    source: &'static str,
    kind: Kind,
    track_id: Arc<str>,
}

pub struct Receiver {
    epoch: Instant,
    pub streams: Vec<RecvStream>,
    /// From the subscriber offers.
    tracks: HashMap<Mid, OfferedTrack>,
    pub latency: Histogram,
    /// Latency again, per (publisher role, kind): a handful of entries.
    pub latency_by_source: Vec<(&'static str, Kind, Histogram)>,
    pub unstamped: u64,
    /// Audio packets that arrived with the ssrc-audio-level extension.
    pub audio_with_level: u64,
}

impl Receiver {
    pub fn new(epoch: Instant) -> Self {
        Receiver {
            epoch,
            streams: Vec::new(),
            tracks: HashMap::new(),
            latency: Histogram::default(),
            latency_by_source: Vec::new(),
            unstamped: 0,
            audio_with_level: 0,
        }
    }

    pub fn on_offer(&mut self, tracks: &[RemoteTrack], view: &View) {
        for t in tracks {
            self.tracks.insert(
                Mid::from(t.mid.as_str()),
                OfferedTrack {
                    participant: Arc::from(t.participant_id.as_str()),
                    source: view.role_of(&t.participant_id),
                    kind: t.kind,
                    track_id: Arc::from(t.track_id.as_str()),
                },
            );
        }
    }

    pub fn on_rtp(&mut self, rtc: &mut Rtc, pkt: RtpPacket) {
        let ssrc = *pkt.header.ssrc;
        let idx = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                let Some(stream) = self.new_stream(rtc, &pkt) else {
                    return;
                };
                self.streams.push(stream);
                self.streams.len() - 1
            }
        };
        let arrival_us = pkt
            .timestamp
            .saturating_duration_since(self.epoch)
            .as_micros() as u64;
        let s = &mut self.streams[idx];
        s.stats.on_packet(
            *pkt.seq_no,
            pkt.header.timestamp,
            arrival_us,
            pkt.payload.len(),
            pkt.timestamp,
        );
        s.last_seq = s.last_seq.max(*pkt.seq_no);
        self.read_stamp(idx, &pkt);
    }

    /// A light receiver's datagram, from its plain header: counted here when its stream is
    /// known. `false` when str0m must see it: a stream's first packet (str0m names its m-line
    /// and track), which [`Receiver::on_rtp`] then counts.
    pub fn on_head(&mut self, head: &RtpHead, len: usize, now: Instant) -> bool {
        let Some(s) = self.streams.iter_mut().find(|s| s.ssrc == head.ssrc) else {
            return false;
        };
        let seq = extend_seq(s.last_seq, head.seq);
        s.last_seq = s.last_seq.max(seq);
        let arrival_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        s.stats.on_packet(seq, head.timestamp, arrival_us, len, now);
        true
    }

    /// A light receiver's decrypted packet: only its send stamp is read when its header was
    /// counted already.
    pub fn on_sampled_rtp(&mut self, rtc: &mut Rtc, pkt: RtpPacket) {
        let ssrc = *pkt.header.ssrc;
        match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(idx) => self.read_stamp(idx, &pkt),
            None => self.on_rtp(rtc, pkt),
        }
    }

    fn read_stamp(&mut self, idx: usize, pkt: &RtpPacket) {
        let s = &mut self.streams[idx];
        let stamp = match s.kind {
            Kind::Audio => {
                self.audio_with_level += u64::from(pkt.header.ext_vals.audio_level.is_some());
                read_opus_stamp(&pkt.payload)
            }
            Kind::Video => read_vp8_stamp(&pkt.payload).map(|(us, key)| {
                s.keyframes += u64::from(key);
                us
            }),
        };
        let (source, kind) = (s.source, s.kind);
        match stamp.and_then(|sent| one_way_us(sent, now_micros())) {
            Some(us) => {
                self.latency.record(us);
                let i = match self
                    .latency_by_source
                    .iter()
                    .position(|(r, k, _)| *r == source && *k == kind)
                {
                    Some(i) => i,
                    None => {
                        self.latency_by_source
                            .push((source, kind, Histogram::default()));
                        self.latency_by_source.len() - 1
                    }
                };
                self.latency_by_source[i].2.record(us);
            }
            None => self.unstamped += 1,
        }
    }

    fn new_stream(&self, rtc: &mut Rtc, pkt: &RtpPacket) -> Option<RecvStream> {
        let ssrc = pkt.header.ssrc;
        let mid = rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
        let (participant, source, kind, track_id) = match mid.and_then(|m| self.tracks.get(&m)) {
            Some(t) => (t.participant.clone(), t.source, t.kind, t.track_id.clone()),
            None => {
                let kind = match kind_of_pt(rtc, pkt.header.payload_type)? {
                    MediaKind::Audio => Kind::Audio,
                    MediaKind::Video => Kind::Video,
                };
                (Arc::from("?"), "unknown", kind, Arc::from(""))
            }
        };
        let clock = match kind {
            Kind::Audio => 48_000,
            Kind::Video => 90_000,
        };
        Some(RecvStream {
            ssrc: *ssrc,
            participant,
            track_id,
            source,
            kind,
            stats: StreamStats::new(clock, *pkt.seq_no, pkt.timestamp),
            keyframes: 0,
            last_seq: *pkt.seq_no,
        })
    }

    /// The tracks some subscriber offer gave an m-line.
    pub fn offered_tracks(&self) -> HashSet<&str> {
        self.tracks.values().map(|t| &*t.track_id).collect()
    }

    pub fn totals(&self) -> (u64, u64) {
        self.streams.iter().fold((0, 0), |(e, r), s| {
            (e + s.stats.expected(), r + s.stats.received)
        })
    }
}
