//! Subscription tests: which tracks reach a subscriber without asking. A class of 200 where
//! every join renegotiates every student with ~400 m-lines is O(N^2) SDP per join; these
//! tests pin the rules that keep a join at one renegotiation.

use super::layer_selector::Want;
use super::router::*;
use crate::api::{TrackKind, TrackSource, VideoSubscription};
use std::time::{Duration, Instant};
use str0m::media::Mid;

const AUTO: Option<VideoSubscription> = Some(VideoSubscription::Auto);
const ON_DEMAND: Option<VideoSubscription> = Some(VideoSubscription::OnDemand);
const THUMB: Want = Want::Size {
    width: 320,
    height: 180,
};

fn publish(r: &mut Router, p: u32, kind: TrackKind, source: TrackSource, muted: bool) -> TrackKey {
    let (mid, clock) = match kind {
        TrackKind::Audio => ("0", 48_000),
        TrackKind::Video => ("1", 90_000),
    };
    let key = r
        .add_track(PeerKey(p), Mid::from(mid), kind, clock, muted, 1)
        .expect("publisher is a member");
    r.set_source(key, source);
    key
}

/// Which publishers' tracks of `kind` subscriber `s` has a live (not closing) copy of.
fn copies(r: &Router, s: u32, kind: TrackKind) -> Vec<u32> {
    let mut v: Vec<u32> = r
        .downtracks_of(PeerKey(s))
        .into_iter()
        .filter(|(_, d)| d.kind == kind && !matches!(d.state, DowntrackState::Closing(_)))
        .map(|(_, d)| d.publisher.0)
        .collect();
    v.sort();
    v
}

#[test]
fn a_track_published_muted_reaches_subscribers_on_its_first_unmute() {
    let now = Instant::now();
    let mut r = Router::new(Duration::from_millis(500));
    for p in 0..3 {
        r.add_participant(PeerKey(p), "class", AUTO);
    }
    let mic = publish(&mut r, 0, TrackKind::Audio, TrackSource::Microphone, true);
    assert!(copies(&r, 1, TrackKind::Audio).is_empty());
    assert!(
        r.take_needs_negotiation().is_empty(),
        "a muted microphone must cost nobody a renegotiation"
    );
    // A late joiner does not get it either.
    r.add_participant(PeerKey(3), "class", AUTO);
    assert!(copies(&r, 3, TrackKind::Audio).is_empty());

    r.set_muted(mic, false, now);
    for s in 1..4 {
        assert_eq!(copies(&r, s, TrackKind::Audio), vec![0], "subscriber {s}");
    }
    let mut renegotiate = r.take_needs_negotiation();
    renegotiate.sort();
    assert_eq!(renegotiate, vec![PeerKey(1), PeerKey(2), PeerKey(3)]);

    // Muting again keeps the m-lines (no renegotiation churn); so does a second unmute.
    r.set_muted(mic, true, now);
    r.set_muted(mic, false, now);
    assert!(r.take_needs_negotiation().is_empty());
    assert_eq!(copies(&r, 2, TrackKind::Audio), vec![0]);
}

#[test]
fn on_demand_subscriber_gets_audio_and_screens_but_cameras_only_when_asked() {
    let mut r = Router::new(Duration::from_millis(500));
    r.add_participant(PeerKey(0), "class", AUTO); // teacher
    r.add_participant(PeerKey(1), "class", AUTO); // student publishing
    let _ = publish(&mut r, 0, TrackKind::Audio, TrackSource::Microphone, false);
    let teacher_cam = publish(&mut r, 0, TrackKind::Video, TrackSource::Camera, false);
    let _screen = publish(&mut r, 0, TrackKind::Video, TrackSource::Screen, false);
    let student_cam = publish(&mut r, 1, TrackKind::Video, TrackSource::Camera, false);
    r.take_needs_negotiation();

    r.add_participant(PeerKey(2), "class", ON_DEMAND);
    let video_of = |r: &Router| {
        let mut v: Vec<(u32, TrackSource)> = r
            .downtracks_of(PeerKey(2))
            .into_iter()
            .filter(|(_, d)| d.kind == TrackKind::Video)
            .filter_map(|(_, d)| Some((d.publisher.0, r.track(d.track?)?.source)))
            .collect();
        v.sort_by_key(|(p, s)| (*p, *s as u8));
        v
    };
    assert_eq!(copies(&r, 2, TrackKind::Audio), vec![0]);
    assert_eq!(
        video_of(&r),
        vec![(0, TrackSource::Screen)],
        "only the screen share comes unasked"
    );

    // Pausing a video it does not receive subscribes nothing.
    assert_eq!(
        r.set_want(PeerKey(2), student_cam, Want::Paused),
        WantOutcome::Ignored
    );
    r.take_needs_negotiation();
    assert_eq!(
        r.set_want(PeerKey(2), teacher_cam, Want::Highest),
        WantOutcome::Subscribed
    );
    assert_eq!(
        r.set_want(PeerKey(2), student_cam, THUMB),
        WantOutcome::Subscribed
    );
    assert_eq!(r.take_needs_negotiation(), vec![PeerKey(2)]);
    assert_eq!(video_of(&r).len(), 3);
    // The requested size is kept for the new copy; asking again only updates it.
    assert_eq!(
        r.set_want(PeerKey(2), student_cam, Want::Paused),
        WantOutcome::Applied
    );
    assert!(
        r.take_needs_negotiation().is_empty(),
        "pausing keeps the m-line"
    );

    // Its own camera, or one in another room, is never subscribed.
    r.add_participant(PeerKey(9), "other", AUTO);
    let elsewhere = publish(&mut r, 9, TrackKind::Video, TrackSource::Camera, false);
    assert_eq!(
        r.set_want(PeerKey(2), elsewhere, THUMB),
        WantOutcome::Ignored
    );
    let own = publish(&mut r, 2, TrackKind::Video, TrackSource::Camera, false);
    assert_eq!(r.set_want(PeerKey(2), own, THUMB), WantOutcome::Ignored);
    // Without the right to subscribe, asking does nothing.
    r.add_participant(PeerKey(3), "class", None);
    assert_eq!(
        r.set_want(PeerKey(3), teacher_cam, THUMB),
        WantOutcome::Ignored
    );
    assert!(r.downtracks_of(PeerKey(3)).is_empty());
}

/// The classroom: a teacher with camera and microphone, then students joining one by one,
/// each with a camera and a muted microphone, all on-demand. A join must renegotiate only the
/// joiner, and each student holds teacher + requested m-lines, not one per classmate.
#[test]
fn a_class_join_renegotiates_only_the_joiner() {
    let mut r = Router::new(Duration::from_millis(500));
    r.add_participant(PeerKey(0), "class", ON_DEMAND);
    let _ = publish(&mut r, 0, TrackKind::Audio, TrackSource::Microphone, false);
    let teacher_cam = publish(&mut r, 0, TrackKind::Video, TrackSource::Camera, false);
    let mut cams = vec![];
    for s in 1..=200 {
        r.add_participant(PeerKey(s), "class", ON_DEMAND);
        let _ = publish(&mut r, s, TrackKind::Audio, TrackSource::Microphone, true);
        cams.push(publish(
            &mut r,
            s,
            TrackKind::Video,
            TrackSource::Camera,
            false,
        ));
        r.set_want(PeerKey(s), teacher_cam, Want::Highest);
        // The first four students are everyone's thumbnails.
        for &cam in cams.iter().take(4) {
            r.set_want(PeerKey(s), cam, THUMB);
        }
        assert_eq!(
            r.take_needs_negotiation(),
            vec![PeerKey(s)],
            "student {s}'s join renegotiated someone else"
        );
    }
    let m_lines = r.downtracks_of(PeerKey(150)).len();
    assert_eq!(m_lines, 1 + 1 + 4, "teacher audio + camera + 4 thumbnails");
    assert_eq!(copies(&r, 0, TrackKind::Video), Vec::<u32>::new());
}
