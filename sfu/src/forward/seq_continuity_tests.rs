//! Sequence continuity through the router, packet by packet: whatever the router withholds
//! from a subscriber (a muted track, a paused video, the layers it is not on) must not show
//! as a hole in that subscriber's numbering. A receiver that waits for missing packets
//! (aiortc's jitter buffer) freezes for seconds on such a hole, keyframe or not. Loss on the
//! publisher's network must still show, so the subscriber asks for it again.

use std::time::{Duration, Instant};

use str0m::media::Mid;

use super::keyframe::KeyframeStart;
use super::layer_selector::Want;
use super::router::{IncomingRtp, Router, WantOutcome};
use super::{Forward, PeerKey, TrackKey};
use crate::api::{TrackKind, VideoSubscription};

const PUBLISHER: PeerKey = PeerKey(0);
const VIEWER: PeerKey = PeerKey(1);
const FRAME: Duration = Duration::from_millis(33);
const TICKS_PER_FRAME: u32 = 2970;
const AUDIO_PACKET: Duration = Duration::from_millis(20);

/// One publisher with a video track of `layers` simulcast layers and an audio track, one
/// viewer with both negotiated. The publisher's numbering starts far from the viewer's.
struct Call {
    r: Router,
    video: TrackKey,
    audio: TrackKey,
    t0: Instant,
    next_video_seq: [u64; 3],
    next_audio_seq: u64,
    video_out: Vec<Forward>,
    audio_out: Vec<Forward>,
}

impl Call {
    fn new(layers: usize) -> Self {
        let t0 = Instant::now();
        let mut r = Router::new(Duration::from_millis(500));
        r.add_participant(PUBLISHER, "r", Some(VideoSubscription::Auto));
        r.add_participant(VIEWER, "r", Some(VideoSubscription::Auto));
        let video = r
            .add_track(
                PUBLISHER,
                Mid::from("1"),
                TrackKind::Video,
                90_000,
                false,
                layers,
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
        for (k, track) in r
            .downtracks_of(VIEWER)
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
            r.activate(k, vec![pt], t0);
        }
        Call {
            r,
            video,
            audio,
            t0,
            next_video_seq: [40_000, 50_000, 60_000],
            next_audio_seq: 7_000,
            video_out: vec![],
            audio_out: vec![],
        }
    }

    fn at(&self, frame: u32) -> Instant {
        self.t0 + FRAME * frame
    }

    /// Input sequence numbers of `layer` the publisher's network loses: the next `n` are
    /// skipped without reaching the router.
    fn lose(&mut self, layer: u8, n: u64) {
        self.next_video_seq[usize::from(layer)] += n;
    }

    /// One video frame of 3 packets per layer, keyframes on `key`; and its audio.
    fn frame(&mut self, frame: u32, layers: &[u8], key: &[u8]) {
        let now = self.at(frame);
        let mut out = vec![];
        for &layer in layers {
            for i in 0..3 {
                let l = usize::from(layer);
                let seq = self.next_video_seq[l];
                self.next_video_seq[l] += 1;
                let keyframe = (i == 0 && key.contains(&layer)).then_some(KeyframeStart {
                    width: 320 << layer,
                    height: 180 << layer,
                });
                let pkt = IncomingRtp {
                    track: self.video,
                    source: 100 + u32::from(layer),
                    seq,
                    ts: (frame * TICKS_PER_FRAME).wrapping_add(u32::from(layer) * 55_555),
                    pt: 96,
                    audio_level: None,
                    layer,
                    keyframe,
                    payload_len: 1000,
                    vp8: None,
                };
                self.r.on_rtp(&pkt, now, &mut out);
                self.video_out.extend(out.iter().copied());
            }
        }
        while self.r.pop_keyframe_request().is_some() {}
        // Audio at 50 packets/s: the packets falling into this frame's 33 ms.
        let audio_until = now + FRAME;
        while self.t0 + AUDIO_PACKET * (self.next_audio_seq - 7_000) as u32 <= audio_until {
            let n = self.next_audio_seq - 7_000;
            let pkt = IncomingRtp {
                track: self.audio,
                source: 7,
                seq: self.next_audio_seq,
                ts: (n * 960) as u32,
                pt: 111,
                audio_level: Some(-30),
                layer: 0,
                keyframe: None,
                payload_len: 80,
                vp8: None,
            };
            self.next_audio_seq += 1;
            self.r
                .on_rtp(&pkt, self.t0 + AUDIO_PACKET * n as u32, &mut out);
            self.audio_out.extend(out.iter().copied());
        }
    }

    fn frames(&mut self, range: std::ops::Range<u32>, layers: &[u8], key_at_start: &[u8]) {
        let start = range.start;
        for f in range {
            let key = if f == start { key_at_start } else { &[] };
            self.frame(f, layers, key);
        }
    }

    fn mute(&mut self, track: TrackKey, muted: bool, frame: u32) {
        let now = self.at(frame);
        self.r.set_muted(track, muted, now);
    }

    fn want(&mut self, want: Want) {
        assert_eq!(
            self.r.set_want(VIEWER, self.video, want),
            WantOutcome::Applied
        );
    }
}

/// Every packet continues the last one: no hole the receiver would wait for, and a
/// timestamp that moves forward by about the time that passed.
fn assert_continuous(what: &str, packets: &[Forward], clock_rate: u32) {
    assert!(!packets.is_empty(), "{what}: nothing forwarded");
    for w in packets.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "{what}: sequence jumps from {} to {}",
            w[0].seq,
            w[1].seq
        );
        let dt = w[1].ts.wrapping_sub(w[0].ts);
        assert!(
            dt < 10 * clock_rate,
            "{what}: timestamp ran backwards or leapt: {} -> {}",
            w[0].ts,
            w[1].ts
        );
    }
}

/// Timestamp advance from `a` to `b`, in seconds.
fn ts_seconds(a: &Forward, b: &Forward, clock_rate: u32) -> f64 {
    f64::from(b.ts.wrapping_sub(a.ts)) / f64::from(clock_rate)
}

#[test]
fn unmuted_video_and_audio_continue_where_they_stopped() {
    let mut call = Call::new(1);
    call.frames(0..30, &[0], &[0]);
    let (video_before, audio_before) = (call.video_out.len(), call.audio_out.len());
    assert_eq!(video_before, 90);

    // Muted for 3 s: the publisher keeps sending (a browser sends black frames and silence
    // for a disabled track), the router forwards none of it.
    call.mute(call.video, true, 30);
    call.mute(call.audio, true, 30);
    call.frames(30..120, &[0], &[]);
    assert_eq!(
        call.video_out.len(),
        video_before,
        "muted video is not forwarded"
    );
    assert_eq!(
        call.audio_out.len(),
        audio_before,
        "muted audio is not forwarded"
    );

    call.mute(call.video, false, 120);
    call.mute(call.audio, false, 120);
    call.frames(120..150, &[0], &[0]);
    assert_continuous("video across a mute", &call.video_out, 90_000);
    assert_continuous("audio across a mute", &call.audio_out, 48_000);
    // The first packet after the mute is about 3 s later than the last one before it.
    let gap = ts_seconds(
        &call.video_out[video_before - 1],
        &call.video_out[video_before],
        90_000,
    );
    assert!(
        (2.5..3.5).contains(&gap),
        "video time across the mute: {gap} s"
    );
    let gap = ts_seconds(
        &call.audio_out[audio_before - 1],
        &call.audio_out[audio_before],
        48_000,
    );
    assert!(
        (2.5..3.5).contains(&gap),
        "audio time across the mute: {gap} s"
    );
}

#[test]
fn unmuted_simulcast_video_continues_where_it_stopped() {
    let mut call = Call::new(3);
    call.want(Want::Highest);
    call.frames(0..10, &[0, 1, 2], &[0, 1, 2]);
    let before = call.video_out.len();
    assert_eq!(before, 30, "layer 2 only");
    // Half a second: shorter than the time after which a silent layer counts as stopped,
    // so the viewer stays on its layer.
    call.mute(call.video, true, 10);
    call.frames(10..25, &[0, 1, 2], &[]);
    call.mute(call.video, false, 25);
    call.frames(25..35, &[0, 1, 2], &[0, 1, 2]);
    assert!(
        call.video_out.len() > before,
        "forwarded again after the unmute"
    );
    assert_continuous("simulcast video across a mute", &call.video_out, 90_000);
}

#[test]
fn paused_and_resumed_video_continues_where_it_stopped() {
    for layers in [1, 3] {
        let mut call = Call::new(layers);
        call.frames(0..10, &[0, 1, 2][..layers], &[0, 1, 2]);
        let before = call.video_out.len();
        call.want(Want::Paused);
        call.frames(10..60, &[0, 1, 2][..layers], &[0, 1, 2]);
        assert_eq!(call.video_out.len(), before, "paused: nothing forwarded");
        call.want(Want::Highest);
        call.frames(60..70, &[0, 1, 2][..layers], &[0, 1, 2]);
        assert!(call.video_out.len() > before);
        assert_continuous(
            &format!("{layers}-layer video across a pause"),
            &call.video_out,
            90_000,
        );
    }
}

#[test]
fn layer_switches_down_and_up_keep_one_numbering() {
    let mut call = Call::new(3);
    call.want(Want::Highest);
    call.frames(0..10, &[0, 1, 2], &[0, 1, 2]);
    call.want(Want::Size {
        width: 320,
        height: 180,
    });
    // Down to layer 0 at its next keyframe, after a few frames of layer 2.
    call.frames(10..13, &[0, 1, 2], &[]);
    call.frames(13..20, &[0, 1, 2], &[0]);
    call.want(Want::Highest);
    call.frames(20..25, &[0, 1, 2], &[]);
    call.frames(25..30, &[0, 1, 2], &[2]);
    // Layer 2 up to frame 13, layer 0 from 13 to 25 (and in frame 25, whose layer 0
    // packets precede layer 2's keyframe), layer 2 from 25: 31 frames of 3 packets.
    assert_eq!(call.video_out.len(), 31 * 3);
    assert_continuous("video across layer switches", &call.video_out, 90_000);
}

#[test]
fn loss_upstream_still_shows_as_a_gap_after_an_unmute() {
    let mut call = Call::new(1);
    call.frames(0..10, &[0], &[0]);
    // Lost between the publisher and us while forwarding: the viewer must see the hole.
    call.lose(0, 2);
    call.frames(10..12, &[0], &[]);
    let seqs: Vec<u64> = call.video_out.iter().map(|f| f.seq).collect();
    assert_eq!(
        seqs[30] - seqs[29],
        3,
        "a loss of 2 is a gap of 2: {seqs:?}"
    );

    call.mute(call.video, true, 12);
    call.frames(12..40, &[0], &[]);
    call.mute(call.video, false, 40);
    let before = call.video_out.len();
    call.frames(40..42, &[0], &[0]);
    call.lose(0, 1);
    call.frames(42..44, &[0], &[]);
    let seqs: Vec<u64> = call.video_out.iter().map(|f| f.seq).collect();
    assert_eq!(seqs[before] - seqs[before - 1], 1, "no hole for the mute");
    assert_eq!(
        seqs[before + 6] - seqs[before + 5],
        2,
        "a loss after the unmute is a gap again: {seqs:?}"
    );
}
