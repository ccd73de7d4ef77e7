//! Following a client to the address it uses now, when the address str0m sends to went quiet.
//!
//! str0m 0.25 (ICE-lite, controlled) sends on the nominated pair with the highest priority
//! and keeps a pair for 15 s after its last binding request (`RECENT_BINDING_REQUEST` in its
//! ICE crate), switching between nominated pairs of equal priority never. After a NAT
//! rebinding (same credentials, a new source port) the client's checks arrive from a new
//! address with the same priority as the old one (both peer-reflexive): str0m keeps sending
//! into the dead mapping for up to 15 s. A browser puts USE-CANDIDATE only on the checks of
//! the pair it has selected (Chromium's default semi-aggressive nomination towards an
//! ICE-lite peer), so a nominating check from a new address while nothing at all arrives
//! any more from the address we send to says where the client went. The worker then
//! invalidates the old remote candidate through str0m's public API and str0m nominates the
//! new pair (`Worker::follow_send_path`). Peers that nominate every pair they check keep
//! talking on the pair they use, so the silence condition does not fire for them.
//!
//! Sans-IO: addresses and `now` in, a decision out; the worker calls it per datagram with
//! a few comparisons and no allocation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the address str0m sends to must have been silent (not one datagram from it),
/// with a nominating check from another address meanwhile, before the send path moves.
/// Media from a live client arrives every few milliseconds on the publisher connection and
/// RTCP at least every second on the subscriber connection, and a browser's checks on its
/// selected pair come every ~2.5 s: a second of silence from the pair a nomination left
/// behind is well past anything a live path does.
pub const SEND_PATH_SILENCE: Duration = Duration::from_secs(1);

/// One connection's view of where the client is.
#[derive(Debug, Default, Clone)]
pub struct SendPath {
    /// Where str0m sends media and RTCP now, and when a datagram last came from there (or
    /// when str0m started sending there).
    dest: Option<(SocketAddr, Instant)>,
    /// The last address a nominating check that str0m accepted came from, and when.
    nominated: Option<(SocketAddr, Instant)>,
}

impl SendPath {
    /// str0m sent a non-STUN datagram to `to`.
    #[inline]
    pub fn sent(&mut self, to: SocketAddr, now: Instant) {
        match self.dest {
            Some((d, _)) if d == to => {}
            // A new destination gets the full silence allowance from now.
            _ => self.dest = Some((to, now)),
        }
    }

    /// A datagram for this connection arrived from `from`. Returns the destination to give
    /// up when the client has moved: `from` carried the client's latest nomination, and the
    /// address str0m still sends to has been silent for [`SEND_PATH_SILENCE`].
    #[inline]
    pub fn heard(&mut self, from: SocketAddr, now: Instant) -> Option<SocketAddr> {
        let (dest, heard_at) = self.dest.as_mut()?;
        if *dest == from {
            *heard_at = now;
            return None;
        }
        let (nominated, _) = self.nominated?;
        if nominated != from || now.saturating_duration_since(*heard_at) < SEND_PATH_SILENCE {
            return None;
        }
        let stale = *dest;
        // Relearnt from str0m's next datagram, which goes to the new pair.
        self.dest = None;
        Some(stale)
    }

    /// An authenticated binding request with USE-CANDIDATE came from `from`.
    pub fn nominated(&mut self, from: SocketAddr, now: Instant) {
        self.nominated = Some((from, now));
    }

    /// ICE restarted: str0m forgot every remote candidate, so do we.
    pub fn reset(&mut self) {
        *self = SendPath::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 2], port))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_rebinding_moves_the_path_after_a_second_of_silence_on_the_old_one() {
        let t0 = Instant::now();
        let (old, new) = (addr(40000), addr(20001));
        let mut p = SendPath::default();
        p.nominated(old, t0);
        p.sent(old, t0);
        assert_eq!(p.heard(old, t0 + 100 * MS), None);
        // The NAT rebinds at 150 ms: from now on everything comes from `new`.
        p.nominated(new, t0 + 900 * MS);
        assert_eq!(
            p.heard(new, t0 + 900 * MS),
            None,
            "the old path spoke 0.8 s ago"
        );
        assert_eq!(p.heard(new, t0 + 1050 * MS), None);
        assert_eq!(p.heard(new, t0 + 1100 * MS), Some(old));
        // Said once; str0m's next datagram tells where it sends now.
        assert_eq!(p.heard(new, t0 + 1200 * MS), None);
        p.sent(new, t0 + 1200 * MS);
        assert_eq!(p.heard(new, t0 + 5000 * MS), None);
    }

    #[test]
    fn a_live_send_path_is_never_given_up() {
        let t0 = Instant::now();
        let (used, backup) = (addr(40000), addr(40002));
        let mut p = SendPath::default();
        p.sent(used, t0);
        // Another pair is checked and even nominated (a peer that nominates every pair),
        // but the pair we send on keeps talking.
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(200 * i);
            p.nominated(backup, now);
            assert_eq!(p.heard(backup, now), None);
            assert_eq!(p.heard(used, now + 10 * MS), None);
        }
    }

    #[test]
    fn silence_alone_or_traffic_without_a_nomination_moves_nothing() {
        let t0 = Instant::now();
        let (used, other) = (addr(40000), addr(40002));
        let mut p = SendPath::default();
        p.sent(used, t0);
        // A quiet client: nothing from anywhere for a long time.
        assert_eq!(p.heard(used, t0 + Duration::from_secs(30)), None);
        // Datagrams from another bound address that never nominated.
        assert_eq!(p.heard(other, t0 + Duration::from_secs(60)), None);
        // The nomination came from a third address: `other` is not where the client went.
        p.nominated(addr(40004), t0 + Duration::from_secs(61));
        assert_eq!(p.heard(other, t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn a_new_destination_gets_the_full_allowance() {
        let t0 = Instant::now();
        let (a, b) = (addr(1), addr(2));
        let mut p = SendPath::default();
        p.sent(a, t0);
        p.nominated(b, t0);
        // str0m itself moved to `b` and later back to `a`: `a` is fresh again.
        p.sent(b, t0 + Duration::from_secs(5));
        p.sent(a, t0 + Duration::from_secs(10));
        assert_eq!(p.heard(b, t0 + Duration::from_millis(10_500)), None);
        assert_eq!(p.heard(b, t0 + Duration::from_millis(11_000)), Some(a));
    }

    #[test]
    fn nothing_before_str0m_sends() {
        let t0 = Instant::now();
        let mut p = SendPath::default();
        p.nominated(addr(1), t0);
        assert_eq!(p.heard(addr(1), t0 + Duration::from_secs(9)), None);
        p.reset();
        p.sent(addr(2), t0);
        assert_eq!(p.heard(addr(1), t0 + Duration::from_secs(9)), None);
    }
}
