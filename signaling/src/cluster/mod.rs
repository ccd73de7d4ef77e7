//! Fleet coordination through Redis: which nodes are alive (leases), which signaling node
//! owns a room (with a fencing epoch), and which media node a room was placed on.
//!
//! Redis is only ever consulted for control-plane decisions (joining a room, placing it,
//! renewing leases); it is never on the media path, so a slow or dead Redis delays joins
//! and placement but never a packet. For that reason every call here is bounded by a
//! timeout ([`COMMAND_TIMEOUT`], [`CONNECT_TIMEOUT`]) and reports
//! [`ClusterError::Timeout`] rather than hanging, and nothing Redis returns is trusted:
//! a wrong type at a key or unparsable JSON becomes [`ClusterError::Garbage`] or is skipped
//! and counted in [`RegistryStats`], never a panic.
//!
//! ## Client crate
//! We use the `redis` crate (1.x, features `tokio-comp`, `connection-manager`, `script`)
//! rather than `fred`: its `ConnectionManager` is a cloneable multiplexed connection that
//! reconnects by itself after the server goes away, which is all a registry needs (a
//! handful of small commands, a few Lua scripts), with far fewer dependencies than `fred`'s
//! pooling, cluster and sentinel machinery. `Script` re-sends a script body when a
//! restarted Redis answers `NOSCRIPT`, so the compare-and-set scripts survive restarts too.
//!
//! ## Keys (all under [`KEY_PREFIX`])
//! | key | value | lifetime |
//! | --- | --- | --- |
//! | `zvon:nodes` | set of node ids that once put a lease | members pruned when their lease is gone |
//! | `zvon:node:{id}` | [`NodeInfo`] as JSON | the lease TTL |
//! | `zvon:room:{room}` | `"{node}|{epoch}"` | the claim TTL, refreshed by the owner |
//! | `zvon:room-epoch:{room}` | last epoch handed out | [`EPOCH_RETENTION`], so epochs only grow while a room is in use |
//! | `zvon:room-media:{room}` | media node id | 1 h, extended with the claim, deleted when the room is released |
//!
//! The scripts build some key names from arguments, so this targets a single Redis (or a
//! primary with replicas), not Redis Cluster.

mod error;
pub mod placement;
pub mod registry;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod test_redis;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::ClusterError;
pub use placement::Placement;
pub use registry::{Registry, RegistryStats, RegistryStatsSnapshot, RoomClaim};

/// Every key this module touches starts with this, so a shared Redis can be cleaned or
/// inspected per application.
pub const KEY_PREFIX: &str = "zvon:";

/// Bound on one Redis command (or one Lua script) including waiting for a reconnect.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Bound on the first connection in [`Registry::connect`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a room's epoch counter outlives the room's last claim. Long enough that no
/// stale owner from the previous life of the room can still be around to be confused by a
/// reused epoch; short enough that random one-off room names do not pile up forever.
pub const EPOCH_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a node does in the fleet; an all-in-one `zvon` is both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRoles {
    pub signaling: bool,
    pub media: bool,
}

/// Load a node reports with its lease; placement compares nodes by it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub participants: u32,
    /// Busy ratio of the busiest media worker, 0..1.
    pub busy: f32,
    pub bitrate_bps: u64,
}

/// One node's lease record, stored as JSON at `zvon:node:{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub roles: NodeRoles,
    /// Internal base URL other signaling nodes proxy WebSockets to, e.g.
    /// `"http://127.0.0.1:7450"`.
    pub http_url: Option<String>,
    /// Media nodes: where signaling dials.
    pub quic_addr: Option<SocketAddr>,
    pub load: NodeLoad,
    /// Draining nodes keep their rooms but get no new ones.
    pub draining: bool,
}
