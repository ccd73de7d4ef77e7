//! Simulcast through the router, packet by packet: what each subscriber receives when the
//! publisher sends three layers and subscribers want different sizes.

use std::time::{Duration, Instant};

use str0m::media::Mid;

use super::downlink_monitor::DownlinkSample;
use super::keyframe::KeyframeStart;
use super::layer_selector::Want;
use super::router::{IncomingRtp, KeyframeRequest, Router, WantOutcome};
use super::{Forward, PeerKey, TrackKey};
use crate::api::{TrackKind, VideoSubscription};

const PUBLISHER: PeerKey = PeerKey(0);
const SMALL: PeerKey = PeerKey(1);
pub(super) const LARGE: PeerKey = PeerKey(2);
/// 30 fps on the 90 kHz video clock.
pub(super) const FRAME: Duration = Duration::from_millis(33);
const TICKS_PER_FRAME: u32 = 3000;

pub(super) struct Room {
    pub(super) r: Router,
    video: TrackKey,
    audio: TrackKey,
    t0: Instant,
    /// Per layer: next input sequence number (each layer has its own SSRC and numbering).
    next_seq: [u64; 3],
    /// Per subscriber: everything forwarded on the video m-line, in order.
    got: Vec<(PeerKey, Forward)>,
    pub(super) keyframe_requests: Vec<KeyframeRequest>,
    /// The driver finds this subscriber's send queue backlogged at the next frame start.
    backlogged: Option<PeerKey>,
}

impl Room {
    /// A publisher with a 3-layer video track and an audio track; two subscribers, both
    /// negotiated (video m-line "v", audio "a").
    pub(super) fn new() -> Self {
        let t0 = Instant::now();
        let mut r = Router::new(Duration::from_millis(500));
        for p in [PUBLISHER, SMALL, LARGE] {
            r.add_participant(p, "class", Some(VideoSubscription::Auto));
        }
        let video = r
            .add_track(
                PUBLISHER,
                Mid::from("1"),
                TrackKind::Video,
                90_000,
                false,
                3,
            )
            .unwrap();
        let audio = r
            .add_track(
                PUBLISHER,
                Mid::from("0"),
                TrackKind::Audio,
                48_000,
                false,
                1,
            )
            .unwrap();
        for s in [SMALL, LARGE] {
            for (k, track) in r
                .downtracks_of(s)
                .into_iter()
                .map(|(k, d)| (k, d.track))
                .collect::<Vec<_>>()
            {
                let (m, pt) = if track == Some(video) {
                    ("v", (96, 96))
                } else {
                    ("a", (111, 111))
                };
                r.mark_offered(k, Mid::from(m));
                assert_eq!(r.activate(k, vec![pt], t0), None, "simulcast: no blind PLI");
            }
        }
        Room {
            r,
            video,
            audio,
            t0,
            next_seq: [1_000, 30_000, 65_000],
            got: vec![],
            keyframe_requests: vec![],
            backlogged: None,
        }
    }

    pub(super) fn at(&self, frame: u32) -> Instant {
        self.t0 + FRAME * frame
    }

    /// One frame on each layer in `layers`: layer `l` takes `l + 1` packets, so what a
    /// subscriber receives per frame tells which layer it is on. Keyframes where `key`.
    pub(super) fn frame(&mut self, frame: u32, layers: &[u8], key: &[u8]) {
        let now = self.at(frame);
        let mut out = vec![];
        for &layer in layers {
            for i in 0..=u64::from(layer) {
                let seq = self.next_seq[usize::from(layer)];
                self.next_seq[usize::from(layer)] += 1;
                let keyframe = (i == 0 && key.contains(&layer)).then_some(KeyframeStart {
                    width: 320 << layer,
                    height: 180 << layer,
                });
                let pkt = IncomingRtp {
                    track: self.video,
                    source: 100 + u32::from(layer),
                    seq,
                    // Layers share the capture clock but not its offset.
                    ts: (frame * TICKS_PER_FRAME).wrapping_add(u32::from(layer) * 77_777),
                    pt: 96,
                    audio_level: None,
                    layer,
                    keyframe,
                    payload_len: 1000,
                    vp8: None,
                };
                self.r.on_rtp(&pkt, now, &mut out);
                for f in &out {
                    if f.frame_start
                        && self.backlogged == Some(f.subscriber)
                        && self.r.egress_backlogged(f, now)
                    {
                        self.backlogged = None;
                    } else {
                        self.got.push((f.subscriber, *f));
                    }
                }
                while let Some(k) = self.r.pop_keyframe_request() {
                    self.keyframe_requests.push(k);
                }
            }
        }
    }

    fn frames(&mut self, range: std::ops::Range<u32>, layers: &[u8]) {
        for f in range {
            self.frame(f, layers, &[]);
        }
    }

    /// Packets `who` received since the last call.
    pub(super) fn take(&mut self, who: PeerKey) -> Vec<Forward> {
        let (mine, rest) = self.got.drain(..).partition(|(p, _)| *p == who);
        self.got = rest;
        mine.into_iter().map(|(_, f)| f).collect()
    }

    pub(super) fn want(&mut self, who: PeerKey, want: Want) {
        assert_eq!(self.r.set_want(who, self.video, want), WantOutcome::Applied);
    }
}

/// LARGE wants 720p and receives layer 2 for 42 frames; from frame 40 it has a bandwidth
/// budget, and its connection's first stats sample reported `raw_estimate` on a clean link.
/// Returns what it received.
fn large_on_its_top_layer_with_a_budget(room: &mut Room, raw_estimate: u64) -> Vec<Forward> {
    room.want(LARGE, size(1280, 720));
    room.frame(0, &[0, 1, 2], &[0, 1, 2]);
    room.frames(1..40, &[0, 1, 2]);
    room.r.set_egress_budget(LARGE, 3_000_000, room.at(40));
    let clean = DownlinkSample {
        estimate_bps: Some(raw_estimate),
        loss: Some(0.0),
        rtt: Some(Duration::from_millis(50)),
        bytes_sent: 1_000_000,
    };
    room.r.downlink_sample(LARGE, clean, room.at(40));
    room.frames(40..42, &[0, 1, 2]);
    let before = room.take(LARGE);
    assert_eq!(before.len(), 42 * 3, "layer 2 throughout");
    before
}

/// LARGE was held at frame 42: the keyframe asked for is of a lower layer, it comes at frame
/// 50, and LARGE receives that layer from there (to frame 54). Returns the layer and what
/// LARGE received.
fn large_resumes_at_a_lower_keyframe(room: &mut Room) -> (u8, Vec<Forward>) {
    let asked: Vec<_> = room.keyframe_requests.iter().map(|k| k.layer).collect();
    assert!(
        !asked.is_empty() && asked.iter().all(|l| *l < Some(2)),
        "{asked:?}"
    );
    let layer = asked[0].unwrap();
    room.frame(50, &[0, 1, 2], &[layer]);
    room.frames(51..55, &[0, 1, 2]);
    let after = room.take(LARGE);
    assert_eq!(after.len(), 5 * (usize::from(layer) + 1));
    (layer, after)
}

fn assert_continuous(packets: &[Forward]) {
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "sequence gap or jump: {packets:?}");
        let dt = w[1].ts.wrapping_sub(w[0].ts);
        assert!(dt < 5 * 90_000, "timestamp ran backwards or leapt: {w:?}");
    }
}

fn size(width: u16, height: u16) -> Want {
    Want::Size { width, height }
}

#[test]
fn each_subscriber_gets_one_layer_and_switches_only_at_its_keyframe() {
    let mut room = Room::new();
    room.want(SMALL, size(160, 120));
    room.want(LARGE, size(1280, 720));
    // Nothing is forwarded before a keyframe of the chosen layer: a decoder cannot start.
    room.frames(0..3, &[0, 1, 2]);
    assert!(room.take(SMALL).is_empty());
    assert!(room.take(LARGE).is_empty());
    // One request: the publisher would drop a second one inside its 300 ms window, and the
    // keyframe it sends may well cover both layers (libvpx simulcast keys them all).
    let asked: Vec<_> = room.keyframe_requests.drain(..).map(|k| k.layer).collect();
    assert_eq!(asked.len(), 1, "{asked:?}");

    room.frame(3, &[0, 1, 2], &[0, 1, 2]);
    room.frames(4..20, &[0, 1, 2]);
    let small = room.take(SMALL);
    let large = room.take(LARGE);
    assert_eq!(small.len(), 17, "1 packet per frame: layer 0 only");
    assert_eq!(large.len(), 17 * 3, "3 packets per frame: layer 2 only");
    assert_continuous(&small);
    assert_continuous(&large);

    // The small video is enlarged: it stays on layer 0 until layer 2 has a keyframe.
    room.want(SMALL, size(1280, 720));
    room.frames(20..24, &[0, 1, 2]);
    assert_eq!(room.keyframe_requests.len(), 1);
    assert_eq!(room.keyframe_requests[0].layer, Some(2));
    // A keyframe on layer 1 is no use to it.
    room.frame(24, &[0, 1, 2], &[1]);
    room.frame(25, &[0, 1, 2], &[2]);
    room.frames(26..30, &[0, 1, 2]);
    let after = room.take(SMALL);
    // Frame 25's layer 0 packet precedes the layer 2 keyframe of the same frame.
    assert_eq!(
        after.len(),
        6 + 5 * 3,
        "layer 0 up to frame 25, layer 2 from 25"
    );
    let mut all = small;
    all.extend(after);
    assert_continuous(&all);
    // The large subscriber was never disturbed.
    assert_eq!(room.take(LARGE).len(), 10 * 3);
}

#[test]
fn keyframe_requests_for_a_switch_are_throttled() {
    let mut room = Room::new();
    room.want(SMALL, size(160, 120));
    room.want(LARGE, size(160, 120));
    // 2 s without a keyframe on layer 0: both subscribers wait; one request per 500 ms.
    room.frames(0..60, &[0, 1, 2]);
    let n = room.keyframe_requests.len();
    assert!((4..=5).contains(&n), "{n} requests in 2 s");
    assert!(room.keyframe_requests.iter().all(|k| k.layer == Some(0)));
}

#[test]
fn paused_video_forwards_nothing_while_audio_flows() {
    let mut room = Room::new();
    room.want(SMALL, size(320, 180));
    room.frame(0, &[0, 1, 2], &[0, 1, 2]);
    room.frames(1..5, &[0, 1, 2]);
    let before = room.take(SMALL);
    assert_eq!(before.len(), 5);

    room.want(SMALL, Want::Paused);
    room.keyframe_requests.clear();
    room.frame(5, &[0, 1, 2], &[0, 1, 2]);
    room.frames(6..30, &[0, 1, 2]);
    assert!(room.take(SMALL).is_empty(), "paused: no video packets");
    assert!(
        room.keyframe_requests.is_empty(),
        "paused: no keyframe wanted"
    );
    // Audio of the same publisher is not the selector's business.
    let mut out = vec![];
    let audio = IncomingRtp {
        track: room.audio,
        source: 7,
        seq: 5,
        ts: 960,
        pt: 111,
        audio_level: Some(-30),
        layer: 0,
        keyframe: None,
        payload_len: 100,
        vp8: None,
    };
    room.r.on_rtp(&audio, room.at(30), &mut out);
    let mut subs: Vec<_> = out.iter().map(|f| (f.subscriber, f.mid)).collect();
    subs.sort();
    assert_eq!(subs, vec![(SMALL, Mid::from("a")), (LARGE, Mid::from("a"))]);

    // Shown again: it resumes at the next keyframe with no gap in the numbering.
    room.want(SMALL, size(320, 180));
    room.frames(31..33, &[0, 1, 2]);
    assert!(room.take(SMALL).is_empty());
    assert_eq!(room.keyframe_requests.len(), 1);
    room.frame(33, &[0, 1, 2], &[0]);
    room.frames(34..36, &[0, 1, 2]);
    let resumed = room.take(SMALL);
    assert_eq!(resumed.len(), 3);
    let mut all = before;
    all.extend(resumed);
    assert_continuous(&all);
}

#[test]
fn a_layer_the_publisher_stops_is_replaced_by_the_next_one_down() {
    let mut room = Room::new();
    room.want(LARGE, Want::Highest);
    room.frame(0, &[0, 1, 2], &[0, 1, 2]);
    room.frames(1..10, &[0, 1, 2]);
    let top = room.take(LARGE);
    assert_eq!(top.len(), 30);
    room.keyframe_requests.clear();
    // The encoder drops its top layer (bandwidth): after a second without it, layer 1.
    room.frames(10..50, &[0, 1]);
    assert!(room.keyframe_requests.iter().any(|k| k.layer == Some(1)));
    room.frame(50, &[0, 1], &[1]);
    room.frames(51..55, &[0, 1]);
    let down = room.take(LARGE);
    assert_eq!(down.len(), 5 * 2, "layer 1 from its keyframe on");
    let mut all = top;
    all.extend(down);
    assert_continuous(&all);
}

#[test]
fn a_plain_track_is_forwarded_at_once_and_resumes_with_a_keyframe_request() {
    let t0 = Instant::now();
    let mut r = Router::new(Duration::from_millis(500));
    r.add_participant(PUBLISHER, "r", Some(VideoSubscription::Auto));
    r.add_participant(SMALL, "r", Some(VideoSubscription::Auto));
    let t = r
        .add_track(
            PUBLISHER,
            Mid::from("1"),
            TrackKind::Video,
            90_000,
            false,
            1,
        )
        .unwrap();
    let (k, _) = r.downtracks_of(SMALL)[0];
    r.mark_offered(k, Mid::from("v"));
    assert!(r.activate(k, vec![(96, 96)], t0).is_some());
    let mut out = vec![];
    let pkt = |seq| IncomingRtp {
        track: t,
        source: 1,
        seq,
        ts: 0,
        pt: 96,
        audio_level: None,
        layer: 0,
        keyframe: None,
        payload_len: 100,
        vp8: None,
    };
    r.on_rtp(&pkt(1), t0, &mut out);
    assert_eq!(out.len(), 1, "no keyframe gating without simulcast");
    let first = out[0].seq;
    assert_eq!(r.set_want(SMALL, t, Want::Paused), WantOutcome::Applied);
    r.on_rtp(&pkt(2), t0, &mut out);
    assert!(out.is_empty());
    while r.pop_keyframe_request().is_some() {}
    assert_eq!(r.set_want(SMALL, t, Want::Highest), WantOutcome::Applied);
    let later = t0 + Duration::from_secs(1);
    r.on_rtp(&pkt(3), later, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].seq, first + 1, "no gap for the paused packets");
    assert_eq!(r.pop_keyframe_request().map(|k| k.layer), Some(None));
}

#[test]
fn bandwidth_estimate_caps_the_layer_and_pauses_video_that_does_not_fit() {
    let mut room = Room::new();
    room.want(LARGE, Want::Highest);
    // Layer l carries (l + 1) kB per frame at 30 fps: 240, 480 and 720 kbit/s.
    room.frame(0, &[0, 1, 2], &[0, 1, 2]);
    room.frames(1..40, &[0, 1, 2]);
    assert_eq!(room.take(LARGE).len(), 40 * 3);

    // 400 kbit/s: audio (nominal 40k) and layer 0 fit, layer 1 does not.
    room.r.set_egress_budget(LARGE, 400_000, room.at(40));
    room.keyframe_requests.clear();
    room.frames(40..42, &[0, 1, 2]);
    assert_eq!(
        room.take(LARGE).len(),
        2 * 3,
        "still layer 2 until layer 0's keyframe"
    );
    assert!(room.keyframe_requests.iter().any(|k| k.layer == Some(0)));
    room.frame(42, &[0, 1, 2], &[0]);
    room.frames(43..45, &[0, 1, 2]);
    assert_eq!(room.take(LARGE).len(), 3, "layer 0 from its keyframe");

    // Not even the lowest layer fits: it keeps flowing for a moment (a dip of the estimate
    // must not freeze the tile), then, if that lasts, the video pauses, while the other
    // subscriber is untouched.
    room.r.set_egress_budget(LARGE, 100_000, room.at(45));
    room.frames(45..50, &[0, 1, 2]);
    assert_eq!(room.take(LARGE).len(), 5, "still the lowest layer");
    room.frames(50..125, &[0, 1, 2]);
    room.take(LARGE);
    room.r.set_egress_budget(LARGE, 100_000, room.at(125));
    room.frames(125..130, &[0, 1, 2]);
    assert!(room.take(LARGE).is_empty(), "paused after PAUSE_AFTER");
    assert!(!room.take(SMALL).is_empty());

    // Plenty again, but right after a cut: held back, so that a flapping estimate does not
    // flap the layers.
    room.r.set_egress_budget(LARGE, 10_000_000, room.at(130));
    room.frame(130, &[0, 1, 2], &[2]);
    room.frames(131..190, &[0, 1, 2]);
    assert!(room.take(LARGE).is_empty(), "held after the cut");
    // Once the hold is over: back to the top layer at its keyframe.
    room.r.set_egress_budget(LARGE, 10_000_000, room.at(190));
    room.frame(190, &[0, 1, 2], &[2]);
    assert_eq!(room.take(LARGE).len(), 3);
}

#[test]
fn dynacast_asks_only_for_layers_someone_receives() {
    let mut room = Room::new();
    room.want(SMALL, size(160, 120));
    room.want(LARGE, size(640, 360));
    room.frame(0, &[0, 1, 2], &[0, 1, 2]);
    assert!(
        room.r.poll_layer_demand(room.at(0)).is_empty(),
        "all on at first"
    );
    // Nobody shows it large: the top layer goes off after the delay.
    let later = room.at(0) + super::dynacast::OFF_DELAY + Duration::from_millis(300);
    room.r.poll_layer_demand(room.at(1));
    assert_eq!(
        room.r.poll_layer_demand(later),
        vec![(room.video, [true, true, false])]
    );
    // The top layer is asked back at once, although it is not flowing now.
    room.want(LARGE, size(1280, 720));
    let again = later + Duration::from_millis(300);
    assert_eq!(
        room.r.poll_layer_demand(again),
        vec![(room.video, [true, true, true])]
    );
}

#[test]
fn a_subscriber_whose_connection_comes_up_starts_at_a_keyframe_asked_for_at_once() {
    let mut room = Room::new();
    room.want(SMALL, size(160, 120));
    room.want(LARGE, size(1280, 720));
    // Before SMALL's connection is up the router already switched it on a keyframe (the driver
    // wrote none of it) and the throttle of layer 0 has just fired.
    room.frame(0, &[0, 1, 2], &[0, 1, 2]);
    room.frames(1..4, &[0, 1, 2]);
    assert!(!room.take(SMALL).is_empty());
    room.frames(4..10, &[0, 1, 2]);
    room.take(SMALL);
    room.take(LARGE);
    room.keyframe_requests.clear();
    // 330 ms after the last request: the publisher's window is over, layer 0's throttle not.
    let now = room.at(10);
    let asked = room.r.on_subscriber_connected(SMALL, now);
    assert_eq!(
        asked.iter().map(|k| k.layer).collect::<Vec<_>>(),
        vec![Some(0)],
        "one keyframe request for the layer it will get, throttle or not"
    );
    // Until that keyframe comes nothing is forwarded: a delta frame would not decode.
    room.frames(10..12, &[0, 1, 2]);
    assert!(
        room.take(SMALL).is_empty(),
        "delta frames before the keyframe"
    );
    assert!(
        !room.take(LARGE).is_empty(),
        "the other subscriber is not disturbed"
    );
    room.frame(12, &[0, 1, 2], &[0]);
    let got = room.take(SMALL);
    assert_eq!(
        got.len(),
        1,
        "the keyframe of layer 0 (one packet per frame)"
    );
}

#[test]
fn a_backlogged_subscriber_is_held_back_until_a_keyframe_and_capped() {
    let mut room = Room::new();
    room.want(SMALL, size(160, 120));
    // LARGE's connection reported str0m's raw estimate: 600k.
    let before = large_on_its_top_layer_with_a_budget(&mut room, 600_000);
    let small_before = room.take(SMALL);
    room.keyframe_requests.clear();
    // Frame 42: LARGE's send queue is backlogged when its first packet is written.
    room.backlogged = Some(LARGE);
    room.frames(42..50, &[0, 1, 2]);
    assert!(room.take(LARGE).is_empty(), "nothing until a keyframe");
    // Capped at the raw estimate at once: the keyframe asked for is of a lower layer.
    let (layer, after) = large_resumes_at_a_lower_keyframe(&mut room);
    // Still backlogged a moment later: the frames after the keyframe it resumed at go on
    // (the cut takes effect; holding them would waste that keyframe).
    room.backlogged = Some(LARGE);
    room.frames(55..60, &[0, 1, 2]);
    assert_eq!(room.backlogged, Some(LARGE), "not held within the grace");
    let grace = room.take(LARGE);
    assert_eq!(grace.len(), 5 * (usize::from(layer) + 1));
    let mut all = before;
    all.extend(after);
    all.extend(grace);
    assert_continuous(&all);
    room.backlogged = None;
    // The other subscriber was not disturbed.
    let small = room.take(SMALL);
    assert_eq!(small.len(), 18);
    let mut s = small_before;
    s.extend(small);
    assert_continuous(&s);
}

#[test]
fn a_keyframe_request_the_publisher_would_drop_waits_for_its_window() {
    let mut room = Room::new();
    room.want(SMALL, size(160, 120));
    room.want(LARGE, size(1280, 720));
    room.frame(0, &[0, 1, 2], &[0, 1, 2]);
    room.frames(1..4, &[0, 1, 2]);
    assert_eq!(room.keyframe_requests.len(), 1, "asked at frame 0");
    room.keyframe_requests.clear();
    room.take(SMALL);
    // SMALL's connection comes up 132 ms after that request: a request now would be
    // dropped by the publisher (it obeys one per 300 ms), so none is sent...
    assert!(room.r.on_subscriber_connected(SMALL, room.at(4)).is_empty());
    room.frames(4..9, &[0, 1, 2]);
    assert!(room.keyframe_requests.is_empty(), "inside the window");
    // ...but at the first packet after it (frame 10, 330 ms), not after layer 0's 500 ms
    // throttle.
    room.frames(9..11, &[0, 1, 2]);
    assert_eq!(
        room.keyframe_requests
            .iter()
            .map(|k| k.layer)
            .collect::<Vec<_>>(),
        vec![Some(0)]
    );
    assert!(room.take(SMALL).is_empty(), "nothing before the keyframe");
    room.frame(11, &[0, 1, 2], &[0]);
    assert_eq!(room.take(SMALL).len(), 1);
}

#[test]
fn a_subscriber_whose_connection_is_not_up_takes_no_part_until_it_is() {
    let mut room = Room::new();
    // A first viewer (the other subscriber shows nothing): its connection is on its way up
    // while the publisher's deltas and a keyframe come in.
    room.want(LARGE, Want::Paused);
    room.r.subscriber_connecting(SMALL);
    room.want(SMALL, size(160, 120));
    room.frames(0..3, &[0, 1, 2]);
    room.frame(3, &[0, 1, 2], &[0, 1, 2]);
    room.frames(4..5, &[0, 1, 2]);
    assert!(
        room.keyframe_requests.is_empty(),
        "nothing asked for a connection that is not up: {:?}",
        room.keyframe_requests
    );
    assert!(
        room.take(SMALL).is_empty(),
        "nothing forwarded to a connection that is not up"
    );
    // Up 165 ms after the first packet. Had it asked at that packet, the publisher (one
    // request per 300 ms) would drop this one and the request would wait for the window.
    let asked = room.r.on_subscriber_connected(SMALL, room.at(5));
    assert_eq!(
        asked.iter().map(|k| k.layer).collect::<Vec<_>>(),
        vec![Some(0)],
        "asked at once"
    );
    room.frames(5..7, &[0, 1, 2]);
    assert!(room.take(SMALL).is_empty(), "deltas before the keyframe");
    room.frame(7, &[0, 1, 2], &[0]);
    room.frames(8..10, &[0, 1, 2]);
    let got = room.take(SMALL);
    assert_eq!(got.len(), 3, "layer 0 from its keyframe on");
    assert_continuous(&got);
    assert!(room.take(LARGE).is_empty(), "paused");
}

#[test]
fn a_subscriber_reached_before_its_connection_is_up_starts_then_and_not_again() {
    let mut room = Room::new();
    room.want(LARGE, Want::Paused);
    room.r.subscriber_connecting(SMALL);
    room.want(SMALL, size(160, 120));
    room.frames(0..3, &[0, 1, 2]);
    assert!(room.keyframe_requests.is_empty() && room.take(SMALL).is_empty());
    // The client's first connectivity check, ICE and DTLS still to come: the keyframe is
    // asked for now, and what follows it is forwarded (the driver writes it ahead).
    let asked = room.r.on_subscriber_reached(SMALL, room.at(3)).unwrap();
    assert_eq!(
        asked.iter().map(|k| k.layer).collect::<Vec<_>>(),
        vec![Some(0)],
        "asked at the first check"
    );
    assert_eq!(
        room.r.on_subscriber_reached(SMALL, room.at(3)),
        None,
        "once"
    );
    room.frames(3..5, &[0, 1, 2]);
    assert!(room.take(SMALL).is_empty(), "deltas before the keyframe");
    room.frame(5, &[0, 1, 2], &[0, 1, 2]);
    room.frames(6..8, &[0, 1, 2]);
    let ahead = room.take(SMALL);
    assert_eq!(
        ahead.len(),
        3,
        "layer 0 from its keyframe on, before the connection is up"
    );
    // Up: nothing asked again (libwebrtc would drop a second request within 300 ms) and
    // nothing started over; the stream goes on where it was.
    assert!(room.r.on_subscriber_connected(SMALL, room.at(8)).is_empty());
    room.frames(8..10, &[0, 1, 2]);
    let after = room.take(SMALL);
    assert_eq!(after.len(), 2);
    assert_continuous(&[ahead, after].concat());
    assert!(
        room.keyframe_requests.is_empty(),
        "no request of the selector's own: {:?}",
        room.keyframe_requests
    );
}

#[test]
fn a_subscriber_reached_but_not_up_in_time_starts_over_when_it_is() {
    let mut room = Room::new();
    room.want(LARGE, Want::Paused);
    room.r.subscriber_connecting(SMALL);
    room.want(SMALL, size(160, 120));
    assert_eq!(
        room.r
            .on_subscriber_reached(SMALL, room.at(0))
            .map(|r| r.len()),
        Some(1)
    );
    room.frame(1, &[0, 1, 2], &[0, 1, 2]);
    assert_eq!(room.take(SMALL).len(), 1);
    // The driver stopped writing ahead (its window passed): gated again, as at the answer.
    room.r.subscriber_connecting(SMALL);
    room.frame(30, &[0, 1, 2], &[0, 1, 2]);
    assert!(room.take(SMALL).is_empty(), "nothing while gated again");
    let asked = room.r.on_subscriber_connected(SMALL, room.at(31));
    assert_eq!(
        asked.iter().map(|k| k.layer).collect::<Vec<_>>(),
        vec![Some(0)],
        "started over at the connection, at a keyframe asked for then"
    );
    room.frames(31..33, &[0, 1, 2]);
    assert!(
        room.take(SMALL).is_empty(),
        "deltas before the new keyframe"
    );
    room.frame(33, &[0, 1, 2], &[0]);
    assert_eq!(room.take(SMALL).len(), 1);
}

#[test]
fn the_keyframe_a_video_starts_or_switches_at_is_marked_as_a_fresh_start() {
    let mut room = Room::new();
    room.want(SMALL, size(160, 120));
    room.frame(0, &[0, 1, 2], &[0, 1, 2]);
    room.frames(1..5, &[0, 1, 2]);
    let marked = |packets: &[Forward]| -> Vec<usize> {
        (0..packets.len())
            .filter(|&i| packets[i].starts_over)
            .collect()
    };
    assert_eq!(
        marked(&room.take(SMALL)),
        vec![0],
        "the first keyframe only"
    );
    // Enlarged: layer 0 goes on until layer 2's keyframe, which the driver may resend
    // from while dropping what the old layer left in its retransmission cache.
    room.want(SMALL, size(1280, 720));
    room.frames(5..8, &[0, 1, 2]);
    room.frame(8, &[0, 1, 2], &[2]);
    room.frames(9..12, &[0, 1, 2]);
    let switched = room.take(SMALL);
    assert_eq!(switched.len(), 4 + 4 * 3);
    assert_eq!(
        marked(&switched),
        vec![4],
        "the first packet of layer 2's keyframe"
    );
    // A keyframe on the layer it is on already changes nothing.
    room.frame(12, &[0, 1, 2], &[2]);
    assert_eq!(marked(&room.take(SMALL)), Vec::<usize>::new());
}

#[test]
fn a_collapsing_link_stops_the_old_layer_at_the_cut_until_the_lower_keyframe() {
    let mut room = Room::new();
    let before = large_on_its_top_layer_with_a_budget(&mut room, 2_500_000);
    room.keyframe_requests.clear();
    // 250 ms later: a third of what was sent lost, the RTT 250 ms up: the monitor cuts.
    let collapsed = DownlinkSample {
        estimate_bps: Some(500_000),
        loss: Some(0.3),
        rtt: Some(Duration::from_millis(300)),
        bytes_sent: 1_050_000,
    };
    room.r.downlink_sample(LARGE, collapsed, room.at(42));
    room.frames(42..50, &[0, 1, 2]);
    assert!(
        room.take(LARGE).is_empty(),
        "layer 2 stops at the cut: on this link it would only queue ahead of the keyframe"
    );
    let (_, after) = large_resumes_at_a_lower_keyframe(&mut room);
    assert!(after[0].starts_over);
    let mut all = before;
    all.extend(after);
    assert_continuous(&all);
}
