//! The relay: one room's media spanning several forwarding cores (worker threads of a node
//! today; nodes of a fleet later).
//!
//! A forwarding core that hosts a publisher is the track's *origin*; a core that hosts some
//! of the room's subscribers receives the track as a local source and forwards it with its
//! own router, unchanged. Between them travel, per wanted track and simulcast layer, packets
//! tagged with a [`FlowId`], and a control stream of [`RelayControl`] messages: room
//! membership, track announcements (with mutes and removals), subscriptions with the layers
//! wanted, and keyframe requests, which the origin throttles as it does for its own
//! subscribers.
//!
//! Everything here is sans-IO and generic over the peer type (a worker index in a node, a
//! node id across a fleet), so the carrier decides only how bytes move: in-process bounded
//! queues between workers ([`crate::edge::relay_pipe`]), QUIC datagrams between nodes.

mod flow;
mod message;
mod origin;
mod remote;
#[cfg(test)]
mod tests;

pub use flow::{FlowId, LayerMask};
pub use message::{RelayControl, RelayPacket, TrackAnnouncement};
pub use origin::{OriginFlows, OriginSlot};
pub use remote::{RemoteTrack, RemoteTracks};
