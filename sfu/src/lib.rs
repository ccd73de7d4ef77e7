//! Zvon SFU: the media node.
//!
//! Owns the WebRTC edge (ICE-lite, DTLS-SRTP through str0m in RTP mode, one UDP port per
//! worker thread) and the forwarding core (tracks, downtracks, SSRC/sequence/timestamp
//! rewriting, keyframe-request throttling), and the relay that lets one room span several
//! forwarding cores (`relay`: sans-IO flows and subscriptions; `edge::relay_pipe`: the queues
//! between the workers of a node; `cascade`: the QUIC link carrying it between media nodes), and recording rooms to WebM files (`record`). It is driven only through the message API in
//! [`api`]: it must never know about users, tokens, HTTP or WebSockets.

pub mod api;
pub mod cascade;
pub mod config;
pub mod edge;
pub mod forward;
pub mod histogram;
pub mod link;
pub mod node;
pub mod record;
pub mod relay;
pub mod stats;

pub use api::{SfuError, SfuEvent, SfuRequest, SfuResponse};
pub use config::SfuConfig;
pub use node::SfuNode;
pub use stats::SfuStats;
