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

use super::downtrack_layers::{select_layer, BandwidthPause, LayerCap};
use super::dynacast::LayerDemand;
use super::keyframe::KeyframeStart;
use super::keyframe_requests::{KeyframeRequestThrottle, PublisherKeyframeGuard};
use super::layer_selector::{Layer, LayerSelector, TrackLayers, Verdict, Want, MAX_LAYERS};
use super::overload::Shedding;
use super::rtp_rewriter::{Rewritten, RtpRewriter, SourceId};
use super::speaker_detector::{same_order, Speaker, SpeakerDetector};
use super::subscriber_budget::{BudgetChanges, SubscriberBudget};
use super::vp8_munger::{Vp8Ids, Vp8Munger};
use crate::api::{TrackKind, TrackSource, VideoSubscription};

mod keyframe_now;
mod record_side;
mod relay_side;
mod subscriber_connection;
mod viewing;

/// How often [`Router::poll_layer_demand`] re-evaluates which layers are needed.
pub const DEMAND_CHECK: Duration = Duration::from_millis(250);

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
    /// A screen share ranks with the dominant speaker when bandwidth is short.
    pub source: TrackSource,
    pub muted: bool,
    /// A track published muted reaches no subscriber until it is first unmuted: a class of
    /// 200 muted microphones would otherwise cost every student 200 idle m-lines.
    offered: bool,
    clock_rate: u32,
    downtracks: Vec<DowntrackKey>,
    pub(super) keyframe_throttle: KeyframeRequestThrottle,
    /// Simulcast layers (one for a plain track) and a request throttle per layer, since a
    /// keyframe on one layer does not help a subscriber waiting on another.
    pub(super) layers: TrackLayers,
    pub(super) layer_throttles: [KeyframeRequestThrottle; MAX_LAYERS],
    /// The publisher's own limit on keyframe requests, across layers.
    pub(super) publisher_guard: PublisherKeyframeGuard,
    /// Which layers the publisher was told to send (dynacast).
    demand: LayerDemand,
    /// Layers other workers' subscribers need through the relay (dynacast keeps them on).
    relay_demand: [bool; MAX_LAYERS],
    /// Layers a recording of the track needs (see `record_side`).
    record_demand: [bool; MAX_LAYERS],
}

impl Track {
    pub fn layer_count(&self) -> u8 {
        self.layers.count()
    }

    pub(super) fn downtracks(&self) -> &[DowntrackKey] {
        &self.downtracks
    }
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
    pub(super) rewriter: RtpRewriter,
    vp8: Vp8Munger,
    /// What the subscriber asked for (video only).
    pub(super) want: Want,
    pub(super) selector: LayerSelector,
    /// The bandwidth allocator's limit for this downtrack.
    pub(super) cap: LayerCap,
    /// A viewer slot pointed at another video: nothing until that track's next keyframe.
    pub(super) await_keyframe: bool,
    /// When the driver last held a frame back for a backlogged send queue, or the downtrack
    /// resumed after it (see `Router::egress_backlogged`).
    pub(super) backlog_hold: Option<Instant>,
    /// Its subscriber's connection is not up yet (see `router/subscriber_connection.rs`).
    pub(super) connecting: bool,
}

impl Downtrack {
    /// The simulcast layer being forwarded; `None` while paused or waiting for a keyframe.
    pub fn current_layer(&self) -> Option<Layer> {
        self.selector.current()
    }
}

#[derive(Debug)]
pub(super) struct Member {
    pub(super) room: String,
    /// `None` for a participant without the right to subscribe.
    subscription: Option<VideoSubscription>,
    tracks: Vec<TrackKey>,
    pub(super) downtracks: Vec<DowntrackKey>,
    /// The subscriber connection's bandwidth; `None` until its first estimate (or when
    /// bandwidth allocation is off).
    pub(super) budget: Option<SubscriberBudget>,
    /// A viewer (WHEP): fixed m-lines retargeted in place, see `router/viewing.rs`.
    viewer: bool,
    /// The subscriber connection is being set up (see `router/subscriber_connection.rs`).
    pub(super) connecting: bool,
    /// Its downtracks started when the client reached the connection, before it was up
    /// (`Router::on_subscriber_reached`): nothing more to do when it is.
    pub(super) started_early: bool,
}

/// One incoming RTP packet, already decrypted and attributed to a track by the edge.
#[derive(Debug, Clone, Copy)]
pub struct IncomingRtp {
    pub track: TrackKey,
    pub source: SourceId,
    pub seq: u64,
    pub ts: u32,
    pub pt: u8,
    /// The `ssrc-audio-level` extension in dBov (0 = loudest, -127 = silence), when present.
    pub audio_level: Option<i8>,
    /// The simulcast layer this packet belongs to (0 for a track without simulcast).
    pub layer: Layer,
    /// Set when the packet is the first one of a keyframe.
    pub keyframe: Option<KeyframeStart>,
    /// For the per-layer bitrates the bandwidth allocator works with.
    pub payload_len: usize,
    /// VP8 payload descriptor IDs, when the packet is VP8 and has a picture ID.
    pub vp8: Option<Vp8Ids>,
}

/// What [`Router::set_want`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantOutcome {
    /// The subscriber's copy now follows the new want.
    Applied,
    /// It had no copy: one is pending for its next offer.
    Subscribed,
    /// Not a video it may receive (gone, its own, another room, or no subscribe right).
    Ignored,
}

/// A room's active speakers changed (loudest first; empty when nobody speaks).
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerUpdate {
    pub room: String,
    pub speakers: Vec<Speaker>,
}

/// The packet must go to `subscriber` on `mid` with these header values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub subscriber: PeerKey,
    pub mid: Mid,
    pub pt: u8,
    pub seq: u64,
    pub ts: u32,
    /// Rewritten VP8 IDs, continuous across this subscriber's layer switches.
    pub vp8: Option<Vp8Ids>,
    pub downtrack: DowntrackKey,
    /// The first packet forwarded of a frame (video; its timestamp differs from the last
    /// one sent): where the driver may hold a backlogged subscriber back without cutting
    /// a frame in two (see `Router::egress_backlogged`).
    pub frame_start: bool,
    /// The keyframe that starts a video over (a layer switch, or the resume after waiting
    /// for a keyframe): the receiver decodes from here, so what was sent before it is not
    /// worth retransmitting any more. On a link that just collapsed, the old layer's lost
    /// packets would otherwise be resent ahead of this keyframe's, and the new layer's
    /// first frame would wait seconds behind them (str0m caps retransmissions at a share
    /// of what is sent).
    pub starts_over: bool,
}

/// Ask `publisher` for a keyframe on `mid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeRequest {
    pub publisher: PeerKey,
    pub mid: Mid,
    /// The simulcast layer that needs it; `None` for every stream of the m-line.
    pub layer: Option<Layer>,
}

/// Result of a subscriber's keyframe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeDecision {
    Send(KeyframeRequest),
    Suppressed,
    UnknownMid,
}

pub struct Router {
    pub(super) members: HashMap<PeerKey, Member>,
    rooms: HashMap<String, Vec<PeerKey>>,
    pub(super) tracks: Slab<Track>,
    pub(super) downtracks: Slab<Downtrack>,
    needs_negotiation: Vec<PeerKey>,
    keyframe_interval: Duration,
    next_seq_seed: u32,
    speakers: SpeakerDetector,
    /// The ranking last reported per room, to report only changes.
    pub(super) reported_speakers: HashMap<String, Vec<Speaker>>,
    /// Bandwidth allocation: when it next runs for every subscriber, pause changes for the
    /// clients, and what it changed since the driver last looked (metrics).
    pub(super) next_allocation: Option<Instant>,
    pub(super) bandwidth_pauses: Vec<BandwidthPause>,
    pub(super) budget_changes: BudgetChanges,
    /// Keyframe requests decided while forwarding, for [`Router::pop_keyframe_request`].
    pub(super) keyframe_out: Vec<KeyframeRequest>,
    /// When [`Router::poll_layer_demand`] next looks at the tracks.
    next_demand_check: Option<Instant>,
    /// Video the worker gave up forwarding because it cannot keep up.
    shedding: Shedding,
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
            speakers: SpeakerDetector::default(),
            reported_speakers: HashMap::new(),
            keyframe_out: Vec::with_capacity(8),
            next_demand_check: None,
            next_allocation: None,
            bandwidth_pauses: Vec::new(),
            budget_changes: BudgetChanges::default(),
            shedding: Shedding::None,
        }
    }

    /// The worker's overload level: shed copies stop at the next packet and resume, from a
    /// keyframe, once the level drops.
    pub fn set_shedding(&mut self, shedding: Shedding) {
        self.shedding = shedding;
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

    /// Joins `peer` to `room` and gives it a downtrack for every track already there that
    /// its `subscription` takes without asking (`None`: it may not subscribe at all).
    pub fn add_participant(
        &mut self,
        peer: PeerKey,
        room: &str,
        subscription: Option<VideoSubscription>,
    ) {
        let existing: Vec<TrackKey> = match subscription {
            Some(mode) => self
                .rooms
                .get(room)
                .into_iter()
                .flatten()
                .filter_map(|p| self.members.get(p))
                .flat_map(|m| m.tracks.iter().copied())
                .filter(|t| {
                    self.tracks
                        .get(t.0 as usize)
                        .is_some_and(|t| subscribes_without_asking(t, mode))
                })
                .collect(),
            None => vec![],
        };
        self.members.insert(
            peer,
            Member {
                room: room.to_string(),
                subscription,
                tracks: vec![],
                downtracks: vec![],
                budget: None,
                viewer: false,
                connecting: false,
                started_early: false,
            },
        );
        self.rooms.entry(room.to_string()).or_default().push(peer);
        for track in existing {
            self.add_downtrack(track, peer, Want::Highest);
        }
    }

    /// Gives every member of the track's room that takes it without asking, and has no copy
    /// yet, a pending downtrack. Called whenever a track may have become offerable.
    fn fan_out(&mut self, key: TrackKey) {
        let Some(track) = self.tracks.get(key.0 as usize) else {
            return;
        };
        let Some(room) = self.members.get(&track.publisher).map(|m| &m.room) else {
            return;
        };
        let has_copy: std::collections::HashSet<PeerKey> = track
            .downtracks
            .iter()
            .filter_map(|k| self.downtracks.get(k.0 as usize))
            .map(|d| d.subscriber)
            .collect();
        let subscribers: Vec<PeerKey> = self
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| *p != track.publisher && !has_copy.contains(p))
            .filter(|p| {
                self.members
                    .get(p)
                    .and_then(|m| m.subscription)
                    .is_some_and(|mode| subscribes_without_asking(track, mode))
            })
            .collect();
        for s in subscribers {
            self.add_downtrack(key, s, Want::Highest);
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
        self.speakers.forget(peer);
        if let Some(peers) = self.rooms.get_mut(&member.room) {
            peers.retain(|p| *p != peer);
            if peers.is_empty() {
                self.rooms.remove(&member.room);
                self.reported_speakers.remove(&member.room);
            }
        }
    }

    /// A new published track; every subscriber in the room gets a pending downtrack.
    /// `layers` is the number of simulcast layers (1 without simulcast).
    pub fn add_track(
        &mut self,
        publisher: PeerKey,
        publisher_mid: Mid,
        kind: TrackKind,
        clock_rate: u32,
        muted: bool,
        layers: usize,
    ) -> Option<TrackKey> {
        self.members.get(&publisher)?;
        let key = TrackKey(self.tracks.insert(Track {
            publisher,
            publisher_mid,
            kind,
            source: TrackSource::Unknown,
            muted,
            offered: !muted,
            clock_rate,
            downtracks: vec![],
            keyframe_throttle: KeyframeRequestThrottle::new(self.keyframe_interval),
            layers: TrackLayers::new(layers),
            demand: LayerDemand::default(),
            relay_demand: [false; MAX_LAYERS],
            record_demand: [false; MAX_LAYERS],
            layer_throttles: std::array::from_fn(|_| {
                KeyframeRequestThrottle::new(self.keyframe_interval)
            }),
            publisher_guard: PublisherKeyframeGuard::default(),
        }) as u32);
        if let Some(m) = self.members.get_mut(&publisher) {
            m.tracks.push(key);
        }
        self.fan_out(key);
        Some(key)
    }

    fn add_downtrack(&mut self, track_key: TrackKey, subscriber: PeerKey, want: Want) {
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
            vp8: Vp8Munger::default(),
            want,
            selector: LayerSelector::default(),
            cap: LayerCap::Unlimited,
            await_keyframe: false,
            backlog_hold: None,
            connecting: self.members.get(&subscriber).is_some_and(|m| m.connecting),
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

    /// What the track carries (set once, right after [`Router::add_track`]). A screen share
    /// reaches on-demand subscribers too.
    pub fn set_source(&mut self, key: TrackKey, source: TrackSource) {
        if let Some(t) = self.tracks.get_mut(key.0 as usize) {
            t.source = source;
            self.fan_out(key);
        }
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
            // A viewer's slot stays negotiated and empty until it is pointed elsewhere.
            if self.members.get(&subscriber).is_some_and(|m| m.viewer) {
                continue;
            }
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
        // A simulcast subscriber asks for its layer's keyframe once it knows which layer.
        if track.kind == TrackKind::Video
            && !track.muted
            && !track.layers.is_simulcast()
            && track.keyframe_throttle.should_send(now)
        {
            track.publisher_guard.sent(now);
            return Some(KeyframeRequest {
                publisher: track.publisher,
                mid: track.publisher_mid,
                layer: None,
            });
        }
        None
    }

    /// The offer holding this downtrack was refused (the answer did not fit it): its m-line
    /// never came to be, so the downtrack goes back to pending for the next offer.
    pub fn offer_failed(&mut self, key: DowntrackKey) {
        let Some(dt) = self.downtracks.get_mut(key.0 as usize) else {
            return;
        };
        if let DowntrackState::Offered(_) = dt.state {
            dt.state = DowntrackState::Pending;
            let subscriber = dt.subscriber;
            self.mark_needs_negotiation(subscriber);
        }
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
        if !muted && !track.offered {
            track.offered = true;
            self.fan_out(key);
        }
        let track = self.tracks.get_mut(key.0 as usize)?;
        if was_muted
            && !muted
            && track.kind == TrackKind::Video
            && track.keyframe_throttle.should_send(now)
        {
            track.publisher_guard.sent(now);
            return Some(KeyframeRequest {
                publisher: track.publisher,
                mid: track.publisher_mid,
                layer: None,
            });
        }
        None
    }

    /// What `subscriber` wants of its copy of video track `track`: a rendered size picks
    /// the smallest simulcast layer covering it, [`Want::Paused`] stops the video. Takes
    /// effect at the next packet (a switch at the next keyframe of the new layer). A shown
    /// video it has no copy of yet (on-demand subscription) gets one, in the next offer.
    pub fn set_want(&mut self, subscriber: PeerKey, track: TrackKey, want: Want) -> WantOutcome {
        let Some(member) = self.members.get(&subscriber) else {
            return WantOutcome::Ignored;
        };
        let found = member
            .downtracks
            .iter()
            .find(|k| {
                self.downtracks
                    .get(k.0 as usize)
                    .is_some_and(|d| d.track == Some(track))
            })
            .copied();
        if let Some(dt) = found.and_then(|k| self.downtracks.get_mut(k.0 as usize)) {
            tracing::debug!(
                subscriber = subscriber.0,
                track = track.0,
                ?want,
                "want changed"
            );
            dt.want = want;
            return WantOutcome::Applied;
        }
        let same_room = |t: &Track| {
            self.members
                .get(&t.publisher)
                .is_some_and(|p| p.room == member.room)
        };
        let subscribe = want != Want::Paused
            && member.subscription.is_some()
            && self.tracks.get(track.0 as usize).is_some_and(|t| {
                t.kind == TrackKind::Video && t.publisher != subscriber && same_room(t)
            });
        if !subscribe {
            return WantOutcome::Ignored;
        }
        self.add_downtrack(track, subscriber, want);
        WantOutcome::Subscribed
    }

    /// Dynacast: simulcast tracks whose set of needed layers changed, with the layers the
    /// publisher should send (lowest first). Looks at most every [`DEMAND_CHECK`].
    pub fn poll_layer_demand(&mut self, now: Instant) -> Vec<(TrackKey, [bool; MAX_LAYERS])> {
        if self.next_demand_check.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.next_demand_check = Some(now + DEMAND_CHECK);
        let mut changes = Vec::new();
        for (key, track) in self.tracks.iter_mut() {
            if !track.layers.is_simulcast() {
                continue;
            }
            let mut needed = super::downtrack_layers::needed_layers(track, &self.downtracks);
            for ((n, r), c) in needed
                .iter_mut()
                .zip(track.relay_demand)
                .zip(track.record_demand)
            {
                *n |= r || c;
            }
            if let Some(active) = track.demand.update(needed, track.layers.count(), now) {
                changes.push((TrackKey(key as u32), active));
            }
        }
        changes
    }

    /// Keyframe requests decided while forwarding; the driver drains them after each packet.
    pub fn pop_keyframe_request(&mut self) -> Option<KeyframeRequest> {
        self.keyframe_out.pop()
    }

    /// Fans one packet out to every active downtrack of its track. `out` is cleared first and
    /// reused by the caller, so steady-state forwarding allocates nothing.
    pub fn on_rtp(&mut self, rtp: &IncomingRtp, now: Instant, out: &mut Vec<Forward>) {
        out.clear();
        let Some(track) = self.tracks.get_mut(rtp.track.0 as usize) else {
            return;
        };
        if track.muted {
            // Nothing will fill these numbers: each copy continues without a hole on unmute.
            for key in &track.downtracks {
                if let Some(dt) = self.downtracks.get_mut(key.0 as usize) {
                    dt.rewriter.withhold(rtp.source, rtp.seq);
                }
            }
            return;
        }
        if let (TrackKind::Audio, Some(level)) = (track.kind, rtp.audio_level) {
            self.speakers.observe(track.publisher, level);
        }
        let video = track.kind == TrackKind::Video;
        track
            .layers
            .on_packet(rtp.layer, rtp.keyframe, rtp.ts, rtp.payload_len, now);
        for i in 0..track.downtracks.len() {
            let dt_key = track.downtracks[i];
            let Some(dt) = self.downtracks.get_mut(dt_key.0 as usize) else {
                continue;
            };
            let DowntrackState::Active { mid, pt_map } = &dt.state else {
                continue;
            };
            if dt.connecting {
                continue;
            }
            let Some(&(_, pt)) = pt_map.iter().find(|(from, _)| *from == rtp.pt) else {
                continue;
            };
            let mid = *mid;
            let mut starts_over = false;
            if video {
                if dt.await_keyframe {
                    if rtp.keyframe.is_none() {
                        continue;
                    }
                    dt.await_keyframe = false;
                    starts_over = true;
                }
                match select_layer(track, dt, rtp, self.shedding, now, &mut self.keyframe_out) {
                    // Not withheld: a layer switch restarts the rewriter at the keyframe anyway,
                    // and marking every other layer's packet here made switches up flaky
                    // (Chromium e-simulcast stuck on the low layer in ~1 run of 5).
                    Verdict::Drop => continue,
                    Verdict::SwitchAndForward => {
                        tracing::debug!(
                            subscriber = dt.subscriber.0,
                            track = rtp.track.0,
                            layer = rtp.layer,
                            "layer switch"
                        );
                        dt.rewriter.restart();
                        dt.vp8.restart();
                        starts_over = true;
                        // Resumed from a backlog hold: its grace starts now.
                        if dt.backlog_hold.is_some() {
                            dt.backlog_hold = Some(now);
                        }
                    }
                    Verdict::Forward => {}
                }
            }
            let last_ts = dt.rewriter.last_out_ts();
            if let Rewritten::Send { seq, ts } =
                dt.rewriter.rewrite(rtp.source, rtp.seq, rtp.ts, now)
            {
                out.push(Forward {
                    subscriber: dt.subscriber,
                    mid,
                    pt,
                    seq,
                    ts,
                    vp8: rtp.vp8.map(|ids| dt.vp8.munge(ids)),
                    downtrack: dt_key,
                    frame_start: ts != last_ts,
                    starts_over,
                });
            }
        }
    }

    /// When [`Router::poll_speakers`] next has work, for the driver's timer.
    pub fn next_speaker_tick(&self) -> Option<Instant> {
        self.speakers.next_tick()
    }

    /// Rooms whose speaker ranking changed since it was last reported. Does nothing until a
    /// [`SPEAKER_TICK`](super::speaker_detector::SPEAKER_TICK) has passed.
    pub fn poll_speakers(&mut self, now: Instant) -> Vec<SpeakerUpdate> {
        if !self.speakers.tick_due(now) {
            return Vec::new();
        }
        self.speakers.close_window();
        let mut updates = Vec::new();
        let mut ranking = Vec::new();
        for (room, members) in &self.rooms {
            let previous = self.reported_speakers.get(room).map_or(&[][..], |p| p);
            let dominant = previous.first().map(|s| s.peer);
            self.speakers.rank(members, dominant, &mut ranking);
            if !same_order(previous, &ranking) {
                self.reported_speakers.insert(room.clone(), ranking.clone());
                updates.push(SpeakerUpdate {
                    room: room.clone(),
                    speakers: ranking.clone(),
                });
            }
        }
        updates
    }

    /// The room `peer` is a member of.
    pub fn room_of(&self, peer: PeerKey) -> Option<&str> {
        self.members.get(&peer).map(|m| m.room.as_str())
    }

    /// Members of `room` on this worker (relay proxies of remote publishers included).
    pub fn members_of(&self, room: &str) -> &[PeerKey] {
        self.rooms.get(room).map_or(&[][..], |m| m.as_slice())
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
        let found = member.downtracks.iter().find_map(|k| {
            let dt = self.downtracks.get(k.0 as usize)?;
            match &dt.state {
                DowntrackState::Active { mid: m, .. } if *m == mid => {
                    Some((dt.track?, dt.selector.current()))
                }
                _ => None,
            }
        });
        let Some((track, layer)) =
            found.and_then(|(k, l)| Some((self.tracks.get_mut(k.0 as usize)?, l)))
        else {
            return KeyframeDecision::UnknownMid;
        };
        // A simulcast subscriber decodes one layer: only that layer needs a keyframe.
        let layer = layer.filter(|_| track.layers.is_simulcast());
        let throttle = match layer {
            Some(l) => &mut track.layer_throttles[usize::from(l)],
            None => &mut track.keyframe_throttle,
        };
        if throttle.should_send(now) {
            track.publisher_guard.sent(now);
            KeyframeDecision::Send(KeyframeRequest {
                publisher: track.publisher,
                mid: track.publisher_mid,
                layer,
            })
        } else {
            KeyframeDecision::Suppressed
        }
    }
}

/// Whether a subscriber in `mode` gets `track` without asking for it.
fn subscribes_without_asking(track: &Track, mode: VideoSubscription) -> bool {
    track.offered
        && (track.kind == TrackKind::Audio
            || mode == VideoSubscription::Auto
            || track.source.is_screen())
}
