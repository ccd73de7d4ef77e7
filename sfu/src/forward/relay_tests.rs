//! The router's side of the relay, packet by packet: which layers a receiving worker asks
//! its origin for, and how the origin treats what other workers ask of it.

use std::time::{Duration, Instant};

use str0m::media::Mid;

use super::keyframe::KeyframeStart;
use super::layer_selector::Want;
use super::router::{IncomingRtp, KeyframeDecision, Router};
use super::{PeerKey, TrackKey};
use crate::api::{TrackKind, VideoSubscription};

/// On a receiving worker: the proxy of a remote publisher, and one subscriber.
const PROXY: PeerKey = PeerKey(0);
const VIEWER: PeerKey = PeerKey(1);

fn room(layers: usize) -> (Router, TrackKey, Instant) {
    let mut r = Router::new(Duration::from_millis(500));
    // A proxy never subscribes.
    r.add_participant(PROXY, "class", None);
    r.add_participant(VIEWER, "class", Some(VideoSubscription::Auto));
    let video = r
        .add_track(
            PROXY,
            Mid::from("1"),
            TrackKind::Video,
            90_000,
            false,
            layers,
        )
        .unwrap();
    (r, video, Instant::now())
}

fn negotiate(r: &mut Router, now: Instant) {
    let keys: Vec<_> = r
        .downtracks_of(VIEWER)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for k in keys {
        r.mark_offered(k, Mid::from("v"));
        r.activate(k, vec![(96, 96)], now);
    }
}

fn packet(track: TrackKey, layer: u8, seq: u64, keyframe: bool) -> IncomingRtp {
    IncomingRtp {
        track,
        source: 1000 + u32::from(layer),
        seq,
        ts: seq as u32 * 3000,
        pt: 96,
        audio_level: None,
        layer,
        keyframe: keyframe.then_some(KeyframeStart {
            width: 320 << layer,
            height: 180 << layer,
        }),
        payload_len: 1000,
        vp8: None,
    }
}

#[test]
fn a_worker_wants_a_remote_track_only_while_a_subscriber_there_has_a_copy() {
    let (mut r, video, now) = room(1);
    // Pending (not offered yet): nothing travels.
    assert_eq!(r.relay_want(video), [false; 3]);
    negotiate(&mut r, now);
    assert_eq!(r.relay_want(video), [true, false, false]);
    r.remove_participant(VIEWER);
    assert_eq!(r.relay_want(video), [false; 3]);
}

#[test]
fn a_simulcast_subscriber_asks_for_its_layer_and_keeps_the_current_one_during_a_switch() {
    let (mut r, video, now) = room(3);
    negotiate(&mut r, now);
    // Wants a thumbnail: before any packet, the smallest layer covering 320x180.
    r.set_want(
        VIEWER,
        video,
        Want::Size {
            width: 320,
            height: 180,
        },
    );
    assert_eq!(r.relay_want(video), [true, false, false]);
    // The low layer flows and is forwarded.
    let mut out = vec![];
    r.on_rtp(&packet(video, 0, 1, true), now, &mut out);
    assert_eq!(out.len(), 1, "the low layer's keyframe is forwarded");
    // It grows to full size: the top layer is asked for, the low one kept until the switch.
    r.set_want(
        VIEWER,
        video,
        Want::Size {
            width: 1280,
            height: 720,
        },
    );
    assert_eq!(r.relay_want(video), [true, false, true]);
    // Paused: nothing.
    r.set_want(VIEWER, video, Want::Paused);
    r.on_rtp(&packet(video, 0, 2, false), now, &mut out);
    assert_eq!(r.relay_want(video), [false; 3]);
}

#[test]
fn the_origin_throttles_keyframe_requests_from_other_workers_with_its_own() {
    let (mut r, video, now) = room(3);
    let first = r.relayed_keyframe_request(video, Some(2), now);
    assert!(
        matches!(first, KeyframeDecision::Send(k) if k.layer == Some(2) && k.publisher == PROXY)
    );
    // Within the interval, for the same layer: held back; another layer is its own.
    assert_eq!(
        r.relayed_keyframe_request(video, Some(2), now + Duration::from_millis(100)),
        KeyframeDecision::Suppressed
    );
    assert!(matches!(
        r.relayed_keyframe_request(video, Some(0), now + Duration::from_millis(100)),
        KeyframeDecision::Send(_)
    ));
    assert!(matches!(
        r.relayed_keyframe_request(video, Some(2), now + Duration::from_millis(600)),
        KeyframeDecision::Send(_)
    ));
    assert_eq!(
        r.relayed_keyframe_request(TrackKey(99), None, now),
        KeyframeDecision::UnknownMid
    );
}

#[test]
fn layers_other_workers_need_stay_on_at_the_publisher() {
    // On the origin: a simulcast track nobody here watches, the top layer wanted elsewhere.
    let (mut r, video, now) = room(3);
    let mut out = vec![];
    for l in 0..3 {
        r.on_rtp(&packet(video, l, 1, true), now, &mut out);
    }
    r.set_relay_demand(video, [false, false, true]);
    let mut t = now;
    let mut last = None;
    for _ in 0..40 {
        t += Duration::from_millis(250);
        for (track, active) in r.poll_layer_demand(t) {
            assert_eq!(track, video);
            last = Some(active);
        }
    }
    let active = last.expect("dynacast settled on some layers");
    assert!(active[2], "the relayed layer was switched off: {active:?}");
}
