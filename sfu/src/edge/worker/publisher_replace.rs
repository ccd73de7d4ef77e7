//! A publish offer from a *new* RTCPeerConnection (the page replaced its publisher
//! connection, e.g. after the old one broke beyond an ICE restart): a new DTLS certificate,
//! so a new DTLS session. str0m 0.25 keeps the remote fingerprint of the first offer and its
//! established DTLS session for the life of an `Rtc`, so taking such an offer as a
//! renegotiation would leave the new connection failing its DTLS handshake while the
//! participant looked published. Instead the offer gets a connection of its own, which
//! takes the old one's place under the same tracks: a track whose mid and id are declared
//! again (signaling keeps the ids of the mids it sees again) keeps its router track, so the
//! subscribers' m-lines stay and only the source under them changes (a new SSRC, which the
//! rewriter continues from where the old one stopped; a new encoder starts at a keyframe).
//! Replacing their m-lines instead would stop every m-line of a subscriber that receives
//! only this publisher and add new ones in the same offer, which makes Chromium move its
//! bundle transport (a DTLS close on the connection we know).

use super::requests::{check_declared, OFFER_REFUSED};
use super::*;
use str0m::config::Fingerprint;
use str0m::media::Rid;

impl Worker {
    /// Whether `sdp` comes from another peer connection than the one publishing now: its
    /// DTLS fingerprint differs from the one the connection was set up with.
    pub(super) fn offer_from_new_connection(&mut self, peer: PeerKey, sdp: &str) -> bool {
        let Some(conn) = self.participants[peer.0 as usize].publisher.as_mut() else {
            return false;
        };
        let Some(current) = conn.rtc.direct_api().remote_dtls_fingerprint().cloned() else {
            return false;
        };
        offered_fingerprint(sdp).is_some_and(|f| {
            !f.hash_func.eq_ignore_ascii_case(&current.hash_func) || f.bytes != current.bytes
        })
    }

    /// Opens a connection for `offer` and puts it in the place of the publisher connection.
    /// A refused offer changes nothing (the old connection keeps publishing).
    pub(super) fn replace_publisher(
        &mut self,
        peer: PeerKey,
        offer: SdpOffer,
        tracks: &[crate::api::PublishedTrack],
        now: Instant,
    ) -> Result<String, SfuError> {
        let (mut conn, answer) = self.connection_for_offer(offer, OFFER_REFUSED, now)?;
        let checked = check_declared(&conn.rtc, tracks)?;
        conn.start_setup_clock(now + self.media_setup_timeout);
        let ufrag = conn.ufrag.clone();
        // Tracks that carry on: same mid, same id, same kind of layering on the new connection.
        let carried: Vec<Carried> = self.participants[peer.0 as usize]
            .published
            .iter()
            .filter_map(|e| {
                let (mid, t) = checked
                    .iter()
                    .find(|(m, t)| *m == e.mid && t.track_id == e.id)?;
                let video = t.kind == TrackKind::Video;
                let rids = if video {
                    simulcast_rids(&conn.rtc, *mid)
                } else {
                    vec![]
                };
                let codecs = if video {
                    video_codecs(&conn.rtc, *mid)
                } else {
                    vec![]
                };
                (rids.len() == e.rids.len()).then(|| (e.mid, e.id.clone(), rids, codecs))
            })
            .collect();

        let old = self.participants[peer.0 as usize]
            .publisher
            .replace(Box::new(conn));
        self.demux.remove_connection((peer, Side::Publisher));
        self.dirty.retain(|k| *k != (peer, Side::Publisher));
        if let Some(mut old) = old {
            self.close_connection(&mut old);
        }
        self.demux.add_ufrag(ufrag, (peer, Side::Publisher));

        self.withdraw_published(peer, |e| {
            carried.iter().any(|c| c.0 == e.mid && c.1 == e.id)
        });
        for e in &mut self.participants[peer.0 as usize].published {
            if let Some((_, _, rids, codecs)) = carried.iter().find(|c| c.0 == e.mid && c.1 == e.id)
            {
                e.rids = rids.clone();
                e.codecs = codecs.clone();
            }
        }
        let new: Vec<_> = checked
            .into_iter()
            .filter(|(m, t)| !carried.iter().any(|c| c.0 == *m && c.1 == t.track_id))
            .collect();
        self.add_published(peer, new);
        info!(
            participant = %self.participants[peer.0 as usize].id,
            kept = carried.len(),
            "publish offer from a new peer connection: the old publisher connection is replaced"
        );
        self.mark_dirty((peer, Side::Publisher));
        Ok(sdp_candidates::in_every_section(&answer.to_sdp_string()))
    }
}

/// A track that carries on under a new connection: its mid and id, and the new connection's
/// simulcast rids and video codecs for it.
type Carried = (Mid, TrackId, Vec<Rid>, Vec<(u8, VideoCodec)>);

/// The first `a=fingerprint` of an SDP (session or media level; a browser writes the same
/// everywhere).
fn offered_fingerprint(sdp: &str) -> Option<Fingerprint> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_offered_fingerprint() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=fingerprint:sha-256 0A:1B:2C\r\na=setup:actpass\r\n";
        let f = offered_fingerprint(sdp).unwrap();
        assert_eq!(f.hash_func, "sha-256");
        assert_eq!(f.bytes, vec![0x0a, 0x1b, 0x2c]);
        assert!(offered_fingerprint("v=0\r\na=fingerprint:garbage\r\n").is_none());
        assert!(offered_fingerprint("v=0\r\n").is_none());
    }
}
