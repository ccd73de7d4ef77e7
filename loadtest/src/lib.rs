//! Zvon's load tester: simulated participants that join through the documented signaling
//! protocol (WebSocket JSON + JWT) and speak real WebRTC with str0m (ICE, DTLS-SRTP), sending
//! real Opus and synthetic VP8 and measuring what they receive (latency, loss, jitter, bitrate).
//!
//! It owns scenarios, the simulated clients and the reports. It must never know the server's
//! internals: it speaks only the protocol of `docs/protocol.md` with its own types, so that it
//! measures the server as any client sees it and can drive other targets (`targets`).

pub mod client;
pub mod measure;
pub mod media;
pub mod progress;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod targets;
