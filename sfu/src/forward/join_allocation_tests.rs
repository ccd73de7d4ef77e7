//! Bandwidth allocation while people join: the keyframes each new viewer asks for must not
//! make a video look too expensive for links that carry it (see `layer_rate`), and a video
//! already flowing when the subscriber's first estimate comes is not frozen by it (see
//! `downtrack_layers::apply_budget`).

use std::time::{Duration, Instant};

use str0m::media::Mid;

use super::keyframe::KeyframeStart;
use super::router::{IncomingRtp, Router};
use super::{Forward, PeerKey, TrackKey};
use crate::api::{TrackKind, VideoSubscription};

const HOST: PeerKey = PeerKey(0);
const VIEWER: PeerKey = PeerKey(1);
const LATE: PeerKey = PeerKey(2);
const FRAME: Duration = Duration::from_micros(33_333);

struct Stream {
    r: Router,
    t0: Instant,
    track: TrackKey,
    seq: u64,
}

impl Stream {
    /// The host publishes one camera without simulcast; the viewer receives it.
    fn new() -> Self {
        let t0 = Instant::now();
        let mut r = Router::new(Duration::from_secs(3));
        r.add_participant(HOST, "live", Some(VideoSubscription::Auto));
        let track = r
            .add_track(HOST, Mid::from("1"), TrackKind::Video, 90_000, false, 1)
            .unwrap();
        let mut s = Stream {
            r,
            t0,
            track,
            seq: 0,
        };
        s.join(VIEWER, t0);
        s
    }

    fn join(&mut self, p: PeerKey, now: Instant) {
        self.r
            .add_participant(p, "live", Some(VideoSubscription::Auto));
        let keys: Vec<_> = self
            .r
            .downtracks_of(p)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            self.r.mark_offered(k, Mid::from("v"));
            self.r.activate(k, vec![(96, 96)], now);
        }
    }

    /// Frames `range` of an 800 kbit/s camera at 30 fps (delta frames of 3 packets,
    /// keyframes of 12, as the load tester sends them), `key(frame)` saying which are
    /// keyframes; the viewer's estimate is `estimate` and the allocation runs as the worker
    /// runs it. Returns the packets each participant was forwarded.
    fn frames(
        &mut self,
        range: std::ops::Range<u32>,
        estimate: impl Into<Option<u64>>,
        key: impl Fn(u32) -> bool,
    ) -> [usize; 3] {
        let estimate = estimate.into();
        let mut got = [0; 3];
        let mut out: Vec<Forward> = vec![];
        for f in range {
            let now = self.t0 + FRAME * f;
            if let Some(e) = estimate.filter(|_| f % 8 == 0) {
                self.r.set_egress_budget(VIEWER, e, now);
            }
            self.r.reallocate(now);
            let sizes: &[usize] = if key(f) {
                &[1250; 12]
            } else {
                &[1100, 1100, 1000]
            };
            for (i, len) in sizes.iter().enumerate() {
                self.seq += 1;
                let pkt = IncomingRtp {
                    track: self.track,
                    source: 100,
                    seq: self.seq,
                    ts: f * 3000,
                    pt: 96,
                    audio_level: None,
                    layer: 0,
                    keyframe: (key(f) && i == 0).then_some(KeyframeStart {
                        width: 640,
                        height: 480,
                    }),
                    payload_len: *len,
                    vp8: None,
                };
                self.r.on_rtp(&pkt, now, &mut out);
                for o in &out {
                    got[o.subscriber.0 as usize] += 1;
                }
            }
            while self.r.pop_keyframe_request().is_some() {}
        }
        got
    }
}

#[test]
fn a_join_storm_of_keyframes_does_not_pause_a_video_the_link_carries() {
    let mut s = Stream::new();
    // 1.2 Mbit/s carries the 800 kbit/s camera with room to spare.
    let estimate = 1_200_000;
    let steady = s.frames(0..60, estimate, |f| f == 0)[1];
    assert_eq!(steady, 3 * 59 + 12, "the video flows before the joins");
    // 50 viewers joining at 15 a second, each keyframe request obeyed: every other frame is
    // a keyframe for 4 s (the load tester's publisher; ~2.4 Mbit/s counted byte by byte).
    // PAUSE_AFTER (2.5 s) runs out inside the storm if the storm is taken for the layer's
    // cost.
    let storm = s.frames(60..180, estimate, |f| f % 2 == 0)[1];
    assert_eq!(
        storm,
        60 * 12 + 60 * 3,
        "every packet of the storm reached the viewer"
    );
    let after = s.frames(180..240, estimate, |_| false)[1];
    assert_eq!(after, 60 * 3, "and the video goes on after it");
    assert!(!s.r.paused_for_bandwidth(VIEWER));
}

#[test]
fn a_link_too_thin_for_the_video_still_pauses_it() {
    let mut s = Stream::new();
    s.frames(0..60, 1_200_000, |f| f == 0);
    // 400 kbit/s cannot carry an 800 kbit/s camera: paused after PAUSE_AFTER, storm or not.
    s.frames(60..180, 400_000, |f| f % 2 == 0);
    assert!(s.r.paused_for_bandwidth(VIEWER));
    assert_eq!(s.frames(180..210, 400_000, |_| false)[1], 0);
}

#[test]
fn a_video_flowing_before_the_first_estimate_is_not_frozen_by_a_low_one() {
    let mut s = Stream::new();
    // Forwarded from its keyframe on, before the subscriber's estimator has said anything
    // (long enough for the layer's rate to be measured).
    assert_eq!(s.frames(0..40, None, |f| f == 0)[1], 12 + 39 * 3);
    // The first estimates are str0m's initial guess and what its first probes found: short
    // of the camera for a second, then the link's real size.
    let early = s.frames(40..70, 500_000, |_| false)[1];
    let found = s.frames(70..130, 3_000_000, |_| false)[1];
    assert_eq!(
        early + found,
        90 * 3,
        "no frame of the flowing video was held back"
    );
    assert!(!s.r.paused_for_bandwidth(VIEWER));
}

#[test]
fn a_video_not_started_yet_waits_until_it_fits() {
    let mut s = Stream::new();
    s.frames(0..40, 1_200_000, |f| f == 0);
    // A viewer joins a stream whose cost is known, and its first estimate comes before the
    // video's first packet reaches it: too short, so the video does not start.
    let now = s.t0 + FRAME * 40;
    s.join(LATE, now);
    s.r.set_egress_budget(LATE, 500_000, now);
    assert_eq!(s.frames(40..70, 1_200_000, |f| f == 45)[LATE.0 as usize], 0);
    assert!(s.r.paused_for_bandwidth(LATE));
}
