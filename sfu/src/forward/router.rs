//! Rooms of one worker: who publishes which track, who receives it, and in which state.
//!
//! A [`Track`] is what a publisher sends; a [`Downtrack`] is one subscriber's copy of it,
//! with its own m-line, payload-type map and [`RtpRewriter`]. Downtracks move through
//! negotiation (`Pending` → `Offered` → `Active`, and `Closing` when the track goes); the
//! edge carries out the SDP part and reports back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use slab::Slab;
use str0m::media::Mid;

use super::keyframe_requests::KeyframeRequestThrottle;
use super::rtp_rewriter::{Rewritten, RtpRewriter, SourceId};
use crate::api::TrackKind;

/// A participant slot on this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u32);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackKey(pub u32);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DowntrackKey(pub u32);

#[derive(Debug)]
pub struct Track {
    pub publisher: PeerKey,
    pub publisher_mid: Mid,
    pub kind: TrackKind,
    pub muted: bool,
    clock_rate: u32,
    downtracks: Vec<DowntrackKey>,
    keyframe_throttle: KeyframeRequestThrottle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DowntrackState {
    /// Needs an m-line in the next subscriber offer.
    Pending,
    /// In an offer that is not answered yet.
    Offered(Mid),
    /// Negotiated; packets flow. `pt_map` maps publisher payload types to the subscriber's.
    Active { mid: Mid, pt_map: Vec<(u8, u8)> },
    /// The track is gone; its m-line must be stopped in the next offer.
    Closing(Mid),
}

#[derive(Debug)]
pub struct Downtrack {
    pub subscriber: PeerKey,
    /// `None` once the track is gone.
    pub track: Option<TrackKey>,
    pub kind: TrackKind,
    pub publisher: PeerKey,
    pub state: DowntrackState,
    rewriter: RtpRewriter,
}

#[derive(Debug)]
struct Member {
    room: String,
    can_subscribe: bool,
    tracks: Vec<TrackKey>,
    downtracks: Vec<DowntrackKey>,
}

/// One incoming RTP packet, already decrypted and attributed to a track by the edge.
#[derive(Debug, Clone, Copy)]
pub struct IncomingRtp {
    pub track: TrackKey,
    pub source: SourceId,
    pub seq: u64,
    pub ts: u32,
    pub pt: u8,
}

/// The packet must go to `subscriber` on `mid` with these header values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub subscriber: PeerKey,
    pub mid: Mid,
    pub pt: u8,
    pub seq: u64,
    pub ts: u32,
}

/// Ask `publisher` for a keyframe on `mid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeRequest {
    pub publisher: PeerKey,
    pub mid: Mid,
}

/// Result of a subscriber's keyframe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeDecision {
    Send(KeyframeRequest),
    Suppressed,
    UnknownMid,
}

pub struct Router {
    members: HashMap<PeerKey, Member>,
    rooms: HashMap<String, Vec<PeerKey>>,
    tracks: Slab<Track>,
    downtracks: Slab<Downtrack>,
    needs_negotiation: Vec<PeerKey>,
    keyframe_interval: Duration,
    next_seq_seed: u32,
}

impl Router {
    pub fn new(keyframe_interval: Duration) -> Self {
        Router {
            members: HashMap::new(),
            rooms: HashMap::new(),
            tracks: Slab::new(),
            downtracks: Slab::new(),
            needs_negotiation: Vec::new(),
            keyframe_interval,
            next_seq_seed: 0x1234,
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn track(&self, key: TrackKey) -> Option<&Track> {
        self.tracks.get(key.0 as usize)
    }

    pub fn downtrack(&self, key: DowntrackKey) -> Option<&Downtrack> {
        self.downtracks.get(key.0 as usize)
    }

    /// Subscribers whose offer must be redone; each listed once.
    pub fn take_needs_negotiation(&mut self) -> Vec<PeerKey> {
        std::mem::take(&mut self.needs_negotiation)
    }

    fn mark_needs_negotiation(&mut self, peer: PeerKey) {
        if !self.needs_negotiation.contains(&peer) {
            self.needs_negotiation.push(peer);
        }
    }

    /// Joins `peer` to `room` and gives it a downtrack for every track already there.
    pub fn add_participant(&mut self, peer: PeerKey, room: &str, can_subscribe: bool) {
        let existing: Vec<TrackKey> = self
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|p| self.members.get(p))
            .flat_map(|m| m.tracks.iter().copied())
            .collect();
        self.members.insert(
            peer,
            Member {
                room: room.to_string(),
                can_subscribe,
                tracks: vec![],
                downtracks: vec![],
            },
        );
        self.rooms.entry(room.to_string()).or_default().push(peer);
        if can_subscribe {
            for track in existing {
                self.add_downtrack(track, peer);
            }
        }
    }

    /// Removes `peer`: its tracks leave every subscriber, its downtracks are dropped.
    pub fn remove_participant(&mut self, peer: PeerKey) {
        let Some(member) = self.members.remove(&peer) else {
            return;
        };
        for track in member.tracks {
            self.remove_track(track);
        }
        for dt in member.downtracks {
            if let Some(d) = self.downtracks.try_remove(dt.0 as usize) {
                if let Some(track) = d.track.and_then(|t| self.tracks.get_mut(t.0 as usize)) {
                    track.downtracks.retain(|k| *k != dt);
                }
            }
        }
        self.needs_negotiation.retain(|p| *p != peer);
        if let Some(peers) = self.rooms.get_mut(&member.room) {
            peers.retain(|p| *p != peer);
            if peers.is_empty() {
                self.rooms.remove(&member.room);
            }
        }
    }

    /// A new published track; every subscriber in the room gets a pending downtrack.
    pub fn add_track(
        &mut self,
        publisher: PeerKey,
        publisher_mid: Mid,
        kind: TrackKind,
        clock_rate: u32,
        muted: bool,
    ) -> Option<TrackKey> {
        let room = self.members.get(&publisher)?.room.clone();
        let key = TrackKey(self.tracks.insert(Track {
            publisher,
            publisher_mid,
            kind,
            muted,
            clock_rate,
            downtracks: vec![],
            keyframe_throttle: KeyframeRequestThrottle::new(self.keyframe_interval),
        }) as u32);
        if let Some(m) = self.members.get_mut(&publisher) {
            m.tracks.push(key);
        }
        let subscribers: Vec<PeerKey> = self
            .rooms
            .get(&room)
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| *p != publisher && self.members.get(p).is_some_and(|m| m.can_subscribe))
            .collect();
        for s in subscribers {
            self.add_downtrack(key, s);
        }
        Some(key)
    }

    fn add_downtrack(&mut self, track_key: TrackKey, subscriber: PeerKey) {
        let Some(track) = self.tracks.get(track_key.0 as usize) else {
            return;
        };
        if track.publisher == subscriber {
            return;
        }
        // Start numbering low (ROC 0) but not at a fixed value, so streams are told apart.
        self.next_seq_seed = self
            .next_seq_seed
            .wrapping_mul(1_103_515_245)
            .wrapping_add(12_345);
        let first_seq = ((self.next_seq_seed >> 8) & 0x3fff) as u16;
        let dt = Downtrack {
            subscriber,
            track: Some(track_key),
            kind: track.kind,
            publisher: track.publisher,
            state: DowntrackState::Pending,
            rewriter: RtpRewriter::new(track.clock_rate, first_seq, self.next_seq_seed),
        };
        let key = DowntrackKey(self.downtracks.insert(dt) as u32);
        if let Some(t) = self.tracks.get_mut(track_key.0 as usize) {
            t.downtracks.push(key);
        }
        if let Some(m) = self.members.get_mut(&subscriber) {
            m.downtracks.push(key);
        }
        self.mark_needs_negotiation(subscriber);
    }

    /// Unpublishes a track: its downtracks close (or vanish if never offered).
    pub fn remove_track(&mut self, key: TrackKey) {
        let Some(track) = self.tracks.try_remove(key.0 as usize) else {
            return;
        };
        if let Some(m) = self.members.get_mut(&track.publisher) {
            m.tracks.retain(|t| *t != key);
        }
        for dt_key in track.downtracks {
            let Some(dt) = self.downtracks.get_mut(dt_key.0 as usize) else {
                continue;
            };
            dt.track = None;
            let subscriber = dt.subscriber;
            match dt.state.clone() {
                DowntrackState::Pending => {
                    self.downtracks.remove(dt_key.0 as usize);
                    if let Some(m) = self.members.get_mut(&subscriber) {
                        m.downtracks.retain(|k| *k != dt_key);
                    }
                }
                DowntrackState::Offered(mid)
                | DowntrackState::Active { mid, .. }
                | DowntrackState::Closing(mid) => {
                    dt.state = DowntrackState::Closing(mid);
                    self.mark_needs_negotiation(subscriber);
                }
            }
        }
    }

    /// Downtracks of `subscriber`, for building its next offer.
    pub fn downtracks_of(&self, subscriber: PeerKey) -> Vec<(DowntrackKey, &Downtrack)> {
        self.members
            .get(&subscriber)
            .into_iter()
            .flat_map(|m| m.downtracks.iter())
            .filter_map(|k| self.downtracks.get(k.0 as usize).map(|d| (*k, d)))
            .collect()
    }

    pub fn mark_offered(&mut self, key: DowntrackKey, mid: Mid) {
        if let Some(dt) = self.downtracks.get_mut(key.0 as usize) {
            if dt.state == DowntrackState::Pending {
                dt.state = DowntrackState::Offered(mid);
            }
        }
    }

    /// The offer holding this downtrack was answered. Returns a keyframe request so the new
    /// subscriber can start decoding without waiting for the next natural keyframe.
    pub fn activate(
        &mut self,
        key: DowntrackKey,
        pt_map: Vec<(u8, u8)>,
        now: Instant,
    ) -> Option<KeyframeRequest> {
        let dt = self.downtracks.get_mut(key.0 as usize)?;
        let DowntrackState::Offered(mid) = dt.state else {
            return None;
        };
        dt.state = DowntrackState::Active { mid, pt_map };
        let track = self.tracks.get_mut(dt.track?.0 as usize)?;
        if track.kind == TrackKind::Video
            && !track.muted
            && track.keyframe_throttle.should_send(now)
        {
            return Some(KeyframeRequest {
                publisher: track.publisher,
                mid: track.publisher_mid,
            });
        }
        None
    }

    /// The stop of a closing downtrack was negotiated: forget it.
    pub fn forget(&mut self, key: DowntrackKey) {
        if let Some(dt) = self.downtracks.try_remove(key.0 as usize) {
            if let Some(m) = self.members.get_mut(&dt.subscriber) {
                m.downtracks.retain(|k| *k != key);
            }
        }
    }

    /// A muted track is not forwarded; unmuting video asks for a keyframe.
    pub fn set_muted(
        &mut self,
        key: TrackKey,
        muted: bool,
        now: Instant,
    ) -> Option<KeyframeRequest> {
        let track = self.tracks.get_mut(key.0 as usize)?;
        let was_muted = std::mem::replace(&mut track.muted, muted);
        if was_muted
            && !muted
            && track.kind == TrackKind::Video
            && track.keyframe_throttle.should_send(now)
        {
            return Some(KeyframeRequest {
                publisher: track.publisher,
                mid: track.publisher_mid,
            });
        }
        None
    }

    /// Fans one packet out to every active downtrack of its track. `out` is cleared first and
    /// reused by the caller, so steady-state forwarding allocates nothing.
    pub fn on_rtp(&mut self, rtp: &IncomingRtp, now: Instant, out: &mut Vec<Forward>) {
        out.clear();
        let Some(track) = self.tracks.get(rtp.track.0 as usize) else {
            return;
        };
        if track.muted {
            return;
        }
        for dt_key in &track.downtracks {
            let Some(dt) = self.downtracks.get_mut(dt_key.0 as usize) else {
                continue;
            };
            let DowntrackState::Active { mid, pt_map } = &dt.state else {
                continue;
            };
            let Some(&(_, pt)) = pt_map.iter().find(|(from, _)| *from == rtp.pt) else {
                continue;
            };
            if let Rewritten::Send { seq, ts } =
                dt.rewriter.rewrite(rtp.source, rtp.seq, rtp.ts, now)
            {
                out.push(Forward {
                    subscriber: dt.subscriber,
                    mid: *mid,
                    pt,
                    seq,
                    ts,
                });
            }
        }
    }

    /// A subscriber asked for a keyframe on its m-line `mid`.
    pub fn on_keyframe_request(
        &mut self,
        subscriber: PeerKey,
        mid: Mid,
        now: Instant,
    ) -> KeyframeDecision {
        let Some(member) = self.members.get(&subscriber) else {
            return KeyframeDecision::UnknownMid;
        };
        let track_key = member.downtracks.iter().find_map(|k| {
            let dt = self.downtracks.get(k.0 as usize)?;
            match &dt.state {
                DowntrackState::Active { mid: m, .. } if *m == mid => dt.track,
                _ => None,
            }
        });
        let Some(track) = track_key.and_then(|k| self.tracks.get_mut(k.0 as usize)) else {
            return KeyframeDecision::UnknownMid;
        };
        if track.keyframe_throttle.should_send(now) {
            KeyframeDecision::Send(KeyframeRequest {
                publisher: track.publisher,
                mid: track.publisher_mid,
            })
        } else {
            KeyframeDecision::Suppressed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(s: &str) -> Mid {
        Mid::from(s)
    }

    /// Router with `n` participants in one room, each publishing one video track, and every
    /// downtrack negotiated (subscriber mid = "s<publisher>").
    fn room_of(n: u32) -> (Router, Vec<TrackKey>, Instant) {
        let now = Instant::now();
        let mut r = Router::new(Duration::from_millis(500));
        let mut tracks = vec![];
        for p in 0..n {
            r.add_participant(PeerKey(p), "room", true);
        }
        for p in 0..n {
            tracks.push(
                r.add_track(PeerKey(p), mid("1"), TrackKind::Video, 90_000, false)
                    .unwrap(),
            );
        }
        for s in 0..n {
            for (k, dt) in r
                .downtracks_of(PeerKey(s))
                .into_iter()
                .map(|(k, d)| (k, d.publisher))
                .collect::<Vec<_>>()
            {
                r.mark_offered(k, mid(&format!("s{}", dt.0)));
                r.activate(k, vec![(96, 100)], now);
            }
        }
        (r, tracks, now)
    }

    #[test]
    fn fans_out_to_everyone_but_the_publisher_with_mapped_pt() {
        let (mut r, tracks, now) = room_of(3);
        let mut out = vec![];
        r.on_rtp(
            &IncomingRtp {
                track: tracks[0],
                source: 1,
                seq: 10,
                ts: 0,
                pt: 96,
            },
            now,
            &mut out,
        );
        let mut subs: Vec<_> = out.iter().map(|f| (f.subscriber, f.mid, f.pt)).collect();
        subs.sort_by_key(|s| s.0);
        assert_eq!(
            subs,
            vec![(PeerKey(1), mid("s0"), 100), (PeerKey(2), mid("s0"), 100)]
        );
    }

    #[test]
    fn sequence_numbers_continue_per_downtrack() {
        let (mut r, tracks, now) = room_of(2);
        let mut out = vec![];
        let mut seqs = vec![];
        for i in 0..5 {
            r.on_rtp(
                &IncomingRtp {
                    track: tracks[0],
                    source: 1,
                    seq: 60_000 + i,
                    ts: 0,
                    pt: 96,
                },
                now,
                &mut out,
            );
            seqs.push(out[0].seq);
        }
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert!(seqs[0] < 1 << 15, "starts with ROC 0");
    }

    #[test]
    fn unnegotiated_and_muted_tracks_are_not_forwarded() {
        let now = Instant::now();
        let mut r = Router::new(Duration::from_millis(500));
        r.add_participant(PeerKey(0), "room", true);
        r.add_participant(PeerKey(1), "room", true);
        let t = r
            .add_track(PeerKey(0), mid("0"), TrackKind::Audio, 48_000, false)
            .unwrap();
        assert_eq!(r.take_needs_negotiation(), vec![PeerKey(1)]);
        let mut out = vec![];
        let pkt = IncomingRtp {
            track: t,
            source: 1,
            seq: 1,
            ts: 0,
            pt: 111,
        };
        r.on_rtp(&pkt, now, &mut out);
        assert!(out.is_empty(), "pending downtrack must not receive");
        let (k, _) = r.downtracks_of(PeerKey(1))[0];
        r.mark_offered(k, mid("0"));
        r.activate(k, vec![(111, 111)], now);
        r.on_rtp(&pkt, now, &mut out);
        assert_eq!(out.len(), 1);
        r.set_muted(t, true, now);
        r.on_rtp(&pkt, now, &mut out);
        assert!(out.is_empty(), "muted track must not be forwarded");
    }

    #[test]
    fn keyframe_requests_from_many_subscribers_collapse() {
        let (mut r, _tracks, now) = room_of(3);
        let later = now + Duration::from_secs(1);
        // Subscribers 1 and 2 both lose publisher 0's video at the same moment.
        let a = r.on_keyframe_request(PeerKey(1), mid("s0"), later);
        let b = r.on_keyframe_request(PeerKey(2), mid("s0"), later + Duration::from_millis(10));
        assert_eq!(
            a,
            KeyframeDecision::Send(KeyframeRequest {
                publisher: PeerKey(0),
                mid: mid("1")
            })
        );
        assert_eq!(b, KeyframeDecision::Suppressed);
        let c = r.on_keyframe_request(PeerKey(1), mid("s0"), later + Duration::from_millis(600));
        assert!(matches!(c, KeyframeDecision::Send(_)));
        assert_eq!(
            r.on_keyframe_request(PeerKey(1), mid("zz"), later),
            KeyframeDecision::UnknownMid
        );
    }

    #[test]
    fn leaving_publisher_closes_downtracks_and_late_joiner_gets_existing_tracks() {
        let (mut r, _tracks, _now) = room_of(2);
        r.take_needs_negotiation();
        r.remove_participant(PeerKey(0));
        assert_eq!(r.take_needs_negotiation(), vec![PeerKey(1)]);
        let dts = r.downtracks_of(PeerKey(1));
        assert_eq!(dts.len(), 1);
        assert_eq!(dts[0].1.state, DowntrackState::Closing(mid("s0")));
        let k = dts[0].0;
        r.forget(k);
        assert!(r.downtracks_of(PeerKey(1)).is_empty());

        r.add_participant(PeerKey(5), "room", true);
        assert_eq!(r.downtracks_of(PeerKey(5)).len(), 1, "gets peer 1's track");
        r.add_participant(PeerKey(6), "room", false);
        assert!(
            r.downtracks_of(PeerKey(6)).is_empty(),
            "no can_subscribe, no downtracks"
        );
    }
}
