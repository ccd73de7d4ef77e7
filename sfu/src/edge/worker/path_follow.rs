//! Moving a connection's send path to where the client went (see `edge::send_path` for the
//! rule and why str0m needs the push): the old remote candidate is invalidated through
//! str0m's public API, its pairs go, and str0m nominates the pair the client uses now.

use super::*;
use str0m::{Candidate, CandidateKind};

impl Worker {
    pub(super) fn follow_send_path(
        &mut self,
        key: ConnectionKey,
        stale: SocketAddr,
        to: SocketAddr,
        now: Instant,
    ) {
        let Some(conn) = self.connection_mut(key) else {
            return;
        };
        // str0m matches a candidate to invalidate by address, base, related address, kind
        // and protocol. The remote we send to is peer-reflexive (learnt from a check: we
        // strip the candidates of the client's SDP, `sdp_candidates::without_candidates`);
        // a host candidate is tried too should a str0m upgrade pair checks with another kind.
        let prflx = Candidate::from_parts(
            "zvon".into(),
            1,
            Protocol::Udp,
            0,
            stale,
            CandidateKind::PeerReflexive,
            None,
            None,
            None,
        );
        let mut gone = conn.rtc.direct_api().invalidate_candidate(&prflx);
        if !gone {
            if let Ok(host) = Candidate::host(stale, "udp") {
                gone = conn.rtc.direct_api().invalidate_candidate(&host);
            }
        }
        if !gone {
            debug!(%stale, "no remote candidate to invalidate for a silent send path");
            return;
        }
        // str0m picks the nominated pair again on its next timeout: now.
        if let Err(e) = conn.rtc.handle_input(Input::Timeout(now)) {
            debug!("timeout input failed: {e}");
        }
        SfuStats::add(&self.stats.send_path_moves, 1);
        if let Some(p) = self.participants.get(key.0 .0 as usize) {
            info!(participant = %p.id, side = ?key.1, %stale, %to, "send path follows the client to its new address");
        }
        if key.1 == Side::Subscriber {
            self.restart_subscriber_videos(key.0, now);
        }
        self.mark_dirty(key);
    }
}
