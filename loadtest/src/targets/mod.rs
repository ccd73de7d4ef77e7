//! The signaling side of a load-test target, behind a small trait so that other servers can be
//! driven by the same participants (the WebRTC side is standard and stays in `client`).
//!
//! A target turns a [`JoinRequest`] into a [`SignalSession`]: two channels, commands from the
//! participant (publish offer, subscriber answer, mute, leave) and events from the server
//! (joined, publish answer, subscriber offers, errors, close). The participant is always the
//! offerer on its publisher connection and always the answerer on its subscriber connection.

pub mod janus;
mod json_socket;
pub mod mediasoup;
pub mod raw;
pub mod zvon;

use std::net::IpAddr;
use std::time::Instant;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Audio,
    Video,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub can_publish: bool,
    /// Source address for the signaling connection (spreads joins over loopback addresses so
    /// that a per-IP upgrade limit does not cap the join rate). `None`: the OS picks.
    pub local_ip: Option<IpAddr>,
    /// Ask the server to offer camera videos only once `track_settings` requests them
    /// (`video_subscription: on_demand`); targets without the mode ignore it.
    pub on_demand_video: bool,
}

/// A track as the room announces it (`joined`, `participant_joined`, `track_published`),
/// before any subscriber offer carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncedTrack {
    pub id: String,
    pub kind: Kind,
    /// `camera`, `microphone`, `screen`, … as the publisher declared it.
    pub source: String,
}

impl AnnouncedTrack {
    /// A video that an on-demand subscriber must ask for: every video but a screen share.
    pub fn is_camera(&self) -> bool {
        self.kind == Kind::Video && self.source != "screen"
    }
}

/// Someone in the room and the tracks they publish.
#[derive(Debug, Clone)]
pub struct AnnouncedParticipant {
    pub id: String,
    pub identity: String,
    pub tracks: Vec<AnnouncedTrack>,
}

/// One m-line of the publisher offer that sends media.
#[derive(Debug, Clone)]
pub struct TrackOffer {
    pub mid: String,
    pub kind: Kind,
    pub source: &'static str,
    pub muted: bool,
}

/// A published track as the server named it.
#[derive(Debug, Clone)]
pub struct PublishedTrack {
    pub mid: String,
    pub id: String,
    pub kind: Kind,
}

/// An m-line of a subscriber offer and the track it carries.
#[derive(Debug, Clone)]
pub struct RemoteTrack {
    pub mid: String,
    pub track_id: String,
    pub participant_id: String,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum SignalEvent {
    Joined {
        participant_id: String,
        /// The others already in the room, in the server's order.
        others: Vec<AnnouncedParticipant>,
    },
    /// Someone joined later.
    ParticipantJoined(AnnouncedParticipant),
    ParticipantLeft {
        participant_id: String,
    },
    TrackPublished {
        participant_id: String,
        track: AnnouncedTrack,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    PublishAnswer {
        sdp: String,
        tracks: Vec<PublishedTrack>,
    },
    SubscriberOffer {
        sdp: String,
        tracks: Vec<RemoteTrack>,
    },
    Error {
        code: String,
        message: String,
    },
    /// The session ended: `reason` is a short failure code (`closed`, `eof`, …).
    Closed {
        reason: String,
    },
}

#[derive(Debug)]
pub enum SignalCommand {
    PublishOffer {
        sdp: String,
        tracks: Vec<TrackOffer>,
    },
    SubscriberAnswer {
        sdp: String,
    },
    Mute {
        track_id: String,
        muted: bool,
    },
    /// Adaptive stream for a received video: rendered size, or paused (`enabled: false`).
    TrackSettings {
        track_id: String,
        width: u32,
        height: u32,
        enabled: bool,
    },
    Leave,
}

pub struct SignalSession {
    pub events: mpsc::Receiver<SignalEvent>,
    pub commands: mpsc::Sender<SignalCommand>,
    /// When the join request went out: join latency counts from here.
    pub join_sent: Instant,
}

/// Why a session could not be opened; `reason` is the failure bucket in the report.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct TargetError {
    pub reason: String,
    pub detail: String,
}

impl TargetError {
    pub fn new(reason: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        TargetError {
            reason: reason.into(),
            detail: detail.to_string(),
        }
    }
}

pub trait Target: Send + Sync {
    fn name(&self) -> &str;
    /// Opens the signaling session and sends the join. Must finish in bounded time.
    fn connect(&self, req: JoinRequest) -> BoxFuture<'static, Result<SignalSession, TargetError>>;
    /// `Some(relay)` for the raw UDP relay baseline: its participants send plain RTP
    /// ([`raw::run`]) instead of speaking WebRTC.
    fn raw_relay(&self) -> Option<std::net::SocketAddr> {
        None
    }
}
