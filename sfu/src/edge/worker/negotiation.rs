//! Subscriber renegotiation: turning the router's pending and closing downtracks into SDP
//! offers, and applying the answers.

use super::*;
use crate::forward::TrackKey;

impl Worker {
    pub(super) fn negotiate_all(&mut self, now: Instant) {
        for peer in self.router.take_needs_negotiation() {
            self.negotiate(peer, now);
        }
    }

    /// Sends a subscriber offer for everything that changed, unless one is outstanding (the
    /// answer will trigger the next round).
    pub(super) fn negotiate(&mut self, peer: PeerKey, now: Instant) {
        let Some(p) = self.participants.get(peer.0 as usize) else {
            return;
        };
        // A viewer's m-lines are its own offer's; they are retargeted, never renegotiated.
        if p.pending_offer.is_some() || !p.viewer_slots.is_empty() {
            return;
        }
        if p.subscriber
            .as_ref()
            .is_some_and(|c| c.stopped_mlines >= self.max_stopped_mlines)
        {
            self.renew_subscriber(peer, "too many stopped m-lines");
        }
        let downtracks: Vec<_> = self
            .router
            .downtracks_of(peer)
            .into_iter()
            .map(|(k, d)| (k, d.state.clone(), d.kind, d.publisher, d.track))
            .collect();
        if self.participants[peer.0 as usize].subscriber.is_some()
            && leaves_nothing_live(downtracks.iter().map(|d| &d.1))
        {
            // Stopping every live m-line would send an offer without a BUNDLE group, which
            // browsers with max-bundle refuse; stopping them while adding new ones makes a
            // browser move to a new transport. Nothing live is left to keep, so start over:
            // the client drops its connection, and what is pending comes on a new one.
            self.participants[peer.0 as usize].subscriber_ice_restart = false;
            self.renew_subscriber(peer, "nothing live left on it");
            return self.negotiate(peer, now);
        }
        let restart_ice = self.participants[peer.0 as usize].subscriber_ice_restart
            && self.participants[peer.0 as usize].subscriber.is_some();
        if !restart_ice
            && !downtracks
                .iter()
                .any(|d| matches!(d.1, DowntrackState::Pending | DowntrackState::Closing(_)))
        {
            return;
        }
        if self.participants[peer.0 as usize].subscriber.is_none() {
            let conn = if self.bandwidth_allocation {
                Connection::new_subscriber(self.candidate, self.dtls_cert.as_ref(), now)
            } else {
                Connection::new(self.candidate, self.dtls_cert.as_ref(), now)
            };
            let conn = match conn {
                Ok(mut c) => {
                    self.add_tcp_candidate(&mut c);
                    c
                }
                Err(e) => {
                    warn!("cannot create subscriber connection: {e}");
                    return;
                }
            };
            self.demux
                .add_ufrag(conn.ufrag.clone(), (peer, Side::Subscriber));
            self.participants[peer.0 as usize].subscriber = Some(Box::new(conn));
            self.router.subscriber_connecting(peer);
        }
        let publisher_ids: Vec<Option<ParticipantId>> = downtracks
            .iter()
            .map(|d| self.participants.get(d.3 .0 as usize).map(|p| p.id.clone()))
            .collect();
        let Some(conn) = self.participants[peer.0 as usize].subscriber.as_mut() else {
            return;
        };
        let mut api = conn.rtc.sdp_api();
        // Same candidate, new credentials: the client checks from wherever it is now.
        let ice_restart_ufrag = restart_ice.then(|| api.ice_restart(true).ufrag);
        let mut offered = vec![];
        let mut closing = vec![];
        let mut listed = vec![];
        // What the signaling offer lists for an m-line: its track, publisher and source.
        let (track_ids, router) = (&self.track_ids, &self.router);
        let describe = |mid: String, track: TrackKey, participant_id, kind| SubscribedTrack {
            mid,
            track_id: track_ids
                .get(&track)
                .cloned()
                .unwrap_or_else(|| TrackId(String::new())),
            participant_id,
            kind,
            source: router.track(track).map(|t| t.source).unwrap_or_default(),
        };
        for ((key, state, kind, _, track), publisher_id) in downtracks.iter().zip(publisher_ids) {
            match state {
                DowntrackState::Pending => {
                    let (Some(track), Some(publisher_id)) = (track, publisher_id) else {
                        continue;
                    };
                    let mut entry = describe(String::new(), *track, publisher_id, *kind);
                    let media_kind = if *kind == TrackKind::Audio {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    };
                    let mid = api.add_media(
                        media_kind,
                        Direction::SendOnly,
                        Some(entry.participant_id.0.clone()),
                        Some(entry.track_id.0.clone()),
                        None,
                    );
                    entry.mid = mid.to_string();
                    offered.push((*key, mid));
                    listed.push(entry);
                }
                DowntrackState::Closing(mid) => {
                    api.stop_media(*mid);
                    closing.push(*key);
                }
                DowntrackState::Offered(mid) | DowntrackState::Active { mid, .. } => {
                    if let (Some(track), Some(publisher_id)) = (track, publisher_id) {
                        listed.push(describe(mid.to_string(), *track, publisher_id, *kind));
                    }
                }
            }
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        for (key, mid) in &offered {
            self.router.mark_offered(*key, *mid);
        }
        if let Some(ufrag) = &ice_restart_ufrag {
            // Checks naming the new ufrag may come before the answer (str0m holds them).
            self.demux
                .add_ufrag(ufrag.clone(), (peer, Side::Subscriber));
        }
        let participant = &mut self.participants[peer.0 as usize];
        participant.subscriber_ice_restart = false;
        // str0m stops an m-line for good when asked, whatever becomes of the answer.
        if let Some(conn) = participant.subscriber.as_mut() {
            conn.stopped_mlines += closing.len();
        }
        let sdp = offer.to_sdp_string();
        participant.pending_offer = Some(PendingSubscriberOffer {
            pending,
            offered: offered.into_iter().map(|(k, _)| k).collect(),
            closing,
            mids: mids_of(&sdp).into_iter().map(String::from).collect(),
            ice_restart_ufrag,
        });
        let _ = self.events.send(SfuEvent::SubscriberOffer {
            participant: participant.id.clone(),
            sdp: sdp_candidates::in_every_section(&sdp),
            tracks: listed,
        });
        self.mark_dirty((peer, Side::Subscriber));
    }

    /// Replaces a subscriber connection whose stopped m-lines reached the limit (str0m never
    /// reuses an m-line, so without this every offer would keep growing with the room's churn)
    /// or that has nothing live left to keep. The client is told first (`SubscriberReset`),
    /// then gets an offer for a new connection carrying only the live tracks.
    fn renew_subscriber(&mut self, peer: PeerKey, reason: &'static str) {
        let Some(mut old) = self
            .participants
            .get_mut(peer.0 as usize)
            .and_then(|p| p.subscriber.take())
        else {
            return;
        };
        info!(
            participant = %self.participants[peer.0 as usize].id,
            stopped = old.stopped_mlines,
            reason,
            "subscriber connection renewed"
        );
        self.demux.remove_connection((peer, Side::Subscriber));
        self.dirty.retain(|k| *k != (peer, Side::Subscriber));
        self.close_connection(&mut old);
        self.router.reset_subscriber(peer);
        let _ = self.events.send(SfuEvent::SubscriberReset {
            participant: self.participants[peer.0 as usize].id.clone(),
        });
    }

    pub(super) fn accept_subscriber_answer(
        &mut self,
        peer: PeerKey,
        sdp: &str,
        now: Instant,
    ) -> Result<(), SfuError> {
        let answer = SdpAnswer::from_sdp_string(&with_empty_bundle_group(
            &sdp_candidates::without_candidates(sdp),
        ))
        .map_err(|e| requests::sdp_refused("the answer is not valid SDP", e))?;
        let participant = &mut self.participants[peer.0 as usize];
        let Some(pending) = participant.pending_offer.take() else {
            return Err(SfuError::InvalidRequest(
                "no subscriber offer is outstanding".into(),
            ));
        };
        let Some(conn) = participant.subscriber.as_mut() else {
            return Err(SfuError::InvalidRequest("no subscriber connection".into()));
        };
        // str0m takes the answer's ICE credentials, DTLS role and fingerprint before it finds
        // that its m-lines do not fit, and the offer is spent then: an answer that cannot fit
        // is refused here, with the offer still outstanding, so the client can answer again.
        if mids_of(sdp) != pending.mids {
            participant.pending_offer = Some(pending);
            return Err(SfuError::InvalidSdp(
                "the answer's m-lines (a=mid) are not those of the subscriber offer; answer it again"
                    .into(),
            ));
        }
        if let Err(e) = conn.rtc.sdp_api().accept_answer(pending.pending, answer) {
            // The offer is spent either way: the m-lines it added never came to be, so their
            // downtracks go back to pending and a new offer carries them again; the m-lines it
            // stopped are stopped in the connection already.
            warn!("subscriber answer refused: {e}");
            if let Some(ufrag) = pending.ice_restart_ufrag {
                // The restart did not happen: the next offer tries again.
                self.demux.retire_ufrag(&ufrag);
                self.participants[peer.0 as usize].subscriber_ice_restart = true;
            }
            for key in pending.offered {
                self.router.offer_failed(key);
            }
            for key in pending.closing {
                self.router.forget(key);
            }
            // As after an accepted answer: the changes that waited for this offer, and its
            // own tracks again, go out in the next one.
            self.negotiate(peer, now);
            return Err(SfuError::InvalidSdp(
                "the answer does not match the subscriber offer".into(),
            ));
        }
        for key in pending.closing {
            self.router.forget(key);
        }
        conn.start_setup_clock(now + self.media_setup_timeout);
        if pending.ice_restart_ufrag.is_some() {
            self.follow_local_ufrag((peer, Side::Subscriber), now);
        }
        let mut keyframe_requests = vec![];
        for key in pending.offered {
            let Some(dt) = self.router.downtrack(key) else {
                continue;
            };
            let DowntrackState::Offered(sub_mid) = dt.state else {
                continue;
            };
            let video = dt.kind == TrackKind::Video;
            let Some(track) = dt.track.and_then(|t| self.router.track(t)) else {
                continue;
            };
            let (publisher, pub_mid) = (track.publisher, track.publisher_mid);
            // A relayed track's payload types came with its announcement.
            let pub_params =
                self.participants
                    .get(publisher.0 as usize)
                    .map(|p| match p.publisher.as_ref() {
                        Some(c) => negotiated(&c.rtc, pub_mid),
                        None => p
                            .published_by_mid(pub_mid)
                            .map(|t| t.params.clone())
                            .unwrap_or_default(),
                    });
            let map = match (
                pub_params,
                self.participants[peer.0 as usize].subscriber.as_ref(),
            ) {
                (Some(p), Some(s)) => payload_type_map(&p, &s.rtc, sub_mid),
                _ => vec![],
            };
            if map.is_empty() {
                warn!("no common codec between publisher and subscriber for m-line {sub_mid}");
            }
            keyframe_requests.extend(self.router.activate(key, map, now));
            if let Some(sub) = self.participants[peer.0 as usize].subscriber.as_mut() {
                sub.start_send_stream(sub_mid, video, now);
            }
        }
        for r in keyframe_requests {
            self.request_keyframe(r);
        }
        self.mark_dirty((peer, Side::Subscriber));
        // Changes that arrived while the offer was out.
        self.negotiate(peer, now);
        Ok(())
    }
}

/// Whether this round stops the last live m-lines of a subscriber connection: something
/// closes, and nothing offered or active stays.
fn leaves_nothing_live<'a>(states: impl Iterator<Item = &'a DowntrackState> + Clone) -> bool {
    states
        .clone()
        .any(|s| matches!(s, DowntrackState::Closing(_)))
        && !states.into_iter().any(|s| {
            matches!(
                s,
                DowntrackState::Offered(_) | DowntrackState::Active { .. }
            )
        })
}

/// What the worker makes of a subscriber's answer text before str0m reads it: its mids
/// ([`mids_of`], compared with the offer's) and the text str0m is given
/// ([`with_empty_bundle_group`]).
///
/// Not part of the API: the narrowest door through which the fuzz targets (`fuzz/`) and
/// their smoke test feed these private helpers hostile text without a worker.
#[doc(hidden)]
pub fn fuzz_answer_intake(sdp: &str) -> (Vec<&str>, std::borrow::Cow<'_, str>) {
    (mids_of(sdp), with_empty_bundle_group(sdp))
}

/// The `a=mid` values of an SDP, in m-line order; an m-line without one counts as empty.
pub(super) fn mids_of(sdp: &str) -> Vec<&str> {
    let mut mids = vec![];
    for line in sdp.lines() {
        if line.starts_with("m=") {
            mids.push("");
        } else if let (Some(mid), Some(last)) = (line.strip_prefix("a=mid:"), mids.last_mut()) {
            *last = mid.trim();
        }
    }
    mids
}

/// An answer in which every m-line is stopped, as some peers (webrtc-rs) write it, has no
/// `a=group:BUNDLE` line at all, which str0m refuses: give it the empty group it means.
fn with_empty_bundle_group(sdp: &str) -> std::borrow::Cow<'_, str> {
    let mut m_lines = sdp.lines().filter(|l| l.starts_with("m=")).peekable();
    let all_stopped = m_lines.peek().is_some() && m_lines.all(|l| l.split(' ').nth(1) == Some("0"));
    if !all_stopped || sdp.lines().any(|l| l.starts_with("a=group:")) {
        return sdp.into();
    }
    match sdp.find("\nm=") {
        Some(at) => {
            let cr = if sdp[..at].ends_with('\r') { "\r" } else { "" };
            format!("{}\na=group:BUNDLE{cr}{}", &sdp[..at], &sdp[at..]).into()
        }
        None => sdp.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOPPED: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:a1\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:v1\r\n";

    #[test]
    fn a_round_that_stops_every_live_mline_renews_the_connection() {
        use DowntrackState::*;
        let (a, b) = (Mid::from("a"), Mid::from("b"));
        let active = || Active {
            mid: b,
            pt_map: vec![],
        };
        // The last publisher left: everything closes, with or without newcomers waiting.
        assert!(leaves_nothing_live([Closing(a), Closing(b)].iter()));
        assert!(leaves_nothing_live([Closing(a), Pending].iter()));
        // Something live stays, or nothing closes: an ordinary offer.
        assert!(!leaves_nothing_live([Closing(a), active()].iter()));
        assert!(!leaves_nothing_live([Closing(a), Offered(b)].iter()));
        assert!(!leaves_nothing_live([Pending].iter()));
        assert!(!leaves_nothing_live([].iter()));
    }

    #[test]
    fn an_all_stopped_answer_gets_its_empty_bundle_group() {
        let fixed = with_empty_bundle_group(STOPPED);
        assert!(
            fixed.contains("t=0 0\r\na=group:BUNDLE\r\nm=audio 0"),
            "{fixed}"
        );
        assert_eq!(mids_of(&fixed), ["a1", "v1"]);
    }

    #[test]
    fn other_answers_are_left_alone() {
        let live = STOPPED.replacen("m=video 0", "m=video 9", 1);
        assert_eq!(with_empty_bundle_group(&live), live);
        let grouped = STOPPED.replacen("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE\r\n", 1);
        assert_eq!(with_empty_bundle_group(&grouped), grouped);
        assert_eq!(with_empty_bundle_group("v=0\r\n"), "v=0\r\n");
    }
}
