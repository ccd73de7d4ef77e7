//! What media nodes report about participants (subscriber offers and resets, connections up
//! or lost, speakers, paused videos, ...), carried to the participants it concerns.

use super::*;

impl Hub {
    /// Carries media-node events to the participants they concern.
    pub async fn dispatch_media_events(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<SfuEvent>,
    ) {
        while let Some(event) = events.recv().await {
            match event {
                SfuEvent::SubscriberOffer {
                    participant,
                    sdp,
                    tracks,
                } => {
                    let mut state = self.lock();
                    let Some(p) = state.participants.get_mut(&participant.0) else {
                        continue;
                    };
                    if p.moving {
                        p.undelivered_offer = Some(ServerMessage::SubscriberOffer { sdp, tracks });
                        continue;
                    }
                    let msg =
                        Outbound::Message(ServerMessage::SubscriberOffer { sdp, tracks }, None);
                    // An offer that cannot be queued (the socket is gone, or being cut for
                    // falling behind) waits for a resume: the media node waits for its answer.
                    let refused = match &p.outbox {
                        Some(outbox) => outbox.send(msg).err(),
                        None => Some(Box::new(msg)),
                    };
                    if let Some(Outbound::Message(offer, _)) = refused.map(|b| *b) {
                        p.undelivered_offer = Some(offer);
                    }
                }
                SfuEvent::MediaLost { participant } => {
                    // The client's own connection to the media node failed (its ICE/DTLS
                    // went silent); the node is fine. It gets its own code so that operators
                    // are not paged for a user's network, and `remove` sends it nothing more.
                    let outbox = self
                        .lock()
                        .participants
                        .get_mut(&participant.0)
                        .and_then(|p| p.outbox.take());
                    if let Some(outbox) = outbox {
                        let _ = outbox.send(Outbound::Fatal(
                            ErrorCode::MediaTimeout,
                            "your connection to the media server failed".into(),
                        ));
                    }
                    self.remove(&participant.0, LeaveReason::Disconnected).await
                }
                // Awaited here, not spawned: the moved participants' first subscriber offers
                // queue behind this event, so each client gets `media_reset` before them.
                SfuEvent::WorkerLost { participants } => self.media_worker_lost(participants).await,
                SfuEvent::MediaConnected { .. } => {}
                // Queued before the offer for the new connection, which follows in this loop.
                SfuEvent::SubscriberReset { participant } => {
                    let mut state = self.lock();
                    let Some(p) = state.participants.get_mut(&participant.0) else {
                        continue;
                    };
                    let reset = Outbound::Message(ServerMessage::SubscriberReset, None);
                    let refused = match &p.outbox {
                        Some(outbox) => outbox.send(reset).is_err(),
                        None => true,
                    };
                    // Kept for a resume, like the offer that follows it.
                    p.undelivered_reset |= refused;
                }
                SfuEvent::PublisherLayers {
                    participant,
                    track_id,
                    active,
                } => {
                    let message = ServerMessage::PublishLayers {
                        track_id: track_id.0,
                        active,
                    };
                    self.lock().send(&participant.0, message);
                }
                SfuEvent::VideoPausedForBandwidth {
                    participant,
                    track_id,
                    paused,
                } => {
                    let message = ServerMessage::VideoPaused {
                        track_id: track_id.0,
                        paused,
                        reason: "bandwidth",
                    };
                    self.lock().send(&participant.0, message);
                }
                SfuEvent::RecordingFailed {
                    room,
                    recording,
                    error,
                } => self.recording_failed(&room.0, &recording, error).await,
                SfuEvent::RecordingFinished {
                    room,
                    recording,
                    files,
                    error,
                } => self.recording_finished(&room.0, &recording, files, error),
                SfuEvent::ActiveSpeakers { room, speakers } => {
                    let mut state = self.lock();
                    // Hidden participants (recorders, monitors) never show up as speakers.
                    let speakers = speakers
                        .into_iter()
                        .filter(|s| {
                            state
                                .participants
                                .get(&s.participant.0)
                                .is_some_and(|p| !p.grants.hidden)
                        })
                        .map(|s| SpeakerInfo {
                            participant_id: s.participant.0,
                            level: (s.level * 1000.0).round() / 1000.0,
                        })
                        .collect::<Vec<_>>();
                    if state.rooms.contains_key(&room.0) {
                        state.speakers.insert(room.0.clone(), speakers.clone());
                    }
                    state.broadcast(&room.0, "", &ServerMessage::ActiveSpeakers { speakers });
                }
            }
        }
    }
}
