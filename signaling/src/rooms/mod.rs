//! Rooms and participants as people see them, and the hub that keeps them consistent.
//!
//! All state sits behind one lock that is never held across an `.await`. Every message to a
//! participant is queued while that lock is held, so each participant sees events in the
//! order the state changed (its `joined` snapshot is never followed by an event it already
//! contains).
//!
//! Device sockets and calls between users share this state (a call ends when its room empties)
//! and live in [`devices`]. Classroom controls — moderation, hands and lecture mode, muting,
//! chat — live in [`moderation`], [`mute`] and [`chat`].

mod census;
mod chat;
mod devices;
mod drain;
mod failover;
mod media_events;
mod moderation;
mod mute;
mod outbox;
mod publish;
mod recording;
mod resume_token;

pub use census::Census;
pub use devices::{CallAction, DeviceSession};
pub use outbox::{outbox, Outbox, OutboxReceiver, OverflowSignal, Queued};
pub use recording::RecordingStatus;
// Not part of the API: resume tokens arrive from clients, and this lets the fuzz targets
// (`fuzz/`) and their smoke test reach the private verifier without standing up rooms.
#[doc(hidden)]
pub use resume_token::{mint as fuzz_mint_resume_token, verify as fuzz_verify_resume_token};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::sync::mpsc;
use tracing::{info, warn};
use zvon_sfu::api::{
    ParticipantId, PublishedTrack, RoomId, SfuError, SfuEvent, SfuRequest, SfuResponse, TrackId,
    VideoSubscription,
};

use crate::calls::book::CallState;
use crate::calls::webhooks::Webhooks;
use crate::calls::{CallBook, CallSettings, Now};
use crate::config::{ApiKey, Limits};
use crate::media_plane::MediaPlane;
use crate::protocol::{
    ErrorCode, LeaveReason, MediaResetReason, ParticipantInfo, PublishedTrackInfo, RoomInfo,
    SelfInfo, ServerMessage, SpeakerInfo, TrackDeclaration, TrackInfo, PROTOCOL_VERSION,
};
use crate::token::{Claims, Grants};
use crate::turn::{IceServer, TurnConfig};

/// What a session's writer task is asked to do.
#[derive(Debug)]
pub enum Outbound {
    Message(ServerMessage, Option<String>),
    /// A message built as JSON (call events), with the request id it answers.
    Json(serde_json::Value, Option<String>),
    /// Send this error and close the socket with its close code.
    Fatal(ErrorCode, String),
    /// Close normally (after `left`, or replaced by a newer session).
    Close,
    /// Close with 1001 "going away": this node is draining; the client resumes on a new socket
    /// and lands on another node, which adopts its session.
    GoingAway,
}

/// An error to report to the client.
pub type Refusal = (ErrorCode, String);

struct Participant {
    info: ParticipantInfo,
    grants: Grants,
    room: String,
    outbox: Option<Outbox>,
    /// Increments on every (re)attachment so a stale socket's goodbye is ignored.
    session: u64,
    resume_token: String,
    publishing: bool,
    /// (mid, track id) of what the publisher connection carries, for renegotiation: a mid
    /// declared again keeps its track id.
    track_mids: Vec<(String, String)>,
    /// A subscriber offer that arrived while the socket was gone; sent on resume. Also one
    /// from a new media node before the participant was told `media_reset` (`moving`).
    undelivered_offer: Option<ServerMessage>,
    /// A `subscriber_reset` that arrived while the socket was gone; sent on resume, before
    /// the offer for the new connection.
    undelivered_reset: bool,
    /// Being added to another media node: its offers wait until `media_reset` went out (a
    /// node that already relays the room's tracks offers them at once).
    moving: bool,
    /// A `media_reset` that found no socket (it dropped around the failover, e.g. closed by
    /// a fatal error of a request the dying node never answered); sent on resume, first:
    /// without it the client would answer the new node's offer on its old connection.
    undelivered_media_reset: Option<MediaResetReason>,
    /// The DTLS fingerprint (`a=fingerprint`) of the publisher connection the media node has.
    publisher_fingerprint: Option<String>,
    /// The fingerprint of the publisher connection the last `media_reset` replaced: an offer
    /// of it (an ICE restart sent before the client saw the reset) is refused, or the new node
    /// would take the closed connection for the participant's publisher.
    replaced_fingerprint: Option<String>,
    seat: moderation::Seat,
    /// How it joined the media node, to join another one after a failover.
    video_subscription: VideoSubscription,
}

struct DeviceEntry {
    name: String,
    outbox: Option<Outbox>,
    session: u64,
}

struct State {
    /// Room name → participant ids in join order.
    rooms: HashMap<String, Vec<String>>,
    participants: HashMap<String, Participant>,
    /// Device sockets by (user, device).
    devices: HashMap<(String, String), DeviceEntry>,
    calls: CallBook,
    /// Lecture mode, hands, bans and chat history of open rooms.
    classrooms: HashMap<String, moderation::Classroom>,
    /// The last `active_speakers` of each room: the SFU reports changes only, so a
    /// participant joining while someone speaks would otherwise see nobody speaking.
    speakers: HashMap<String, Vec<SpeakerInfo>>,
    /// Rooms being recorded.
    recordings: HashMap<String, recording::ActiveRecording>,
}

impl State {
    fn send(&self, pid: &str, message: ServerMessage) {
        if let Some(outbox) = self.participants.get(pid).and_then(|p| p.outbox.as_ref()) {
            let _ = outbox.send(Outbound::Message(message, None));
        }
    }

    /// Sends to everyone in `room` except `except`.
    fn broadcast(&self, room: &str, except: &str, message: &ServerMessage) {
        // Serialized once: every recipient's queue shares the same bytes.
        let text: axum::extract::ws::Utf8Bytes = message.to_json(None).into();
        for pid in self.rooms.get(room).into_iter().flatten() {
            if pid == except {
                continue;
            }
            if let Some(outbox) = self.participants.get(pid).and_then(|p| p.outbox.as_ref()) {
                let _ = outbox.send_text(text.clone());
            }
        }
    }
}

pub struct Hub {
    /// Lets `&self` methods schedule timers that outlive the call.
    me: Weak<Hub>,
    state: Mutex<State>,
    media: MediaPlane,
    limits: Limits,
    webhooks: Webhooks,
    /// Signs the room tokens handed out for answered calls.
    call_key: ApiKey,
    /// Shutting down: no new joins (see `drain.rs`).
    draining: std::sync::atomic::AtomicBool,
    /// Relay credentials each `joined` carries.
    turn: Option<TurnConfig>,
    /// `--record-dir`: recording is possible (see `recording.rs`).
    record_dir: std::sync::OnceLock<std::path::PathBuf>,
}

fn now() -> Now {
    Now {
        instant: std::time::Instant::now(),
        unix: crate::token::now_secs(),
    }
}

/// Who enters a room, for [`Hub::enter`]: a new participant (no tracks yet) or one adopted
/// from a signaling node that died (its tracks as its media node reports them, by mid).
struct Entering<'a> {
    claims: &'a Claims,
    pid: &'a str,
    tracks: Vec<(String, TrackInfo)>,
    resumed: bool,
    resume_token: String,
    video_subscription: VideoSubscription,
}

/// A successful join: who the session now speaks for.
pub struct Joined {
    pub participant_id: String,
    pub session: u64,
}

pub(crate) fn random_id(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn sfu_refusal(e: SfuError) -> Refusal {
    match e {
        SfuError::InvalidSdp(m) => (ErrorCode::InvalidSdp, m),
        SfuError::InvalidRequest(m) => (ErrorCode::InvalidRequest, m),
        SfuError::UnknownParticipant | SfuError::ParticipantExists => {
            (ErrorCode::Internal, e.to_string())
        }
        SfuError::Unavailable(m) => (ErrorCode::MediaUnavailable, m),
    }
}

impl Hub {
    /// A media request for `pid` failed. When its media node was lost meanwhile (the request
    /// met a dead node, or came while the participant is between nodes), the failover
    /// answers it (`media_reset`, or `media_unavailable` if no node takes the participant):
    /// the request is refused with `media_moving`, which the session survives, so that the
    /// `media_reset` finds the socket.
    fn media_refusal(&self, pid: &str, e: SfuError) -> Refusal {
        let lost = matches!(e, SfuError::Unavailable(_) | SfuError::UnknownParticipant)
            && (self.lock().participants.get(pid).is_some_and(|p| p.moving)
                || self.media.media_lost(&ParticipantId(pid.to_string())));
        if lost {
            return (
                ErrorCode::MediaMoving,
                format!("your media node was lost; media_reset follows ({e})"),
            );
        }
        sfu_refusal(e)
    }

    pub fn new(
        media: MediaPlane,
        limits: Limits,
        call_settings: CallSettings,
        webhooks: Webhooks,
        call_key: ApiKey,
        turn: Option<TurnConfig>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Hub {
            me: me.clone(),
            state: Mutex::new(State {
                rooms: HashMap::new(),
                participants: HashMap::new(),
                devices: HashMap::new(),
                calls: CallBook::new(call_settings),
                classrooms: HashMap::new(),
                speakers: HashMap::new(),
                recordings: HashMap::new(),
            }),
            media,
            limits,
            webhooks,
            call_key,
            draining: Default::default(),
            turn,
            record_dir: std::sync::OnceLock::new(),
        })
    }

    /// Closes an empty room now, or after `empty_timeout` if nobody joined meanwhile.
    fn close_when_still_empty(&self, state: &mut State, room: &str) {
        let timeout = self.limits.empty_timeout;
        if timeout.is_zero() {
            state.rooms.remove(room);
            state.classrooms.remove(room);
            state.speakers.remove(room);
            info!(room, "room closed");
            return;
        }
        let Some(hub) = self.me.upgrade() else {
            return;
        };
        let room = room.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let mut state = hub.lock();
            if state.rooms.get(&room).is_some_and(Vec::is_empty) {
                state.rooms.remove(&room);
                state.classrooms.remove(&room);
                state.speakers.remove(&room);
                info!(room, "room closed after empty timeout");
            }
        });
    }

    /// Fresh TURN credentials for `identity` (none without a TURN server).
    fn ice_servers(&self, identity: &str) -> Vec<IceServer> {
        self.turn
            .as_ref()
            .map(|t| t.ice_servers(identity, crate::token::now_secs()))
            .unwrap_or_default()
    }

    /// Where room-level events (WHIP/WHEP sessions) are delivered.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    pub fn media(&self) -> &MediaPlane {
        &self.media
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn room_count(&self) -> usize {
        self.lock().rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.lock().participants.len()
    }

    /// Admits a participant with a verified token. `joined` is queued on `outbox`.
    pub async fn join(
        &self,
        claims: &Claims,
        requested_room: Option<&str>,
        video_subscription: VideoSubscription,
        outbox: Outbox,
        request_id: Option<String>,
    ) -> Result<Joined, Refusal> {
        if self.is_draining() {
            return Err((
                ErrorCode::ServerDraining,
                "this server is shutting down; join again in a moment".into(),
            ));
        }
        if let Some(room) = requested_room {
            if room != claims.room {
                return Err((
                    ErrorCode::WrongRoom,
                    format!("token is for room {:?}, not {room:?}", claims.room),
                ));
            }
        }
        // `#…` names are the fleet's own leases (cluster mode), never a room.
        if claims.room.is_empty()
            || claims.room.starts_with('#')
            || claims.room.len() > 128
            || claims.sub.is_empty()
            || claims.sub.len() > 128
        {
            return Err((
                ErrorCode::Unauthorized,
                "token room and identity must be 1-128 characters, the room not starting with #"
                    .into(),
            ));
        }
        let replaced = {
            let state = self.lock();
            // A call's room is open only while the call is: its tokens outlive it.
            if claims.room.starts_with("call-")
                && !state
                    .calls
                    .call_of_room(&claims.room)
                    .is_some_and(|c| c.state == CallState::Active)
            {
                return Err((ErrorCode::UnknownCall, "this call is not active".into()));
            }
            if moderation::is_banned(&state, &claims.room, &claims.sub) {
                return Err((ErrorCode::Banned, "banned from this room".into()));
            }
            let members = state
                .rooms
                .get(&claims.room)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let replaced = members
                .iter()
                .find(|pid| {
                    state
                        .participants
                        .get(*pid)
                        .is_some_and(|p| p.info.identity == claims.sub)
                })
                .cloned();
            let count = members.len() - usize::from(replaced.is_some());
            if count >= self.limits.max_participants {
                return Err((
                    ErrorCode::RoomFull,
                    format!(
                        "room holds at most {} participants",
                        self.limits.max_participants
                    ),
                ));
            }
            replaced
        };
        if let Some(old) = replaced {
            self.remove(&old, LeaveReason::Replaced).await;
        }

        let pid = format!("PA_{}", random_id(10));
        {
            // Enter the room before the media node learns of us: its first subscriber offer
            // may come right after, and must find us (and follow our `joined`).
            let resume_token =
                resume_token::mint(&self.call_key.secret, &pid, &claims.sub, &claims.room);
            let entering = Entering {
                claims,
                pid: &pid,
                tracks: vec![],
                resumed: false,
                resume_token,
                video_subscription,
            };
            self.enter(&mut self.lock(), entering, outbox, request_id);
        }
        let added = self
            .media
            .request(SfuRequest::AddParticipant {
                room: RoomId(claims.room.clone()),
                participant: ParticipantId(pid.clone()),
                can_subscribe: claims.grants.can_subscribe,
                video_subscription,
            })
            .await;
        if let Err(e) = added {
            warn!(participant = %pid, "media node refused participant: {e}");
            self.remove(&pid, LeaveReason::Disconnected).await;
            return Err(sfu_refusal(e));
        }
        info!(participant = %pid, room = %claims.room, identity = %claims.sub, "joined");
        self.recording_people_changed(&claims.room).await;
        Ok(Joined {
            participant_id: pid,
            session: 1,
        })
    }

    /// Puts a participant in its room: `joined` (with the room as it is now, and who speaks)
    /// to it, `participant_joined` to the others, then the state.
    fn enter(
        &self,
        state: &mut State,
        entering: Entering<'_>,
        outbox: Outbox,
        request_id: Option<String>,
    ) {
        let Entering {
            claims,
            pid,
            tracks,
            resumed,
            resume_token,
            video_subscription,
        } = entering;
        let info = ParticipantInfo {
            id: pid.to_string(),
            identity: claims.sub.clone(),
            name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
            tracks: tracks.iter().map(|(_, t)| t.clone()).collect(),
        };
        let others: Vec<ParticipantInfo> = state
            .rooms
            .get(&claims.room)
            .into_iter()
            .flatten()
            .filter_map(|id| state.participants.get(id))
            .filter(|p| !p.grants.hidden)
            .map(|p| p.info.clone())
            .collect();
        let joined = ServerMessage::Joined {
            protocol: PROTOCOL_VERSION,
            resumed,
            resume_token: resume_token.clone(),
            room: RoomInfo {
                name: claims.room.clone(),
                max_participants: self.limits.max_participants,
            },
            participant: SelfInfo {
                info: info.clone(),
                grants: moderation::effective(state, &claims.room, claims.grants, false),
            },
            participants: others,
            classroom: moderation::snapshot(state, &claims.room, claims.grants.room_admin),
            ice_servers: self.ice_servers(&claims.sub),
        };
        let _ = outbox.send(Outbound::Message(joined, request_id));
        if let Some(speakers) = state.speakers.get(&claims.room).filter(|s| !s.is_empty()) {
            let current = ServerMessage::ActiveSpeakers {
                speakers: speakers.clone(),
            };
            let _ = outbox.send(Outbound::Message(current, None));
        }
        recording::on_enter(state, &claims.room, &outbox);
        if !claims.grants.hidden {
            state.broadcast(
                &claims.room,
                pid,
                &ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
            );
        }
        state
            .rooms
            .entry(claims.room.clone())
            .or_default()
            .push(pid.to_string());
        if claims.room.starts_with("call-") {
            state.calls.room_member_joined(&claims.room, &claims.sub);
        }
        state.participants.insert(
            pid.to_string(),
            Participant {
                info,
                grants: claims.grants,
                room: claims.room.clone(),
                outbox: Some(outbox),
                session: 1,
                resume_token,
                publishing: !tracks.is_empty(),
                track_mids: tracks.into_iter().map(|(mid, t)| (mid, t.id)).collect(),
                undelivered_offer: None,
                undelivered_reset: false,
                moving: false,
                undelivered_media_reset: None,
                publisher_fingerprint: None,
                replaced_fingerprint: None,
                seat: moderation::Seat::new(),
                video_subscription,
            },
        );
    }

    /// Reattaches a socket to a participant whose previous socket dropped. In a fleet, a
    /// participant this node does not know may be one whose signaling node died: its media
    /// lives on, and this node (now the room's owner) adopts it.
    pub async fn resume(
        &self,
        claims: &Claims,
        resume_token: &str,
        outbox: Outbox,
        request_id: Option<String>,
    ) -> Result<Joined, Refusal> {
        let known = self
            .lock()
            .participants
            .values()
            .any(|p| p.resume_token == resume_token);
        if !known && matches!(self.media, MediaPlane::Fleet(_)) {
            return self.adopt(claims, resume_token, outbox, request_id).await;
        }
        self.resume_here(claims, resume_token, outbox, request_id)
    }

    fn resume_here(
        &self,
        claims: &Claims,
        resume_token: &str,
        outbox: Outbox,
        request_id: Option<String>,
    ) -> Result<Joined, Refusal> {
        let mut state = self.lock();
        let refused = || {
            (
                ErrorCode::ResumeFailed,
                "nothing to resume; join afresh".to_string(),
            )
        };
        let pid = state
            .participants
            .iter()
            .find(|(_, p)| {
                p.resume_token == resume_token
                    && p.info.identity == claims.sub
                    && p.room == claims.room
            })
            .map(|(id, _)| id.clone())
            .ok_or_else(refused)?;
        let others: Vec<ParticipantInfo> = state
            .rooms
            .get(&claims.room)
            .into_iter()
            .flatten()
            .filter(|id| **id != pid)
            .filter_map(|id| state.participants.get(id))
            .filter(|p| !p.grants.hidden)
            .map(|p| p.info.clone())
            .collect();
        let classroom = moderation::snapshot(&state, &claims.room, claims.grants.room_admin);
        let recorded = recording::current(&state, &claims.room);
        let grants = state
            .participants
            .get(&pid)
            .map(|p| moderation::effective_grants(&state, p))
            .ok_or_else(refused)?;
        let p = state.participants.get_mut(&pid).ok_or_else(refused)?;
        if let Some(old) = p.outbox.take() {
            let _ = old.send(Outbound::Close);
        }
        p.session += 1;
        let joined = ServerMessage::Joined {
            protocol: PROTOCOL_VERSION,
            resumed: true,
            resume_token: p.resume_token.clone(),
            room: RoomInfo {
                name: p.room.clone(),
                max_participants: self.limits.max_participants,
            },
            participant: SelfInfo {
                info: p.info.clone(),
                grants,
            },
            ice_servers: self.ice_servers(&p.info.identity),
            participants: others,
            classroom,
        };
        let _ = outbox.send(Outbound::Message(joined, request_id));
        if let Some(reason) = p.undelivered_media_reset.take() {
            let _ = outbox.send(Outbound::Message(
                ServerMessage::MediaReset { reason },
                None,
            ));
        }
        if std::mem::take(&mut p.undelivered_reset) {
            let _ = outbox.send(Outbound::Message(ServerMessage::SubscriberReset, None));
        }
        if let Some(offer) = p.undelivered_offer.take() {
            let _ = outbox.send(Outbound::Message(offer, None));
        }
        if let Some(message) = recorded {
            let _ = outbox.send(Outbound::Message(message, None));
        }
        p.outbox = Some(outbox);
        info!(participant = %pid, "resumed");
        Ok(Joined {
            participant_id: pid,
            session: p.session,
        })
    }

    pub async fn subscriber_answer(&self, pid: &str, sdp: String) -> Result<(), Refusal> {
        self.media
            .request(SfuRequest::SubscriberAnswer {
                participant: ParticipantId(pid.to_string()),
                sdp,
            })
            .await
            .map(|_| ())
            .map_err(|e| self.media_refusal(pid, e))
    }

    /// The client's subscriber connection lost its path: the media node offers it new ICE
    /// credentials (a `subscriber_offer`, through the usual event).
    pub async fn subscriber_ice_restart(&self, pid: &str) -> Result<(), Refusal> {
        self.media
            .request(SfuRequest::RestartSubscriberIce {
                participant: ParticipantId(pid.to_string()),
            })
            .await
            .map(|_| ())
            .map_err(|e| self.media_refusal(pid, e))
    }

    /// A subscriber's adaptive-stream report for one video track it receives.
    pub async fn track_settings(
        &self,
        pid: &str,
        track_id: &str,
        width: u32,
        height: u32,
        enabled: bool,
    ) -> Result<(), Refusal> {
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        match self
            .media
            .request(SfuRequest::SetTrackSettings {
                participant: ParticipantId(pid.to_string()),
                track_id: TrackId(track_id.to_string()),
                width: clamp(width),
                height: clamp(height),
                enabled,
            })
            .await
        {
            // The media node already dropped this participant (its connection was lost and
            // the leave is on its way): a late size report is moot, not a server fault.
            Ok(_) | Err(SfuError::UnknownParticipant) => Ok(()),
            Err(e) => Err(self.media_refusal(pid, e)),
        }
    }

    /// Takes a participant out of its room and tells everyone.
    pub async fn remove(&self, pid: &str, reason: LeaveReason) {
        let mut emptied = None;
        {
            let mut state = self.lock();
            let Some(p) = state.participants.remove(pid) else {
                return;
            };
            moderation::forget(&mut state, &p.room, pid);
            if let Some(members) = state.rooms.get_mut(&p.room) {
                members.retain(|id| id != pid);
                if members.is_empty() {
                    emptied = Some(p.room.clone());
                    self.close_when_still_empty(&mut state, &p.room);
                }
            }
            if !p.grants.hidden {
                for t in &p.info.tracks {
                    let msg = ServerMessage::TrackUnpublished {
                        participant_id: pid.to_string(),
                        track_id: t.id.clone(),
                    };
                    state.broadcast(&p.room, pid, &msg);
                }
                state.broadcast(
                    &p.room,
                    pid,
                    &ServerMessage::ParticipantLeft {
                        participant_id: pid.to_string(),
                        reason,
                    },
                );
            }
            if let Some(outbox) = &p.outbox {
                match reason {
                    LeaveReason::Left | LeaveReason::RoomClosed => {
                        let _ = outbox.send(Outbound::Message(ServerMessage::Left, None));
                        let _ = outbox.send(Outbound::Close);
                    }
                    LeaveReason::Replaced => {
                        let _ = outbox.send(Outbound::Message(
                            ServerMessage::ParticipantLeft {
                                participant_id: pid.to_string(),
                                reason,
                            },
                            None,
                        ));
                        let _ = outbox.send(Outbound::Close);
                    }
                    LeaveReason::Disconnected => {
                        let _ = outbox.send(Outbound::Fatal(
                            ErrorCode::MediaUnavailable,
                            "media connection lost".into(),
                        ));
                    }
                    // The admin's request already sent the `removed` error.
                    LeaveReason::Removed => {}
                }
            }
            info!(participant = %pid, ?reason, "left");
            if p.room.starts_with("call-") {
                state
                    .calls
                    .room_member_left(&p.room, &p.info.identity, now());
                let effects = state.calls.take_effects();
                self.apply_call_effects(&mut state, effects);
            }
        }
        if let Err(e) = self
            .media
            .request(SfuRequest::RemoveParticipant {
                participant: ParticipantId(pid.to_string()),
            })
            .await
        {
            warn!(participant = %pid, "media node did not remove participant: {e}");
        }
        // Nobody left to record.
        if let Some(room) = emptied {
            self.stop_recording(&room, None).await;
        }
    }

    /// The participant's socket closed deliberately: it left, unless a newer socket has
    /// already resumed it.
    pub async fn remove_session(&self, pid: &str, session: u64) {
        let current = self
            .lock()
            .participants
            .get(pid)
            .is_some_and(|p| p.session == session);
        if current {
            self.remove(pid, LeaveReason::Left).await;
        }
    }

    /// The participant's socket went away. Unless a new socket resumes it within the grace
    /// period, it is removed.
    pub fn detach(self: &Arc<Self>, pid: &str, session: u64) {
        {
            let mut state = self.lock();
            let Some(p) = state.participants.get_mut(pid) else {
                return;
            };
            if p.session != session {
                return;
            }
            p.outbox = None;
        }
        let hub = self.clone();
        let pid = pid.to_string();
        let grace = self.limits.reconnect_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let expired = hub
                .lock()
                .participants
                .get(&pid)
                .is_some_and(|p| p.session == session && p.outbox.is_none());
            if expired {
                hub.remove(&pid, LeaveReason::Disconnected).await;
            }
        });
    }
}
