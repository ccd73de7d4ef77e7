//! The signaling side of the media fleet: which media node serves each room, the QUIC links
//! to those nodes, and noticing when one dies.
//!
//! A room lives on exactly one media node. The first participant places it (power of two
//! choices over the nodes' leases); later participants follow. When a link is lost the room's
//! participants are handed back to the hub as a [`NodeLost`] so it can move them elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};
use zvon_sfu::api::{ParticipantId, RoomId};
use zvon_sfu::link::{LinkConfig, RemoteSfu};
use zvon_sfu::{SfuError, SfuEvent, SfuRequest, SfuResponse};

use super::stats::FleetStats;
use crate::cluster::{NodeInfo, Placement, Registry};
use crate::protocol::MediaResetReason;

/// A node whose link died is not chosen again for this long, though its lease may linger.
const LOST_NODE_QUARANTINE: Duration = Duration::from_secs(15);

/// A media node went away with these participants on it.
#[derive(Debug)]
pub struct NodeLost {
    pub node: String,
    pub participants: Vec<ParticipantId>,
    pub reason: MediaResetReason,
}

struct Link {
    remote: RemoteSfu,
    /// Tells a late death notice of an old link from one of its replacement.
    generation: u64,
}

#[derive(Default)]
struct Routes {
    links: HashMap<String, Link>,
    rooms: HashMap<RoomId, String>,
    participants: HashMap<ParticipantId, (String, RoomId)>,
    quarantined: HashMap<String, Instant>,
    next_generation: u64,
}

pub struct MediaFleet {
    me: Weak<MediaFleet>,
    registry: Registry,
    endpoint: quinn::Endpoint,
    link_config: LinkConfig,
    events: mpsc::UnboundedSender<SfuEvent>,
    lost: mpsc::UnboundedSender<NodeLost>,
    routes: Mutex<Routes>,
    placement: Mutex<Placement>,
    /// Placing a room and dialing a node happen once, not once per racing join.
    placing: tokio::sync::Mutex<()>,
    dialing: tokio::sync::Mutex<()>,
    stats: Arc<FleetStats>,
}

fn unavailable(what: impl std::fmt::Display) -> SfuError {
    SfuError::Unavailable(what.to_string())
}

impl MediaFleet {
    pub fn new(
        registry: Registry,
        endpoint: quinn::Endpoint,
        link_config: LinkConfig,
        events: mpsc::UnboundedSender<SfuEvent>,
        lost: mpsc::UnboundedSender<NodeLost>,
        stats: Arc<FleetStats>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| MediaFleet {
            me: me.clone(),
            registry,
            endpoint,
            link_config,
            events,
            lost,
            routes: Mutex::new(Routes::default()),
            placement: Mutex::new(Placement::new(Duration::from_secs(20))),
            placing: tokio::sync::Mutex::new(()),
            dialing: tokio::sync::Mutex::new(()),
            stats,
        })
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The media node serving `room`, if it has one.
    pub fn node_of_room(&self, room: &str) -> Option<String> {
        self.routes().rooms.get(&RoomId(room.to_string())).cloned()
    }

    /// Open links with their round-trip time, loss and bytes, for metrics.
    pub fn links(&self) -> Vec<(String, zvon_sfu::link::LinkSnapshot)> {
        self.routes()
            .links
            .iter()
            .filter(|(_, l)| !l.remote.is_closed())
            .map(|(node, l)| (node.clone(), l.remote.stats()))
            .collect()
    }

    pub fn stats(&self) -> &Arc<FleetStats> {
        &self.stats
    }

    pub async fn request(&self, request: SfuRequest) -> Result<SfuResponse, SfuError> {
        let node = match &request {
            SfuRequest::AddParticipant { room, .. } => self.node_for_room(room).await?,
            SfuRequest::Adopt { room, .. } => return self.adopt(room, request.clone()).await,
            other => self
                .routes()
                .participants
                .get(other.participant())
                .map(|(node, _)| node.clone())
                .ok_or(SfuError::UnknownParticipant)?,
        };
        let remote = self.link(&node).await?;
        let answer = remote.request(request.clone()).await;
        let mut routes = self.routes();
        match (&request, &answer) {
            (
                SfuRequest::AddParticipant {
                    room, participant, ..
                },
                Ok(_),
            ) => {
                routes.rooms.entry(room.clone()).or_insert(node.clone());
                routes
                    .participants
                    .insert(participant.clone(), (node, room.clone()));
            }
            (SfuRequest::RemoveParticipant { participant }, _) => {
                if let Some((_, room)) = routes.participants.remove(participant) {
                    if !routes.participants.values().any(|(_, r)| *r == room) {
                        routes.rooms.remove(&room);
                    }
                }
            }
            _ => {}
        }
        answer
    }

    /// Takes a participant over from wherever its media lives: the room's media node as this
    /// node or the registry knows it, else any linked media node (the registry may have lost
    /// the placement: a drained owner released it, or Redis restarted empty).
    async fn adopt(&self, room: &RoomId, request: SfuRequest) -> Result<SfuResponse, SfuError> {
        let SfuRequest::Adopt { participant, .. } = &request else {
            return Err(SfuError::InvalidRequest("not an adoption".into()));
        };
        let known = self.routes().rooms.get(room).cloned();
        let mut candidates: Vec<String> = known.into_iter().collect();
        if let Ok(Some(node)) = self.registry.room_media(&room.0).await {
            candidates.push(node);
        }
        let linked: Vec<String> = self.routes().links.keys().cloned().collect();
        candidates.extend(linked);
        candidates.dedup();
        for node in candidates {
            let Ok(remote) = self.link(&node).await else {
                continue;
            };
            if let Ok(answer) = remote.request(request.clone()).await {
                {
                    let mut routes = self.routes();
                    routes.rooms.entry(room.clone()).or_insert(node.clone());
                    routes
                        .participants
                        .insert(participant.clone(), (node.clone(), room.clone()));
                }
                if let Err(e) = self.registry.set_room_media(&room.0, &node).await {
                    warn!(room = %room, "cluster registry: {e}");
                }
                return Ok(answer);
            }
        }
        Err(SfuError::UnknownParticipant)
    }

    /// The room's media node, placing the room if it has none yet.
    async fn node_for_room(&self, room: &RoomId) -> Result<String, SfuError> {
        if let Some(node) = self.routes().rooms.get(room) {
            return Ok(node.clone());
        }
        let _placing = self.placing.lock().await;
        if let Some(node) = self.routes().rooms.get(room) {
            return Ok(node.clone());
        }
        let nodes = self.registry.nodes().await.map_err(|e| {
            self.stats.placement_failed();
            unavailable(format!("cluster registry: {e}"))
        })?;
        let healthy: Vec<NodeInfo> = {
            let mut routes = self.routes();
            let now = Instant::now();
            routes
                .quarantined
                .retain(|_, at| now.duration_since(*at) < LOST_NODE_QUARANTINE);
            nodes
                .into_iter()
                .filter(|n| !routes.quarantined.contains_key(&n.id))
                .collect()
        };
        // A room that already has a media node (placed by an owner before us) stays there.
        let previous = match self.registry.room_media(&room.0).await {
            Ok(previous) => previous,
            Err(e) => {
                warn!(room = %room, "cluster registry: {e}");
                None
            }
        };
        let usable = |id: &str| {
            healthy
                .iter()
                .any(|n| n.id == id && n.roles.media && !n.draining)
        };
        let previous = previous.filter(|id| usable(id));
        let mut candidates = healthy;
        let node = match previous {
            Some(node) => node,
            None => loop {
                let chosen = {
                    let mut placement = self.placement.lock().unwrap_or_else(|p| p.into_inner());
                    let chosen =
                        placement.choose(&candidates, Instant::now(), &mut rand::thread_rng());
                    if let Some(node) = &chosen {
                        placement.placed(node, 1, Instant::now());
                    }
                    chosen
                };
                let Some(node) = chosen else {
                    self.stats.placement_failed();
                    return Err(unavailable("no media node in the fleet can take a room"));
                };
                // A node that cannot be reached (down, or refusing our cluster credentials)
                // is skipped for a while, and the room goes to the next choice.
                if let Err(e) = self.link(&node).await {
                    warn!(media_node = %node, "not placing rooms there: {e}");
                    self.routes()
                        .quarantined
                        .insert(node.clone(), Instant::now());
                    candidates.retain(|n| n.id != node);
                    continue;
                }
                if let Err(e) = self.registry.set_room_media(&room.0, &node).await {
                    warn!(room = %room, "cluster registry: {e}");
                }
                break node;
            },
        };
        self.stats.placed();
        info!(room = %room, media_node = %node, "room placed");
        self.routes().rooms.insert(room.clone(), node.clone());
        Ok(node)
    }

    /// The link to `node`, dialing it if there is none.
    async fn link(&self, node: &str) -> Result<RemoteSfu, SfuError> {
        let open = |routes: &Routes| {
            routes
                .links
                .get(node)
                .filter(|l| !l.remote.is_closed())
                .map(|l| l.remote.clone())
        };
        if let Some(remote) = open(&self.routes()) {
            return Ok(remote);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(remote) = open(&self.routes()) {
            return Ok(remote);
        }
        let info = self
            .registry
            .node(node)
            .await
            .map_err(|e| unavailable(format!("cluster registry: {e}")))?
            .ok_or_else(|| unavailable(format!("media node {node} has no lease")))?;
        let addr = info
            .quic_addr
            .ok_or_else(|| unavailable(format!("media node {node} has no QUIC address")))?;
        let (remote, mut events) = RemoteSfu::connect(&self.endpoint, addr, &self.link_config)
            .await
            .map_err(|e| {
                self.stats.link_failed();
                unavailable(format!("media node {node} at {addr}: {e}"))
            })?;
        info!(media_node = %node, %addr, "media link up");
        let generation = {
            let mut routes = self.routes();
            routes.next_generation += 1;
            let generation = routes.next_generation;
            routes.links.insert(
                node.to_string(),
                Link {
                    remote: remote.clone(),
                    generation,
                },
            );
            generation
        };
        let to_hub = self.events.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if to_hub.send(event).is_err() {
                    break;
                }
            }
        });
        let watcher = remote.clone();
        let fleet = self.me.clone();
        let node = node.to_string();
        tokio::spawn(async move {
            let reason = watcher.closed().await;
            if let Some(fleet) = fleet.upgrade() {
                fleet.link_lost(&node, generation, reason);
            }
        });
        Ok(remote)
    }

    fn link_lost(&self, node: &str, generation: u64, reason: zvon_sfu::link::LinkError) {
        let participants = {
            let mut routes = self.routes();
            if routes.links.get(node).map(|l| l.generation) != Some(generation) {
                return;
            }
            routes.links.remove(node);
            routes.quarantined.insert(node.to_string(), Instant::now());
            routes.rooms.retain(|_, n| n != node);
            let gone: Vec<ParticipantId> = routes
                .participants
                .iter()
                .filter(|(_, (n, _))| n == node)
                .map(|(p, _)| p.clone())
                .collect();
            for p in &gone {
                routes.participants.remove(p);
            }
            gone
        };
        warn!(
            media_node = %node,
            participants = participants.len(),
            "media link lost: {reason}"
        );
        if !participants.is_empty() {
            self.stats.node_lost();
            let _ = self.lost.send(NodeLost {
                node: node.to_string(),
                participants,
                reason: MediaResetReason::MediaNodeLost,
            });
        }
    }

    /// Moves `room` off its media node (the node drains): its participants come back as a
    /// [`NodeLost`] after they are removed from the old node.
    pub async fn evacuate(&self, node: &str) -> usize {
        let moving: Vec<ParticipantId> = {
            let mut routes = self.routes();
            routes.quarantined.insert(node.to_string(), Instant::now());
            routes.rooms.retain(|_, n| n != node);
            let moving: Vec<ParticipantId> = routes
                .participants
                .iter()
                .filter(|(_, (n, _))| n == node)
                .map(|(p, _)| p.clone())
                .collect();
            for p in &moving {
                routes.participants.remove(p);
            }
            moving
        };
        if moving.is_empty() {
            return 0;
        }
        if let Ok(remote) = self.link(node).await {
            for participant in &moving {
                let participant = participant.clone();
                let _ = remote
                    .request(SfuRequest::RemoveParticipant { participant })
                    .await;
            }
        }
        let count = moving.len();
        self.stats.node_drained(count);
        let _ = self.lost.send(NodeLost {
            node: node.to_string(),
            participants: moving,
            reason: MediaResetReason::MediaNodeDraining,
        });
        count
    }

    /// Keeps a link open to every usable media node, so that a join never waits for a QUIC
    /// handshake and a node that dies is noticed before anyone is placed on it.
    pub async fn warm(&self, nodes: &[NodeInfo]) {
        for node in nodes.iter().filter(|n| n.roles.media && !n.draining) {
            let skip = {
                let routes = self.routes();
                routes.quarantined.contains_key(&node.id)
                    || routes
                        .links
                        .get(&node.id)
                        .is_some_and(|l| !l.remote.is_closed())
            };
            if skip {
                continue;
            }
            if let Err(e) = self.link(&node.id).await {
                warn!(media_node = %node.id, "cannot open a link: {e}");
                self.routes()
                    .quarantined
                    .insert(node.id.clone(), Instant::now());
            }
        }
    }

    /// Media nodes some room of ours sits on.
    pub fn nodes_in_use(&self) -> Vec<String> {
        let routes = self.routes();
        let mut nodes: Vec<String> = routes.rooms.values().cloned().collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }
}
