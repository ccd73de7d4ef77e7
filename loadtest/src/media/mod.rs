//! What publishers send: pre-encoded real Opus, synthetic VP8 frames, and the send-time stamp
//! both carry.

pub mod opus_source;
pub mod stamp;
pub mod video_source;
