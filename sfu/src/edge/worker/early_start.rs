//! A subscriber connection starts forwarding when its client first reaches it, not when its
//! ICE and DTLS are done: at the client's first track settings after its answer (a browser
//! sends them right after the answer), or else at its first connectivity check. From the
//! answer to `Connected` the browser applies the answer and gathers (10–150 ms), sends its
//! first check, nominates an ICE-lite server's pair only at a later check (30–180 ms) and
//! does DTLS; the publisher's keyframe takes about as long (a frame interval, an encode, the
//! way here). Asked for at the start, it comes while the handshakes finish. What is written
//! before DTLS is up waits in str0m's send queue (it encrypts nothing without keys, and sends
//! the queue once it has them), so the keyframe leaves the moment the connection is up
//! instead of being asked for then.
//!
//! str0m's queue is unbounded: writing ahead stops [`EARLY_WRITE_WINDOW`] after the start,
//! and a connection not up by then starts over at `Connected` as before (a keyframe asked
//! for then, `Router::on_subscriber_connected`).

use std::time::Duration;

use super::*;
use crate::edge::stun::binding_request_local_ufrag;

/// How long media is written ahead to a subscriber connection that is not up yet. From the
/// start to `Connected` took a median 135–170 ms here (loopback, loaded machine), rarely past
/// 500 ms; past this, what waits in str0m's queue would arrive too old to be worth its bytes.
pub(super) const EARLY_WRITE_WINDOW: Duration = Duration::from_millis(800);

impl Worker {
    /// The subscriber's client reached its connection (its settings, or [`reaches_early`]):
    /// its downtracks start now, each video one at a keyframe asked for now.
    pub(super) fn start_early(&mut self, peer: PeerKey, now: Instant) {
        let Some(p) = self.participants.get_mut(peer.0 as usize) else {
            return;
        };
        // An answer still outstanding: its m-lines are not active yet; a later check starts.
        if p.pending_offer.is_some() {
            return;
        }
        let Some(conn) = p.subscriber.as_mut() else {
            return;
        };
        // Not a connection the router holds back (a WHEP viewer's): nothing to start.
        let Some(requests) = self.router.on_subscriber_reached(peer, now) else {
            return;
        };
        conn.early_start = Some(now);
        debug!(participant = %p.id, "subscriber reached: forwarding ahead of DTLS");
        for r in requests {
            self.request_keyframe(r);
        }
    }

    /// The subscriber said how it shows a video (track settings, which a browser sends right
    /// after its answer): if its connection is on the way up and not started, it starts now
    /// rather than at its first check. Its browser's answer → first check takes 10–150 ms
    /// (applying the answer, gathering), which the keyframe's way then overlaps too, and
    /// the layer the request names is the one the settings choose.
    pub(super) fn start_early_on_settings(&mut self, peer: PeerKey, now: Instant) {
        let waiting = self
            .participants
            .get(peer.0 as usize)
            .and_then(|p| p.subscriber.as_ref())
            .is_some_and(|c| !c.connected && c.early_start.is_none());
        if waiting {
            self.start_early(peer, now);
        }
    }

    /// The subscriber's connection is up. One that was written to ahead, but longer than
    /// [`EARLY_WRITE_WINDOW`] ago (writing stopped since), starts over as if it had not been.
    pub(super) fn early_start_on_connected(&mut self, peer: PeerKey, now: Instant) {
        let expired = self
            .participants
            .get(peer.0 as usize)
            .and_then(|p| p.subscriber.as_ref())
            .and_then(|c| c.early_start)
            .is_some_and(|at| now >= at + EARLY_WRITE_WINDOW);
        if expired {
            self.router.subscriber_connecting(peer);
        }
    }
}

/// Whether this datagram is the client's first authenticated connectivity check on a
/// subscriber connection that is not up yet. Everything else (media on a connection that is
/// up included) is out at the first or second comparison.
pub(super) fn reaches_early(conn: &Connection, side: Side, data: &[u8], input: &Input) -> bool {
    side == Side::Subscriber
        && !conn.connected
        && conn.early_start.is_none()
        // RFC 7983: STUN starts with 0 or 1.
        && data.first().is_some_and(|b| *b < 2)
        && binding_request_local_ufrag(data).is_some()
        && conn.rtc.accepts(input)
}

impl Connection {
    /// Media may be written to it: it is up, or its client reached it a moment ago.
    pub(super) fn takes_media(&self, now: Instant) -> bool {
        self.connected
            || self
                .early_start
                .is_some_and(|at| now < at + EARLY_WRITE_WINDOW)
    }
}
