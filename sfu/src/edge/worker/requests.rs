//! The control plane: signaling's requests (join, publish, settings, leave) carried out on
//! this worker's connections and router.

use super::*;
use crate::api::PublishedTrack;
use crate::edge::offer_guard;

impl Worker {
    pub(super) fn peer_of(&self, id: &ParticipantId) -> Result<PeerKey, SfuError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or(SfuError::UnknownParticipant)
    }

    pub fn handle_request(
        &mut self,
        request: SfuRequest,
        now: Instant,
    ) -> Result<SfuResponse, SfuError> {
        // Settings and stats change no connection or track. Recounting (every participant's
        // downtracks) after each of them made a 200-student class, whose subscribers pause
        // ~200 videos each, cost O(N^2) per message.
        let mut recount = !matches!(
            request,
            SfuRequest::SetTrackSettings { .. } | SfuRequest::PeerStats { .. }
        );
        // What this worker's subscribers need of relayed tracks may have changed.
        self.relay_demand_dirty |= !matches!(request, SfuRequest::PeerStats { .. });
        let result = match request {
            SfuRequest::AddParticipant {
                room,
                participant,
                can_subscribe,
                video_subscription,
            } => {
                // A relay proxy of the same participant (it was on another worker a moment
                // ago, e.g. moved after that worker failed) gives way to the real one.
                if let Some(&k) = self.by_id.get(&participant) {
                    if self.participants[k.0 as usize].remote.is_none() {
                        return Err(SfuError::ParticipantExists);
                    }
                    self.remove_proxy(k);
                }
                let key = PeerKey(
                    self.participants
                        .insert(Participant::new(participant.clone(), can_subscribe))
                        as u32,
                );
                self.by_id.insert(participant, key);
                self.router.add_participant(
                    key,
                    &room.0,
                    can_subscribe.then_some(video_subscription),
                );
                Ok(SfuResponse::Done)
            }
            SfuRequest::PublishOffer {
                participant,
                sdp,
                tracks,
            } => {
                let peer = self.peer_of(&participant)?;
                self.publish(peer, &sdp, &tracks, now)
                    .map(|sdp| SfuResponse::PublishAnswer { sdp })
            }
            SfuRequest::SubscriberAnswer { participant, sdp } => {
                let peer = self.peer_of(&participant)?;
                self.accept_subscriber_answer(peer, &sdp, now)
                    .map(|_| SfuResponse::Done)
            }
            SfuRequest::RestartSubscriberIce { participant } => {
                let peer = self.peer_of(&participant)?;
                self.restart_subscriber_ice(peer, now)
                    .map(|_| SfuResponse::Done)
            }
            SfuRequest::SetTrackMuted {
                participant,
                track_id,
                muted,
            } => {
                let peer = self.peer_of(&participant)?;
                let track = self.participants[peer.0 as usize]
                    .published
                    .iter()
                    .find(|t| t.id == track_id)
                    .map(|t| t.key)
                    .ok_or_else(|| SfuError::InvalidRequest(format!("unknown track {track_id}")))?;
                if let Some(req) = self.router.set_muted(track, muted, now) {
                    self.request_keyframe(req);
                }
                self.record_muted(peer, track, muted);
                self.relay_track_muted(peer, track, muted);
                Ok(SfuResponse::Done)
            }
            SfuRequest::Unpublish { participant } => {
                let peer = self.peer_of(&participant)?;
                self.unpublish(peer);
                Ok(SfuResponse::Done)
            }
            SfuRequest::RemoveParticipant { participant } => {
                let peer = self.peer_of(&participant)?;
                self.remove(peer);
                Ok(SfuResponse::Done)
            }
            SfuRequest::SetTrackSettings {
                participant,
                track_id,
                width,
                height,
                enabled,
            } => {
                let peer = self.peer_of(&participant)?;
                let want = if !enabled || width == 0 || height == 0 {
                    Want::Paused
                } else {
                    Want::Size { width, height }
                };
                // Settings for a track that went meanwhile are moot, not an error.
                if let Some((&key, _)) = self.track_ids.iter().find(|(_, id)| **id == track_id) {
                    // An on-demand subscription adds a downtrack: that is counted.
                    recount = self.router.set_want(peer, key, want) == WantOutcome::Subscribed;
                    self.start_early_on_settings(peer, now);
                }
                Ok(SfuResponse::Done)
            }
            SfuRequest::PeerStats { participant } => {
                let peer = self.peer_of(&participant)?;
                Ok(SfuResponse::PeerStats(
                    self.participants[peer.0 as usize].stats.clone(),
                ))
            }
            SfuRequest::Adopt { participant, .. } => {
                recount = false;
                let peer = self.peer_of(&participant)?;
                let tracks = self.participants[peer.0 as usize]
                    .published
                    .iter()
                    .filter_map(|t| {
                        let track = self.router.track(t.key)?;
                        Some(PublishedTrack {
                            mid: t.mid.to_string(),
                            track_id: t.id.clone(),
                            kind: track.kind,
                            source: track.source,
                            muted: track.muted,
                        })
                    })
                    .collect();
                Ok(SfuResponse::Adopted { tracks })
            }
            SfuRequest::ViewerOffer { participant, sdp } => {
                let peer = self.peer_of(&participant)?;
                self.accept_viewer_offer(peer, &sdp, now)
                    .map(|sdp| SfuResponse::PublishAnswer { sdp })
            }
            SfuRequest::ViewerTarget {
                participant,
                publisher,
                track,
            } => {
                let peer = self.peer_of(&participant)?;
                self.retarget_viewer(peer, publisher.as_ref(), track.as_ref(), now);
                Ok(SfuResponse::Done)
            }
            SfuRequest::Record { room, recording } => {
                recount = false;
                self.set_room_recording(room, recording, now)
            }
            // The node handles it (its gateway); never sent to a worker.
            SfuRequest::Cascade { .. } => {
                recount = false;
                Err(SfuError::InvalidRequest("a node's request".into()))
            }
        };
        self.negotiate_all(now);
        if recount {
            self.meter.update_census(&self.participants, &self.router);
        }
        result
    }

    /// A publisher offer: the first one opens the publisher connection; a later one
    /// renegotiates it (tracks added or withdrawn, e.g. a screen share), see
    /// [`SfuRequest::PublishOffer`].
    pub(super) fn publish(
        &mut self,
        peer: PeerKey,
        sdp: &str,
        tracks: &[crate::api::PublishedTrack],
        now: Instant,
    ) -> Result<String, SfuError> {
        let offer = SdpOffer::from_sdp_string(&sdp_candidates::without_candidates(sdp))
            .map_err(|e| sdp_refused("the offer is not valid SDP", e))?;
        if self.participants[peer.0 as usize].publisher.is_some() {
            if self.offer_from_new_connection(peer, sdp) {
                return self.replace_publisher(peer, offer, tracks, now);
            }
            return self.republish(peer, offer, tracks, now);
        }
        let (mut conn, answer) = self.connection_for_offer(offer, OFFER_REFUSED, now)?;
        let checked = check_declared(&conn.rtc, tracks)?;
        conn.start_setup_clock(now + self.media_setup_timeout);
        let ufrag = conn.ufrag.clone();
        self.participants[peer.0 as usize].publisher = Some(Box::new(conn));
        self.add_published(peer, checked);
        self.demux.add_ufrag(ufrag, (peer, Side::Publisher));
        self.mark_dirty((peer, Side::Publisher));
        Ok(sdp_candidates::in_every_section(&answer.to_sdp_string()))
    }

    /// A new connection that has taken a client's offer (a publisher's first, a replacing
    /// publisher connection's, a viewer's); `refused` is the error text when it cannot.
    pub(super) fn connection_for_offer(
        &self,
        offer: SdpOffer,
        refused: &str,
        now: Instant,
    ) -> Result<(Connection, str0m::change::SdpAnswer), SfuError> {
        let mut conn = Connection::new(self.candidate, self.dtls_cert.as_ref(), now)
            .map_err(|e| SfuError::Unavailable(e.to_string()))?;
        self.add_tcp_candidate(&mut conn);
        let answer =
            offer_guard::accept_offer(&mut conn.rtc, offer).map_err(|e| sdp_refused(refused, e))?;
        Ok((conn, answer))
    }

    /// Renegotiation on the existing publisher connection. str0m applies the offer to the
    /// same `Rtc` (new m-lines, direction changes, stopped m-lines); here the published
    /// tracks follow it.
    fn republish(
        &mut self,
        peer: PeerKey,
        offer: SdpOffer,
        tracks: &[crate::api::PublishedTrack],
        now: Instant,
    ) -> Result<String, SfuError> {
        let Some(conn) = self.participants[peer.0 as usize].publisher.as_mut() else {
            return Err(SfuError::InvalidRequest("no publisher connection".into()));
        };
        let answer = match offer_guard::accept_offer(&mut conn.rtc, offer) {
            Ok(answer) => answer,
            Err(e) => {
                if matches!(e, offer_guard::OfferRefused::Panicked(_)) {
                    // str0m stopped halfway through this connection's state: it cannot be
                    // trusted any more; media-loss handling ends it like a dead path.
                    conn.rtc.disconnect();
                }
                return Err(sdp_refused(OFFER_REFUSED, e));
            }
        };
        let checked = check_declared(&conn.rtc, tracks);
        // New ICE credentials in the offer: the client restarted ICE (its network changed).
        self.follow_local_ufrag((peer, Side::Publisher), now);
        let sending: Vec<Mid> = self.participants[peer.0 as usize]
            .published
            .iter()
            .map(|t| t.mid)
            .filter(|mid| conn_sends(&self.participants[peer.0 as usize], *mid))
            .collect();
        let result = match checked {
            Ok(checked) => {
                // Kept: same mid, same id, still sending. Everything else declared is new.
                let kept: Vec<(Mid, TrackId)> = self.participants[peer.0 as usize]
                    .published
                    .iter()
                    .filter(|e| {
                        sending.contains(&e.mid)
                            && checked
                                .iter()
                                .any(|(m, t)| *m == e.mid && t.track_id == e.id)
                    })
                    .map(|e| (e.mid, e.id.clone()))
                    .collect();
                self.withdraw_published(peer, |e| kept.contains(&(e.mid, e.id.clone())));
                let new = checked
                    .into_iter()
                    .filter(|(m, t)| !kept.contains(&(*m, t.track_id.clone())))
                    .collect();
                self.add_published(peer, new);
                Ok(sdp_candidates::in_every_section(&answer.to_sdp_string()))
            }
            Err(e) => {
                // The connection took the offer either way: keep what still sends, add nothing.
                self.withdraw_published(peer, |t| sending.contains(&t.mid));
                Err(e)
            }
        };
        self.mark_dirty((peer, Side::Publisher));
        result
    }

    /// Withdraws the participant's published tracks for which `keep` is false from every
    /// subscriber (their downtracks close at the next subscriber offer).
    pub(super) fn withdraw_published(
        &mut self,
        peer: PeerKey,
        keep: impl Fn(&PublishedTrackEntry) -> bool,
    ) {
        let Some(p) = self.participants.get_mut(peer.0 as usize) else {
            return;
        };
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut p.published)
            .into_iter()
            .partition(|t| keep(t));
        p.published = kept;
        let room = self.router.room_of(peer).map(str::to_owned);
        for t in gone {
            debug!(track = %t.id, "track withdrawn by renegotiation");
            self.stop_tap(t.key, t.record);
            self.relay_track_removed(room.as_deref(), &t);
            self.router.remove_track(t.key);
            self.track_ids.remove(&t.key);
        }
    }

    /// Registers checked tracks of the publisher connection with the router, which gives
    /// every subscriber in the room a pending downtrack.
    pub(super) fn add_published(
        &mut self,
        peer: PeerKey,
        checked: Vec<(Mid, crate::api::PublishedTrack)>,
    ) {
        for (mid, t) in checked {
            let clock_rate = if t.kind == TrackKind::Audio {
                48_000
            } else {
                90_000
            };
            let (rids, codecs) = match (
                t.kind,
                self.participants[peer.0 as usize].publisher.as_ref(),
            ) {
                (TrackKind::Video, Some(c)) => {
                    (simulcast_rids(&c.rtc, mid), video_codecs(&c.rtc, mid))
                }
                _ => (vec![], vec![]),
            };
            if let Some(key) =
                self.router
                    .add_track(peer, mid, t.kind, clock_rate, t.muted, rids.len().max(1))
            {
                self.router.set_source(key, t.source);
                self.track_ids.insert(key, t.track_id.clone());
                self.participants[peer.0 as usize]
                    .published
                    .push(PublishedTrackEntry {
                        mid,
                        key,
                        id: t.track_id,
                        rids,
                        codecs,
                        relay: None,
                        params: vec![],
                        record: None,
                    });
                self.relay_track_added(peer, key);
                let index = self.participants[peer.0 as usize].published.len() - 1;
                self.start_tap(peer, index, Instant::now());
            }
        }
    }

    pub(super) fn remove(&mut self, peer: PeerKey) {
        let room = self.router.room_of(peer).map(str::to_owned);
        let published = self
            .participants
            .get_mut(peer.0 as usize)
            .map(|p| std::mem::take(&mut p.published))
            .unwrap_or_default();
        for t in &published {
            self.relay_track_removed(room.as_deref(), t);
            self.stop_tap(t.key, t.record);
        }
        self.router.remove_participant(peer);
        self.demux.remove_peer(peer);
        if let Some(mut p) = self.participants.try_remove(peer.0 as usize) {
            self.by_id.remove(&p.id);
            for t in &published {
                self.track_ids.remove(&t.key);
            }
            for conn in [p.publisher.as_mut(), p.subscriber.as_mut()]
                .into_iter()
                .flatten()
            {
                self.close_connection(conn);
            }
        }
        self.dirty.retain(|(p, _)| *p != peer);
    }

    /// Withdraws a participant's tracks from every subscriber and closes its publisher
    /// connection, keeping it in the room as a subscriber.
    pub(super) fn unpublish(&mut self, peer: PeerKey) {
        let Some(p) = self.participants.get_mut(peer.0 as usize) else {
            return;
        };
        let published = std::mem::take(&mut p.published);
        let publisher = p.publisher.take();
        let room = self.router.room_of(peer).map(str::to_owned);
        for t in published {
            self.relay_track_removed(room.as_deref(), &t);
            self.stop_tap(t.key, t.record);
            self.router.remove_track(t.key);
            self.track_ids.remove(&t.key);
        }
        self.demux.remove_connection((peer, Side::Publisher));
        self.dirty.retain(|k| *k != (peer, Side::Publisher));
        if let Some(mut conn) = publisher {
            self.close_connection(&mut conn);
        }
    }

    /// Tells the remote we are gone (DTLS close_notify) before the connection is forgotten.
    pub(super) fn close_connection(&mut self, conn: &mut Connection) {
        let _ = conn.rtc.close();
        while let Ok(out) = conn.rtc.poll_output() {
            match out {
                Output::Transmit(t) => {
                    let from = conn.reply_from(t.destination);
                    self.send_queue.push(t.destination, from, t.contents.into())
                }
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
    }
}

/// The publisher connection's m-line `mid` still carries media to us.
fn conn_sends(p: &Participant, mid: Mid) -> bool {
    p.publisher
        .as_ref()
        .and_then(|c| c.rtc.media(mid))
        .is_some_and(|m| matches!(m.direction(), Direction::RecvOnly | Direction::SendRecv))
}

/// Each declared track against the negotiated m-lines: it must exist, be of the declared
/// kind and send.
/// Why an offer that parses is still refused, in terms a client developer can act on.
pub(super) const OFFER_REFUSED: &str =
    "the offer cannot be accepted: it needs every m-line, ICE credentials, a DTLS fingerprint, BUNDLE and rtcp-mux";

/// An SDP refusal for the client: the parser's own error (positions, memory addresses,
/// grammar internals) goes to the log, the client gets `message`.
pub(super) fn sdp_refused(message: &str, detail: impl std::fmt::Display) -> SfuError {
    debug!("SDP refused ({message}): {detail}");
    SfuError::InvalidSdp(message.to_string())
}

pub(super) fn check_declared(
    rtc: &str0m::Rtc,
    tracks: &[crate::api::PublishedTrack],
) -> Result<Vec<(Mid, crate::api::PublishedTrack)>, SfuError> {
    let mut checked = vec![];
    for t in tracks {
        let mid = Mid::from(t.mid.as_str());
        let media = rtc
            .media(mid)
            .ok_or_else(|| SfuError::InvalidSdp(format!("no m-line with mid {}", t.mid)))?;
        let kind_ok = matches!(
            (media.kind(), t.kind),
            (MediaKind::Audio, TrackKind::Audio) | (MediaKind::Video, TrackKind::Video)
        );
        if !kind_ok {
            return Err(SfuError::InvalidSdp(format!(
                "m-line {} is not {:?}",
                t.mid, t.kind
            )));
        }
        if !matches!(media.direction(), Direction::RecvOnly | Direction::SendRecv) {
            return Err(SfuError::InvalidSdp(format!(
                "m-line {} does not send",
                t.mid
            )));
        }
        checked.push((mid, t.clone()));
    }
    Ok(checked)
}
