//! The cluster link: signaling nodes drive media nodes over QUIC with the message API of
//! [`crate::api`].
//!
//! # Transport
//! One QUIC connection (quinn, rustls with the aws-lc-rs provider, ALPN `zvon-link/1`) per
//! signaling node and media node. Keep-alives every 500 ms and a 3 s idle timeout: a dead
//! peer is noticed within ~3 s instead of quinn's default 30 s, which is what lets
//! signaling move rooms off a crashed media node quickly.
//!
//! # Authentication
//! Certificates are self-signed and made at start, so the TLS layer accepts any server
//! certificate (it still checks the handshake signature, so the server owns the key it
//! shows). What proves membership of the cluster is the shared secret, bound to this very
//! TLS session: both sides export 32 bytes of keying material (RFC 5705,
//! label `EXPORTER-zvon-cluster-auth`); the client sends
//! `HMAC-SHA256(secret, "zvon-link client" || ekm)` on the first bidirectional stream and the
//! server answers `HMAC-SHA256(secret, "zvon-link server" || ekm)`. Someone terminating TLS
//! on both sides ends up with two different sessions and two different EKMs, so a tag it
//! relays is worthless. A wrong or missing tag (2 s) closes the connection with application
//! error [`AUTH_ERROR_CODE`].
//!
//! # Messages
//! * A request is one bidirectional stream: the client writes one frame (the
//!   [`SfuRequest`](crate::api::SfuRequest)) and finishes; the server answers one frame
//!   `Result<SfuResponse, SfuError>` and finishes. Requests run concurrently.
//! * Events: the server opens one unidirectional stream and writes the
//!   [`SfuEvent`](crate::api::SfuEvent)s owned by that connection, in order. Ownership comes
//!   from the `AddParticipant` requests the connection made; `ActiveSpeakers` goes to every
//!   connection with a participant in the room.
//! * A frame is a big-endian `u32` length and that many bytes of JSON, at most 4 MiB.
//!
//! # Orphans
//! When a signaling connection is lost its participants keep their media for
//! [`LinkConfig::orphan_grace`], so restarting signaling does not cut calls short; after that
//! the server removes them from the node. Re-adoption by another signaling node is not
//! implemented yet.
//!
//! See also `docs/cluster-link.md`.

pub(crate) mod auth;
pub(crate) mod frame;
mod remote;
mod router;
mod server;
pub(crate) mod tls;

use std::time::Duration;

pub use remote::{client_endpoint, LinkSnapshot, RemoteSfu};
pub use server::{ControlServer, LinkServerStats};

/// ALPN of the link; a new incompatible wire format gets a new version.
pub const ALPN: &[u8] = b"zvon-link/1";

/// Application close code: the peer failed cluster authentication.
pub const AUTH_ERROR_CODE: u32 = 0x10;
/// Application close or stream reset code: the peer broke the framing or the message format.
pub const PROTOCOL_ERROR_CODE: u32 = 0x11;
/// Application close code: the endpoint is going away on purpose.
pub const SHUTDOWN_CODE: u32 = 0x0;

/// Settings shared by both ends of a link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Shared by every node of the cluster; proves membership (see the module docs).
    pub cluster_secret: String,
    /// How often an idle connection is pinged, so that it stays alive and losses are seen.
    pub keep_alive: Duration,
    /// Silence after which the peer counts as dead.
    pub idle_timeout: Duration,
    /// How long the participants of a lost signaling connection keep their media.
    pub orphan_grace: Duration,
    /// The congestion controller of the media node's link port (its cascade links).
    pub cascade_congestion: crate::cascade::Congestion,
}

impl LinkConfig {
    pub fn new(cluster_secret: impl Into<String>) -> Self {
        LinkConfig {
            cluster_secret: cluster_secret.into(),
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            orphan_grace: Duration::from_secs(10),
            cascade_congestion: crate::cascade::Congestion::default(),
        }
    }
}

/// Reads frames from `bytes` until the stream ends or a frame is refused, decoding them as
/// what a media node reads (`selector % 4 == 0`: requests), a signaling node reads (`1`:
/// responses, `2`: events), or a media node reads on a cascade link's control stream from
/// another media node (`3`: relay control); returns how many frames decoded.
///
/// Not part of the API: the framing reader is private, and this is the narrowest door through
/// which the fuzz targets (`fuzz/`) and their smoke test feed it hostile bytes without a QUIC
/// connection. A byte slice never returns `Pending`, so one poll with a no-op waker finishes
/// each read and no runtime is needed.
#[doc(hidden)]
pub fn fuzz_read_frames(selector: u8, bytes: &[u8]) -> usize {
    use crate::api::{SfuError, SfuEvent, SfuRequest, SfuResponse};
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn one<T: serde::de::DeserializeOwned>(reader: &mut &[u8]) -> Result<Option<T>, LinkError> {
        let future = std::pin::pin!(frame::read_frame::<_, T>(reader));
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => unreachable!("reading a byte slice never waits"),
        }
    }
    let mut reader = bytes;
    let mut frames = 0;
    loop {
        let decoded = match selector % 4 {
            0 => one::<SfuRequest>(&mut reader).map(|f| f.is_some()),
            1 => one::<Result<SfuResponse, SfuError>>(&mut reader).map(|f| f.is_some()),
            2 => one::<SfuEvent>(&mut reader).map(|f| f.is_some()),
            _ => one::<crate::cascade::NodeControl>(&mut reader).map(|f| f.is_some()),
        };
        match decoded {
            Ok(true) => frames += 1,
            Ok(false) | Err(_) => return frames,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot bind the link endpoint: {0}")]
    Bind(String),
    #[error("cannot connect to the media node: {0}")]
    Connect(String),
    /// Wrong cluster credentials (on either side), or none in time.
    #[error("cluster authentication failed: {0}")]
    Auth(String),
    #[error("link closed: {0}")]
    Closed(String),
    #[error("link protocol violation: {0}")]
    Protocol(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl LinkError {
    /// Classifies a lost connection: a close with [`AUTH_ERROR_CODE`] is an authentication
    /// failure, anything else a closed link.
    pub(crate) fn from_connection(error: &quinn::ConnectionError) -> LinkError {
        match error {
            quinn::ConnectionError::ApplicationClosed(close)
                if close.error_code == quinn::VarInt::from_u32(AUTH_ERROR_CODE) =>
            {
                LinkError::Auth("rejected by the peer".into())
            }
            other => LinkError::Closed(other.to_string()),
        }
    }
}
