//! The router's side of a subscriber connection coming up: until ICE and DTLS are done
//! nothing written to it reaches the subscriber, so its downtracks take no part in
//! forwarding. A downtrack that did would switch layers on keyframes the driver drops and
//! ask the publisher for them; the publisher (libwebrtc obeys one request per 300 ms) would
//! then hold back the request made when the connection is up, and the viewer would wait
//! that much longer for its first frame (BENCHMARKS.md, first frame).
//!
//! The exception is the moment the client reaches the connection (its first track settings
//! after the answer, or its first check): the driver then writes ahead, str0m holding it
//! until DTLS is up, so the downtracks start there (`on_subscriber_reached`, driver side in
//! `edge/worker/early_start.rs`).

use std::time::Instant;

use super::{DowntrackKey, DowntrackState, KeyframeRequest, LayerSelector, PeerKey, Router, Want};
use crate::api::TrackKind;

impl Router {
    /// `subscriber` has a new connection on its way up: its downtracks, and any it gets
    /// before [`Router::on_subscriber_connected`], forward nothing and ask for nothing.
    pub fn subscriber_connecting(&mut self, subscriber: PeerKey) {
        let Some(member) = self.members.get_mut(&subscriber) else {
            return;
        };
        member.connecting = true;
        member.started_early = false;
        for key in &member.downtracks {
            if let Some(dt) = self.downtracks.get_mut(key.0 as usize) {
                dt.connecting = true;
            }
        }
    }

    /// `subscriber`'s connection just came up. Nothing is written to a connection before ICE
    /// and DTLS are up, so whatever its downtracks "forwarded" before went nowhere, including
    /// the keyframe a layer switch was made on: each video downtrack starts over at a
    /// keyframe, asked for now. The request passes the throttle (and restarts it): a viewer
    /// must not stare at a black tile because another one asked a moment ago.
    pub fn on_subscriber_connected(
        &mut self,
        subscriber: PeerKey,
        now: Instant,
    ) -> Vec<KeyframeRequest> {
        if let Some(member) = self.members.get_mut(&subscriber) {
            if std::mem::take(&mut member.started_early) {
                return Vec::new();
            }
        }
        self.start_downtracks(subscriber, now)
    }

    /// `subscriber`'s client just reached its connection on the way up (our offer answered,
    /// its first track settings or connectivity check came): ICE and DTLS are a few round
    /// trips away. The
    /// driver writes ahead from now (str0m holds it until DTLS is up), so its downtracks start
    /// now, as [`Router::on_subscriber_connected`] would start them: the keyframe asked for
    /// is on its way while the handshakes finish. `on_subscriber_connected` then does
    /// nothing, unless [`Router::subscriber_connecting`] came first (the driver gave up
    /// writing ahead). `None` for a subscriber not held back: its connection is not on its
    /// way up, or it is a viewer (never held back).
    pub fn on_subscriber_reached(
        &mut self,
        subscriber: PeerKey,
        now: Instant,
    ) -> Option<Vec<KeyframeRequest>> {
        if !self.members.get(&subscriber).is_some_and(|m| m.connecting) {
            return None;
        }
        let requests = self.start_downtracks(subscriber, now);
        if let Some(member) = self.members.get_mut(&subscriber) {
            member.started_early = true;
        }
        Some(requests)
    }

    fn start_downtracks(&mut self, subscriber: PeerKey, now: Instant) -> Vec<KeyframeRequest> {
        let mut requests = Vec::new();
        let Some(member) = self.members.get_mut(&subscriber) else {
            return requests;
        };
        member.connecting = false;
        for key in &member.downtracks {
            let Some(dt) = self.downtracks.get_mut(key.0 as usize) else {
                continue;
            };
            dt.connecting = false;
            if dt.kind != TrackKind::Video || !matches!(dt.state, DowntrackState::Active { .. }) {
                continue;
            }
            let Some(track) = dt.track.and_then(|t| self.tracks.get_mut(t.0 as usize)) else {
                continue;
            };
            // The switch at the next keyframe restarts the rewriter and the VP8 IDs.
            dt.selector = LayerSelector::default();
            if track.muted || dt.want == Want::Paused {
                continue;
            }
            requests.extend(track.keyframe_request_now(dt.want, now));
        }
        requests
    }

    /// The subscriber's connection was replaced by a new one: every downtrack is offered
    /// again on it, and the stopped ones are gone with the old connection.
    pub fn reset_subscriber(&mut self, subscriber: PeerKey) {
        let keys: Vec<DowntrackKey> = self
            .members
            .get(&subscriber)
            .map(|m| m.downtracks.clone())
            .unwrap_or_default();
        for key in keys {
            let Some(dt) = self.downtracks.get_mut(key.0 as usize) else {
                continue;
            };
            match dt.state {
                DowntrackState::Closing(_) => self.forget(key),
                DowntrackState::Pending => {}
                DowntrackState::Offered(_) | DowntrackState::Active { .. } => {
                    dt.state = DowntrackState::Pending
                }
            }
        }
        self.mark_needs_negotiation(subscriber);
    }
}
