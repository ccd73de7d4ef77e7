//! Keeping rooms alive when the fleet changes under them: a media node dies or drains (its
//! participants move to another node over the sockets they already have), or another signaling
//! node takes a room over (its participants here are told to join again).

use super::*;
use crate::fleet::NodeLost;

impl Hub {
    /// Whether `room` has anyone in it (a room lease is kept only while it does).
    pub fn room_is_open(&self, room: &str) -> bool {
        self.lock().rooms.get(room).is_some_and(|m| !m.is_empty())
    }

    /// Whether this node serves calls: device sockets, calls ringing or running, call rooms.
    /// The fleet keeps the calls lease while it does.
    pub fn calls_in_use(&self) -> bool {
        let state = self.lock();
        !state.devices.is_empty()
            || state.calls.active_count() > 0
            || state.rooms.keys().any(|r| r.starts_with("call-"))
    }

    /// Another node took the calls over: device sockets and call rooms here go there.
    pub async fn evict_calls(&self) {
        let outboxes: Vec<Outbox> = {
            let mut state = self.lock();
            state
                .devices
                .values_mut()
                .filter_map(|d| d.outbox.take())
                .collect()
        };
        for outbox in outboxes {
            let _ = outbox.send(Outbound::Fatal(
                ErrorCode::RoomMoved,
                "another server took over calls; register again".into(),
            ));
        }
        let call_rooms: Vec<String> = self
            .lock()
            .rooms
            .keys()
            .filter(|r| r.starts_with("call-"))
            .cloned()
            .collect();
        for room in call_rooms {
            self.evict_room(&room).await;
        }
    }

    /// Rooms with anyone in them.
    pub fn room_names(&self) -> Vec<String> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Places each participant of a lost media node on another one and tells it to set up
    /// its media again. Only the peer connections are new: the socket, the room, the track ids
    /// and everything people see stay.
    pub async fn media_node_lost(&self, lost: NodeLost) {
        let reason = lost.reason;
        let mut moved = 0usize;
        for participant in lost.participants {
            let pid = participant.0.clone();
            let rejoin = {
                let mut state = self.lock();
                let Some(p) = state.participants.get_mut(&pid) else {
                    continue;
                };
                // An offer of the dead node must not be delivered on resume.
                p.undelivered_offer = None;
                SfuRequest::AddParticipant {
                    room: RoomId(p.room.clone()),
                    participant,
                    can_subscribe: p.grants.can_subscribe,
                    video_subscription: p.video_subscription,
                }
            };
            match self.media.request(rejoin).await {
                Ok(_) => {
                    moved += 1;
                    if let Some(fleet) = self.fleet_stats() {
                        fleet.moved();
                    }
                    self.lock().send(&pid, ServerMessage::MediaReset { reason });
                }
                Err(e) => {
                    warn!(participant = %pid, "no media node took the participant: {e}");
                    if let Some(fleet) = self.fleet_stats() {
                        fleet.move_failed();
                    }
                    self.remove(&pid, LeaveReason::Disconnected).await;
                }
            }
        }
        info!(media_node = %lost.node, moved, ?reason, "participants moved to another media node");
    }

    /// Another signaling node owns `room` now: everyone here is sent there to join again.
    pub async fn evict_room(&self, room: &str) {
        let members: Vec<String> = self.lock().rooms.get(room).cloned().unwrap_or_default();
        for pid in members {
            let outbox = self
                .lock()
                .participants
                .get_mut(&pid)
                .and_then(|p| p.outbox.take());
            if let Some(outbox) = outbox {
                let _ = outbox.send(Outbound::Fatal(
                    ErrorCode::RoomMoved,
                    "another server took over this room; join again".into(),
                ));
            }
            self.remove(&pid, LeaveReason::Disconnected).await;
        }
    }

    fn fleet_stats(&self) -> Option<&Arc<crate::fleet::FleetStats>> {
        match &self.media {
            MediaPlane::Fleet(fleet) => Some(fleet.stats()),
            MediaPlane::Embedded(_) => None,
        }
    }
}
