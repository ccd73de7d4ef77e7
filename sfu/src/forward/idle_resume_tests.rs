//! The first seconds after a long-parked subscriber gets media again: a publisher silent for
//! a minute (its subscriber connection parked, `idle_egress`) starts sending, and the
//! subscriber must see the layer its link carried before, from the first keyframe, although
//! str0m's averaged estimate still remembers the parked zero. Driven through the router and
//! `IdleEgress` the way the worker drives them (`edge/worker.rs` for estimate events,
//! `edge/worker/bandwidth.rs` for stats, `edge/worker/forwarding.rs` for the resume).
//! On a clean link two things keep the averaged zero out of the allocation: `IdleEgress`'s
//! hold, and the downlink monitor's clean raw estimate (`SubscriberBudget::estimate_bps`);
//! either alone passes this test, which checks what the viewer sees, not which of them did it.

use std::time::{Duration, Instant};

use super::downlink_monitor::DownlinkSample;
use super::idle_egress::{IdleEgress, IDLE_AFTER, RESUME_HOLD};
use super::layer_selector::Want;
use super::simulcast_tests::{Room, FRAME, LARGE};

/// str0m's stats interval on subscriber connections (`edge::connection`).
const STATS: Duration = Duration::from_millis(250);
/// str0m's estimate events come about once a second.
const EVENT: Duration = Duration::from_secs(1);
/// What the link carries: every layer (240 + 480 + 720 kbit/s) and audio fit.
const LINK_BPS: u64 = 3_000_000;

/// The worker's side of one subscriber connection, over simulated time.
struct Driver {
    idle: IdleEgress,
    /// str0m's raw estimate: the link's, or zero while parked (the estimator was reset to
    /// zero), and the parked value again from the resume.
    raw_bps: u64,
    /// What str0m's averaged estimate events carry.
    event_bps: u64,
    next_stats: Instant,
    next_event: Instant,
    bytes_sent: u64,
    resumed_at: Option<Instant>,
}

impl Driver {
    fn new(t0: Instant) -> Self {
        Driver {
            idle: IdleEgress::default(),
            raw_bps: LINK_BPS,
            event_bps: LINK_BPS,
            next_stats: t0,
            next_event: t0,
            bytes_sent: 0,
            resumed_at: None,
        }
    }

    /// Everything due up to `now`: stats, estimate events, the allocation round.
    fn run_until(&mut self, room: &mut Room, now: Instant) {
        while self.next_stats <= now {
            let t = self.next_stats;
            self.next_stats += STATS;
            self.idle.on_raw_estimate(self.raw_bps);
            let allocated_on = room.r.egress_estimate(LARGE);
            let paused = room.r.paused_for_bandwidth(LARGE);
            if self.idle.tick(t, allocated_on, paused) {
                self.raw_bps = 0;
            }
            if !self.idle.is_parked() {
                let sample = DownlinkSample {
                    estimate_bps: Some(self.raw_bps),
                    loss: Some(0.0),
                    rtt: Some(Duration::from_millis(30)),
                    bytes_sent: self.bytes_sent,
                };
                room.r.downlink_sample(LARGE, sample, t);
            }
        }
        while self.next_event <= now {
            let t = self.next_event;
            self.next_event += EVENT;
            if let Some(e) = self.idle.estimate_for_allocation(self.event_bps, t) {
                room.r.set_egress_budget(LARGE, e, t);
            }
        }
        room.r.reallocate(now);
    }

    /// Media is written to the connection at `now` (the worker calls this before each
    /// packet): a parked connection restarts its estimator.
    fn media(&mut self, packets: usize, now: Instant) {
        for _ in 0..packets {
            if let Some(from) = self.idle.on_media(now) {
                self.raw_bps = from;
                self.resumed_at = Some(now);
            }
            self.bytes_sent += 1000;
        }
    }
}

/// Frames `range` on all three layers, keyframes where `key`; returns the packets LARGE
/// received per frame.
fn flow(room: &mut Room, d: &mut Driver, range: std::ops::Range<u32>, key: &[u32]) -> Vec<usize> {
    let mut per_frame = vec![];
    for f in range {
        let now = room.at(f);
        d.run_until(room, now);
        let keys: &[u8] = if key.contains(&f) { &[0, 1, 2] } else { &[] };
        room.frame(f, &[0, 1, 2], keys);
        let got = room.take(LARGE).len();
        d.media(got, now);
        per_frame.push(got);
    }
    per_frame
}

#[test]
fn video_comes_back_on_the_top_layer_after_a_minute_parked() {
    let mut room = Room::new();
    room.want(LARGE, Want::Highest);
    let mut d = Driver::new(room.at(0));
    // Ten seconds of all layers: the top one (3 packets a frame) reaches LARGE.
    let before = flow(&mut room, &mut d, 0..300, &[0]);
    assert!(
        before[30..].iter().all(|&n| n == 3),
        "not on layer 2: {before:?}"
    );

    // The publisher goes silent for a minute: the connection is parked within IDLE_AFTER
    // and one stats interval, and str0m's estimate events fall to nothing meanwhile.
    let silent_from = room.at(300);
    let resume = 300 + (Duration::from_secs(60).as_millis() / FRAME.as_millis()) as u32;
    d.event_bps = 0;
    d.run_until(&mut room, silent_from + IDLE_AFTER + STATS);
    assert!(
        d.idle.is_parked(),
        "not parked after {IDLE_AFTER:?} without media"
    );
    let before_resume = room.at(resume) - FRAME;
    d.run_until(&mut room, before_resume);
    assert!(d.idle.is_parked());

    // Media again, from a keyframe on every layer. str0m's events average the parked zeros
    // for their 3 s window: room for layer 0 only, were they believed.
    d.event_bps = 400_000;
    room.keyframe_requests.clear();
    let hold_frames = (RESUME_HOLD.as_millis() / FRAME.as_millis()) as u32;
    let after = flow(&mut room, &mut d, resume..resume + hold_frames, &[resume]);
    assert_eq!(
        d.resumed_at,
        Some(room.at(resume)),
        "resumed by the first packet"
    );
    // The first frame climbs through the layers' keyframes as they arrive (the selector
    // saw no layer for a minute): 1 + 2 + 3 packets, ending on the top one. From then on,
    // layer 2 only.
    assert!(
        after[0] == 3 || after[0] == 6,
        "first frame after the resume: {} packets",
        after[0]
    );
    assert!(
        after[1..].iter().all(|&n| n == 3),
        "not on layer 2 from the first frame after the resume: {after:?}"
    );
    assert!(room.r.take_bandwidth_pauses().is_empty(), "video paused");
    // A cut to a lower layer would show as a keyframe request for it (the switch waits for
    // that layer's keyframe).
    let cuts: Vec<_> = room
        .keyframe_requests
        .iter()
        .filter(|k| k.layer.is_some_and(|l| l < 2))
        .collect();
    assert!(
        cuts.is_empty(),
        "the allocation cut LARGE after the resume: {cuts:?}"
    );

    // Past the hold the events are the link's again: still the top layer.
    d.event_bps = LINK_BPS;
    let settled = flow(
        &mut room,
        &mut d,
        resume + hold_frames..resume + hold_frames + 90,
        &[],
    );
    assert!(settled.iter().all(|&n| n == 3), "{settled:?}");
}
