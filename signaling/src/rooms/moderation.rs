//! Classroom moderation: what a room admin (token grant `room_admin`) may do to the others —
//! mute a track, remove (and ban), grant or revoke publishing — plus raised hands and lecture
//! mode. Every rule is enforced here on the server; the browser client hiding a button is a
//! convenience, never the control. Muting (by the publisher or an admin) is in [`super::mute`].

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use zvon_sfu::api::{ParticipantId, SfuRequest};

use super::{Hub, Outbound, Participant, Refusal, State};
use crate::protocol::{
    ChatMessage, ClassroomSnapshot, ClientMessage, ErrorCode, HandInfo, HandReason, LeaveReason,
    ServerMessage,
};
use crate::rate_limit::TokenBucket;
use crate::token::Grants;

/// Classroom state of one open room.
#[derive(Default)]
pub(super) struct Classroom {
    pub lecture_mode: bool,
    /// Participant ids with a raised hand, oldest first.
    pub hands: Vec<String>,
    /// Identities removed with a ban: refused (`banned`) while the room stays open.
    pub banned: HashSet<String>,
    /// The latest room-wide chat messages, oldest first.
    pub chat: VecDeque<ChatMessage>,
    /// Room-wide chat budget of everyone but admins; made on first use.
    pub chat_budget: Option<TokenBucket>,
}

/// One participant's classroom state.
pub(super) struct Seat {
    /// An admin granted publishing (`set_publish` or `approve_hand`): may publish in lecture
    /// mode.
    pub approved: bool,
    /// Tracks an admin holds muted, each with whether the publisher itself wants it muted.
    pub admin_muted: Vec<(String, bool)>,
    pub chat_bucket: TokenBucket,
}

impl Seat {
    pub fn new() -> Self {
        Seat {
            approved: false,
            admin_muted: vec![],
            chat_bucket: TokenBucket::new(
                super::chat::CHAT_PER_SECOND,
                super::chat::CHAT_BURST,
                Instant::now(),
            ),
        }
    }
}

pub(super) fn denied(message: &str) -> Refusal {
    (ErrorCode::PermissionDenied, message.to_string())
}

pub(super) fn unknown(target: &str) -> Refusal {
    (
        ErrorCode::UnknownParticipant,
        format!("no participant {target:?} in this room"),
    )
}

/// What `grants` allow in `room` right now: lecture mode withholds publishing from everyone
/// but admins and approved participants.
pub(super) fn effective(state: &State, room: &str, grants: Grants, approved: bool) -> Grants {
    let mut g = grants;
    let lecture = state.classrooms.get(room).is_some_and(|c| c.lecture_mode);
    if lecture && !g.room_admin && !approved {
        g.can_publish = false;
    }
    g
}

pub(super) fn effective_grants(state: &State, p: &Participant) -> Grants {
    effective(state, &p.room, p.grants, p.seat.approved)
}

/// The publish check of `publish_offer`.
pub(super) fn may_publish(state: &State, p: &Participant) -> bool {
    let g = effective_grants(state, p);
    g.can_publish && !g.hidden
}

pub(super) fn is_banned(state: &State, room: &str, identity: &str) -> bool {
    state
        .classrooms
        .get(room)
        .is_some_and(|c| c.banned.contains(identity))
}

pub(super) fn snapshot(state: &State, room: &str, admin: bool) -> Box<ClassroomSnapshot> {
    let classroom = state.classrooms.get(room);
    Box::new(ClassroomSnapshot {
        lecture_mode: classroom.is_some_and(|c| c.lecture_mode),
        hands: admin.then(|| hand_list(state, room)),
        chat: classroom
            .map(|c| c.chat.iter().cloned().collect())
            .unwrap_or_default(),
    })
}

fn hand_list(state: &State, room: &str) -> Vec<HandInfo> {
    state
        .classrooms
        .get(room)
        .into_iter()
        .flat_map(|c| c.hands.iter())
        .filter_map(|pid| state.participants.get(pid))
        .map(|p| HandInfo {
            participant_id: p.info.id.clone(),
            identity: p.info.identity.clone(),
            name: p.info.name.clone(),
        })
        .collect()
}

/// Sends the hand queue to every admin in `room`.
fn send_hand_queue(state: &State, room: &str) {
    let hands = hand_list(state, room);
    for pid in state.rooms.get(room).into_iter().flatten() {
        if state
            .participants
            .get(pid)
            .is_some_and(|p| p.grants.room_admin)
        {
            state.send(
                pid,
                ServerMessage::HandQueue {
                    hands: hands.clone(),
                },
            );
        }
    }
}

/// Takes `pid`'s hand down; tells it and the admins. False if it was not raised.
fn lower_hand(state: &mut State, room: &str, pid: &str, reason: HandReason) -> bool {
    let Some(c) = state.classrooms.get_mut(room) else {
        return false;
    };
    let before = c.hands.len();
    c.hands.retain(|h| h != pid);
    if c.hands.len() == before {
        return false;
    }
    state.send(
        pid,
        ServerMessage::Hand {
            raised: false,
            reason,
        },
    );
    send_hand_queue(state, room);
    true
}

/// A participant is leaving: its hand goes down without a word to it.
pub(super) fn forget(state: &mut State, room: &str, pid: &str) {
    let Some(c) = state.classrooms.get_mut(room) else {
        return;
    };
    let before = c.hands.len();
    c.hands.retain(|h| h != pid);
    if c.hands.len() != before {
        send_hand_queue(state, room);
    }
}

/// Withdraws everything `pid` publishes from the room (under the lock): everyone, including
/// the publisher, hears `track_unpublished`. True when the media node must be told.
pub(super) fn withdraw(state: &mut State, pid: &str) -> bool {
    let Some(p) = state.participants.get_mut(pid) else {
        return false;
    };
    let was_publishing = std::mem::replace(&mut p.publishing, false);
    let tracks = std::mem::take(&mut p.info.tracks);
    p.seat.admin_muted.clear();
    let room = p.room.clone();
    for t in tracks {
        let msg = ServerMessage::TrackUnpublished {
            participant_id: pid.to_string(),
            track_id: t.id,
        };
        state.broadcast(&room, "", &msg);
    }
    was_publishing
}

impl Hub {
    /// Handles one classroom message from participant `pid`.
    pub async fn classroom(&self, pid: &str, message: ClientMessage) -> Result<(), Refusal> {
        match message {
            ClientMessage::AdminMute {
                participant_id,
                track_id,
                muted,
            } => {
                self.admin_mute(pid, &participant_id, &track_id, muted)
                    .await
            }
            ClientMessage::RemoveParticipant {
                participant_id,
                ban,
            } => self.remove_by_admin(pid, &participant_id, ban).await,
            ClientMessage::SetPublish {
                participant_id,
                allowed,
            } => self.set_publish(pid, &participant_id, allowed).await,
            ClientMessage::ApproveHand { participant_id } => {
                self.set_publish(pid, &participant_id, true).await
            }
            ClientMessage::RaiseHand => self.set_hand(pid, true),
            ClientMessage::LowerHand => self.set_hand(pid, false),
            ClientMessage::DismissHand { participant_id } => {
                let mut state = self.lock();
                let room = admin_over(&state, pid, &participant_id, true)?;
                lower_hand(&mut state, &room, &participant_id, HandReason::Dismissed);
                Ok(())
            }
            ClientMessage::SetLectureMode { enabled } => self.set_lecture_mode(pid, enabled).await,
            ClientMessage::Chat { text, to } => self.chat(pid, text, to),
            ClientMessage::SetRecording { enabled } => {
                self.set_recording_by_admin(pid, enabled).await
            }
            _ => Err((ErrorCode::InvalidRequest, "not a classroom message".into())),
        }
    }

    async fn remove_by_admin(&self, admin: &str, target: &str, ban: bool) -> Result<(), Refusal> {
        {
            let mut state = self.lock();
            let room = admin_over(&state, admin, target, false)?;
            let Some(p) = state.participants.get(target) else {
                return Err(unknown(target));
            };
            let identity = p.info.identity.clone();
            if let Some(outbox) = &p.outbox {
                let message = if ban {
                    "an admin removed you and banned you from this room"
                } else {
                    "an admin removed you from this room"
                };
                let _ = outbox.send(Outbound::Fatal(ErrorCode::Removed, message.into()));
            }
            if ban {
                state
                    .classrooms
                    .entry(room)
                    .or_default()
                    .banned
                    .insert(identity);
            }
        }
        self.remove(target, LeaveReason::Removed).await;
        Ok(())
    }

    /// Grants or revokes publishing; granting also answers a raised hand.
    async fn set_publish(&self, admin: &str, target: &str, allowed: bool) -> Result<(), Refusal> {
        let unpublish = {
            let mut state = self.lock();
            let room = admin_over(&state, admin, target, false)?;
            let before = state
                .participants
                .get(target)
                .map(|p| effective_grants(&state, p))
                .ok_or_else(|| unknown(target))?;
            if let Some(p) = state.participants.get_mut(target) {
                p.grants.can_publish = allowed;
                p.seat.approved = allowed;
            }
            if allowed {
                lower_hand(&mut state, &room, target, HandReason::Approved);
            }
            self.apply_grants(&mut state, target, before)
        };
        if unpublish {
            self.unpublish(target).await;
        }
        Ok(())
    }

    /// Tells `pid` its grants if they differ from `before`, and withdraws its tracks if it may
    /// no longer publish. True when the media node must unpublish it.
    fn apply_grants(&self, state: &mut State, pid: &str, before: Grants) -> bool {
        let Some(p) = state.participants.get(pid) else {
            return false;
        };
        let after = effective_grants(state, p);
        let publishing = p.publishing;
        if after != before {
            state.send(pid, ServerMessage::PermissionChanged { grants: after });
        }
        !after.can_publish && publishing && withdraw(state, pid)
    }

    /// True, with the media node told to unpublish, when an admin revoked publishing (or
    /// lecture mode began) while `pid`'s offer was being answered.
    pub(super) async fn revoked_while_publishing(&self, pid: &str) -> bool {
        let revoked = self
            .lock()
            .participants
            .get(pid)
            .is_some_and(|p| !p.publishing);
        if revoked {
            self.unpublish(pid).await;
        }
        revoked
    }

    pub(super) async fn unpublish(&self, pid: &str) {
        let request = SfuRequest::Unpublish {
            participant: ParticipantId(pid.to_string()),
        };
        if let Err(e) = self.media.request(request).await {
            tracing::warn!(participant = %pid, "media node did not unpublish: {e}");
        }
    }

    fn set_hand(&self, pid: &str, raised: bool) -> Result<(), Refusal> {
        let mut state = self.lock();
        let p = state
            .participants
            .get(pid)
            .ok_or((ErrorCode::NotJoined, "not in a room".to_string()))?;
        if p.grants.room_admin || p.grants.hidden {
            return Err((
                ErrorCode::InvalidRequest,
                "admins and hidden participants do not raise hands".into(),
            ));
        }
        let room = p.room.clone();
        if !raised {
            if !lower_hand(&mut state, &room, pid, HandReason::Lowered) {
                state.send(
                    pid,
                    ServerMessage::Hand {
                        raised: false,
                        reason: HandReason::Lowered,
                    },
                );
            }
            return Ok(());
        }
        let hands = &mut state.classrooms.entry(room.clone()).or_default().hands;
        let newly = !hands.iter().any(|h| h == pid);
        if newly {
            hands.push(pid.to_string());
        }
        state.send(
            pid,
            ServerMessage::Hand {
                raised: true,
                reason: HandReason::Raised,
            },
        );
        if newly {
            send_hand_queue(&state, &room);
        }
        Ok(())
    }

    /// Switches lecture mode; switching it on unpublishes everyone who may no longer publish.
    pub async fn set_lecture_mode(&self, admin: &str, enabled: bool) -> Result<(), Refusal> {
        let withdrawn: Vec<String> = {
            let mut state = self.lock();
            let p = state
                .participants
                .get(admin)
                .ok_or((ErrorCode::NotJoined, "not in a room".to_string()))?;
            if !p.grants.room_admin {
                return Err(denied("lecture mode needs the room_admin grant"));
            }
            let room = p.room.clone();
            let members: Vec<String> = state.rooms.get(&room).cloned().unwrap_or_default();
            let before: Vec<Grants> = members
                .iter()
                .filter_map(|m| state.participants.get(m))
                .map(|m| effective_grants(&state, m))
                .collect();
            let classroom = state.classrooms.entry(room.clone()).or_default();
            if classroom.lecture_mode == enabled {
                state.send(admin, ServerMessage::LectureMode { enabled });
                return Ok(());
            }
            classroom.lecture_mode = enabled;
            state.broadcast(&room, "", &ServerMessage::LectureMode { enabled });
            members
                .iter()
                .zip(before)
                .filter(|(m, before)| self.apply_grants(&mut state, m, *before))
                .map(|(m, _)| m.clone())
                .collect()
        };
        for pid in withdrawn {
            self.unpublish(&pid).await;
        }
        Ok(())
    }
}

/// Checks that `admin` holds `room_admin` and `target` is in the same room; returns the room.
/// Admins cannot act on each other, except to dismiss a hand.
pub(super) fn admin_over(
    state: &State,
    admin: &str,
    target: &str,
    admins_allowed: bool,
) -> Result<String, Refusal> {
    let a = state
        .participants
        .get(admin)
        .ok_or((ErrorCode::NotJoined, "not in a room".to_string()))?;
    if !a.grants.room_admin {
        return Err(denied("this needs the room_admin grant"));
    }
    let t = state
        .participants
        .get(target)
        .filter(|t| t.room == a.room)
        .ok_or_else(|| unknown(target))?;
    if t.grants.room_admin && !admins_allowed {
        return Err(denied("admins cannot moderate each other"));
    }
    Ok(a.room.clone())
}
