//! The cascade: the relay ([`crate::relay`]) carried between media nodes over QUIC, so one
//! room's media can span nodes of a fleet as it spans the workers of a node.
//!
//! One QUIC connection per node pair ([`CascadeLink`], quinn, authenticated with the cluster
//! secret like the signaling link) carries every room the two nodes share:
//!
//! * **DATAGRAMs**, one per relayed RTP packet: a QUIC varint flow id and the RTP packet as
//!   the origin received it, decrypted ([`datagram`]). QUIC encrypts the link; a lost
//!   datagram is not retransmitted by QUIC (media prefers late-never to late).
//! * **One bidirectional control stream** of [`crate::relay::RelayControl`] messages with
//!   node ids as peers (length-prefixed JSON, as on the signaling link): room membership,
//!   track announcements with mutes and removals, subscriptions with the layers wanted,
//!   keyframe requests (throttled at the origin like its own subscribers').
//!
//! quinn is tuned for media ([`CascadeConfig::transport`]): an MTU floor of 1400 so a full
//! RTP packet fits from the first datagram (what does not fit is counted as `too_large`), a
//! small datagram send buffer with an audio-first queue in front of it ([`send_queue`]), and
//! keep-alives every 500 ms.
//!
//! Built so far: the carrier (framing, priority, the authenticated link), tested over real
//! QUIC on loopback. Not yet built: the node-level gateway that joins a link to the node's
//! relay pipes as one more relay peer, and signaling placing one room's participants on
//! several nodes (see `docs/architecture.md`).

pub mod datagram;
mod driver;
pub mod gateway;
mod link;
pub mod send_queue;
#[cfg(test)]
mod tests;

pub use driver::CascadeHandle;
pub(crate) use driver::{spawn as spawn_gateway, GatewayCommand};
pub use link::{
    server_endpoint, CascadeConfig, CascadeLink, CascadeStats, NodeControl, CASCADE_ALPN,
};
pub use send_queue::{Priority, SendQueue};
