//! What travels between a track's origin and the cores that receive it.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use str0m::format::PayloadParams;
use str0m::media::Mid;
use str0m::rtp::VideoOrientation;

use super::{FlowId, LayerMask};
use crate::api::{ParticipantId, RoomId, TrackId, TrackKind, TrackSource};
use crate::forward::keyframe::KeyframeStart;
use crate::forward::layer_selector::Layer;

/// One decrypted RTP packet of a flow, as its origin received it. The payload is shared
/// (`Arc`, as str0m hands it over): every receiving core and every subscriber there writes
/// the same bytes, none copies them.
#[derive(Debug, Clone)]
pub struct RelayPacket {
    pub flow: FlowId,
    /// The publisher's SSRC, so a receiving core's rewriters see source changes as the
    /// origin's do.
    pub source: u32,
    /// Extended sequence number as the origin unrolled it.
    pub seq: u64,
    pub ts: u32,
    pub pt: u8,
    pub marker: bool,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub video_orientation: Option<VideoOrientation>,
    /// Found by the origin, which knows the codec; receivers do not parse payloads.
    pub keyframe: Option<KeyframeStart>,
    /// The VP8 picture IDs, also found by the origin: `Some` only for VP8, so a receiver
    /// knows the payload has a VP8 descriptor it may patch.
    pub vp8: Option<crate::forward::vp8_munger::Vp8Ids>,
    /// When the origin received it (in-process only; a network carrier sends its own).
    pub received: Instant,
    /// `received` crossed a cascade link as the origin's send stamp (rather than being
    /// when the receiving gateway got the packet): the worker that takes the packet records
    /// the hop's latency from it.
    pub link_stamped: bool,
    pub payload: Arc<[u8]>,
}

impl RelayPacket {
    /// A packet without header extensions, keyframe or VP8 marks (tests, benches and the
    /// parts of a carrier that fill those in afterwards).
    pub fn plain(flow: FlowId, source: u32, seq: u64, ts: u32, pt: u8, payload: Arc<[u8]>) -> Self {
        RelayPacket {
            flow,
            source,
            seq,
            ts,
            pt,
            marker: false,
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
            keyframe: None,
            vp8: None,
            received: Instant::now(),
            link_stamped: false,
            payload,
        }
    }
}

/// A track the origin hosts, told to every core that hosts part of its room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackAnnouncement {
    pub room: RoomId,
    pub participant: ParticipantId,
    pub track_id: TrackId,
    /// The track's layer-0 flow; layer `l` is `flow.layer(l)`. Names the track in every
    /// later message.
    pub flow: FlowId,
    /// The publisher's m-line: keyframe requests name it.
    pub mid: Mid,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
    /// Simulcast layers (1 without simulcast).
    pub layers: u8,
    pub clock_rate: u32,
    /// The payload types the publisher negotiated, for mapping them to each subscriber's.
    pub params: Vec<PayloadParams>,
}

/// The control stream, in order per sender. `P` names a peer core (a worker index inside a
/// node; a node id on the cascade between nodes, where it travels as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RelayControl<P> {
    /// From the node's placement: the cores now hosting participants of `room`, and the
    /// room's home, which reports its active speakers (and so takes every audio track).
    RoomPeers {
        room: RoomId,
        home: P,
        peers: Vec<P>,
    },
    /// Origin → receivers: a new track (also for every existing track to a new peer).
    Announce(Box<TrackAnnouncement>),
    /// Origin → receivers: the publisher muted or unmuted the track.
    Muted { flow: FlowId, muted: bool },
    /// Origin → receivers: the track is gone.
    Removed { flow: FlowId },
    /// Receiver → origin: the layers its own subscribers need now; none stops the track.
    Subscribe { flow: FlowId, layers: LayerMask },
    /// Receiver → origin: a subscriber there needs a keyframe (`None`: every layer).
    KeyframeRequest { flow: FlowId, layer: Option<Layer> },
    /// Receiver → origin: these RTP sequence numbers of the layer flow `flow` did not arrive;
    /// the origin re-sends what it still has. Only where packets can be lost on the way (a
    /// cascade link); the in-node queues lose nothing but what they refuse when full.
    Nack { flow: FlowId, seqs: Vec<u16> },
}
