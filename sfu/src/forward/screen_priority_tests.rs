//! A screen share under a short bandwidth estimate or an overloaded worker: it is what a class
//! looks at, so it keeps flowing while the cameras pause.

use std::time::{Duration, Instant};

use str0m::media::Mid;

use super::layer_selector::Want;
use super::overload::Shedding;
use super::router::{IncomingRtp, Router};
use super::{Forward, PeerKey, TrackKey};
use crate::api::{TrackKind, TrackSource, VideoSubscription};

const TEACHER: PeerKey = PeerKey(0);
const STUDENT: PeerKey = PeerKey(1);
const VIEWER: PeerKey = PeerKey(2);
const FRAME: Duration = Duration::from_millis(33);

struct Class {
    r: Router,
    t0: Instant,
    /// (track, packets per frame, next seq)
    tracks: Vec<(TrackKey, u64, u64)>,
}

impl Class {
    /// The teacher publishes a camera and then a screen share, a student a camera; the viewer
    /// receives all three on m-lines named after them.
    fn new() -> (Self, [TrackKey; 3]) {
        let t0 = Instant::now();
        let mut r = Router::new(Duration::from_millis(500));
        for p in [TEACHER, STUDENT, VIEWER] {
            r.add_participant(p, "class", Some(VideoSubscription::Auto));
        }
        let video = |r: &mut Router, p, mid| {
            r.add_track(p, Mid::from(mid), TrackKind::Video, 90_000, false, 1)
                .unwrap()
        };
        let teacher_cam = video(&mut r, TEACHER, "1");
        let student_cam = video(&mut r, STUDENT, "1");
        let screen = video(&mut r, TEACHER, "2");
        r.set_source(teacher_cam, TrackSource::Camera);
        r.set_source(student_cam, TrackSource::Camera);
        r.set_source(screen, TrackSource::Screen);
        for (k, track) in r
            .downtracks_of(VIEWER)
            .into_iter()
            .map(|(k, d)| (k, d.track))
            .collect::<Vec<_>>()
        {
            let mid = match track {
                Some(t) if t == screen => "screen",
                Some(t) if t == teacher_cam => "teacher",
                _ => "student",
            };
            r.mark_offered(k, Mid::from(mid));
            r.activate(k, vec![(96, 96)], t0);
        }
        // 1 kB packets at 30 fps: a camera sends 240 kbit/s, the screen 480 kbit/s.
        let tracks = vec![
            (teacher_cam, 1, 0),
            (screen, 2, 10_000),
            (student_cam, 1, 20_000),
        ];
        (Class { r, t0, tracks }, [teacher_cam, screen, student_cam])
    }

    fn at(&self, frame: u32) -> Instant {
        self.t0 + FRAME * frame
    }

    /// Frames on every track; returns the m-lines of what reached the viewer.
    fn frames(&mut self, range: std::ops::Range<u32>) -> Vec<Mid> {
        let mut got = vec![];
        let mut out: Vec<Forward> = vec![];
        for f in range {
            let now = self.at(f);
            // As the worker does: every subscriber with an estimate, every 250 ms.
            self.r.reallocate(now);
            for (i, (track, per_frame, seq)) in self.tracks.iter_mut().enumerate() {
                for _ in 0..*per_frame {
                    *seq += 1;
                    let pkt = IncomingRtp {
                        track: *track,
                        source: 100 + i as u32,
                        seq: *seq,
                        ts: f * 3000,
                        pt: 96,
                        audio_level: None,
                        layer: 0,
                        keyframe: None,
                        payload_len: 1000,
                        vp8: None,
                    };
                    self.r.on_rtp(&pkt, now, &mut out);
                    got.extend(out.iter().filter(|o| o.subscriber == VIEWER).map(|o| o.mid));
                }
            }
            while self.r.pop_keyframe_request().is_some() {}
        }
        got
    }
}

fn count(got: &[Mid], mid: &str) -> usize {
    got.iter().filter(|m| **m == Mid::from(mid)).count()
}

#[test]
fn a_screen_share_keeps_flowing_while_cameras_pause_for_bandwidth() {
    let (mut class, _) = Class::new();
    // Measure every track's bitrate first, with nothing capped.
    let got = class.frames(0..40);
    assert_eq!(count(&got, "teacher"), 40);
    assert_eq!(count(&got, "screen"), 80);
    assert_eq!(count(&got, "student"), 40);

    // 600 kbit/s: the screen (480k) fits, and then no camera (240k each) does. In plain
    // publish order the teacher's camera would have gone first and crowded the screen out.
    // The cameras were flowing: they pause once PAUSE_AFTER has run out (see
    // `downtrack_layers::apply_budget`).
    class.r.set_egress_budget(VIEWER, 600_000, class.at(40));
    class.frames(40..130);
    let got = class.frames(130..150);
    assert_eq!(count(&got, "screen"), 40, "the screen share is kept whole");
    assert_eq!(count(&got, "teacher"), 0, "cameras pause first");
    assert_eq!(count(&got, "student"), 0);

    // Room for one camera more (with the headroom an upgrade needs): the oldest camera
    // comes back, the screen stays.
    // An upgrade waits until the room lasted a second (a probe's overshoot is not room).
    class.r.set_egress_budget(VIEWER, 1_000_000, class.at(150));
    assert_eq!(count(&class.frames(150..170), "teacher"), 0);
    class.frames(170..200);
    let got = class.frames(200..210);
    assert_eq!(count(&got, "screen"), 20);
    assert_eq!(count(&got, "teacher"), 10);
    assert_eq!(count(&got, "student"), 0);
}

#[test]
fn without_a_screen_share_cameras_share_the_budget_in_publish_order() {
    let (mut class, [_, screen, _]) = Class::new();
    // The same room with the screen declared as a camera: the first camera wins instead.
    class.r.set_source(screen, TrackSource::Camera);
    class.frames(0..40);
    class.r.set_egress_budget(VIEWER, 600_000, class.at(40));
    class.frames(40..130);
    let got = class.frames(130..150);
    assert_eq!(count(&got, "teacher"), 20);
    assert_eq!(count(&got, "screen"), 0);
    assert_eq!(count(&got, "student"), 20);
}

#[test]
fn an_overloaded_worker_sheds_thumbnails_then_cameras_but_never_the_screen() {
    let (mut class, [teacher_cam, _, student_cam]) = Class::new();
    let size = |width, height| Want::Size { width, height };
    class.r.set_want(VIEWER, teacher_cam, size(1280, 720));
    class.r.set_want(VIEWER, student_cam, size(320, 180));
    let got = class.frames(0..10);
    assert_eq!(count(&got, "student"), 10);

    class.r.set_shedding(Shedding::Thumbnails);
    let got = class.frames(10..20);
    assert_eq!(count(&got, "student"), 0, "the thumbnail goes first");
    assert_eq!(count(&got, "teacher"), 10, "the main view stays");
    assert_eq!(count(&got, "screen"), 20);

    class.r.set_shedding(Shedding::Cameras);
    let got = class.frames(20..30);
    assert_eq!(count(&got, "teacher"), 0);
    assert_eq!(count(&got, "screen"), 20, "a screen share is never shed");

    // Load gone: the thumbnail resumes at once and asks its publisher for a keyframe, since
    // the viewer's decoder missed frames.
    class.r.set_shedding(Shedding::None);
    let mut out = vec![];
    let resumed = IncomingRtp {
        track: student_cam,
        source: 102,
        seq: 30_000,
        ts: 30 * 3000,
        pt: 96,
        audio_level: None,
        layer: 0,
        keyframe: None,
        payload_len: 1000,
        vp8: None,
    };
    class.r.on_rtp(&resumed, class.at(30), &mut out);
    assert!(out
        .iter()
        .any(|o| o.subscriber == VIEWER && o.mid == Mid::from("student")));
    let request = class.r.pop_keyframe_request();
    assert_eq!(request.map(|r| r.publisher), Some(STUDENT));
}
