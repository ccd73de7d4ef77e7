//! ICE restarts: a client whose network changed (Wi-Fi to LTE, a new address) gets new ICE
//! credentials on the connections it has, and media resumes from its new address without a
//! new DTLS handshake, new track ids or a rejoin.
//!
//! str0m 0.25 does the ICE side: a remote offer whose ufrag/pwd differ restarts ICE and picks
//! new local credentials for the answer; `SdpApi::ice_restart` puts new local credentials in
//! our own offer and switches to them when the answer comes. Either way the local ufrag
//! changes, and the demux (which routes a check from an unknown address by the ufrag it
//! names) must follow: that is what this file keeps right. The publisher connection restarts
//! through the client's next `publish_offer`; the subscriber connection, whose offers are
//! ours, when the client asks (`SfuRequest::RestartSubscriberIce`).

use super::*;

impl Worker {
    /// After str0m took an SDP: if ICE restarted, the demux forgets the old local ufrag and
    /// routes the new one to this connection, and ICE must come back before the deadline.
    pub(super) fn follow_local_ufrag(&mut self, key: ConnectionKey, now: Instant) {
        let timeout = self.media_setup_timeout;
        let Some(conn) = self.connection_mut(key) else {
            return;
        };
        let ufrag = conn.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag == conn.ufrag {
            return;
        }
        let old = std::mem::replace(&mut conn.ufrag, ufrag.clone());
        conn.send_path.reset();
        conn.restart_deadline = Some(now + timeout);
        self.demux.retire_ufrag(&old);
        self.demux.add_ufrag(ufrag, key);
        if let Some(p) = self.participants.get(key.0 .0 as usize) {
            info!(participant = %p.id, side = ?key.1, "ICE restart");
        }
    }

    /// The client's subscriber connection lost its path: offer it new ICE credentials now,
    /// or right after the answer to the offer that is out.
    pub(super) fn restart_subscriber_ice(
        &mut self,
        peer: PeerKey,
        now: Instant,
    ) -> Result<(), SfuError> {
        let p = &mut self.participants[peer.0 as usize];
        if p.subscriber.is_none() {
            return Err(SfuError::InvalidRequest(
                "no subscriber connection to restart".into(),
            ));
        }
        p.subscriber_ice_restart = true;
        self.negotiate(peer, now);
        Ok(())
    }

    /// ICE has a nominated pair again (str0m: Connected or Completed). After a restart, the
    /// subscriber's videos start over at a keyframe asked for now: what was forwarded while
    /// the path was dead went nowhere, and waiting for the client's own request after the
    /// first packets that arrive costs a round trip more.
    pub(super) fn ice_came_back(&mut self, key: ConnectionKey, now: Instant) {
        let Some(conn) = self.connection_mut(key) else {
            return;
        };
        let restarted = conn.restart_deadline.take().is_some() && conn.connected;
        if restarted && key.1 == Side::Subscriber {
            self.restart_subscriber_videos(key.0, now);
        }
    }

    /// Every video the subscriber receives waits for a keyframe, asked for now (its path
    /// changed and what was sent meanwhile was lost).
    pub(super) fn restart_subscriber_videos(&mut self, peer: PeerKey, now: Instant) {
        for r in self.router.on_subscriber_connected(peer, now) {
            self.request_keyframe(r);
        }
    }
}
