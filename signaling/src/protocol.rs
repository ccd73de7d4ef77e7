//! The WebSocket protocol's messages (`docs/protocol.md`), version 1.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zvon_sfu::api::{SubscribedTrack, TrackKind, VideoSubscription};

use crate::token::Grants;
use crate::turn::IceServer;

pub const PROTOCOL_VERSION: u32 = 1;

/// Every client message `type` this version knows.
pub const KNOWN_TYPES: [&str; 26] = [
    "join",
    "publish_offer",
    "subscriber_answer",
    "subscriber_ice_restart",
    "mute",
    "leave",
    "ping",
    "register",
    "call_invite",
    "call_ack",
    "call_accept",
    "call_decline",
    "call_cancel",
    "call_hangup",
    "admin_mute",
    "remove_participant",
    "set_publish",
    "raise_hand",
    "lower_hand",
    "approve_hand",
    "dismiss_hand",
    "set_lecture_mode",
    "chat",
    "track_settings",
    "track_settings_batch",
    "set_recording",
];

/// Entries of one `track_settings_batch`: a whole gallery page and then some.
pub const MAX_TRACK_SETTINGS_BATCH: usize = 100;

/// The media node needs the source too (screen shares outrank cameras): one definition.
pub use zvon_sfu::api::TrackSource;

/// A track as the client declares it in `publish_offer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TrackDeclaration {
    pub mid: String,
    pub kind: TrackKind,
    #[serde(default = "unknown_source")]
    pub source: TrackSource,
    #[serde(default)]
    pub muted: bool,
}

fn unknown_source() -> TrackSource {
    TrackSource::Unknown
}

fn enabled_by_default() -> bool {
    true
}

/// One entry of `track_settings_batch`, with `track_settings`' fields and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TrackSetting {
    pub track_id: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Join {
        protocol: u32,
        token: String,
        #[serde(default)]
        room: Option<String>,
        #[serde(default)]
        resume: Option<String>,
        /// An admin's join may switch the room's lecture mode on or off.
        #[serde(default)]
        lecture_mode: Option<bool>,
        /// `on_demand`: cameras are offered only once `track_settings` asks for them.
        #[serde(default)]
        video_subscription: VideoSubscription,
    },
    PublishOffer {
        sdp: String,
        tracks: Vec<TrackDeclaration>,
    },
    SubscriberAnswer {
        sdp: String,
    },
    /// The client's subscriber connection lost its path (network change): asks for a
    /// `subscriber_offer` with new ICE credentials.
    SubscriberIceRestart,
    Mute {
        track_id: String,
        muted: bool,
    },
    /// How the client shows a video track it receives (adaptive stream): the rendered
    /// size in device pixels picks the simulcast layer; hidden or 0x0 pauses it.
    TrackSettings {
        track_id: String,
        #[serde(default)]
        width: u32,
        #[serde(default)]
        height: u32,
        #[serde(default = "enabled_by_default")]
        enabled: bool,
    },
    /// Several `track_settings` in one message: scrolling a class gallery changes dozens of
    /// tiles at once, which one message each would push past the socket's rate limit.
    TrackSettingsBatch {
        tracks: Vec<TrackSetting>,
    },
    Leave,
    Ping,
    Register {
        protocol: u32,
        token: String,
    },
    CallInvite {
        to: Vec<String>,
        media: crate::calls::Media,
        #[serde(default)]
        call_id: Option<String>,
    },
    CallAck {
        call_id: String,
    },
    CallAccept {
        call_id: String,
    },
    CallDecline {
        call_id: String,
    },
    CallCancel {
        call_id: String,
    },
    CallHangup {
        call_id: String,
    },
    // Classroom (`crate::rooms::moderation`, `crate::rooms::chat`).
    AdminMute {
        participant_id: String,
        track_id: String,
        muted: bool,
    },
    RemoveParticipant {
        participant_id: String,
        #[serde(default)]
        ban: bool,
    },
    SetPublish {
        participant_id: String,
        allowed: bool,
    },
    RaiseHand,
    LowerHand,
    ApproveHand {
        participant_id: String,
    },
    DismissHand {
        participant_id: String,
    },
    SetLectureMode {
        enabled: bool,
    },
    Chat {
        text: String,
        /// A participant id for a private message; absent for the whole room.
        #[serde(default)]
        to: Option<String>,
    },
    /// A room admin starts or stops recording the room (`crate::rooms::recording`).
    SetRecording {
        enabled: bool,
    },
}

impl ClientMessage {
    /// Moderation, hands, lecture mode and chat: handled by the hub's classroom code.
    pub fn is_classroom(&self) -> bool {
        matches!(
            self,
            ClientMessage::AdminMute { .. }
                | ClientMessage::RemoveParticipant { .. }
                | ClientMessage::SetPublish { .. }
                | ClientMessage::RaiseHand
                | ClientMessage::LowerHand
                | ClientMessage::ApproveHand { .. }
                | ClientMessage::DismissHand { .. }
                | ClientMessage::SetLectureMode { .. }
                | ClientMessage::Chat { .. }
                | ClientMessage::SetRecording { .. }
        )
    }
}

/// A parsed client frame, or the error code it earns.
#[derive(Debug)]
pub struct Parsed {
    pub request_id: Option<String>,
    pub message: Result<ClientMessage, (ErrorCode, String)>,
}

/// Parses one text frame. Never panics; every failure maps to a documented code.
pub fn parse_client_message(text: &str) -> Parsed {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Parsed {
                request_id: None,
                message: Err((ErrorCode::InvalidMessage, format!("not JSON: {e}"))),
            }
        }
    };
    let Some(object) = value.as_object() else {
        return Parsed {
            request_id: None,
            message: Err((ErrorCode::InvalidMessage, "not a JSON object".into())),
        };
    };
    let request_id = object
        .get("request_id")
        .and_then(Value::as_str)
        .filter(|id| id.len() <= 64)
        .map(str::to_string);
    let message = match object.get("type").and_then(Value::as_str) {
        None => Err((
            ErrorCode::InvalidMessage,
            "missing string field \"type\"".into(),
        )),
        Some(t) if !KNOWN_TYPES.contains(&t) => Err((
            ErrorCode::UnknownType,
            format!("unknown message type {:?}", quote(t)),
        )),
        // A join without a token is an authentication failure, not a formatting one.
        Some("join" | "register") if !object.get("token").is_some_and(Value::is_string) => Err((
            ErrorCode::Unauthorized,
            "join needs a string \"token\"".into(),
        )),
        Some(_) => serde_json::from_value(value.clone())
            .map_err(|e| (ErrorCode::InvalidMessage, e.to_string())),
    };
    Parsed {
        request_id,
        message,
    }
}

/// Longest piece of client input an error message quotes: a client's own 1 MiB string echoed
/// back would cost the server as much again, per message, for a client that may never read it.
pub const MAX_QUOTE_CHARS: usize = 64;
/// Longest error `message`, in bytes. Parser errors quote the input they choke on.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 256;

/// `text` cut to [`MAX_QUOTE_CHARS`] characters (marked with `…` when cut).
pub fn quote(text: &str) -> String {
    truncate(text, MAX_QUOTE_CHARS)
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// `message` cut to at most [`MAX_ERROR_MESSAGE_BYTES`] bytes, for error messages that quote
/// client input outside the WebSocket protocol (the server API).
pub fn quote_message(message: String) -> String {
    bounded_message(message)
}

/// `message` cut to at most [`MAX_ERROR_MESSAGE_BYTES`] bytes, on a character boundary.
fn bounded_message(message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackInfo {
    pub id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedTrackInfo {
    pub mid: String,
    #[serde(flatten)]
    pub track: TrackInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelfInfo {
    #[serde(flatten)]
    pub info: ParticipantInfo,
    pub grants: Grants,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomInfo {
    pub name: String,
    pub max_participants: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    Left,
    Disconnected,
    Replaced,
    RoomClosed,
    /// An admin removed the participant.
    Removed,
}

/// One raised hand, in the order hands were raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandInfo {
    pub participant_id: String,
    pub identity: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandReason {
    Raised,
    Lowered,
    Approved,
    Dismissed,
}

/// A chat message as delivered; the sender fields are set by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub from: String,
    pub identity: String,
    pub name: String,
    pub text: String,
    /// Set on private messages: the recipient's participant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Server time, milliseconds since the Unix epoch.
    pub at: u64,
}

/// The classroom part of `joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassroomSnapshot {
    pub lecture_mode: bool,
    /// The raised hands, oldest first; only in an admin's `joined`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hands: Option<Vec<HandInfo>>,
    /// The latest room-wide chat messages, oldest first.
    pub chat: Vec<ChatMessage>,
}

/// One entry of `active_speakers`, loudest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeakerInfo {
    pub participant_id: String,
    /// Smoothed audio level, 0..1 linear amplitude (0.1 ≈ -20 dBov, normal speech).
    pub level: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        protocol: u32,
        resumed: bool,
        resume_token: String,
        room: RoomInfo,
        participant: SelfInfo,
        participants: Vec<ParticipantInfo>,
        classroom: Box<ClassroomSnapshot>,
        /// TURN relays for both peer connections (empty when the server has none).
        ice_servers: Vec<IceServer>,
    },
    PublishAnswer {
        sdp: String,
        tracks: Vec<PublishedTrackInfo>,
    },
    SubscriberOffer {
        sdp: String,
        tracks: Vec<SubscribedTrack>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: String,
        reason: LeaveReason,
    },
    TrackPublished {
        participant_id: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    TrackMuted {
        participant_id: String,
        track_id: String,
        muted: bool,
    },
    /// Who is speaking now, loudest first (the first is the dominant speaker); sent when the
    /// ranking changes, at most 4 times a second; empty when nobody speaks.
    ActiveSpeakers {
        speakers: Vec<SpeakerInfo>,
    },
    /// To a publisher (dynacast): send only the simulcast layers of `track_id` marked `true`,
    /// lowest first; nobody receives the others.
    PublishLayers {
        track_id: String,
        active: Vec<bool>,
    },
    /// To a subscriber: its copy of the video `track_id` is paused because its connection
    /// cannot carry even the lowest layer (`paused: true`, reason `bandwidth`), or resumed.
    VideoPaused {
        track_id: String,
        paused: bool,
        reason: &'static str,
    },
    /// To a publisher: an admin muted (or released) one of its tracks.
    AdminMuted {
        track_id: String,
        muted: bool,
    },
    /// To a participant whose effective grants changed (publish granted or revoked, lecture
    /// mode switched).
    PermissionChanged {
        grants: Grants,
    },
    /// To admins: the raised hands, oldest first, after every change.
    HandQueue {
        hands: Vec<HandInfo>,
    },
    /// To a participant: its own hand's state.
    Hand {
        raised: bool,
        reason: HandReason,
    },
    LectureMode {
        enabled: bool,
    },
    /// To everyone in the room (and in a late joiner's first messages while it lasts): the
    /// room is being recorded (`active: true`), or no longer is; `error` says why a
    /// recording stopped on its own (disk full, directory not writable).
    Recording {
        active: bool,
        recording_id: String,
        /// Unix milliseconds.
        started_at: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Chat(ChatMessage),
    /// The media node serving this participant is gone (or draining) and another one took
    /// over: drop both peer connections, publish again on a new one (the same mids keep their
    /// track ids) and answer the next `subscriber_offer` on a new one. The room, the socket
    /// and everything else stay.
    MediaReset {
        reason: MediaResetReason,
    },
    /// The subscriber peer connection is replaced: close it and answer the next
    /// `subscriber_offer` on a new one (the server's old one collected too many stopped
    /// m-lines). Publishing is not affected.
    SubscriberReset,
    /// The server is shutting down (SIGTERM, all-in-one mode): it takes no new joins, the
    /// session goes on for up to `timeout_ms`, then the socket is closed with 1001.
    ServerDraining {
        timeout_ms: u64,
    },
    Left,
    Pong,
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(flatten)]
    message: &'a ServerMessage,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl ServerMessage {
    pub fn to_json(&self, request_id: Option<&str>) -> String {
        serde_json::to_string(&Envelope {
            message: self,
            request_id,
        })
        .unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialization"}"#.into()
        })
    }

    /// An `error`; its message is bounded, whatever input it quotes.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: bounded_message(message.into()),
        }
    }
}

/// Documented error codes; see the table in `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidMessage,
    UnknownType,
    MessageTooLarge,
    UnsupportedProtocol,
    NotJoined,
    AlreadyJoined,
    JoinTimeout,
    Unauthorized,
    TokenExpired,
    WrongRoom,
    RoomFull,
    ResumeFailed,
    PermissionDenied,
    InvalidSdp,
    InvalidRequest,
    RateLimited,
    MediaUnavailable,
    Internal,
    NotRegistered,
    UnknownCall,
    CallAlreadyAnswered,
    CannotCallSelf,
    TooManyCalls,
    UnknownParticipant,
    Removed,
    Banned,
    ChatTooLong,
    ChatRateLimited,
    /// Cluster mode: the registry (Redis) cannot say who owns the room or place it; retry.
    ClusterUnavailable,
    /// Cluster mode: another signaling node took over the room; reconnect and join again.
    RoomMoved,
    /// The client did not read what the server sent: too much queued for it, or one frame
    /// not taken within the write deadline. The socket is cut as if it had dropped.
    SlowConsumer,
    /// The client's own media connection failed (no ICE/DTLS traffic from it); the media
    /// node is fine. Not a server-side error.
    MediaTimeout,
    /// The server is shutting down and takes no new joins (resumes of running sessions are
    /// still taken); closed with 1001. Join again in a moment, through the load balancer.
    ServerDraining,
    /// Recording is not possible: the server has no record directory, or its media node
    /// refused.
    RecordingUnavailable,
    /// The server API named a room that is not open.
    UnknownRoom,
    /// Cluster mode: the media node serving the participant was lost while (or before) the
    /// request reached it. Not fatal: `media_reset` follows (or `media_unavailable` if no
    /// node can take the participant); the request is moot, the connections it was about are
    /// replaced.
    MediaMoving,
}

/// Why a `media_reset` was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaResetReason {
    /// The media node stopped answering (crashed, or its network is cut), or the worker thread
    /// of the node serving the participant failed.
    MediaNodeLost,
    /// The media node is draining for maintenance.
    MediaNodeDraining,
}

impl ErrorCode {
    /// The WebSocket close code for fatal errors; `None` for errors the session survives.
    pub fn close_code(self) -> Option<u16> {
        match self {
            ErrorCode::MessageTooLarge => Some(1009),
            ErrorCode::UnsupportedProtocol => Some(4000),
            ErrorCode::JoinTimeout | ErrorCode::Unauthorized | ErrorCode::TokenExpired => {
                Some(4001)
            }
            ErrorCode::WrongRoom => Some(4003),
            ErrorCode::RoomFull => Some(4004),
            ErrorCode::ResumeFailed => Some(4005),
            ErrorCode::RateLimited => Some(4029),
            ErrorCode::Banned => Some(4403),
            ErrorCode::Removed => Some(4410),
            ErrorCode::MediaUnavailable => Some(4503),
            ErrorCode::ClusterUnavailable => Some(4513),
            ErrorCode::RoomMoved => Some(4012),
            ErrorCode::SlowConsumer => Some(4008),
            ErrorCode::MediaTimeout => Some(4504),
            ErrorCode::ServerDraining => Some(1001),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_frame_maps_to_a_code() {
        let code = |s: &str| parse_client_message(s).message.err().map(|e| e.0);
        assert_eq!(code("{"), Some(ErrorCode::InvalidMessage));
        assert_eq!(code("[1,2]"), Some(ErrorCode::InvalidMessage));
        assert_eq!(code(r#"{"no_type":1}"#), Some(ErrorCode::InvalidMessage));
        assert_eq!(code(r#"{"type":"fly"}"#), Some(ErrorCode::UnknownType));
        assert_eq!(
            code(r#"{"type":"mute","track_id":3}"#),
            Some(ErrorCode::InvalidMessage)
        );
        assert_eq!(code(r#"{"type":"ping","extra":true}"#), None);
        assert_eq!(
            code(r#"{"type":"join","protocol":1}"#),
            Some(ErrorCode::Unauthorized)
        );
        assert_eq!(
            code(r#"{"type":"join","protocol":1}"#),
            Some(ErrorCode::Unauthorized)
        );
    }

    #[test]
    fn request_id_is_echoed_even_on_errors() {
        let p = parse_client_message(r#"{"type":"fly","request_id":"r7"}"#);
        assert_eq!(p.request_id.as_deref(), Some("r7"));
        let json =
            ServerMessage::error(ErrorCode::UnknownType, "x").to_json(p.request_id.as_deref());
        assert_eq!(
            json,
            r#"{"type":"error","code":"unknown_type","message":"x","request_id":"r7"}"#
        );
    }

    #[test]
    fn errors_never_echo_unbounded_input() {
        let huge = "ж".repeat(900 * 1024);
        let (code, message) = parse_client_message(&format!(r#"{{"type":"{huge}"}}"#))
            .message
            .expect_err("unknown type");
        assert_eq!(code, ErrorCode::UnknownType);
        let json = ServerMessage::error(code, message).to_json(None);
        assert!(json.len() < 400, "{} bytes", json.len());
        // serde's own errors quote the offending value too.
        let bad_media = format!(r#"{{"type":"call_invite","to":["b"],"media":"{huge}"}}"#);
        let (_, message) = parse_client_message(&bad_media)
            .message
            .expect_err("bad media");
        let json = ServerMessage::error(ErrorCode::InvalidMessage, message).to_json(None);
        assert!(json.len() < 400, "{} bytes", json.len());
    }

    #[test]
    fn join_parses() {
        let p = parse_client_message(r#"{"type":"join","protocol":1,"token":"t","room":"r"}"#);
        assert_eq!(
            p.message.unwrap(),
            ClientMessage::Join {
                protocol: 1,
                token: "t".into(),
                room: Some("r".into()),
                resume: None,
                lecture_mode: None,
                video_subscription: VideoSubscription::Auto,
            }
        );
    }

    #[test]
    fn track_settings_batch_parses_entries_with_the_same_defaults() {
        let p = parse_client_message(
            r#"{"type":"track_settings_batch","tracks":[{"track_id":"TR_1","width":320,"height":180},{"track_id":"TR_2","enabled":false}]}"#,
        );
        let Ok(ClientMessage::TrackSettingsBatch { tracks }) = p.message else {
            panic!("{:?}", p.message);
        };
        assert_eq!(tracks.len(), 2);
        assert_eq!((tracks[0].width, tracks[0].enabled), (320, true));
        assert_eq!((tracks[1].width, tracks[1].enabled), (0, false));
        let code = |s: &str| parse_client_message(s).message.err().map(|e| e.0);
        assert_eq!(
            code(r#"{"type":"track_settings_batch","tracks":{"track_id":"TR_1"}}"#),
            Some(ErrorCode::InvalidMessage)
        );
    }

    #[test]
    fn track_settings_parses_with_defaults() {
        let p = parse_client_message(
            r#"{"type":"track_settings","track_id":"TR_1","width":320,"height":180}"#,
        );
        assert_eq!(
            p.message.unwrap(),
            ClientMessage::TrackSettings {
                track_id: "TR_1".into(),
                width: 320,
                height: 180,
                enabled: true,
            }
        );
        let hidden =
            parse_client_message(r#"{"type":"track_settings","track_id":"TR_1","enabled":false}"#);
        assert!(matches!(
            hidden.message,
            Ok(ClientMessage::TrackSettings {
                width: 0,
                height: 0,
                enabled: false,
                ..
            })
        ));
        let code = |s: &str| parse_client_message(s).message.err().map(|e| e.0);
        assert_eq!(
            code(r#"{"type":"track_settings","track_id":"TR_1","width":-1}"#),
            Some(ErrorCode::InvalidMessage)
        );
    }
}
