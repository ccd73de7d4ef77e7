//! The message API between signaling and a media node.
//!
//! Requests go in, responses and events come out, all plain serializable values: the
//! embedded mode passes them in-process, a cluster carries the same messages over the
//! network. Identifiers are the signaling's strings; the node maps them to its own indices
//! at this boundary so that the packet path never hashes a string.

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }
    };
}

string_id!(
    /// A room as signaling names it.
    RoomId
);
string_id!(
    /// A participant (one session of one user in one room).
    ParticipantId
);
string_id!(
    /// A published track, unique within the node.
    TrackId
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a track carries, as the publisher declared it. Screen shares outrank cameras when a
/// subscriber's bandwidth is short.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
    ScreenAudio,
    #[default]
    Unknown,
}

impl TrackSource {
    pub fn is_screen(self) -> bool {
        matches!(self, TrackSource::Screen | TrackSource::ScreenAudio)
    }
}

/// Which tracks a subscriber is offered without asking. Audio and screen shares always are
/// (once unmuted); `OnDemand` leaves cameras out until the subscriber's `track_settings` asks
/// for one, so a class of hundreds does not negotiate hundreds of m-lines per student.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoSubscription {
    #[default]
    Auto,
    OnDemand,
}

/// A track the publisher declared in its offer, with the id signaling gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTrack {
    pub mid: String,
    pub track_id: TrackId,
    pub kind: TrackKind,
    #[serde(default)]
    pub source: TrackSource,
    pub muted: bool,
}

/// One active m-line of a subscriber offer and the track it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribedTrack {
    pub mid: String,
    pub track_id: TrackId,
    pub participant_id: ParticipantId,
    pub kind: TrackKind,
    /// So a receiver can show a screen share apart from the person's camera.
    #[serde(default)]
    pub source: TrackSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SfuRequest {
    /// Places a participant in a room on this node. Nothing is sent until it publishes or
    /// there is something for it to receive.
    AddParticipant {
        room: RoomId,
        participant: ParticipantId,
        can_subscribe: bool,
        #[serde(default)]
        video_subscription: VideoSubscription,
    },
    /// The publisher connection's offer. Answered with [`SfuResponse::PublishAnswer`].
    /// Sent again on the same connection (renegotiation), `tracks` lists everything it sends
    /// now: tracks with a new mid are added, those whose mid is missing or no longer sends are
    /// withdrawn, the others stay as they are.
    PublishOffer {
        participant: ParticipantId,
        sdp: String,
        tracks: Vec<PublishedTrack>,
    },
    /// The answer to the last [`SfuEvent::SubscriberOffer`].
    SubscriberAnswer {
        participant: ParticipantId,
        sdp: String,
    },
    /// The client's subscriber connection lost its path (its network changed): the next
    /// [`SfuEvent::SubscriberOffer`] carries new ICE credentials (an ICE restart), sent at once
    /// or, if an offer is outstanding, right after its answer. The publisher connection
    /// restarts through a [`SfuRequest::PublishOffer`] with new credentials instead.
    RestartSubscriberIce { participant: ParticipantId },
    SetTrackMuted {
        participant: ParticipantId,
        track_id: TrackId,
        muted: bool,
    },
    /// Withdraws everything the participant publishes (a moderator revoked its right): its
    /// tracks leave every subscriber and its publisher connection closes. The participant stays
    /// subscribed and may publish again later with a new offer.
    Unpublish { participant: ParticipantId },
    /// Removes the participant, its tracks from every subscriber, and its connections.
    RemoveParticipant { participant: ParticipantId },
    /// Connection quality as seen from received RTCP.
    PeerStats { participant: ParticipantId },
    /// A new signaling owner takes over a participant that lives on (its previous owner died):
    /// its events now go to the requester. Answered with [`SfuResponse::Adopted`], what it
    /// publishes, so the new owner can rebuild the room as people see it.
    Adopt {
        room: RoomId,
        participant: ParticipantId,
    },
    /// How `participant` (a subscriber) shows video track `track_id`: rendered at
    /// `width`x`height` device pixels picks the smallest simulcast layer covering it;
    /// `enabled: false` or a zero size pauses that video for it. A shown video the subscriber
    /// does not receive yet is subscribed (see [`VideoSubscription::OnDemand`]). Ignored for a
    /// track that is gone.
    SetTrackSettings {
        participant: ParticipantId,
        track_id: TrackId,
        width: u16,
        height: u16,
        enabled: bool,
    },
    /// A viewer's own offer (WHEP): receive-only m-lines, at most one audio and one video
    /// are used. The participant (added without subscribe right) gets a subscriber connection
    /// from this offer, answered with [`SfuResponse::PublishAnswer`], and shows nothing until
    /// [`SfuRequest::ViewerTarget`] points it at someone. It is never sent a
    /// [`SfuEvent::SubscriberOffer`].
    ViewerOffer {
        participant: ParticipantId,
        sdp: String,
    },
    /// What a viewer shows now, switched without renegotiation: `track` alone on the m-line
    /// of its kind, or else `publisher`'s microphone and camera (a screen share when it has
    /// no camera). Both `None`: nothing.
    ViewerTarget {
        participant: ParticipantId,
        publisher: Option<ParticipantId>,
        track: Option<TrackId>,
    },
    /// The other media nodes holding participants of `room` now (none: the room is on this
    /// node only). The node links to them (the node whose id sorts first dials) and relays
    /// what each side's subscribers want (see `docs/cluster-link.md`, "Cascade"). `node` is
    /// this node's own id in the fleet.
    Cascade {
        room: RoomId,
        node: String,
        peers: Vec<CascadePeer>,
    },
    /// Starts (`Some`) or stops (`None`) recording `room` on this node: every track its
    /// local publishers send, now or later, goes to a WebM file under the node's record
    /// directory, `<dir>/<recording id>/`, with a `manifest.json`. Sent again with the same
    /// id it only updates the names in the manifest. Refused as `Unavailable` by a node
    /// without a record directory. Stopping answers once the workers stopped feeding it;
    /// [`SfuEvent::RecordingFinished`] follows when the files are closed.
    Record {
        room: RoomId,
        recording: Option<RecordingSpec>,
    },
}

/// A recording as signaling started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSpec {
    /// Unique; names the recording's directory (letters, digits, `-`, `_`).
    pub id: String,
    /// Who is who, for the manifest (the node knows participants by id only).
    pub people: Vec<RecordedPerson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPerson {
    pub participant: ParticipantId,
    pub identity: String,
    pub name: String,
}

/// A media node a room spans, and where its cluster link listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CascadePeer {
    pub node: String,
    pub addr: std::net::SocketAddr,
}

impl SfuRequest {
    /// The participant the request is about; `None` for room-level requests.
    pub fn participant(&self) -> Option<&ParticipantId> {
        Some(match self {
            SfuRequest::AddParticipant { participant, .. }
            | SfuRequest::PublishOffer { participant, .. }
            | SfuRequest::SubscriberAnswer { participant, .. }
            | SfuRequest::RestartSubscriberIce { participant }
            | SfuRequest::SetTrackMuted { participant, .. }
            | SfuRequest::Unpublish { participant }
            | SfuRequest::RemoveParticipant { participant }
            | SfuRequest::PeerStats { participant }
            | SfuRequest::Adopt { participant, .. }
            | SfuRequest::SetTrackSettings { participant, .. }
            | SfuRequest::ViewerOffer { participant, .. }
            | SfuRequest::ViewerTarget { participant, .. } => participant,
            SfuRequest::Cascade { .. } | SfuRequest::Record { .. } => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SfuResponse {
    Done,
    PublishAnswer {
        sdp: String,
    },
    PeerStats(PeerStats),
    /// The adopted participant's published tracks.
    Adopted {
        tracks: Vec<PublishedTrack>,
    },
}

/// Round-trip time and loss of one participant's connections, from RTCP receiver reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStats {
    /// Round-trip time to the subscriber connection's remote, from its receiver reports.
    pub rtt_ms: Option<f64>,
    /// Fraction of our packets the participant reported lost (0..1).
    pub egress_loss: Option<f32>,
    /// Fraction of the participant's packets we lost (0..1).
    pub ingress_loss: Option<f32>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SfuEvent {
    /// The subscriber connection must be (re)negotiated with this offer.
    SubscriberOffer {
        participant: ParticipantId,
        sdp: String,
        tracks: Vec<SubscribedTrack>,
    },
    /// The participant's subscriber connection was replaced (its stopped m-lines reached
    /// [`crate::config::SfuConfig::max_stopped_mlines`]): the next `SubscriberOffer` is for a
    /// new peer connection.
    SubscriberReset { participant: ParticipantId },
    /// ICE and DTLS are up on one of the participant's connections.
    MediaConnected { participant: ParticipantId },
    /// The participant's media connection timed out or was closed by the remote.
    MediaLost { participant: ParticipantId },
    /// The node's worker hosting these participants failed: their connections and tracks are
    /// gone and the node forgot them. Each can be added again (it lands on a live worker) and
    /// set up its media anew; until then, requests about it are refused as `Unavailable`.
    WorkerLost { participants: Vec<ParticipantId> },
    /// Dynacast: the publisher should send only the simulcast layers of `track_id` marked
    /// `true` (lowest first); nobody receives the others. Sent when that set changes.
    PublisherLayers {
        participant: ParticipantId,
        track_id: TrackId,
        active: Vec<bool>,
    },
    /// Bandwidth allocation paused (`paused: true`) the subscriber's copy of the video
    /// `track_id` because not even its lowest layer fits the subscriber's connection, or
    /// resumed it (`paused: false`).
    VideoPausedForBandwidth {
        participant: ParticipantId,
        track_id: TrackId,
        paused: bool,
    },
    /// The room's active speakers changed: loudest first, at most one event per 250 ms per
    /// room, empty when nobody speaks.
    ActiveSpeakers {
        room: RoomId,
        speakers: Vec<ActiveSpeaker>,
    },
    /// Recording `recording` of `room` stopped writing on this node after an I/O error (disk
    /// full, directory not writable); what was written stays. Signaling should stop it.
    RecordingFailed {
        room: RoomId,
        recording: String,
        error: String,
    },
    /// Recording `recording` is closed on this node: its files (relative to its directory)
    /// and the error that ended it early, if one did.
    RecordingFinished {
        room: RoomId,
        recording: String,
        files: Vec<String>,
        error: Option<String>,
    },
}

/// One entry of [`SfuEvent::ActiveSpeakers`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveSpeaker {
    pub participant: ParticipantId,
    /// Smoothed audio level, 0..1 linear amplitude.
    pub level: f32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SfuError {
    #[error("unknown participant")]
    UnknownParticipant,
    #[error("participant already exists")]
    ParticipantExists,
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("media node unavailable: {0}")]
    Unavailable(String),
}
