//! Flow ids and layer masks: what a relayed packet and a subscription name.

use serde::{Deserialize, Serialize};

use crate::forward::layer_selector::{Layer, MAX_LAYERS};

/// One simulcast layer of one track of one room, as numbered by its origin. A relayed packet
/// carries only this (a varint on a QUIC link), never a room or track name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowId(pub u32);

impl FlowId {
    /// The flow of `layer` of the track whose layers start at `self`.
    pub fn layer(self, layer: Layer) -> FlowId {
        FlowId(self.0 + u32::from(layer))
    }
}

/// A set of simulcast layers (bit `l` = layer `l`); a track without simulcast has layer 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct LayerMask(pub u8);

impl LayerMask {
    pub const NONE: LayerMask = LayerMask(0);
    /// Layer 0 only: what an audio track or a track without simulcast is wanted with.
    pub const BASE: LayerMask = LayerMask(1);

    pub fn from_layers(layers: [bool; MAX_LAYERS]) -> Self {
        LayerMask(
            layers
                .iter()
                .enumerate()
                .fold(0, |m, (i, on)| m | (u8::from(*on) << i)),
        )
    }

    pub fn to_layers(self) -> [bool; MAX_LAYERS] {
        std::array::from_fn(|i| self.has(i as Layer))
    }

    pub fn has(self, layer: Layer) -> bool {
        layer < 8 && self.0 & (1 << layer) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: LayerMask) -> LayerMask {
        LayerMask(self.0 | other.0)
    }
}
