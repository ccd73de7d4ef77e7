//! Text chat in a room: to everyone or to one participant. The server sets the sender, limits
//! size and rate, and keeps the latest room-wide messages for those who join later. Private
//! messages are never kept.

use std::time::Instant;

use super::{Hub, Refusal};
use crate::protocol::{ChatMessage, ErrorCode, ServerMessage};
use crate::rate_limit::TokenBucket;

/// Longest chat text, in UTF-8 bytes.
pub const MAX_CHAT_BYTES: usize = 2000;
/// Room-wide messages kept for the `joined` snapshot.
pub const CHAT_HISTORY: usize = 50;
/// Per participant, on top of the socket's message limit: one chat line fans out to the
/// whole room, so a class of hundreds must not be flooded at the socket's rate.
pub const CHAT_PER_SECOND: u32 = 5;
pub const CHAT_BURST: u32 = 10;
/// Room-wide lines per second from all non-admins together: each line is a send to every
/// participant, so a class of 300 caps at 6,000 sends per second however many students type.
/// Admins are exempt, so the teacher is never drowned out.
pub const ROOM_CHAT_PER_SECOND: u32 = 20;
pub const ROOM_CHAT_BURST: u32 = 40;

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hub {
    pub(super) fn chat(&self, pid: &str, text: String, to: Option<String>) -> Result<(), Refusal> {
        if text.len() > MAX_CHAT_BYTES {
            return Err((
                ErrorCode::ChatTooLong,
                format!("chat text is limited to {MAX_CHAT_BYTES} bytes"),
            ));
        }
        if text.trim().is_empty() {
            return Err((ErrorCode::InvalidRequest, "chat text is empty".into()));
        }
        let mut state = self.lock();
        let p = state
            .participants
            .get_mut(pid)
            .ok_or((ErrorCode::NotJoined, "not in a room".to_string()))?;
        if !p.grants.can_publish_data {
            return Err((
                ErrorCode::PermissionDenied,
                "token does not grant can_publish_data".into(),
            ));
        }
        if !p.seat.chat_bucket.try_take(Instant::now()) {
            return Err((
                ErrorCode::ChatRateLimited,
                format!("at most {CHAT_PER_SECOND} chat messages per second"),
            ));
        }
        let room = p.room.clone();
        let admin = p.grants.room_admin;
        let message = ChatMessage {
            from: pid.to_string(),
            identity: p.info.identity.clone(),
            name: p.info.name.clone(),
            text,
            to: to.clone(),
            at: unix_millis(),
        };
        match to {
            Some(target) => {
                if state
                    .participants
                    .get(&target)
                    .is_none_or(|t| t.room != room)
                {
                    return Err((
                        ErrorCode::UnknownParticipant,
                        format!("no participant {target:?} in this room"),
                    ));
                }
                state.send(&target, ServerMessage::Chat(message.clone()));
                if target != pid {
                    state.send(pid, ServerMessage::Chat(message));
                }
            }
            None => {
                let classroom = state.classrooms.entry(room.clone()).or_default();
                let budget = classroom.chat_budget.get_or_insert_with(|| {
                    TokenBucket::new(ROOM_CHAT_PER_SECOND, ROOM_CHAT_BURST, Instant::now())
                });
                if !admin && !budget.try_take(Instant::now()) {
                    return Err((
                        ErrorCode::ChatRateLimited,
                        "the room's chat is busy; try again in a moment".into(),
                    ));
                }
                let history = &mut classroom.chat;
                if history.len() >= CHAT_HISTORY {
                    history.pop_front();
                }
                history.push_back(message.clone());
                state.broadcast(&room, "", &ServerMessage::Chat(message));
            }
        }
        Ok(())
    }
}
