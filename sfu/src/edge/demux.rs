//! Which connection a datagram belongs to, in O(1).
//!
//! Known remote addresses map straight to a connection. A datagram from a new address is
//! only accepted if it is a STUN binding request naming one of our ufrags; anything else
//! from an unknown address is dropped before any connection sees it.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::stun::binding_request_local_ufrag;
use crate::forward::PeerKey;

/// Each participant has two connections: one it publishes on, one it receives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        if let Some(key) = self.by_addr.get(&from) {
            return Route::Known(*key);
        }
        match binding_request_local_ufrag(datagram).and_then(|u| self.by_ufrag.get(u)) {
            Some(key) => Route::NewAddress(*key),
            None => Route::Unknown,
        }
    }

    pub fn add_ufrag(&mut self, ufrag: String, key: ConnectionKey) {
        self.by_ufrag.insert(ufrag, key);
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
