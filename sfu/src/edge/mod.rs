//! The WebRTC edge: sockets, str0m connections, and the worker loop that joins them to the
//! forwarding core.

pub mod connection;
pub mod demux;
pub mod ice_tcp;
pub mod local_address;
pub mod meter;
pub mod offer_guard;
pub mod pacer_defer;
pub mod pacer_steps;
pub mod payload_types;
pub mod relay_pipe;
pub mod rtx_window;
pub mod sdp_candidates;
pub mod send_path;
pub mod startup_pacing;
pub mod stun;
pub mod timers;
pub mod udp_batch;
pub mod worker;
