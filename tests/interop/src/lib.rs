//! Interop test harness for Zvon: drives an in-process server with an independent WebRTC stack
//! (webrtc-rs) through the documented WebSocket protocol (`docs/protocol.md`).
//!
//! - [`TestServer`] starts a server with `ServerConfig::for_tests()` and mints tokens for it.
//! - [`TestParticipant`] is one client: WebSocket + event log, a publisher connection sending
//!   synthetic Opus and VP8 over RTP, and a subscriber connection that answers every
//!   `subscriber_offer` and records each received packet's SSRC / sequence / timestamp / PT.
//! - [`HealthyCall`] is a two-party call used as a canary by the abuse tests.

pub mod child_server;
pub mod cluster;
pub mod die_with_parent;
pub mod host_link;
pub mod media;
pub mod participant;
pub mod peer;
pub mod renegotiation;
pub mod signal;
pub mod streams;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zvon_signaling::token::{mint, Claims};
use zvon_signaling::{RunningServer, ServerConfig};

pub use participant::{describe_received, TestParticipant, CONNECT_TIMEOUT, SIGNAL_TIMEOUT};
pub use peer::{PeerAddress, ReceivedTrack, RecvPacket, RtcpSeen};
pub use signal::{msg_type, ConnectError, SignalClient};

/// Logs to the test output, filtered by `RUST_LOG` (nothing when unset). Safe to call often.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A server running in this process on ephemeral ports.
pub struct TestServer {
    pub server: RunningServer,
}

impl TestServer {
    pub async fn start() -> Result<TestServer> {
        TestServer::start_with(ServerConfig::for_tests()).await
    }

    pub async fn start_with(config: ServerConfig) -> Result<TestServer> {
        init_tracing();
        let server = zvon_signaling::start(config)
            .await
            .context("start server")?;
        Ok(TestServer { server })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.server.http_addr
    }

    /// A token for `identity` in `room`, valid for an hour, default grants.
    pub fn token(&self, room: &str, identity: &str) -> String {
        token(room, identity)
    }

    /// Joins `room` as `identity`, publishes audio + video and starts sending.
    pub async fn publishing_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<TestParticipant> {
        TestParticipant::join_and_publish(self.http_addr(), &token(room, identity), room)
            .await
            .with_context(|| format!("{identity} joining {room} and publishing"))
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Claims for `identity` in `room` signed by the dev key, valid for an hour.
pub fn claims(room: &str, identity: &str) -> Claims {
    Claims::new(
        ServerConfig::DEV_API_KEY,
        room,
        identity,
        Duration::from_secs(3600),
    )
}

/// Signs `claims` with the dev secret.
pub fn sign(claims: &Claims) -> String {
    mint(claims, ServerConfig::DEV_API_SECRET)
        .expect("HS256 signing with the dev secret cannot fail")
}

pub fn token(room: &str, identity: &str) -> String {
    sign(&claims(room, identity))
}

/// A two-party call in its own room, both publishing, each receiving the other: the canary
/// that abuse tests check keeps flowing.
pub struct HealthyCall {
    pub a: TestParticipant,
    pub b: TestParticipant,
}

impl HealthyCall {
    pub async fn start(server: &TestServer, room: &str) -> Result<HealthyCall> {
        let a = server.publishing_participant(room, "healthy-a").await?;
        let b = server.publishing_participant(room, "healthy-b").await?;
        // Flow is checked by the caller after the attack (`assert_flowing`), so that the attack's
        // own assertions are reported even when media forwarding itself is broken.
        Ok(HealthyCall { a, b })
    }

    /// Both directions, audio and video, receive fresh packets within `timeout`.
    pub async fn assert_flowing(&self, timeout: Duration) -> Result<()> {
        assert_flowing(&self.a, &self.b, timeout).await
    }

    pub async fn close(self) {
        self.a.close().await;
        self.b.close().await;
    }
}

/// `a` and `b` each receive fresh audio and video packets from the other within `timeout`.
pub async fn assert_flowing(
    a: &TestParticipant,
    b: &TestParticipant,
    timeout: Duration,
) -> Result<()> {
    tokio::try_join!(
        a.wait_more_packets(&b.id, "audio", 10, timeout),
        a.wait_more_packets(&b.id, "video", 10, timeout),
        b.wait_more_packets(&a.id, "audio", 10, timeout),
        b.wait_more_packets(&a.id, "video", 10, timeout),
    )?;
    Ok(())
}

/// `GET path` over HTTP/1.0 (the server closes after answering); returns status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .context("reading the reply")??;
    let reply = String::from_utf8(reply).context("reply is not UTF-8")?;
    let (head, body) = reply.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Runs a whole test body with an upper bound, so a hang fails instead of blocking CI.
pub async fn bounded<T>(limit: Duration, fut: impl std::future::Future<Output = Result<T>>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{e:#}"),
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}
