//! What subscribers measure about the media they receive.

pub mod histogram;
pub mod latency;
pub mod loss;
