//! The receiving side: tracks of other cores that appear here as local sources, and the
//! subscriptions this core holds on them.

use std::collections::HashMap;
use std::hash::Hash;

use super::{FlowId, LayerMask, RelayControl};
use crate::forward::layer_selector::{Layer, MAX_LAYERS};

/// A track received from `origin`, known locally as `local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteTrack<P, L> {
    pub origin: P,
    /// Its layer-0 flow, which names it in control messages.
    pub flow: FlowId,
    pub local: L,
    pub layers: u8,
    /// What this core last asked the origin for.
    pub subscribed: LayerMask,
}

/// Remote tracks by flow (packet path) and by local key (keyframe requests, demand).
#[derive(Debug)]
pub struct RemoteTracks<P, L> {
    tracks: HashMap<(P, FlowId), RemoteTrack<P, L>>,
    /// Every layer's flow → its track's layer-0 flow and the layer.
    flows: HashMap<(P, FlowId), (FlowId, Layer)>,
    by_local: HashMap<L, (P, FlowId)>,
}

impl<P, L> Default for RemoteTracks<P, L> {
    fn default() -> Self {
        RemoteTracks {
            tracks: HashMap::new(),
            flows: HashMap::new(),
            by_local: HashMap::new(),
        }
    }
}

impl<P: Copy + Eq + Hash, L: Copy + Eq + Hash> RemoteTracks<P, L> {
    /// A track `origin` announced, now a local source `local`. Nothing is subscribed yet.
    pub fn insert(&mut self, origin: P, flow: FlowId, layers: u8, local: L) {
        let layers = layers.clamp(1, MAX_LAYERS as u8);
        self.tracks.insert(
            (origin, flow),
            RemoteTrack {
                origin,
                flow,
                local,
                layers,
                subscribed: LayerMask::NONE,
            },
        );
        for l in 0..layers {
            self.flows.insert((origin, flow.layer(l)), (flow, l));
        }
        self.by_local.insert(local, (origin, flow));
    }

    /// The origin removed the track.
    pub fn remove(&mut self, origin: P, flow: FlowId) -> Option<RemoteTrack<P, L>> {
        let t = self.tracks.remove(&(origin, flow))?;
        for l in 0..t.layers {
            self.flows.remove(&(origin, flow.layer(l)));
        }
        self.by_local.remove(&t.local);
        Some(t)
    }

    /// Every track from `origin` (it left the room or died), removed.
    pub fn remove_origin(&mut self, origin: P) -> Vec<RemoteTrack<P, L>> {
        let flows: Vec<FlowId> = self
            .tracks
            .keys()
            .filter(|(o, _)| *o == origin)
            .map(|(_, f)| *f)
            .collect();
        flows
            .into_iter()
            .filter_map(|f| self.remove(origin, f))
            .collect()
    }

    /// Packet path: the local track and layer a packet of `flow` from `origin` belongs to.
    pub fn resolve(&self, origin: P, flow: FlowId) -> Option<(L, Layer)> {
        let (base, layer) = *self.flows.get(&(origin, flow))?;
        Some((self.tracks.get(&(origin, base))?.local, layer))
    }

    pub fn get(&self, origin: P, flow: FlowId) -> Option<&RemoteTrack<P, L>> {
        self.tracks.get(&(origin, flow))
    }

    pub fn by_local(&self, local: L) -> Option<&RemoteTrack<P, L>> {
        let key = self.by_local.get(&local)?;
        self.tracks.get(key)
    }

    /// Local subscribers now need `layers` of `local`: the message for its origin when that
    /// differs from what was asked before.
    pub fn want(&mut self, local: L, layers: LayerMask) -> Option<(P, RelayControl<P>)> {
        let key = *self.by_local.get(&local)?;
        let t = self.tracks.get_mut(&key)?;
        // Layers the track does not have are never asked for.
        let layers = LayerMask(layers.0 & ((1u8 << t.layers) - 1));
        if t.subscribed == layers {
            return None;
        }
        t.subscribed = layers;
        Some((
            t.origin,
            RelayControl::Subscribe {
                flow: t.flow,
                layers,
            },
        ))
    }

    /// Local keys of every remote track, for walking the demand.
    pub fn locals(&self) -> impl Iterator<Item = L> + '_ {
        self.by_local.keys().copied()
    }

    /// A subscriber here needs a keyframe of `local`: the request for its origin.
    pub fn keyframe_request(&self, local: L, layer: Option<Layer>) -> Option<(P, RelayControl<P>)> {
        let t = self.by_local(local)?;
        Some((
            t.origin,
            RelayControl::KeyframeRequest {
                flow: t.flow,
                layer,
            },
        ))
    }
}
