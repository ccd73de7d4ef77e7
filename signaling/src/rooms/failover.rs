//! Keeping rooms alive when the fleet changes under them: a media node dies or drains (its
//! participants move to another node over the sockets they already have), or another signaling
//! node takes a room over (its participants here are told to join again).

use super::*;
use crate::fleet::NodeLost;
use crate::protocol::TrackInfo as Announced;

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

    /// Takes over a participant whose signaling node died while its media lives on: the media
    /// node routes its events here from now on and says what it publishes, and the participant
    /// re-enters the room as people see it, with its id and tracks. Its peer connections never
    /// noticed: no media was lost.
    pub(super) async fn adopt(
        &self,
        claims: &Claims,
        token: &str,
        outbox: Outbox,
        request_id: Option<String>,
    ) -> Result<Joined, Refusal> {
        let refused = || {
            (
                ErrorCode::ResumeFailed,
                "nothing to resume; join afresh".to_string(),
            )
        };
        let pid = resume_token::verify(&self.call_key.secret, token, &claims.sub, &claims.room)
            .ok_or_else(refused)?;
        {
            let state = self.lock();
            // The same person already joined afresh: that session wins.
            let taken = state.participants.contains_key(&pid)
                || state.rooms.get(&claims.room).is_some_and(|members| {
                    members.iter().any(|m| {
                        state
                            .participants
                            .get(m)
                            .is_some_and(|p| p.info.identity == claims.sub)
                    })
                });
            if taken {
                return Err(refused());
            }
        }
        let adopted = self
            .media
            .request(SfuRequest::Adopt {
                room: RoomId(claims.room.clone()),
                participant: ParticipantId(pid.clone()),
            })
            .await;
        let tracks = match adopted {
            Ok(SfuResponse::Adopted { tracks }) => tracks,
            Ok(_) | Err(_) => return Err(refused()),
        };
        let mut state = self.lock();
        if state.participants.contains_key(&pid) {
            return Err(refused());
        }
        let entering = Entering {
            claims,
            pid: &pid,
            tracks: tracks
                .into_iter()
                .map(|t| {
                    let announced = Announced {
                        id: t.track_id.0,
                        kind: t.kind,
                        source: t.source,
                        muted: t.muted,
                    };
                    (t.mid, announced)
                })
                .collect(),
            resumed: true,
            resume_token: token.to_string(),
            video_subscription: VideoSubscription::Auto,
        };
        self.enter(&mut state, entering, outbox, request_id);
        drop(state);
        info!(participant = %pid, room = %claims.room, "adopted from a lost signaling node");
        if let Some(fleet) = self.fleet_stats() {
            fleet.adopted();
        }
        Ok(Joined {
            participant_id: pid,
            session: 1,
        })
    }

    /// This node is draining and gave its leases up: every socket is closed with 1001 so that
    /// clients come back through the hostname to the nodes taking over (which adopt room
    /// participants from their media nodes; devices register again).
    pub fn hand_over_all(&self) -> usize {
        let mut state = self.lock();
        let mut outboxes: Vec<Outbox> = state
            .participants
            .values_mut()
            .filter_map(|p| p.outbox.take())
            .collect();
        outboxes.extend(state.devices.values_mut().filter_map(|d| d.outbox.take()));
        for outbox in &outboxes {
            let _ = outbox.send(Outbound::GoingAway);
        }
        outboxes.len()
    }

    /// Rooms with anyone in them.
    pub fn room_names(&self) -> Vec<String> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Places each participant of a lost media node on another one and tells it to set up
    /// its media again. Only the peer connections are new: the socket, the room, the track ids
    /// and everything people see stay.
    pub async fn media_node_lost(&self, lost: NodeLost) {
        let moved = self.move_media(lost.participants, lost.reason).await;
        info!(media_node = %lost.node, moved, reason = ?lost.reason, "participants moved to another media node");
    }

    /// A worker thread of a media node failed and the node forgot its participants: they are
    /// added again (the node puts them on a live worker) and set up their media anew, exactly
    /// as if their media node had been lost.
    pub async fn media_worker_lost(&self, participants: Vec<ParticipantId>) {
        let count = participants.len();
        let moved = self
            .move_media(participants, MediaResetReason::MediaNodeLost)
            .await;
        warn!(
            moved,
            lost = count,
            "a media worker failed; its participants were moved"
        );
    }

    /// Adds each participant to the media plane again and sends it `media_reset`; one that no
    /// media takes is removed (it gets `media_unavailable`). Returns how many moved.
    async fn move_media(
        &self,
        participants: Vec<ParticipantId>,
        reason: MediaResetReason,
    ) -> usize {
        let mut moved = 0usize;
        for participant in participants {
            let pid = participant.0.clone();
            let rejoin = {
                let mut state = self.lock();
                let Some(p) = state.participants.get_mut(&pid) else {
                    continue;
                };
                // An offer of the lost media must not be delivered on resume.
                p.undelivered_offer = None;
                p.undelivered_reset = false;
                p.undelivered_media_reset = None;
                p.replaced_fingerprint = p.publisher_fingerprint.take();
                p.moving = true;
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
                    let mut state = self.lock();
                    if let Some(p) = state.participants.get_mut(&pid) {
                        p.moving = false;
                        let reset = Outbound::Message(ServerMessage::MediaReset { reason }, None);
                        match &p.outbox {
                            Some(outbox) if outbox.send(reset).is_ok() => {
                                // The new node's offer, if it came first, follows the reset.
                                if let Some(offer) = p.undelivered_offer.take() {
                                    if let Err(refused) =
                                        outbox.send(Outbound::Message(offer, None))
                                    {
                                        if let Outbound::Message(offer, _) = *refused {
                                            p.undelivered_offer = Some(offer);
                                        }
                                    }
                                }
                            }
                            // No socket now: both wait for the resume, the reset first.
                            _ => p.undelivered_media_reset = Some(reason),
                        }
                    }
                }
                Err(e) => {
                    if let Some(p) = self.lock().participants.get_mut(&pid) {
                        p.moving = false;
                    }
                    warn!(participant = %pid, "no media took the participant: {e}");
                    if let Some(fleet) = self.fleet_stats() {
                        fleet.move_failed();
                    }
                    self.remove(&pid, LeaveReason::Disconnected).await;
                }
            }
        }
        moved
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
