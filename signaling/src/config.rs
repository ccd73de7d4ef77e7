//! Server settings: defaults that work on a laptop, overridable by TOML file, env and flags.

use std::net::SocketAddr;
use std::time::Duration;

use zvon_sfu::SfuConfig;

use crate::calls::CallSettings;
use crate::client_ip::TrustedProxies;
use crate::origin::AllowedOrigins;
use crate::turn::TurnConfig;

/// An API key and the secret that signs its tokens.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key: String,
    pub secret: String,
}

/// Abuse limits and room policy.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub messages_per_second: u32,
    pub upgrades_per_second_per_ip: u32,
    pub max_participants: usize,
    pub join_timeout: Duration,
    pub reconnect_grace: Duration,
    pub empty_timeout: Duration,
    /// Messages waiting to be written to one socket; a client further behind is cut
    /// (`slow_consumer`).
    pub max_queued_messages: usize,
    /// Bytes waiting to be written to one socket; a client further behind is cut.
    pub max_queued_bytes: usize,
    /// How long one frame may take to reach a client's socket before the socket is cut.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // SDP grows by 1–2.5 KiB per m-line: a subscriber answer in a 200-student class
            // (400 m-lines) is 0.4–1 MiB, so the cap must admit that.
            max_message_bytes: 1024 * 1024,
            messages_per_second: 50,
            upgrades_per_second_per_ip: 20,
            max_participants: 100,
            join_timeout: Duration::from_secs(10),
            reconnect_grace: Duration::from_secs(10),
            empty_timeout: Duration::ZERO,
            // A 200-participant room's join burst is a few hundred events; a subscriber
            // offer of a large class ~1 MiB. Far more than that waiting means the client
            // stopped reading, and every room event would pile up for it forever.
            max_queued_messages: 4096,
            max_queued_bytes: 4 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Signaling HTTP + WebSocket listener. Port 0 picks a free port (tests).
    pub http_addr: SocketAddr,
    /// Private listener for `/metrics`, `/healthz`, `/readyz`. Port 0 picks a free port.
    pub metrics_addr: SocketAddr,
    /// Dev mode: `/api/dev-token` hands out tokens to anyone. Never in production.
    pub dev_mode: bool,
    pub api_keys: Vec<ApiKey>,
    pub limits: Limits,
    pub sfu: SfuConfig,
    pub calls: CallSettings,
    /// Where call events are POSTed (plain `http://`), signed with the first API key.
    pub webhook_url: Option<String>,
    /// `Some` joins a fleet through Redis (`--cluster`); `None` is the all-in-one server.
    pub cluster: Option<ClusterConfig>,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` name the client (upgrade limit).
    pub trusted_proxies: TrustedProxies,
    /// Web origins besides the server's own whose pages may open `/rtc`.
    pub allowed_origins: AllowedOrigins,
    /// TURN servers handed to clients in `joined`, for networks that block UDP to the media
    /// server (`None`: clients get no relay).
    pub turn: Option<TurnConfig>,
}

/// Which halves of Zvon a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Signaling (HTTP, WebSocket, rooms) and a media node: the common small deployment.
    Both,
    Signaling,
    Media,
}

impl Role {
    pub fn signaling(self) -> bool {
        matches!(self, Role::Both | Role::Signaling)
    }
    pub fn media(self) -> bool {
        matches!(self, Role::Both | Role::Media)
    }
}

/// A fleet member's settings (`docs/cluster.md`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT`: node leases, room owners, room placement. Never media.
    pub redis_url: String,
    /// Unique in the fleet; the lease and room ownership name it.
    pub node_id: String,
    /// Shared by every node; authenticates the QUIC links between them (≥ 16 characters).
    pub secret: String,
    pub role: Role,
    /// Where a media node's QUIC control link listens.
    pub quic_addr: SocketAddr,
    /// Where other nodes dial this node's QUIC link (default: `quic_addr`, with the media IP
    /// when it is bound to an unspecified address).
    pub advertise_quic: Option<SocketAddr>,
    /// Base URL other signaling nodes proxy WebSockets to (default `http://<http_addr>`).
    pub advertise_http: Option<String>,
    /// How long a media node keeps forwarding for participants whose signaling node is gone.
    pub orphan_grace: Duration,
    /// How long a draining node waits for its rooms and participants to move before it exits.
    pub drain_timeout: Duration,
    /// Participants of a room per media node before the room's next participant goes to
    /// another media node (the nodes cascade); 0: a room stays on one media node.
    pub room_spread_after: usize,
    /// A media node whose busiest worker is this busy (0..1, from its lease) takes no more
    /// participants of a room that could go to another node; above 1: never by load.
    pub room_spread_busy: f32,
    /// The congestion controller of a media node's cascade links.
    pub cascade_congestion: zvon_sfu::cascade::Congestion,
}

impl ClusterConfig {
    pub fn new(redis_url: &str, node_id: &str, secret: &str) -> Self {
        ClusterConfig {
            redis_url: redis_url.to_string(),
            node_id: node_id.to_string(),
            secret: secret.to_string(),
            role: Role::Both,
            quic_addr: SocketAddr::from(([0, 0, 0, 0], 7370)),
            advertise_quic: None,
            advertise_http: None,
            orphan_grace: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            room_spread_after: 0,
            room_spread_busy: 2.0,
            cascade_congestion: zvon_sfu::cascade::Congestion::default(),
        }
    }
}

impl ServerConfig {
    /// Key and secret used by dev mode; printed at start so nobody runs them in production.
    pub const DEV_API_KEY: &'static str = "devkey";
    pub const DEV_API_SECRET: &'static str = "devsecret-change-me-devsecret-change-me";

    /// Settings for tests: loopback, ephemeral ports, one worker, dev key.
    pub fn for_tests() -> Self {
        ServerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dev_mode: true,
            api_keys: vec![ApiKey {
                key: Self::DEV_API_KEY.into(),
                secret: Self::DEV_API_SECRET.into(),
            }],
            limits: Limits::default(),
            sfu: SfuConfig {
                bind_ip: [127, 0, 0, 1].into(),
                advertised_ip: [127, 0, 0, 1].into(),
                port_base: 0,
                workers: 1,
                // Placement stays deterministic under a loaded test machine; tests of the
                // spread set `spread_after`.
                spread_busy: f64::INFINITY,
                // In-process tests check forwarding exactly (every sequence number once,
                // latency bounds) with peers on a busy loopback. With bandwidth estimation
                // on, str0m probes with padding that, without RTX negotiated (webrtc-rs
                // peers), resends media packets on their own SSRC (duplicates), and its pacer
                // holds media back whenever the loopback estimate dips. Allocation itself is
                // tested sans-IO and with Chromium on shaped links (tests/browser/shaped.mjs).
                bandwidth_allocation: false,
                ..SfuConfig::default()
            },
            calls: CallSettings::default(),
            webhook_url: None,
            cluster: None,
            trusted_proxies: TrustedProxies::default(),
            allowed_origins: AllowedOrigins::default(),
            turn: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7350)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9350)),
            dev_mode: false,
            api_keys: vec![],
            limits: Limits::default(),
            sfu: SfuConfig::default(),
            calls: CallSettings::default(),
            webhook_url: None,
            cluster: None,
            trusted_proxies: TrustedProxies::default(),
            allowed_origins: AllowedOrigins::default(),
            turn: None,
        }
    }
}
