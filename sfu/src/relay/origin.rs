//! The origin's side: flow ids for the tracks it hosts, and which peer wants which layers.

use std::collections::HashMap;

use slab::Slab;

use super::{FlowId, LayerMask};
use crate::forward::layer_selector::{Layer, MAX_LAYERS};

/// A hosted track's entry; held by the caller next to its own track state so the packet path
/// reaches it without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginSlot(usize);

#[derive(Debug)]
struct Entry<P> {
    flow: FlowId,
    /// Few peers (the other workers of a node): a scan beats a map.
    wanted: Vec<(P, LayerMask)>,
}

/// Flow ids and subscriptions of the tracks one core originates.
#[derive(Debug)]
pub struct OriginFlows<P> {
    entries: Slab<Entry<P>>,
    by_flow: HashMap<FlowId, usize>,
    /// Never reused: a late packet or message of a removed track must not land on a new one.
    next_flow: u32,
}

impl<P> Default for OriginFlows<P> {
    fn default() -> Self {
        OriginFlows {
            entries: Slab::new(),
            by_flow: HashMap::new(),
            next_flow: 1,
        }
    }
}

impl<P: Copy + Eq> OriginFlows<P> {
    /// A new hosted track: its slot and layer-0 flow (its layers take the next ids).
    pub fn add_track(&mut self) -> (OriginSlot, FlowId) {
        let flow = FlowId(self.next_flow);
        self.next_flow = self.next_flow.wrapping_add(MAX_LAYERS as u32);
        let slot = self.entries.insert(Entry {
            flow,
            wanted: Vec::new(),
        });
        self.by_flow.insert(flow, slot);
        (OriginSlot(slot), flow)
    }

    /// Forgets a track; its flow ids are never handed out again.
    pub fn remove_track(&mut self, slot: OriginSlot) {
        if let Some(e) = self.entries.try_remove(slot.0) {
            self.by_flow.remove(&e.flow);
        }
    }

    pub fn flow(&self, slot: OriginSlot) -> Option<FlowId> {
        self.entries.get(slot.0).map(|e| e.flow)
    }

    /// The track and layer of a layer flow (`flow` = `track_flow.layer(layer)`): track
    /// flows are numbered from 1 in steps of [`MAX_LAYERS`].
    pub fn layer_of(&self, flow: FlowId) -> Option<(OriginSlot, FlowId, Layer)> {
        let step = MAX_LAYERS as u32;
        let base = FlowId(flow.0.checked_sub(1)? / step * step + 1);
        let slot = *self.by_flow.get(&base)?;
        Some((OriginSlot(slot), base, (flow.0 - base.0) as Layer))
    }

    pub fn slot_of(&self, flow: FlowId) -> Option<OriginSlot> {
        self.by_flow.get(&flow).copied().map(OriginSlot)
    }

    /// `peer` wants `layers` of the track `flow` names (none: unsubscribe). Returns the
    /// track's slot when what any peer wants changed, `None` for an unknown flow (a track
    /// removed meanwhile) or no change.
    pub fn subscribe(&mut self, peer: P, flow: FlowId, layers: LayerMask) -> Option<OriginSlot> {
        let slot = *self.by_flow.get(&flow)?;
        let e = self.entries.get_mut(slot)?;
        let before = e.wanted.iter().position(|(p, _)| *p == peer);
        match (before, layers.is_empty()) {
            (Some(i), true) => {
                e.wanted.swap_remove(i);
            }
            (Some(i), false) if e.wanted[i].1 == layers => return None,
            (Some(i), false) => e.wanted[i].1 = layers,
            (None, true) => return None,
            (None, false) => e.wanted.push((peer, layers)),
        }
        Some(OriginSlot(slot))
    }

    /// The peers a packet of `layer` goes to. On the packet path: no allocation.
    pub fn targets(&self, slot: OriginSlot, layer: Layer) -> impl Iterator<Item = P> + '_ {
        self.entries
            .get(slot.0)
            .into_iter()
            .flat_map(|e| e.wanted.iter())
            .filter(move |(_, m)| m.has(layer))
            .map(|(p, _)| *p)
    }

    /// Whether any peer wants anything of the track.
    pub fn is_wanted(&self, slot: OriginSlot) -> bool {
        self.entries
            .get(slot.0)
            .is_some_and(|e| !e.wanted.is_empty())
    }

    /// Every layer some peer wants: what the publisher must keep sending for them.
    pub fn demand(&self, slot: OriginSlot) -> LayerMask {
        self.entries.get(slot.0).map_or(LayerMask::NONE, |e| {
            e.wanted
                .iter()
                .fold(LayerMask::NONE, |acc, (_, m)| acc.union(*m))
        })
    }

    /// `peer` left (the room, or the node): drops its subscriptions. Returns the slots whose
    /// demand changed.
    pub fn forget_peer(&mut self, peer: P) -> Vec<OriginSlot> {
        let mut changed = vec![];
        for (slot, e) in self.entries.iter_mut() {
            let before = e.wanted.len();
            e.wanted.retain(|(p, _)| *p != peer);
            if e.wanted.len() != before {
                changed.push(OriginSlot(slot));
            }
        }
        changed
    }
}
