//! The node's gateway between its relay (the workers, see [`crate::edge::relay_pipe`]) and
//! its cascade links: to the workers it is one more relay peer, to other nodes it is the
//! node. Sans-IO: control messages and packets in, messages and targets out.
//!
//! * **Export**: a track published on a worker of a cascaded room is announced to the
//!   gateway like to any peer worker; the gateway gives it a link flow and announces it to
//!   the room's other nodes. A node's subscription becomes the worker subscription of the
//!   union of what every node wants; its keyframe requests go to the worker, which throttles
//!   them as origin.
//! * **Import**: a track announced by another node gets a local flow and is announced to the
//!   workers hosting the room here, which see it as coming from the gateway. What their
//!   subscribers want becomes one subscription to the origin node: only wanted layers cross
//!   the link, once per node whatever the number of subscribers here.
//!
//! * **Repair** ([`super::repair`]): the datagrams sent to nodes are kept a short while per
//!   layer flow; a node's NACK is answered from them. Imported flows are watched for gaps,
//!   which are asked for at once and again after a round trip; what arrives twice is
//!   dropped here, so the workers never see a duplicate.
//!
//! Nodes are numbered by link (`u16`), never by name on the packet path.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::datagram::{extend_seq, LinkRtp};
use super::repair::{
    GapTracker, PacketCache, RepairCounts, Verdict, AUDIO_CACHE, CACHE_AGE, VIDEO_CACHE,
};
use super::stamp::LinkClock;
use super::NodeControl;
use crate::api::{RoomId, TrackKind};
use crate::forward::layer_selector::{Layer, MAX_LAYERS};
use crate::relay::{
    FlowId, LayerMask, OriginFlows, OriginSlot, RelayControl, RelayPacket, RemoteTracks,
    TrackAnnouncement,
};

/// A link to another node (its number for as long as the link lives).
pub type NodeIdx = u16;

/// A message the gateway sends.
#[derive(Debug, Clone)]
pub enum GatewayOut {
    ToWorker(usize, RelayControl<usize>),
    ToNode(NodeIdx, NodeControl),
    /// A datagram sent before, again, in answer to the node's NACK.
    Resend {
        node: NodeIdx,
        datagram: Bytes,
        video: bool,
    },
}

/// Before re-asking for a missing packet, this much more than the link's round trip.
const RETRY_MARGIN: Duration = Duration::from_millis(5);
/// The round trip assumed for a link not measured yet.
const DEFAULT_RTT: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct Exported {
    room: RoomId,
    slot: OriginSlot,
    kind: TrackKind,
    /// As announced to nodes (with the link flow).
    announcement: TrackAnnouncement,
    /// What was sent of each layer lately, for NACKs (made when the layer is first sent).
    sent: [Option<PacketCache>; MAX_LAYERS],
}

#[derive(Debug)]
struct Imported {
    room: RoomId,
    node: NodeIdx,
    slot: OriginSlot,
    kind: TrackKind,
    /// As announced to workers (with the local flow).
    announcement: TrackAnnouncement,
    /// Sequence numbers per layer: gaps to ask for, duplicates to drop.
    gaps: [GapTracker; MAX_LAYERS],
}

#[derive(Debug, Default)]
struct Room {
    workers: Vec<usize>,
    nodes: Vec<NodeIdx>,
}

/// A packet from a worker, ready for the links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbound {
    /// The link flow of the packet's layer.
    pub flow: FlowId,
    /// The link flow of its track (layer 0).
    pub track: FlowId,
    pub slot: OriginSlot,
    pub layer: Layer,
    pub video: bool,
}

/// A packet from a node, ready for the workers.
#[derive(Debug)]
pub struct Inbound {
    pub packet: RelayPacket,
    pub slot: OriginSlot,
    pub layer: Layer,
    pub video: bool,
}

#[derive(Debug, Default)]
pub struct Gateway {
    /// The gateway's own index among the node's relay peers.
    me: usize,
    /// Worker tracks as the gateway receives them; the local key is the link flow.
    from_workers: RemoteTracks<usize, FlowId>,
    /// Link flows and the nodes subscribed to them.
    exported_flows: OriginFlows<NodeIdx>,
    exported: HashMap<FlowId, Exported>,
    /// Node tracks as the gateway receives them; the local key is the local flow.
    from_nodes: RemoteTracks<NodeIdx, FlowId>,
    /// Local flows and the workers subscribed to them.
    imported_flows: OriginFlows<usize>,
    imported: HashMap<FlowId, Imported>,
    rooms: HashMap<RoomId, Room>,
    /// Each link's round trip as last measured (paces NACK retries).
    rtts: HashMap<NodeIdx, Duration>,
    /// Scratch for the sequence numbers of one NACK.
    asks: Vec<u16>,
    pub repair: RepairCounts,
    /// Maps send stamps to and from instants; the driver remakes it every few milliseconds
    /// (monotonic and wall clock drift apart slowly, and the wall clock may be stepped).
    pub clock: LinkClock,
}

impl Gateway {
    pub fn new(me: usize) -> Self {
        Gateway {
            me,
            ..Default::default()
        }
    }

    /// A control message from worker `from` (or, for `RoomPeers`, from the node's placement).
    pub fn from_worker(
        &mut self,
        from: usize,
        msg: RelayControl<usize>,
        out: &mut Vec<GatewayOut>,
    ) {
        match msg {
            RelayControl::RoomPeers { room, peers, .. } => self.set_workers(room, peers, out),
            RelayControl::Announce(a) => {
                if self.from_workers.get(from, a.flow).is_some() {
                    return;
                }
                let (slot, link) = self.exported_flows.add_track();
                self.from_workers.insert(from, a.flow, a.layers, link);
                let mut announcement = *a;
                announcement.flow = link;
                let room = announcement.room.clone();
                for &n in self.rooms.get(&room).map_or(&[][..], |r| &r.nodes) {
                    out.push(GatewayOut::ToNode(
                        n,
                        RelayControl::Announce(Box::new(announcement.clone())),
                    ));
                }
                self.exported.insert(
                    link,
                    Exported {
                        room,
                        slot,
                        kind: announcement.kind,
                        announcement,
                        sent: Default::default(),
                    },
                );
            }
            RelayControl::Muted { flow, muted } => {
                let Some(link) = self.from_workers.get(from, flow).map(|t| t.local) else {
                    return;
                };
                if let Some(e) = self.exported.get_mut(&link) {
                    e.announcement.muted = muted;
                    for &n in self.rooms.get(&e.room).map_or(&[][..], |r| &r.nodes) {
                        out.push(GatewayOut::ToNode(
                            n,
                            RelayControl::Muted { flow: link, muted },
                        ));
                    }
                }
            }
            RelayControl::Removed { flow } => {
                if let Some(t) = self.from_workers.remove(from, flow) {
                    self.unexport(t.local, out);
                }
            }
            RelayControl::Subscribe { flow, layers } => {
                let Some(slot) = self.imported_flows.subscribe(from, flow, layers) else {
                    return;
                };
                let demand = self.imported_flows.demand(slot);
                self.want_from_node(flow, demand, out);
            }
            RelayControl::KeyframeRequest { flow, layer } => {
                if let Some((n, msg)) = self.from_nodes.keyframe_request(flow, layer) {
                    out.push(GatewayOut::ToNode(n, node_message(msg)));
                }
            }
            RelayControl::Nack { .. } => {}
        }
    }

    /// Subscribes to the layers `demand` of the imported track `local` at its node. A layer
    /// turned on starts afresh: the packets sent while it was off were never meant for us.
    fn want_from_node(&mut self, local: FlowId, demand: LayerMask, out: &mut Vec<GatewayOut>) {
        let before = self
            .from_nodes
            .by_local(local)
            .map_or(LayerMask::NONE, |t| t.subscribed);
        let Some((n, msg)) = self.from_nodes.want(local, demand) else {
            return;
        };
        out.push(GatewayOut::ToNode(n, node_message(msg)));
        if let Some(i) = self.imported.get_mut(&local) {
            for l in 0..MAX_LAYERS as Layer {
                if demand.has(l) && !before.has(l) {
                    self.repair.unrepaired += i.gaps[usize::from(l)].reset() as u64;
                }
            }
        }
    }

    /// A control message from node `from`.
    pub fn from_node(
        &mut self,
        from: NodeIdx,
        msg: NodeControl,
        now: Instant,
        out: &mut Vec<GatewayOut>,
    ) {
        match msg {
            RelayControl::RoomPeers { .. } => {}
            RelayControl::Announce(a) => {
                if self.from_nodes.get(from, a.flow).is_some() {
                    return;
                }
                let (slot, local) = self.imported_flows.add_track();
                self.from_nodes.insert(from, a.flow, a.layers, local);
                let mut announcement = *a;
                announcement.flow = local;
                let room = announcement.room.clone();
                for &w in self.rooms.get(&room).map_or(&[][..], |r| &r.workers) {
                    out.push(GatewayOut::ToWorker(
                        w,
                        RelayControl::Announce(Box::new(announcement.clone())),
                    ));
                }
                self.imported.insert(
                    local,
                    Imported {
                        room,
                        node: from,
                        slot,
                        kind: announcement.kind,
                        announcement,
                        gaps: Default::default(),
                    },
                );
            }
            RelayControl::Muted { flow, muted } => {
                let Some(local) = self.from_nodes.get(from, flow).map(|t| t.local) else {
                    return;
                };
                if let Some(i) = self.imported.get_mut(&local) {
                    i.announcement.muted = muted;
                    // Nothing is relayed while muted: the hole is not a loss.
                    for g in &mut i.gaps {
                        self.repair.unrepaired += g.reset() as u64;
                    }
                    for &w in self.rooms.get(&i.room).map_or(&[][..], |r| &r.workers) {
                        out.push(GatewayOut::ToWorker(
                            w,
                            RelayControl::Muted { flow: local, muted },
                        ));
                    }
                }
            }
            RelayControl::Removed { flow } => {
                if let Some(t) = self.from_nodes.remove(from, flow) {
                    self.unimport(t.local, out);
                }
            }
            RelayControl::Subscribe { flow, layers } => {
                let Some(slot) = self.exported_flows.subscribe(from, flow, layers) else {
                    return;
                };
                let demand = self.exported_flows.demand(slot);
                if let Some((w, msg)) = self.from_workers.want(flow, demand) {
                    out.push(GatewayOut::ToWorker(w, msg));
                }
            }
            RelayControl::KeyframeRequest { flow, layer } => {
                if let Some((w, msg)) = self.from_workers.keyframe_request(flow, layer) {
                    out.push(GatewayOut::ToWorker(w, msg));
                }
            }
            RelayControl::Nack { flow, seqs } => self.nacked(from, flow, &seqs, now, out),
        }
    }

    /// Node `from` missed `seqs` of the layer flow `flow`: what the cache still has goes
    /// again, to that node only, and only of a layer it subscribed.
    fn nacked(
        &mut self,
        from: NodeIdx,
        flow: FlowId,
        seqs: &[u16],
        now: Instant,
        out: &mut Vec<GatewayOut>,
    ) {
        let Some((slot, track, layer)) = self.exported_flows.layer_of(flow) else {
            return;
        };
        let subscribed = self.exported_flows.targets(slot, layer).any(|n| n == from);
        let Some(e) = self.exported.get(&track) else {
            return;
        };
        let cache = e.sent[usize::from(layer)].as_ref().filter(|_| subscribed);
        let video = e.kind == TrackKind::Video;
        for &seq in seqs {
            match cache.and_then(|c| c.get(seq, now)) {
                Some(d) => {
                    self.repair.resent += 1;
                    out.push(GatewayOut::Resend {
                        node: from,
                        datagram: d.clone(),
                        video,
                    });
                }
                None => self.repair.cache_misses += 1,
            }
        }
    }

    /// The other nodes holding `room` now (from signaling). New ones hear of every track
    /// exported from here; what departed ones published or wanted goes.
    pub fn set_nodes(&mut self, room: RoomId, nodes: Vec<NodeIdx>, out: &mut Vec<GatewayOut>) {
        let before = self
            .rooms
            .get(&room)
            .map(|r| r.nodes.clone())
            .unwrap_or_default();
        for &n in nodes.iter().filter(|n| !before.contains(n)) {
            for e in self.exported.values().filter(|e| e.room == room) {
                out.push(GatewayOut::ToNode(
                    n,
                    RelayControl::Announce(Box::new(e.announcement.clone())),
                ));
            }
        }
        for &gone in before.iter().filter(|n| !nodes.contains(n)) {
            self.drop_node_from_room(&room, gone, out);
        }
        let r = self.rooms.entry(room.clone()).or_default();
        r.nodes = nodes;
        self.forget_if_empty(&room);
    }

    /// The link to `node` is gone: everything it published or wanted, in every room.
    pub fn node_lost(&mut self, node: NodeIdx, out: &mut Vec<GatewayOut>) {
        self.rtts.remove(&node);
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.drop_node_from_room(&room, node, out);
            if let Some(r) = self.rooms.get_mut(&room) {
                r.nodes.retain(|n| *n != node);
            }
            self.forget_if_empty(&room);
        }
    }

    fn drop_node_from_room(&mut self, room: &RoomId, node: NodeIdx, out: &mut Vec<GatewayOut>) {
        let links: Vec<FlowId> = self
            .exported
            .iter()
            .filter(|(_, e)| e.room == *room)
            .map(|(f, _)| *f)
            .collect();
        for link in links {
            if let Some(slot) = self.exported_flows.subscribe(node, link, LayerMask::NONE) {
                let demand = self.exported_flows.demand(slot);
                if let Some((w, msg)) = self.from_workers.want(link, demand) {
                    out.push(GatewayOut::ToWorker(w, msg));
                }
            }
        }
        let locals: Vec<FlowId> = self
            .imported
            .iter()
            .filter(|(_, i)| i.room == *room && i.node == node)
            .map(|(f, _)| *f)
            .collect();
        for local in locals {
            if let Some(t) = self.from_nodes.by_local(local).copied() {
                self.from_nodes.remove(t.origin, t.flow);
            }
            self.unimport(local, out);
        }
    }

    /// The workers hosting `room` here (from the node's placement, which lists the gateway
    /// too).
    fn set_workers(&mut self, room: RoomId, mut workers: Vec<usize>, out: &mut Vec<GatewayOut>) {
        workers.retain(|w| *w != self.me);
        let before = self
            .rooms
            .get(&room)
            .map(|r| r.workers.clone())
            .unwrap_or_default();
        for &w in workers.iter().filter(|w| !before.contains(w)) {
            for i in self.imported.values().filter(|i| i.room == room) {
                out.push(GatewayOut::ToWorker(
                    w,
                    RelayControl::Announce(Box::new(i.announcement.clone())),
                ));
            }
        }
        for &gone in before.iter().filter(|w| !workers.contains(w)) {
            let locals: Vec<FlowId> = self
                .imported
                .iter()
                .filter(|(_, i)| i.room == room)
                .map(|(f, _)| *f)
                .collect();
            for local in locals {
                if let Some(slot) = self.imported_flows.subscribe(gone, local, LayerMask::NONE) {
                    let demand = self.imported_flows.demand(slot);
                    self.want_from_node(local, demand, out);
                }
            }
        }
        self.rooms.entry(room.clone()).or_default().workers = workers;
        self.forget_if_empty(&room);
    }

    fn forget_if_empty(&mut self, room: &RoomId) {
        let empty = self
            .rooms
            .get(room)
            .is_some_and(|r| r.workers.is_empty() && r.nodes.is_empty());
        let unused = !self.exported.values().any(|e| e.room == *room)
            && !self.imported.values().any(|i| i.room == *room);
        if empty && unused {
            self.rooms.remove(room);
        }
    }

    fn unexport(&mut self, link: FlowId, out: &mut Vec<GatewayOut>) {
        let Some(e) = self.exported.remove(&link) else {
            return;
        };
        self.exported_flows.remove_track(e.slot);
        for &n in self.rooms.get(&e.room).map_or(&[][..], |r| &r.nodes) {
            out.push(GatewayOut::ToNode(n, RelayControl::Removed { flow: link }));
        }
    }

    fn unimport(&mut self, local: FlowId, out: &mut Vec<GatewayOut>) {
        let Some(i) = self.imported.remove(&local) else {
            return;
        };
        self.imported_flows.remove_track(i.slot);
        for &w in self.rooms.get(&i.room).map_or(&[][..], |r| &r.workers) {
            out.push(GatewayOut::ToWorker(
                w,
                RelayControl::Removed { flow: local },
            ));
        }
    }

    /// Packet path: a worker's packet, if some node wants its layer.
    pub fn outbound(&self, from: usize, packet: &RelayPacket) -> Option<Outbound> {
        let (link, layer) = self.from_workers.resolve(from, packet.flow)?;
        let e = self.exported.get(&link)?;
        Some(Outbound {
            flow: link.layer(layer),
            track: link,
            slot: e.slot,
            layer,
            video: e.kind == TrackKind::Video,
        })
    }

    /// Packet path: the datagram of `o` with RTP sequence number `seq` went to some node;
    /// kept for NACKs (shared bytes, no copy).
    pub fn sent(&mut self, o: &Outbound, seq: u16, datagram: &Bytes, now: Instant) {
        let Some(e) = self.exported.get_mut(&o.track) else {
            return;
        };
        let len = if o.video { VIDEO_CACHE } else { AUDIO_CACHE };
        e.sent[usize::from(o.layer)]
            .get_or_insert_with(|| PacketCache::new(len, CACHE_AGE))
            .insert(seq, datagram, now);
    }

    /// The round trip to `node` now (from the link), which paces NACK retries.
    pub fn set_rtt(&mut self, node: NodeIdx, rtt: Duration) {
        self.rtts.insert(node, rtt);
    }

    fn retry_after(&self, node: NodeIdx) -> Duration {
        self.rtts.get(&node).copied().unwrap_or(DEFAULT_RTT) * 3 / 2 + RETRY_MARGIN
    }

    /// Asks again for what is still missing (and gives up on what is too old). Called
    /// every few milliseconds while anything is missing.
    pub fn poll_repairs(&mut self, now: Instant, out: &mut Vec<GatewayOut>) {
        let pending: Vec<FlowId> = self
            .imported
            .iter()
            .filter(|(_, i)| i.gaps.iter().any(|g| g.missing() > 0))
            .map(|(f, _)| *f)
            .collect();
        for local in pending {
            for l in 0..MAX_LAYERS as Layer {
                self.ask(local, l, now, out);
            }
        }
    }

    /// Whether some imported flow has packets missing (the driver polls only then).
    pub fn repairs_pending(&self) -> bool {
        self.imported
            .values()
            .any(|i| i.gaps.iter().any(|g| g.missing() > 0))
    }

    /// One NACK for whatever of layer `layer` of the imported track `local` is due.
    fn ask(&mut self, local: FlowId, layer: Layer, now: Instant, out: &mut Vec<GatewayOut>) {
        let Some(node) = self.imported.get(&local).map(|i| i.node) else {
            return;
        };
        let Some(remote) = self.from_nodes.by_local(local).map(|t| t.flow) else {
            return;
        };
        let retry = self.retry_after(node);
        let Some(i) = self.imported.get_mut(&local) else {
            return;
        };
        self.asks.clear();
        i.gaps[usize::from(layer)].due(now, retry, CACHE_AGE, &mut self.asks, &mut self.repair);
        if self.asks.is_empty() {
            return;
        }
        self.repair.nacks_sent += 1;
        self.repair.requested += self.asks.len() as u64;
        out.push(GatewayOut::ToNode(
            node,
            RelayControl::Nack {
                flow: remote.layer(layer),
                seqs: self.asks.clone(),
            },
        ));
    }

    /// The nodes a packet of `layer` of the exported track `slot` goes to.
    pub fn node_targets(
        &self,
        slot: OriginSlot,
        layer: Layer,
    ) -> impl Iterator<Item = NodeIdx> + '_ {
        self.exported_flows.targets(slot, layer)
    }

    /// Packet path: a node's packet as the relay packet the workers take; `None` for one
    /// they had already (or of no known flow). A gap it reveals is asked for at once. A
    /// stamped packet's `received` is its origin's receive instant, read from the stamp.
    pub fn inbound(
        &mut self,
        from: NodeIdx,
        rtp: &LinkRtp<'_>,
        now: Instant,
        out: &mut Vec<GatewayOut>,
    ) -> Option<Inbound> {
        let (local, layer) = self.from_nodes.resolve(from, rtp.flow)?;
        let i = self.imported.get_mut(&local)?;
        let gaps = &mut i.gaps[usize::from(layer)];
        let seq = extend_seq(gaps.highest(), rtp.seq);
        let missing = gaps.missing();
        if gaps.on_packet(seq, now, &mut self.repair) == Verdict::Duplicate {
            return None;
        }
        let opened = gaps.missing() > missing;
        let (slot, video) = (i.slot, i.kind == TrackKind::Video);
        if opened {
            self.ask(local, layer, now, out);
        }
        Some(Inbound {
            packet: RelayPacket {
                flow: local.layer(layer),
                source: rtp.source,
                seq,
                ts: rtp.ts,
                pt: rtp.pt,
                marker: rtp.marker,
                audio_level: rtp.audio_level,
                voice_activity: rtp.voice_activity,
                video_orientation: rtp.video_orientation,
                keyframe: rtp.keyframe,
                vp8: rtp
                    .vp8
                    .then(|| crate::forward::vp8_munger::Vp8Ids::parse(rtp.payload))
                    .flatten(),
                received: rtp.sent.map_or(now, |s| self.clock.instant_of(s, now)),
                link_stamped: rtp.sent.is_some(),
                payload: rtp.payload.into(),
            },
            slot,
            layer,
            video,
        })
    }

    /// The workers a packet of `layer` of the imported track `slot` goes to.
    pub fn worker_targets(
        &self,
        slot: OriginSlot,
        layer: Layer,
    ) -> impl Iterator<Item = usize> + '_ {
        self.imported_flows.targets(slot, layer)
    }
}

/// A receiver-side message (subscription, keyframe request) re-typed for a link.
fn node_message(msg: RelayControl<NodeIdx>) -> NodeControl {
    match msg {
        RelayControl::Subscribe { flow, layers } => RelayControl::Subscribe { flow, layers },
        RelayControl::KeyframeRequest { flow, layer } => {
            RelayControl::KeyframeRequest { flow, layer }
        }
        RelayControl::Nack { flow, seqs } => RelayControl::Nack { flow, seqs },
        RelayControl::Muted { flow, muted } => RelayControl::Muted { flow, muted },
        RelayControl::Removed { flow } => RelayControl::Removed { flow },
        RelayControl::Announce(a) => RelayControl::Announce(a),
        RelayControl::RoomPeers { room, .. } => RelayControl::RoomPeers {
            room,
            home: String::new(),
            peers: vec![],
        },
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
