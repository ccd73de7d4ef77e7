//! The forwarding core: a sans-IO state machine deciding who receives which packet.
//!
//! Packets and `now` go in; rewritten packets addressed to subscribers, keyframe requests
//! and negotiation needs come out. No sockets, no clocks, no str0m `Rtc`: the edge feeds
//! it and carries out what it returns, and tests drive it packet by packet.

pub mod allocator;
pub mod downlink_monitor;
mod downtrack_layers;
pub mod dynacast;
pub mod egress_backlog;
pub mod idle_egress;
pub mod keyframe;
pub mod keyframe_requests;
pub mod layer_rate;
pub mod layer_selector;
pub mod overload;
pub mod router;
mod router_bandwidth;
pub mod rtp_rewriter;
pub mod speaker_detector;
pub mod subscriber_budget;
pub mod vp8_munger;

pub use downtrack_layers::BandwidthPause;
pub use keyframe_requests::KeyframeRequestThrottle;
pub use router::{DowntrackKey, Forward, IncomingRtp, PeerKey, Router, SpeakerUpdate, TrackKey};
pub use router_bandwidth::BandwidthTotals;
pub use rtp_rewriter::RtpRewriter;

#[cfg(test)]
mod idle_resume_tests;
#[cfg(test)]
mod join_allocation_tests;
#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod router_tests;
#[cfg(test)]
mod screen_priority_tests;
#[cfg(test)]
mod seq_continuity_tests;
#[cfg(test)]
mod simulcast_tests;
#[cfg(test)]
mod subscription_tests;
#[cfg(test)]
mod viewer_tests;
