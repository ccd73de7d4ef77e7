//! Viewer slots (WHEP): one fixed m-line per kind, pointed at one track after another
//! without renegotiation.

use super::keyframe::KeyframeStart;
use super::router::*;
use crate::api::{TrackKind, VideoSubscription};
use std::time::{Duration, Instant};
use str0m::media::Mid;

const VIEWER: PeerKey = PeerKey(9);

fn rtp(track: TrackKey, source: u32, seq: u64, keyframe: bool) -> IncomingRtp {
    IncomingRtp {
        track,
        source,
        seq,
        ts: (seq as u32) * 3000,
        pt: 96,
        audio_level: None,
        layer: 0,
        keyframe: keyframe.then(KeyframeStart::default),
        payload_len: 1000,
        vp8: None,
    }
}

/// Two publishers (0 and 1) of one video and one audio track each, and a viewer with a
/// video and an audio slot.
fn room() -> (
    Router,
    [TrackKey; 2],
    [TrackKey; 2],
    [DowntrackKey; 2],
    Instant,
) {
    let now = Instant::now();
    let mut r = Router::new(Duration::from_millis(500));
    for p in 0..2 {
        r.add_participant(PeerKey(p), "room", Some(VideoSubscription::Auto));
    }
    let mut video = [TrackKey(0); 2];
    let mut audio = [TrackKey(0); 2];
    for p in 0..2u32 {
        video[p as usize] = r
            .add_track(
                PeerKey(p),
                Mid::from("v"),
                TrackKind::Video,
                90_000,
                false,
                1,
            )
            .unwrap();
        audio[p as usize] = r
            .add_track(
                PeerKey(p),
                Mid::from("a"),
                TrackKind::Audio,
                48_000,
                false,
                1,
            )
            .unwrap();
    }
    for s in 0..2 {
        let keys: Vec<_> = r
            .downtracks_of(PeerKey(s))
            .iter()
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            r.mark_offered(k, Mid::from("s"));
            r.activate(k, vec![(96, 100)], now);
        }
    }
    r.add_participant(VIEWER, "room", None);
    r.mark_viewer(VIEWER);
    let v = r
        .add_viewer_slot(VIEWER, TrackKind::Video, Mid::from("1"))
        .unwrap();
    let a = r
        .add_viewer_slot(VIEWER, TrackKind::Audio, Mid::from("0"))
        .unwrap();
    (r, video, audio, [v, a], now)
}

fn to_viewer(r: &mut Router, packet: IncomingRtp, now: Instant) -> Option<Forward> {
    let mut out = vec![];
    r.on_rtp(&packet, now, &mut out);
    out.into_iter().find(|f| f.subscriber == VIEWER)
}

#[test]
fn a_viewer_is_never_offered_the_room() {
    let (mut r, ..) = room();
    assert!(!r.take_needs_negotiation().contains(&VIEWER));
    assert!(r
        .downtracks_of(VIEWER)
        .iter()
        .all(|(_, d)| d.track.is_none()));
}

#[test]
fn video_switches_at_the_new_tracks_keyframe_with_continuous_numbers() {
    let (mut r, video, _, [slot, _], now) = room();
    let kf = r.retarget(slot, Some(video[0]), vec![(96, 100)], now);
    assert_eq!(
        kf.map(|k| k.publisher),
        Some(PeerKey(0)),
        "asks 0 for a keyframe"
    );
    // Nothing before the keyframe (the viewer could not decode it).
    assert_eq!(to_viewer(&mut r, rtp(video[0], 10, 100, false), now), None);
    let first = to_viewer(&mut r, rtp(video[0], 10, 101, true), now).unwrap();
    assert_eq!((first.mid, first.pt), (Mid::from("1"), 100));
    let second = to_viewer(&mut r, rtp(video[0], 10, 102, false), now).unwrap();
    assert_eq!(second.seq, first.seq + 1);

    let kf = r.retarget(slot, Some(video[1]), vec![(96, 101)], now);
    assert_eq!(
        kf.map(|k| k.publisher),
        Some(PeerKey(1)),
        "asks 1 for a keyframe"
    );
    assert_eq!(r.slot_track(slot), Some(video[1]));
    // The old track no longer reaches the viewer; the new one from its keyframe on.
    assert_eq!(to_viewer(&mut r, rtp(video[0], 10, 103, false), now), None);
    assert_eq!(to_viewer(&mut r, rtp(video[1], 20, 5000, false), now), None);
    let switched = to_viewer(&mut r, rtp(video[1], 20, 5001, true), now).unwrap();
    assert_eq!(switched.mid, Mid::from("1"), "same m-line");
    assert_eq!(switched.pt, 101);
    assert_eq!(switched.seq, second.seq + 1, "no gap the viewer would NACK");
    assert!(!r.take_needs_negotiation().contains(&VIEWER));
}

#[test]
fn audio_switches_at_once_and_a_gone_track_leaves_the_slot_empty() {
    let (mut r, _, audio, [_, slot], now) = room();
    assert_eq!(r.retarget(slot, Some(audio[0]), vec![(96, 111)], now), None);
    let a = to_viewer(&mut r, rtp(audio[0], 30, 7, false), now).unwrap();
    r.retarget(slot, Some(audio[1]), vec![(96, 111)], now);
    let b = to_viewer(&mut r, rtp(audio[1], 40, 900, false), now).unwrap();
    assert_eq!((b.mid, b.seq), (a.mid, a.seq + 1));
    // A retarget to the track shown already changes nothing.
    r.retarget(slot, Some(audio[1]), vec![(96, 111)], now);
    assert_eq!(
        to_viewer(&mut r, rtp(audio[1], 40, 901, false), now)
            .unwrap()
            .seq,
        b.seq + 1
    );

    r.remove_track(audio[1]);
    assert_eq!(r.slot_track(slot), None);
    assert!(
        !r.take_needs_negotiation().contains(&VIEWER),
        "the m-line stays"
    );
    // A slot never takes a track of the other kind or the viewer's own.
    let (mut r, video, _, [_, slot], now) = room();
    r.retarget(slot, Some(video[0]), vec![], now);
    assert_eq!(r.slot_track(slot), None);
}

#[test]
fn a_removed_viewer_leaves_no_copy_behind() {
    let (mut r, video, _, [slot, _], now) = room();
    r.retarget(slot, Some(video[0]), vec![(96, 100)], now);
    r.remove_participant(VIEWER);
    let mut out = vec![];
    r.on_rtp(&rtp(video[0], 10, 1, true), now, &mut out);
    assert!(out.iter().all(|f| f.subscriber != VIEWER));
    assert_eq!(out.len(), 1, "publisher 1 still receives");
}
