//! The router's glue between a downtrack and the layer decisions: per packet, which layer
//! it receives (subscriber's wish, capped by the bandwidth allocator) and which keyframes
//! that needs; per bandwidth estimate, the caps themselves.

use std::time::{Duration, Instant};

use slab::Slab;

use super::allocator::{Priority, VideoDemand};
use super::layer_selector::{Layer, Verdict, Want, MAX_LAYERS};
use super::overload::Shedding;
use super::router::{Downtrack, DowntrackState, IncomingRtp, KeyframeRequest, Track};
use super::subscriber_budget::{BudgetChanges, SubscriberBudget};
use super::{DowntrackKey, PeerKey, TrackKey};
use crate::api::TrackKind;

/// Bitrate assumed for an audio track not measured yet (Opus voice with overhead).
const NOMINAL_AUDIO_BPS: u64 = 40_000;

pub use super::allocator::LayerCap;

/// One subscriber's verdict on one video packet, and the keyframe request a pending layer
/// switch (or a resume of a plain track) needs.
pub(super) fn select_layer(
    track: &mut Track,
    dt: &mut Downtrack,
    rtp: &IncomingRtp,
    shedding: Shedding,
    now: Instant,
    keyframe_out: &mut Vec<KeyframeRequest>,
) -> Verdict {
    let request = |track: &mut Track, layer: Option<Layer>, out: &mut Vec<KeyframeRequest>| {
        // The publisher would drop it: asked at a packet once its window is over.
        if !track.publisher_guard.ready(now) {
            return;
        }
        let throttle = match layer {
            Some(l) => &mut track.layer_throttles[usize::from(l)],
            None => &mut track.keyframe_throttle,
        };
        if throttle.should_send(now) {
            track.publisher_guard.sent(now);
            out.push(KeyframeRequest {
                publisher: track.publisher,
                mid: track.publisher_mid,
                layer,
            });
        }
    };
    let shed = !track.source.is_screen() && shedding.sheds(dt.want);
    let max = match dt.cap {
        _ if shed => {
            dt.selector.set_target(None);
            return Verdict::Drop;
        }
        LayerCap::Unlimited => Layer::MAX,
        LayerCap::UpTo(l) => l,
        LayerCap::Paused => {
            dt.selector.set_target(None);
            return Verdict::Drop;
        }
    };
    if !track.layers.is_simulcast() {
        // One layer: no keyframe to wait for, but a resumed stream needs one to decode.
        let target = (dt.want != Want::Paused).then_some(0);
        dt.selector.set_target(target);
        let verdict = dt.selector.on_packet(0, true);
        if verdict == Verdict::SwitchAndForward {
            request(track, None, keyframe_out);
        }
        return verdict;
    }
    dt.selector
        .set_target(track.layers.choose_at_most(dt.want, max, now));
    let verdict = dt.selector.on_packet(rtp.layer, rtp.keyframe.is_some());
    if let Some(layer) = dt.selector.pending_switch() {
        request(track, Some(layer), keyframe_out);
    }
    verdict
}

/// After a downtrack resumed from a hold (at a keyframe), how long its frames are not held
/// again: holding
/// them would waste the keyframe it resumed at, and the allocator has cut it to what the
/// link carries already.
pub const BACKLOG_GRACE: Duration = Duration::from_millis(1500);

/// The subscriber's send queue is backlogged (see `egress_backlog`) and the allocator has cut
/// it. When that moves `dt` to a lower layer (or pauses it), the rest of its current layer
/// only delays the lower layer's keyframe: the frame whose first packet was rewritten to
/// `seq` is not sent after all, `dt` forwards nothing more until a keyframe of its target
/// layer, asked for now, and the stream continues without a gap. Returns whether it holds
/// back; a downtrack staying on its layer (its lowest, or a track without simulcast) is
/// left alone: holding it would only freeze it until the next keyframe of the same layer.
pub(super) fn resync_after_backlog(
    track: &mut Track,
    dt: &mut Downtrack,
    seq: u64,
    now: Instant,
    keyframe_out: &mut Vec<KeyframeRequest>,
) -> bool {
    let held = hold_for_lower_layer(track, dt, now, keyframe_out);
    if held {
        dt.rewriter.unsend(seq);
    }
    held
}

/// A cut (a backlog, or the downlink monitor's) moved `dt` below the layer it forwards:
/// what that layer sends until the lower layer's keyframe comes would only queue ahead of it
/// on a link that cannot carry it, so `dt` forwards nothing more until a keyframe of its
/// target layer, asked for now. Returns whether it holds back (not for a downtrack staying
/// on its layer).
pub(super) fn hold_for_lower_layer(
    track: &mut Track,
    dt: &mut Downtrack,
    now: Instant,
    keyframe_out: &mut Vec<KeyframeRequest>,
) -> bool {
    if !track.layers.is_simulcast() {
        return false;
    }
    let target = match dt.cap {
        LayerCap::Unlimited => track.layers.choose(dt.want, now),
        LayerCap::UpTo(l) => track.layers.choose_at_most(dt.want, l, now),
        LayerCap::Paused => None,
    };
    let Some(current) = dt.selector.current() else {
        return false;
    };
    if target.is_some_and(|t| t >= current) {
        return false;
    }
    dt.backlog_hold = Some(now);
    dt.selector.set_target(target);
    dt.selector.resync();
    let Some(layer) = dt.selector.pending_switch() else {
        return true;
    };
    if track.layer_throttles[usize::from(layer)].should_send(now) {
        keyframe_out.push(KeyframeRequest {
            publisher: track.publisher,
            mid: track.publisher_mid,
            layer: Some(layer),
        });
    }
    true
}

/// The layers of `track` some subscriber would receive if the publisher sent them all.
pub(super) fn needed_layers(track: &Track, downtracks: &Slab<Downtrack>) -> [bool; MAX_LAYERS] {
    let mut needed = [false; MAX_LAYERS];
    for key in track.downtracks() {
        let Some(dt) = downtracks.get(key.0 as usize) else {
            continue;
        };
        if !matches!(dt.state, DowntrackState::Active { .. }) {
            continue;
        }
        let max = match dt.cap {
            LayerCap::Unlimited => Layer::MAX,
            LayerCap::UpTo(l) => l,
            LayerCap::Paused => continue,
        };
        if let Some(l) = track.layers.choose_among_all(dt.want, max) {
            needed[usize::from(l)] = true;
        }
    }
    needed
}

/// A video downtrack paused for bandwidth (`true`) or resumed (`false`) by the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthPause {
    pub subscriber: PeerKey,
    pub track: TrackKey,
    pub paused: bool,
}

/// Re-divides a subscriber's bandwidth estimate over its negotiated downtracks, through the
/// subscriber's hysteresis. Pause changes go to `pauses`. Returns what changed; the rate
/// everything wanted would take (what the estimator should probe towards) is left in
/// `budget.wanted_bps`. Runs per estimate and every few hundred ms, not per packet.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_budget(
    subscriber: PeerKey,
    keys: &[DowntrackKey],
    downtracks: &mut Slab<Downtrack>,
    tracks: &Slab<Track>,
    dominant: Option<PeerKey>,
    budget: &mut SubscriberBudget,
    now: Instant,
    pauses: &mut Vec<BandwidthPause>,
) -> BudgetChanges {
    let mut audio_bps = 0;
    let mut videos = Vec::with_capacity(keys.len());
    let mut video_keys = Vec::with_capacity(keys.len());
    let mut current = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(dt) = downtracks.get(key.0 as usize) else {
            continue;
        };
        if !matches!(dt.state, DowntrackState::Active { .. }) {
            continue;
        }
        let Some((track_key, track)) = dt
            .track
            .and_then(|t| tracks.get(t.0 as usize).map(|tr| (t, tr)))
        else {
            continue;
        };
        if track.muted {
            continue;
        }
        let rates = track.layers.bitrates();
        match track.kind {
            TrackKind::Audio => {
                audio_bps += if rates[0] > 0 {
                    rates[0]
                } else {
                    NOMINAL_AUDIO_BPS
                }
            }
            TrackKind::Video => {
                videos.push(VideoDemand {
                    // A screen share is what a class is looking at: never behind a camera.
                    priority: if Some(track.publisher) == dominant || track.source.is_screen() {
                        Priority::High
                    } else {
                        Priority::Normal
                    },
                    // Among all layers: one that dynacast stopped because nobody could
                    // afford it must be asked back once somebody can.
                    wanted: track.layers.choose_among_all(dt.want, Layer::MAX),
                    layer_bps: rates,
                });
                video_keys.push((*key, track_key));
                current.push(dt.cap);
            }
        }
    }
    let mut caps = Vec::with_capacity(videos.len());
    let changes = budget.decide(audio_bps, &videos, &current, now, &mut caps);
    for (((key, track), mut cap), old) in video_keys.iter().zip(caps).zip(current) {
        if let Some(dt) = downtracks.get_mut(key.0 as usize) {
            // A video already flowing when its first allocation comes (forwarded since its
            // keyframe, before the subscriber's first estimate or the layer's first rate)
            // is not paused at once: it goes to its lowest layer and the pause waits out
            // PAUSE_AFTER like any flowing video's, while the estimator finds the link (on
            // an open link within 1-2 s). Paused at once, it froze for 1-4 s in a meeting's
            // first seconds (BENCHMARKS.md, issue 11, "Video stalls"). A video that never
            // started still starts only when it fits.
            if old == LayerCap::Unlimited && cap == LayerCap::Paused && dt.current_layer().is_some()
            {
                cap = LayerCap::UpTo(0);
            }
            dt.cap = cap;
        }
        let (was, is) = (old == LayerCap::Paused, cap == LayerCap::Paused);
        if was != is {
            pauses.push(BandwidthPause {
                subscriber,
                track: *track,
                paused: is,
            });
        }
    }
    changes
}
