//! The worker's ICE-TCP streams (`edge::ice_tcp`): their frames enter like datagrams, and
//! every new connection offers the passive TCP candidate when the node listens on TCP.

use std::time::Instant;

use str0m::net::Protocol;
use tracing::warn;

use super::Worker;
use crate::edge::connection::Connection;
use crate::edge::ice_tcp::TcpEvent;

impl Worker {
    /// A new connection's local candidates: the UDP host one it was built with, and the
    /// ICE-TCP passive one on the same address when the node offers it.
    pub(super) fn add_tcp_candidate(&self, conn: &mut Connection) {
        if self.ice_tcp.is_some() {
            if let Err(e) = conn.add_tcp_passive_candidate(self.candidate) {
                warn!("ICE-TCP candidate: {e}");
            }
        }
    }

    pub(super) fn handle_tcp_event(&mut self, event: TcpEvent, now: Instant) {
        let Some(tcp) = self.ice_tcp.as_mut() else {
            return;
        };
        match event {
            TcpEvent::Opened { peer, writer } => tcp.opened(peer, writer),
            TcpEvent::Closed { peer } => tcp.closed(peer),
            TcpEvent::Frame { peer, data } => {
                if !self.handle_datagram(Protocol::Tcp, peer, None, &data, now) {
                    // Garbage, someone else's ufrag, or a connection that is gone.
                    if let Some(tcp) = self.ice_tcp.as_mut() {
                        tcp.reject(peer);
                    }
                }
            }
        }
    }
}
