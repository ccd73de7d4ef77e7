//! Zvon signaling: what people and apps see of a call.
//!
//! Owns the HTTP + WebSocket API (`docs/protocol.md`), access tokens (JWT), rooms and
//! participants, WHIP/WHEP broadcast sessions (`broadcast/`), and the browser client in `web/`. It drives media nodes only through the
//! message API of `zvon_sfu::api`; it must never know about RTP, SRTP or packets.

pub mod broadcast;
pub mod calls;
pub mod client_ip;
pub mod cluster;
pub mod config;
pub mod fleet;
pub mod http;
pub mod media_plane;
pub mod metrics;
pub mod origin;
pub mod protocol;
pub mod rate_limit;
pub mod recordings_api;
pub mod rooms;
pub mod server;
pub mod session;
pub mod token;
pub mod turn;

pub use config::{ApiKey, ClusterConfig, Limits, Role, ServerConfig};
pub use server::{start, RunningServer, StartError};
