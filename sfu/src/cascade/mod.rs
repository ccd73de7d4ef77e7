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
//! On a node, the [`gateway`] (sans-IO) and its thread (`driver`) join the links to the
//! node's relay pipes as one more relay peer after the workers: to the workers the other
//! nodes look like one more worker. Signaling says which nodes a room spans
//! ([`crate::api::SfuRequest::Cascade`]); of two nodes the one whose id sorts first dials,
//! the other accepts on its link port (ALPN [`CASCADE_ALPN`]). See `docs/cluster-link.md`.
//!
//! Each datagram carries a send stamp ([`stamp`]): when the origin's worker received the
//! packet. The receiving gateway turns it back into the packet's `received` instant, so the
//! worker that takes it measures the whole hop (`zvon_cascade_hop_latency_seconds`).
//!
//! Loss on a link is repaired per hop ([`repair`]): the receiving gateway NACKs the gaps of
//! each flow on the control stream and the sending one answers from a short cache of what it
//! sent; duplicates stop at the receiving gateway.
//!
//! Not built: relaying through intermediate nodes (each node of a room feeds the others
//! directly: per track a star from its origin).

pub mod datagram;
mod driver;
pub mod gateway;
mod link;
pub mod repair;
pub mod send_queue;
pub mod stamp;
#[cfg(test)]
mod tests;

pub use driver::CascadeHandle;
pub(crate) use driver::{spawn as spawn_gateway, GatewayCommand};
pub use link::{
    server_endpoint, CascadeConfig, CascadeLink, CascadeStats, Congestion, NodeControl,
    CASCADE_ALPN,
};
pub use send_queue::{Priority, SendQueue};
