//! The gateway's thread: the node's relay pipe on one side, the cascade links on the other,
//! and the sans-IO [`Gateway`] between them.
//!
//! One thread with its own single-threaded runtime, like a worker. Links to other nodes are
//! opened on demand (a room's `Cascade` request names them; of two nodes the one whose id
//! sorts first dials, the other accepts on its link port) and shared by every room.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::datagram::{decode, encode_stamped};
use super::gateway::{Gateway, GatewayOut, NodeIdx};
use super::send_queue::Priority;
use super::stamp::LinkClock;
use super::{CascadeConfig, CascadeLink, NodeControl};
use crate::api::{CascadePeer, RoomId};
use crate::edge::relay_pipe::RelayPipe;
use crate::relay::RelayPacket;

/// Pause before dialing a lost peer again.
const REDIAL_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Relayed packets taken from the workers per wake.
const PACKETS_PER_WAKE: usize = 256;

/// How often missing packets are asked for again, link round trips refreshed and the repair
/// counters published.
const REPAIR_TICK: std::time::Duration = std::time::Duration::from_millis(10);

pub(crate) enum GatewayCommand {
    Room {
        room: RoomId,
        me: String,
        peers: Vec<CascadePeer>,
    },
    Incoming(quinn::Connection),
}

enum LinkEvent {
    Up(String, CascadeLink, mpsc::UnboundedReceiver<NodeControl>),
    DialFailed(String),
    /// Dial `peer` again if a room still spans it.
    Redial(String),
    Control(NodeIdx, NodeControl),
    Datagram(NodeIdx, Bytes),
    Lost(NodeIdx),
}

/// The node's handle on its gateway thread.
#[derive(Clone)]
pub struct CascadeHandle {
    commands: mpsc::UnboundedSender<GatewayCommand>,
}

impl CascadeHandle {
    pub(crate) fn send(&self, command: GatewayCommand) {
        let _ = self.commands.send(command);
    }
}

/// Starts the gateway thread on `pipe` (the relay peer after the workers).
pub(crate) fn spawn(pipe: RelayPipe, config: CascadeConfig) -> std::io::Result<CascadeHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("zvon-cascade".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(run(pipe, config, rx)),
                Err(e) => tracing::error!("cascade runtime: {e}"),
            }
        })?;
    Ok(CascadeHandle { commands: tx })
}

struct Driver {
    gateway: Gateway,
    pipe: RelayPipe,
    config: CascadeConfig,
    endpoint: Option<quinn::Endpoint>,
    me: String,
    links: HashMap<NodeIdx, CascadeLink>,
    by_id: HashMap<String, NodeIdx>,
    next_idx: NodeIdx,
    dialing: HashSet<String>,
    /// Each cascaded room's other nodes, by id.
    rooms: HashMap<RoomId, Vec<CascadePeer>>,
    events: mpsc::UnboundedSender<LinkEvent>,
    out: Vec<GatewayOut>,
    buf: Vec<u8>,
    targets: Vec<usize>,
    nodes: Vec<NodeIdx>,
}

async fn run(
    mut pipe: RelayPipe,
    config: CascadeConfig,
    mut commands: mpsc::UnboundedReceiver<GatewayCommand>,
) {
    let (wake, control) = pipe.take_inputs();
    let Some(mut control) = control else {
        return;
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
        .map_err(|e| warn!("cascade endpoint: {e}"))
        .ok();
    let mut d = Driver {
        gateway: Gateway::new(pipe.index()),
        pipe,
        config,
        endpoint,
        me: String::new(),
        links: HashMap::new(),
        by_id: HashMap::new(),
        next_idx: 0,
        dialing: HashSet::new(),
        rooms: HashMap::new(),
        events: events_tx,
        out: vec![],
        buf: Vec::with_capacity(1500),
        targets: Vec::with_capacity(8),
        nodes: Vec::with_capacity(8),
    };
    let mut tick = tokio::time::interval(REPAIR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<(usize, RelayPacket)> = Vec::with_capacity(PACKETS_PER_WAKE);
    loop {
        tokio::select! {
            msg = control.recv() => {
                let Some((from, msg)) = msg else { return };
                d.gateway.from_worker(from, msg, &mut d.out);
                d.dispatch();
            }
            _ = wake.notified() => {
                let left = d.pipe.pop_into(PACKETS_PER_WAKE, &mut batch);
                let now = Instant::now();
                for (from, p) in batch.drain(..) {
                    d.outbound(from, &p, now);
                }
                if left {
                    d.pipe.wake_self();
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                d.command(command);
            }
            Some(event) = events.recv() => d.event(event),
            _ = tick.tick() => d.tick(),
        }
        d.pipe.wake();
    }
}

impl Driver {
    fn dispatch(&mut self) {
        for o in self.out.drain(..) {
            match o {
                GatewayOut::ToWorker(w, msg) => self.pipe.send_control(w, msg),
                GatewayOut::ToNode(n, msg) => {
                    if let Some(link) = self.links.get(&n) {
                        link.send_control(msg);
                    }
                }
                GatewayOut::Resend {
                    node,
                    datagram,
                    video,
                } => {
                    if let Some(link) = self.links.get(&node) {
                        let priority = if video {
                            Priority::Video
                        } else {
                            Priority::Audio
                        };
                        link.send(priority, datagram);
                    }
                }
            }
        }
    }

    /// Retries of NACKs, the links' round trips, the repair counters.
    fn tick(&mut self) {
        self.gateway.clock = LinkClock::now();
        for (&n, link) in &self.links {
            self.gateway.set_rtt(n, link.rtt());
        }
        if self.gateway.repairs_pending() {
            self.gateway.poll_repairs(Instant::now(), &mut self.out);
            self.dispatch();
        }
        let (r, s) = (&self.gateway.repair, &self.config.stats);
        for (counter, value) in [
            (&s.repair_nacks_sent, r.nacks_sent),
            (&s.repair_requested, r.requested),
            (&s.repair_resent, r.resent),
            (&s.repair_cache_misses, r.cache_misses),
            (&s.repair_repaired, r.repaired),
            (&s.repair_unrepaired, r.unrepaired),
            (&s.repair_duplicates, r.duplicates),
        ] {
            // One gateway per node: its totals are the node's.
            counter.store(value, Ordering::Relaxed);
        }
    }

    /// A worker's packet to every node that wants its layer: encoded once, shared by all.
    fn outbound(&mut self, from: usize, packet: &RelayPacket, now: Instant) {
        let Some(o) = self.gateway.outbound(from, packet) else {
            return;
        };
        self.nodes.clear();
        self.nodes
            .extend(self.gateway.node_targets(o.slot, o.layer));
        let mut datagram: Option<Bytes> = None;
        for n in &self.nodes {
            let Some(link) = self.links.get(n) else {
                continue;
            };
            let d = datagram.get_or_insert_with(|| {
                let sent = self.gateway.clock.stamp(packet.received);
                encode_stamped(o.flow, packet, Some(sent), &mut self.buf);
                Bytes::copy_from_slice(&self.buf)
            });
            let priority = if o.video {
                Priority::Video
            } else {
                Priority::Audio
            };
            link.send(priority, d.clone());
        }
        if let Some(d) = datagram {
            // Kept for the nodes' NACKs: the same bytes, one more reference.
            self.gateway.sent(&o, packet.seq as u16, &d, now);
        }
    }

    fn command(&mut self, command: GatewayCommand) {
        match command {
            GatewayCommand::Room { room, me, peers } => {
                self.me = me;
                for p in &peers {
                    let linked = self.by_id.contains_key(&p.node);
                    if !linked && self.me < p.node && !self.dialing.contains(&p.node) {
                        self.dial(p.clone());
                    }
                }
                if peers.is_empty() {
                    self.rooms.remove(&room);
                } else {
                    self.rooms.insert(room.clone(), peers);
                }
                self.apply_room(room);
            }
            GatewayCommand::Incoming(connection) => {
                let config = self.config.clone();
                let events = self.events.clone();
                tokio::spawn(async move {
                    let remote = connection.remote_address();
                    match CascadeLink::accept_connection(connection, &config).await {
                        Ok((link, rx, peer)) => {
                            let _ = events.send(LinkEvent::Up(peer, link, rx));
                        }
                        Err(e) => warn!("cascade link from {remote} refused: {e}"),
                    }
                });
            }
        }
    }

    fn dial(&mut self, peer: CascadePeer) {
        let Some(endpoint) = self.endpoint.clone() else {
            return;
        };
        self.dialing.insert(peer.node.clone());
        let config = self.config.clone();
        let events = self.events.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            match CascadeLink::connect(&endpoint, peer.addr, &config, &me).await {
                Ok((link, rx)) => {
                    let _ = events.send(LinkEvent::Up(peer.node, link, rx));
                }
                Err(e) => {
                    warn!(media_node = %peer.node, addr = %peer.addr, "cascade link: {e}");
                    let _ = events.send(LinkEvent::DialFailed(peer.node));
                }
            }
        });
    }

    /// Tells the gateway which linked nodes hold `room` now.
    fn apply_room(&mut self, room: RoomId) {
        let nodes: Vec<NodeIdx> = self
            .rooms
            .get(&room)
            .map(|peers| {
                peers
                    .iter()
                    .filter_map(|p| self.by_id.get(&p.node).copied())
                    .collect()
            })
            .unwrap_or_default();
        self.gateway.set_nodes(room, nodes, &mut self.out);
        self.dispatch();
    }

    fn event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up(peer, link, mut control) => {
                self.dialing.remove(&peer);
                let idx = self.next_idx;
                self.next_idx = self.next_idx.wrapping_add(1);
                info!(media_node = %peer, addr = %link.remote_address(), "cascade link up");
                self.config.stats.links.fetch_add(1, Ordering::Relaxed);
                if let Some(old) = self.by_id.insert(peer.clone(), idx) {
                    self.lose(old);
                }
                let events = self.events.clone();
                tokio::spawn(async move {
                    while let Some(msg) = control.recv().await {
                        if events.send(LinkEvent::Control(idx, msg)).is_err() {
                            return;
                        }
                    }
                });
                let events = self.events.clone();
                let reader = link.clone();
                tokio::spawn(async move {
                    loop {
                        match reader.read_datagram().await {
                            Ok(d) => {
                                if events.send(LinkEvent::Datagram(idx, d)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                warn!(link = idx, "cascade link lost: {e}");
                                let _ = events.send(LinkEvent::Lost(idx));
                                return;
                            }
                        }
                    }
                });
                self.links.insert(idx, link);
                let rooms: Vec<RoomId> = self
                    .rooms
                    .iter()
                    .filter(|(_, peers)| peers.iter().any(|p| p.node == peer))
                    .map(|(r, _)| r.clone())
                    .collect();
                for room in rooms {
                    self.apply_room(room);
                }
            }
            LinkEvent::DialFailed(peer) => {
                self.dialing.remove(&peer);
                self.redial_later(peer);
            }
            LinkEvent::Redial(peer) => {
                if self.by_id.contains_key(&peer) || self.dialing.contains(&peer) {
                    return;
                }
                if let Some(p) = self.wanted_peer(&peer) {
                    self.dial(p);
                }
            }
            LinkEvent::Control(idx, msg) => {
                if self.links.contains_key(&idx) {
                    self.gateway
                        .from_node(idx, msg, Instant::now(), &mut self.out);
                    self.dispatch();
                }
            }
            LinkEvent::Datagram(idx, d) => self.inbound(idx, &d),
            LinkEvent::Lost(idx) => {
                let peer = self
                    .by_id
                    .iter()
                    .find(|(_, i)| **i == idx)
                    .map(|(p, _)| p.clone());
                self.by_id.retain(|_, i| *i != idx);
                self.lose(idx);
                if let Some(peer) = peer {
                    self.redial_later(peer);
                }
            }
        }
    }

    /// A room that still spans `peer`, with its address.
    fn wanted_peer(&self, peer: &str) -> Option<CascadePeer> {
        self.rooms
            .values()
            .flatten()
            .find(|p| p.node == peer)
            .cloned()
    }

    /// A link this node dials went down (or could not be opened): try again in a second for
    /// as long as signaling says a room spans that node (it stops saying so once the node's
    /// participants have moved, so a dead node is not dialed forever).
    fn redial_later(&self, peer: String) {
        if self.me.as_str() >= peer.as_str() || self.wanted_peer(&peer).is_none() {
            return;
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REDIAL_AFTER).await;
            let _ = events.send(LinkEvent::Redial(peer));
        });
    }

    fn lose(&mut self, idx: NodeIdx) {
        if let Some(link) = self.links.remove(&idx) {
            link.close();
            self.config.stats.links.fetch_sub(1, Ordering::Relaxed);
        }
        self.gateway.node_lost(idx, &mut self.out);
        self.dispatch();
    }

    /// A node's packet to every worker here that wants its layer.
    fn inbound(&mut self, from: NodeIdx, datagram: &[u8]) {
        let stats = &self.config.stats;
        stats.datagrams_received.fetch_add(1, Ordering::Relaxed);
        let Ok(rtp) = decode(datagram) else {
            stats.datagrams_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let i = self
            .gateway
            .inbound(from, &rtp, Instant::now(), &mut self.out);
        if !self.out.is_empty() {
            self.dispatch();
        }
        let Some(i) = i else {
            return;
        };
        // The payload is shared (`Arc`): a clone per worker copies no media.
        self.targets.clear();
        self.targets
            .extend(self.gateway.worker_targets(i.slot, i.layer));
        for &w in &self.targets {
            self.pipe.push(w, i.packet.clone(), i.video);
        }
    }
}
