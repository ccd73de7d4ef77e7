//! Moving a connection's send path to where the client went (see `edge::send_path` for the
//! rule and why str0m needs the push): the old remote candidate is invalidated through
//! str0m's public API, its pairs go, and str0m nominates the pair the client uses now.

use super::*;
use str0m::{Candidate, CandidateKind, Rtc};

/// Invalidates the remote candidate at `addr` (its pairs go; str0m nominates among the
/// rest at its next timeout). False when str0m has no such remote.
pub(crate) fn forget_remote(rtc: &mut Rtc, addr: SocketAddr) -> bool {
    // str0m matches a candidate to invalidate by address, base, related address, kind and
    // protocol. The remote we send to is peer-reflexive (learnt from a check: we strip the
    // candidates of the client's SDP, `sdp_candidates::without_candidates`); a host
    // candidate is tried too should a str0m upgrade pair checks with another kind.
    let prflx = Candidate::from_parts(
        "zvon".into(),
        1,
        Protocol::Udp,
        0,
        addr,
        CandidateKind::PeerReflexive,
        None,
        None,
        None,
    );
    if rtc.direct_api().invalidate_candidate(&prflx) {
        return true;
    }
    Candidate::host(addr, "udp").is_ok_and(|host| rtc.direct_api().invalidate_candidate(&host))
}

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
        let gone = forget_remote(&mut conn.rtc, stale);
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

#[cfg(test)]
mod tests {
    //! What the follow relies on in str0m, checked on a real ICE-lite `Rtc` fed authenticated
    //! binding requests: equal-priority nominations do not move its send path, and
    //! invalidating the old peer-reflexive remote does.
    use super::*;
    use crate::edge::connection::Connection;
    use hmac::{Hmac, Mac};
    use str0m::ice::{StunMessage, TransId};
    use str0m::IceCreds;

    fn hmac_sha1(key: &[u8], payloads: &[&[u8]]) -> [u8; 20] {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
        for p in payloads {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// A check from the client at `from`, nominating, as Chromium sends on its selected pair.
    fn check(conn: &mut Connection, from: SocketAddr, server: SocketAddr, now: Instant) {
        let local = conn.rtc.direct_api().local_ice_credentials();
        let username = format!("{}:cli1", local.ufrag);
        let msg =
            StunMessage::binding_request(&username, TransId::new(), true, 7, 1_853_759_231, true);
        let mut buf = vec![0u8; 1500];
        let n = msg
            .to_bytes(Some(local.pass.as_bytes()), &mut buf, hmac_sha1)
            .unwrap();
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: server,
                contents: buf[..n].try_into().unwrap(),
            },
        );
        conn.rtc.handle_input(input).unwrap();
    }

    /// Runs the connection up to `now`; the destinations of what it sent that is not STUN.
    fn pump(conn: &mut Connection, now: Instant) -> Vec<SocketAddr> {
        conn.rtc.handle_input(Input::Timeout(now)).unwrap();
        let mut sent = vec![];
        while let Ok(out) = conn.rtc.poll_output() {
            match out {
                Output::Transmit(t) if t.contents.first().is_some_and(|b| *b >= 2) => {
                    sent.push(t.destination)
                }
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        sent
    }

    #[test]
    fn invalidating_the_old_remote_moves_str0ms_send_path_to_the_new_nomination() {
        let t0 = Instant::now();
        let server: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (old, new): (SocketAddr, SocketAddr) = (
            "127.0.0.2:40000".parse().unwrap(),
            "127.0.0.2:20000".parse().unwrap(),
        );
        let mut conn = Connection::new(server, None, t0).unwrap();
        {
            let mut api = conn.rtc.direct_api();
            api.set_remote_ice_credentials(IceCreds {
                ufrag: "cli1".into(),
                pass: "client-password-0123456789".into(),
            });
            api.set_ice_controlling(false);
            // DTLS as client: its hellos (retransmitted with backoff) show where str0m sends.
            api.start_dtls(true).unwrap();
        }
        let ms = |n: u64| t0 + Duration::from_millis(n);
        check(&mut conn, old, server, ms(10));
        let mut seen = pump(&mut conn, ms(20));
        for i in 1..20 {
            seen.extend(pump(&mut conn, ms(20 + 100 * i)));
        }
        assert!(
            !seen.is_empty() && seen.iter().all(|d| *d == old),
            "{seen:?}"
        );

        // The NAT rebinds: nominating checks now come from `new` only, with the same
        // priority. str0m keeps sending to `old` (it would for 15 s).
        let mut seen = vec![];
        for i in 0..30 {
            let now = ms(2_000 + 250 * i);
            if i % 4 == 0 {
                check(&mut conn, new, server, now);
            }
            seen.extend(pump(&mut conn, now));
        }
        assert!(!seen.is_empty(), "no DTLS retransmission in 7.5 s");
        assert!(
            seen.iter().all(|d| *d == old),
            "str0m moved by itself: {seen:?}"
        );

        assert!(forget_remote(&mut conn.rtc, old));
        let mut seen = vec![];
        for i in 0..40 {
            let now = ms(9_500 + 250 * i);
            if i % 4 == 0 {
                check(&mut conn, new, server, now);
            }
            seen.extend(pump(&mut conn, now));
        }
        assert!(!seen.is_empty(), "no DTLS retransmission in 10 s");
        assert!(seen.iter().all(|d| *d == new), "{seen:?}");
        assert!(!forget_remote(&mut conn.rtc, old), "already gone");
    }
}
