//! The router's side of recording: a recorded simulcast track keeps the layer the recording
//! takes on (dynacast), and the recording picks the best layer that flows.

use std::time::Instant;

use super::{Router, TrackKey};
use crate::forward::layer_selector::{Layer, MAX_LAYERS};

impl Router {
    /// Layers of `track` a recording needs; all of them while it picks one.
    pub fn set_record_demand(&mut self, track: TrackKey, layers: [bool; MAX_LAYERS]) {
        if let Some(t) = self.tracks.get_mut(track.0 as usize) {
            t.record_demand = layers;
        }
    }

    /// The highest layer of `track` that flows now.
    pub fn top_flowing_layer(&self, track: TrackKey, now: Instant) -> Option<Layer> {
        self.tracks.get(track.0 as usize)?.layers.top_flowing(now)
    }

    /// Whether `layer` of `track` flows now.
    pub fn layer_flowing(&self, track: TrackKey, layer: Layer, now: Instant) -> bool {
        self.tracks
            .get(track.0 as usize)
            .is_some_and(|t| t.layers.flowing(layer, now))
    }
}
