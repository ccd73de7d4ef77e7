//! This process as a member of a fleet (`--cluster`): its node lease, the rooms it owns, the
//! media nodes it drives over QUIC, and sockets it hands to other nodes.
//!
//! Redis (through [`crate::cluster`]) holds only leases and placements, never media. The hub
//! stays exactly what it is in the all-in-one server; the fleet decides which node's hub
//! serves a room and which media node carries it.

mod heartbeat;
mod media_fleet;
pub mod proxy;
mod room_leases;
mod stats;

pub use heartbeat::LoadMeter;
pub use media_fleet::{MediaFleet, NodeLost};
pub use room_leases::{lease_for_room, RoomLeases, Route, CALLS_LEASE, ROOM_LEASE, ROOM_REFRESH};
pub use stats::FleetStats;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use zvon_sfu::link::{ControlServer, LinkServerStats};

use crate::cluster::{NodeInfo, NodeRoles, Registry};
use crate::config::ClusterConfig;
use crate::rooms::Hub;

/// How long a node lease lives without refreshes: a dead node is forgotten this fast.
pub const NODE_LEASE: Duration = Duration::from_secs(3);
pub const NODE_REFRESH: Duration = Duration::from_secs(1);

/// What the rest of the process needs of its fleet membership.
pub struct Fleet {
    pub config: ClusterConfig,
    pub registry: Registry,
    pub stats: Arc<FleetStats>,
    /// Signaling role: the media nodes this node's rooms use.
    pub media: Option<Arc<MediaFleet>>,
    /// Signaling role: rooms this node owns.
    pub rooms: Option<RoomLeases>,
    /// Media role: the QUIC listener signaling nodes drive this node through.
    pub control: Option<ControlServer>,
    /// Where this node's signaling listener is reached by other nodes.
    pub http_url: Option<String>,
    pub quic_addr: Option<std::net::SocketAddr>,
}

impl Fleet {
    pub fn link_server_stats(&self) -> Option<Arc<LinkServerStats>> {
        self.control.as_ref().map(|c| c.stats())
    }

    fn lease(&self, load: crate::cluster::NodeLoad) -> NodeInfo {
        NodeInfo {
            id: self.registry.node_id().to_string(),
            roles: NodeRoles {
                signaling: self.config.role.signaling(),
                media: self.config.role.media(),
            },
            http_url: self.http_url.clone(),
            quic_addr: self.quic_addr,
            load,
            draining: self.stats.draining.load(Ordering::Relaxed),
        }
    }

    /// Refreshes this node's lease once.
    pub async fn put_lease(&self, load: crate::cluster::NodeLoad) {
        // Once the node has left, a heartbeat still in flight must not bring it back.
        if self.stats.left.load(Ordering::Relaxed) {
            return;
        }
        let lease = self.lease(load);
        match self.registry.put_lease(&lease, NODE_LEASE).await {
            Ok(()) => self.stats.lease_ok.store(true, Ordering::Relaxed),
            Err(e) => {
                if self.stats.lease_ok.swap(false, Ordering::Relaxed) {
                    warn!("node lease refresh failed: {e}");
                }
            }
        }
    }

    /// Every second: the node lease, the room leases, and moving rooms off draining nodes.
    pub async fn run(self: Arc<Self>, hub: Option<Arc<Hub>>, mut load: LoadMeter) {
        let mut every = tokio::time::interval(NODE_REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.put_lease(load.sample()).await;
            let nodes = self.count_nodes().await;
            let Some(hub) = &hub else { continue };
            if let Some(rooms) = &self.rooms {
                rooms.maintain(hub).await;
            }
            if let (Some(media), Some(nodes)) = (&self.media, nodes) {
                self.evacuate_draining(media, &nodes).await;
                media.warm(&nodes).await;
            }
        }
    }

    /// The live nodes, counted by role for the metrics; `None` while Redis is away.
    async fn count_nodes(&self) -> Option<Vec<NodeInfo>> {
        let nodes = self.registry.nodes().await.ok()?;
        let count = |pick: fn(&NodeInfo) -> bool| nodes.iter().filter(|n| pick(n)).count() as u64;
        self.stats
            .nodes_signaling
            .store(count(|n| n.roles.signaling), Ordering::Relaxed);
        self.stats
            .nodes_media
            .store(count(|n| n.roles.media), Ordering::Relaxed);
        Some(nodes)
    }

    async fn evacuate_draining(&self, media: &MediaFleet, nodes: &[NodeInfo]) {
        for node in media.nodes_in_use() {
            if nodes.iter().any(|n| n.id == node && n.draining) {
                let moved = media.evacuate(&node).await;
                info!(media_node = %node, moved, "moving rooms off a draining media node");
            }
        }
    }

    /// Drain: no new rooms or placements here, media moved away by the signaling nodes that
    /// use it, owned rooms handed to other nodes; returns when done or at the deadline.
    pub async fn drain(&self, hub: Option<&Arc<Hub>>, media_peers: impl Fn() -> u64) {
        self.stats.draining.store(true, Ordering::Relaxed);
        self.put_lease(Default::default()).await;
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        info!(deadline = ?self.config.drain_timeout, "draining");
        if self.config.role.media() {
            while media_peers() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            info!(left = media_peers(), "media drained");
        }
        if let (Some(hub), Some(rooms)) = (hub, &self.rooms) {
            // Leases first, so the next node can claim the rooms the moment clients return.
            rooms.release_all().await;
            let sockets = hub.hand_over_all();
            info!(sockets, "rooms handed over; clients resume on other nodes");
            // Let the close frames go out before the process exits.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.leave().await;
    }

    /// Takes this node out of the registry for good.
    pub async fn leave(&self) {
        self.stats.left.store(true, Ordering::Relaxed);
        if let Err(e) = self.registry.remove_lease().await {
            warn!("removing the node lease: {e}");
        }
    }
}
