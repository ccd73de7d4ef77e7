//! Which connection a datagram belongs to, in O(1).
//!
//! Known remote addresses map straight to a connection. A datagram from a new address is
//! only accepted if it is a STUN binding request naming one of our ufrags; anything else
//! from an unknown address is dropped before any connection sees it.
//!
//! A binding request naming another connection's ufrag wins over the address binding: NAT
//! mappings are reused, so the address a participant who left (or whose mapping expired)
//! used may now carry a new participant's checks. Only STUN is looked at that way; media
//! from a bound address goes straight to its connection.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::stun::binding_request_local_ufrag;
use crate::forward::PeerKey;

/// Each participant has two connections: one it publishes on, one it receives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Publisher,
    Subscriber,
}

pub type ConnectionKey = (PeerKey, Side);

#[derive(Debug, Default)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, ConnectionKey>,
    by_ufrag: HashMap<String, ConnectionKey>,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// From an address this connection already uses.
    Known(ConnectionKey),
    /// A binding request from a new address for this connection; bind the address once the
    /// connection accepts it.
    NewAddress(ConnectionKey),
    Unknown,
}

impl Demux {
    pub fn route(&self, from: SocketAddr, datagram: &[u8]) -> Route {
        let bound = self.by_addr.get(&from).copied();
        // RFC 7983: STUN starts with 0 or 1; RTP, RTCP and DTLS never do.
        let maybe_stun = datagram.first().is_some_and(|b| *b < 2);
        if let (Some(key), false) = (bound, maybe_stun) {
            return Route::Known(key);
        }
        match binding_request_local_ufrag(datagram).and_then(|u| self.by_ufrag.get(u)) {
            Some(key) if Some(*key) == bound => Route::Known(*key),
            Some(key) => Route::NewAddress(*key),
            None => bound.map_or(Route::Unknown, Route::Known),
        }
    }

    pub fn add_ufrag(&mut self, ufrag: String, key: ConnectionKey) {
        self.by_ufrag.insert(ufrag, key);
    }

    /// Forgets a ufrag an ICE restart replaced: checks naming it are no one's any more.
    pub fn retire_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }

    pub fn bind_address(&mut self, from: SocketAddr, key: ConnectionKey) {
        self.by_addr.insert(from, key);
    }

    /// Forgets the ufrag and addresses of one connection.
    pub fn remove_connection(&mut self, key: ConnectionKey) {
        self.by_addr.retain(|_, k| *k != key);
        self.by_ufrag.retain(|_, k| *k != key);
    }

    /// Forgets every ufrag and address of `peer`.
    pub fn remove_peer(&mut self, peer: PeerKey) {
        self.by_addr.retain(|_, (p, _)| *p != peer);
        self.by_ufrag.retain(|_, (p, _)| *p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::stun::binding_request;

    const NAT: &str = "203.0.113.9:40000";

    fn demux_with_old_binding() -> (Demux, ConnectionKey, ConnectionKey) {
        let (old, new) = (
            (PeerKey(1), Side::Subscriber),
            (PeerKey(2), Side::Publisher),
        );
        let mut d = Demux::default();
        d.add_ufrag("oldufrag".into(), old);
        d.add_ufrag("newufrag".into(), new);
        d.bind_address(NAT.parse().unwrap(), old);
        (d, old, new)
    }

    #[test]
    fn a_new_users_binding_request_wins_over_a_stale_address_binding() {
        let (mut d, old, new) = demux_with_old_binding();
        let from = NAT.parse().unwrap();
        let check = binding_request(b"newufrag:client");
        assert_eq!(d.route(from, &check), Route::NewAddress(new));
        // The worker binds the address once the new connection accepted the check.
        d.bind_address(from, new);
        assert_eq!(d.route(from, &[0x80, 0x60, 0, 1]), Route::Known(new));
        assert_eq!(
            d.route(from, &binding_request(b"oldufrag:client")),
            Route::NewAddress(old),
            "the old connection can still take the address back with its own check"
        );
    }

    #[test]
    fn media_and_own_checks_from_a_bound_address_stay_known() {
        let (d, old, _) = demux_with_old_binding();
        let from = NAT.parse().unwrap();
        assert_eq!(d.route(from, &[0x80, 0x60, 0, 1]), Route::Known(old), "RTP");
        assert_eq!(d.route(from, &[22, 0xfe, 0xfd]), Route::Known(old), "DTLS");
        assert_eq!(
            d.route(from, &binding_request(b"oldufrag:client")),
            Route::Known(old)
        );
        assert_eq!(
            d.route(from, &binding_request(b"unknown:client")),
            Route::Known(old),
            "a check for nobody does not unbind"
        );
        assert_eq!(d.route(from, &[]), Route::Known(old));
        assert_eq!(
            d.route("198.51.100.1:1".parse().unwrap(), &[0x80, 0x60]),
            Route::Unknown
        );
    }

    #[test]
    fn after_an_ice_restart_checks_from_a_new_address_reach_the_same_connection() {
        let (mut d, old, _) = demux_with_old_binding();
        d.add_ufrag("restarted".into(), old);
        d.retire_ufrag("oldufrag");
        let moved = "198.51.100.7:5000".parse().unwrap();
        assert_eq!(
            d.route(moved, &binding_request(b"restarted:client2")),
            Route::NewAddress(old)
        );
        assert_eq!(
            d.route(moved, &binding_request(b"oldufrag:client")),
            Route::Unknown,
            "the replaced ufrag is no one's"
        );
        d.bind_address(moved, old);
        assert_eq!(d.route(moved, &[0x80, 0x60, 0, 1]), Route::Known(old));
    }
}
