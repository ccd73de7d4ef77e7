//! The signaling side of the media fleet: which media node serves each room, the QUIC links
//! to those nodes, and noticing when one dies.
//!
//! The first participant places a room on a media node (power of two choices over the nodes'
//! leases); later participants follow, until that node holds `room_spread_after` of them
//! (when set): then the next goes to another media node, and every node of the room is told
//! the others ([`SfuRequest::Cascade`]) so they relay media between them. When a link is lost
//! the participants on that node alone are handed back to the hub as a [`NodeLost`] so it can
//! move them elsewhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};
use zvon_sfu::api::{CascadePeer, ParticipantId, RoomId};
use zvon_sfu::link::{LinkConfig, RemoteSfu};
use zvon_sfu::{SfuError, SfuEvent, SfuRequest, SfuResponse};

use super::stats::FleetStats;
use crate::cluster::{NodeInfo, Placement, Registry};
use crate::protocol::MediaResetReason;

/// A node whose link died is not chosen again for this long, though its lease may linger.
const LOST_NODE_QUARANTINE: Duration = Duration::from_secs(15);

/// Where a room's next participant goes.
#[derive(Debug, PartialEq, Eq)]
enum RoomNode {
    Existing(String),
    /// A node the room is not on (none of `exclude`, busiest first).
    New {
        exclude: Vec<String>,
    },
}

/// The node for a room's next participant: its `primary` (where it was placed first) while
/// the room does not spread; when it spreads (`spread_after` > 0 or some nodes are `busy`),
/// the first of the room's `nodes` (with their participant counts, busiest first) that holds
/// fewer than `spread_after` of them and is not busy, the primary first; else a new node.
fn choose_room_node(
    primary: Option<&str>,
    nodes: &[(String, usize)],
    busy: &[&str],
    spread_after: usize,
) -> RoomNode {
    let open = |(n, c): &&(String, usize)| {
        (spread_after == 0 || *c < spread_after) && !busy.contains(&n.as_str())
    };
    let mut candidates: Vec<&(String, usize)> = nodes.iter().filter(open).collect();
    candidates.sort_by_key(|(n, _)| Some(n.as_str()) != primary);
    if let Some((node, _)) = candidates.first() {
        return RoomNode::Existing(node.clone());
    }
    match (primary, nodes.is_empty()) {
        // A room on no node yet: placed afresh (its primary may be known from a registry).
        (_, true) => match primary {
            Some(p) if !busy.contains(&p) => RoomNode::Existing(p.to_string()),
            _ => RoomNode::New { exclude: vec![] },
        },
        _ => RoomNode::New {
            exclude: nodes.iter().map(|(n, _)| n.clone()).collect(),
        },
    }
}

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
    /// Where each linked media node's link listens (its cascade peers dial it there).
    addrs: HashMap<String, SocketAddr>,
    /// The media nodes each spanning room was last told it spans.
    cascades: HashMap<RoomId, Vec<String>>,
    /// Busiest-worker busy ratio of each media node, from its lease (refreshed every second).
    busy: HashMap<String, f32>,
}

impl Routes {
    /// The media nodes holding participants of `room`, with how many, busiest first.
    fn room_nodes(&self, room: &RoomId) -> Vec<(String, usize)> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (node, r) in self.participants.values() {
            if r == room {
                *counts.entry(node.as_str()).or_default() += 1;
            }
        }
        let mut nodes: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        nodes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        nodes
    }
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
    /// See [`crate::config::ClusterConfig::room_spread_after`].
    spread_after: usize,
    /// See [`crate::config::ClusterConfig::room_spread_busy`].
    spread_busy: f32,
    /// Cascade updates go out one at a time, in order.
    cascading: tokio::sync::Mutex<()>,
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
        spread: (usize, f32),
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
            spread_after: spread.0,
            spread_busy: spread.1,
            cascading: tokio::sync::Mutex::new(()),
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

    /// Whether the media node serving `participant` is gone: no route to it (a lost or
    /// draining node's participants are dropped from the routes until placed again) or its
    /// link closed (the node died while a request was in flight; `link_lost` is on its way).
    pub fn media_lost(&self, participant: &ParticipantId) -> bool {
        let routes = self.routes();
        match routes.participants.get(participant) {
            None => true,
            Some((node, _)) => routes.links.get(node).is_none_or(|l| l.remote.is_closed()),
        }
    }

    pub async fn request(&self, request: SfuRequest) -> Result<SfuResponse, SfuError> {
        let node = match &request {
            SfuRequest::AddParticipant { room, .. } => self.node_for_room(room).await?,
            SfuRequest::Adopt { room, .. } => return self.adopt(room, request.clone()).await,
            SfuRequest::Record { room, .. } => {
                return self.record_room(room.clone(), request.clone()).await
            }
            other => self
                .routes()
                .participants
                .get(other.participant().ok_or(SfuError::UnknownParticipant)?)
                .map(|(node, _)| node.clone())
                .ok_or(SfuError::UnknownParticipant)?,
        };
        let remote = self.link(&node).await?;
        let answer = remote.request(request.clone()).await;
        let room = {
            let mut routes = self.routes();
            self.record(&mut routes, &request, &answer, node)
        };
        if let Some(room) = room {
            self.update_cascade(&room).await;
        }
        answer
    }

    /// Recording a room: every media node holding its participants records its own
    /// publishers (a node that joins the room later hears of it with the next join's
    /// name update, which is sent the same way).
    async fn record_room(
        &self,
        room: RoomId,
        request: SfuRequest,
    ) -> Result<SfuResponse, SfuError> {
        let nodes: Vec<String> = self
            .routes()
            .room_nodes(&room)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if nodes.is_empty() {
            return Err(SfuError::Unavailable("the room has no media node".into()));
        }
        let mut result = Ok(SfuResponse::Done);
        for node in nodes {
            let answer = match self.link(&node).await {
                Ok(remote) => remote.request(request.clone()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = answer {
                result = Err(e);
            }
        }
        result
    }

    /// What a served request changes in the routes; the room whose nodes may have changed.
    fn record(
        &self,
        routes: &mut Routes,
        request: &SfuRequest,
        answer: &Result<SfuResponse, SfuError>,
        node: String,
    ) -> Option<RoomId> {
        match (request, answer) {
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
                Some(room.clone())
            }
            (SfuRequest::RemoveParticipant { participant }, _) => {
                let (_, room) = routes.participants.remove(participant)?;
                if !routes.participants.values().any(|(_, r)| *r == room) {
                    routes.rooms.remove(&room);
                }
                Some(room)
            }
            _ => None,
        }
    }

    /// Tells every media node of `room` which others hold it, when that set changed (and a
    /// node that left the set that it spans nothing any more).
    async fn update_cascade(&self, room: &RoomId) {
        let _one_at_a_time = self.cascading.lock().await;
        let (now, before, addrs) = {
            let routes = self.routes();
            let mut now: Vec<String> = routes
                .room_nodes(room)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            now.sort();
            let before = routes.cascades.get(room).cloned().unwrap_or_default();
            (now, before, routes.addrs.clone())
        };
        let spanning = if now.len() > 1 { now.clone() } else { vec![] };
        if spanning == before {
            return;
        }
        info!(room = %room, nodes = ?spanning, "room spans media nodes");
        for node in before.iter().chain(&spanning) {
            let peers: Vec<CascadePeer> = spanning
                .iter()
                .filter(|n| *n != node)
                .filter_map(|n| {
                    addrs.get(n).map(|addr| CascadePeer {
                        node: n.clone(),
                        addr: *addr,
                    })
                })
                .collect();
            // A node leaving the set may be the one that died: never dial it for this.
            let remote = if spanning.contains(node) {
                self.link(node).await.ok()
            } else {
                self.routes()
                    .links
                    .get(node)
                    .filter(|l| !l.remote.is_closed())
                    .map(|l| l.remote.clone())
            };
            let Some(remote) = remote else {
                continue;
            };
            let request = SfuRequest::Cascade {
                room: room.clone(),
                node: node.clone(),
                peers,
            };
            if let Err(e) = remote.request(request).await {
                warn!(room = %room, media_node = %node, "cascade: {e}");
            }
        }
        let mut routes = self.routes();
        if spanning.is_empty() {
            routes.cascades.remove(room);
        } else {
            routes.cascades.insert(room.clone(), spanning);
        }
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

    /// The media node a new participant of `room` goes to: the room's node, or when rooms
    /// spread (`spread_after`, `spread_busy`) the first of its nodes with room for one more,
    /// else a new node.
    async fn node_for_room(&self, room: &RoomId) -> Result<String, SfuError> {
        let _placing = self.placing.lock().await;
        let choice = {
            let routes = self.routes();
            let busy: Vec<&str> = routes
                .busy
                .iter()
                .filter(|(_, b)| **b >= self.spread_busy)
                .map(|(n, _)| n.as_str())
                .collect();
            choose_room_node(
                routes.rooms.get(room).map(String::as_str),
                &routes.room_nodes(room),
                &busy,
                self.spread_after,
            )
        };
        match choice {
            RoomNode::Existing(node) => Ok(node),
            RoomNode::New { exclude } => match self.place_room(room, &exclude).await {
                Ok(node) => Ok(node),
                // Nowhere else to go: the room's busiest node takes one more.
                Err(e) => exclude.into_iter().next().ok_or(e),
            },
        }
    }

    /// Places `room` (or, for a room already elsewhere, its next participant) on a media node
    /// not in `exclude`.
    async fn place_room(&self, room: &RoomId, exclude: &[String]) -> Result<String, SfuError> {
        let spreading = !exclude.is_empty();
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
                .filter(|n| !routes.quarantined.contains_key(&n.id) && !exclude.contains(&n.id))
                .collect()
        };
        // A room that already has a media node (placed by an owner before us) stays there.
        let previous = if spreading {
            None
        } else {
            match self.registry.room_media(&room.0).await {
                Ok(previous) => previous,
                Err(e) => {
                    warn!(room = %room, "cluster registry: {e}");
                    None
                }
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
                if !spreading {
                    if let Err(e) = self.registry.set_room_media(&room.0, &node).await {
                        warn!(room = %room, "cluster registry: {e}");
                    }
                }
                break node;
            },
        };
        self.stats.placed();
        if spreading {
            info!(room = %room, media_node = %node, "room spreads to another media node");
        } else {
            info!(room = %room, media_node = %node, "room placed");
            self.routes().rooms.insert(room.clone(), node.clone());
        }
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
            routes.addrs.insert(node.to_string(), addr);
            generation
        };
        let to_hub = self.events.clone();
        let fleet = self.me.clone();
        let from = node.to_string();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                // Every node of a room spanning nodes hears all its audio and reports its
                // speakers; the room's primary node speaks for it, so clients hear it once.
                if let SfuEvent::ActiveSpeakers { room, .. } = &event {
                    let primary = fleet
                        .upgrade()
                        .and_then(|f| f.routes().rooms.get(room).cloned());
                    if primary.is_some_and(|p| p != from) {
                        continue;
                    }
                }
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
        {
            let mut routes = self.routes();
            routes.busy = nodes
                .iter()
                .filter(|n| n.roles.media)
                .map(|n| (n.id.clone(), n.load.busy))
                .collect();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(counts: &[(&str, usize)]) -> Vec<(String, usize)> {
        counts.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn existing(n: &str) -> RoomNode {
        RoomNode::Existing(n.to_string())
    }

    #[test]
    fn a_room_stays_on_its_node_unless_it_spreads() {
        let on_m1 = nodes(&[("m1", 40)]);
        assert_eq!(choose_room_node(Some("m1"), &on_m1, &[], 0), existing("m1"));
        // A fresh room: placed anew, or where the registry says it was.
        assert_eq!(
            choose_room_node(None, &[], &[], 0),
            RoomNode::New { exclude: vec![] }
        );
        assert_eq!(choose_room_node(Some("m2"), &[], &[], 0), existing("m2"));
    }

    #[test]
    fn past_n_participants_per_node_the_next_goes_elsewhere() {
        assert_eq!(
            choose_room_node(Some("m1"), &nodes(&[("m1", 1)]), &[], 2),
            existing("m1")
        );
        assert_eq!(
            choose_room_node(Some("m1"), &nodes(&[("m1", 2)]), &[], 2),
            RoomNode::New {
                exclude: vec!["m1".into()]
            }
        );
        // A node of the room with room left takes it before a new node.
        assert_eq!(
            choose_room_node(Some("m1"), &nodes(&[("m1", 2), ("m2", 1)]), &[], 2),
            existing("m2")
        );
        // The primary first among open nodes.
        assert_eq!(
            choose_room_node(Some("m2"), &nodes(&[("m1", 1), ("m2", 1)]), &[], 2),
            existing("m2")
        );
    }

    #[test]
    fn a_busy_node_takes_no_more_of_a_room_that_can_go_elsewhere() {
        let room = nodes(&[("m1", 3), ("m2", 1)]);
        assert_eq!(
            choose_room_node(Some("m1"), &room, &["m1"], 0),
            existing("m2")
        );
        assert_eq!(
            choose_room_node(Some("m1"), &room, &["m1", "m2"], 0),
            RoomNode::New {
                exclude: vec!["m1".into(), "m2".into()]
            }
        );
        // A fresh room whose registered node is busy is placed anew.
        assert_eq!(
            choose_room_node(Some("m1"), &[], &["m1"], 0),
            RoomNode::New { exclude: vec![] }
        );
    }
}
