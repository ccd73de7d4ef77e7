//! The router's side of the relay (see [`crate::relay`]): what this worker's subscribers need
//! of a remote track, and what other workers' subscribers need of a local one.

use std::time::Instant;

use super::{DowntrackState, KeyframeDecision, KeyframeRequest, Router, TrackKey};
use crate::forward::downtrack_layers::LayerCap;
use crate::forward::layer_selector::{Layer, MAX_LAYERS};

impl Router {
    /// Layers of `track` that other workers' subscribers need (see [`crate::relay`]).
    pub fn set_relay_demand(&mut self, track: TrackKey, layers: [bool; MAX_LAYERS]) {
        if let Some(t) = self.tracks.get_mut(track.0 as usize) {
            t.relay_demand = layers;
        }
    }

    /// The layers of `track` this worker's subscribers need now, to receive a remote track
    /// through the relay: the layer each one is forwarded and the one it should get (both,
    /// during a switch), for copies negotiated or being negotiated.
    pub fn relay_want(&self, track: TrackKey) -> [bool; MAX_LAYERS] {
        let mut wanted = [false; MAX_LAYERS];
        let Some(t) = self.tracks.get(track.0 as usize) else {
            return wanted;
        };
        for dt in t
            .downtracks
            .iter()
            .filter_map(|k| self.downtracks.get(k.0 as usize))
        {
            if !matches!(
                dt.state,
                DowntrackState::Offered(_) | DowntrackState::Active { .. }
            ) {
                continue;
            }
            if !t.layers.is_simulcast() {
                wanted[0] = true;
                continue;
            }
            let max = match dt.cap {
                LayerCap::Unlimited => Layer::MAX,
                LayerCap::UpTo(l) => l,
                LayerCap::Paused => continue,
            };
            for l in [
                dt.selector.current(),
                t.layers.choose_among_all(dt.want, max),
            ]
            .into_iter()
            .flatten()
            {
                wanted[usize::from(l).min(MAX_LAYERS - 1)] = true;
            }
        }
        wanted
    }

    /// Every copy of `track` continues its numbering at the next packet: packets that were
    /// never received here (a relayed track muted at its origin) must not show as a gap.
    pub fn restart_downtracks(&mut self, track: TrackKey) {
        let Some(t) = self.tracks.get(track.0 as usize) else {
            return;
        };
        for k in &t.downtracks {
            if let Some(dt) = self.downtracks.get_mut(k.0 as usize) {
                dt.rewriter.restart();
            }
        }
    }

    /// Another worker's subscriber needs a keyframe of `track` (a simulcast `layer`, or
    /// every stream): throttled here, at the origin, like local requests.
    pub fn relayed_keyframe_request(
        &mut self,
        track: TrackKey,
        layer: Option<Layer>,
        now: Instant,
    ) -> KeyframeDecision {
        let Some(t) = self.tracks.get_mut(track.0 as usize) else {
            return KeyframeDecision::UnknownMid;
        };
        let layer = layer.filter(|l| t.layers.is_simulcast() && usize::from(*l) < MAX_LAYERS);
        let throttle = match layer {
            Some(l) => &mut t.layer_throttles[usize::from(l)],
            None => &mut t.keyframe_throttle,
        };
        if throttle.should_send(now) {
            t.publisher_guard.sent(now);
            KeyframeDecision::Send(KeyframeRequest {
                publisher: t.publisher,
                mid: t.publisher_mid,
                layer,
            })
        } else {
            KeyframeDecision::Suppressed
        }
    }
}
