//! Router tests: fan-out, negotiation states, muting, keyframe-request collapse, speakers.

use super::router::*;
use crate::api::{TrackKind, VideoSubscription};
use std::time::{Duration, Instant};
use str0m::media::Mid;

fn mid(s: &str) -> Mid {
    Mid::from(s)
}

/// Router with `n` participants in one room, each publishing one video track, and every
/// downtrack negotiated (subscriber mid = "s<publisher>").
fn room_of(n: u32) -> (Router, Vec<TrackKey>, Instant) {
    let now = Instant::now();
    let mut r = Router::new(Duration::from_millis(500));
    let mut tracks = vec![];
    for p in 0..n {
        r.add_participant(PeerKey(p), "room", Some(VideoSubscription::Auto));
    }
    for p in 0..n {
        tracks.push(
            r.add_track(PeerKey(p), mid("1"), TrackKind::Video, 90_000, false, 1)
                .unwrap(),
        );
    }
    for s in 0..n {
        for (k, dt) in r
            .downtracks_of(PeerKey(s))
            .into_iter()
            .map(|(k, d)| (k, d.publisher))
            .collect::<Vec<_>>()
        {
            r.mark_offered(k, mid(&format!("s{}", dt.0)));
            r.activate(k, vec![(96, 100)], now);
        }
    }
    (r, tracks, now)
}

#[test]
fn fans_out_to_everyone_but_the_publisher_with_mapped_pt() {
    let (mut r, tracks, now) = room_of(3);
    let mut out = vec![];
    r.on_rtp(
        &IncomingRtp {
            track: tracks[0],
            source: 1,
            seq: 10,
            ts: 0,
            pt: 96,
            audio_level: None,
            layer: 0,
            keyframe: None,
            payload_len: 100,
            vp8: None,
        },
        now,
        &mut out,
    );
    let mut subs: Vec<_> = out.iter().map(|f| (f.subscriber, f.mid, f.pt)).collect();
    subs.sort_by_key(|s| s.0);
    assert_eq!(
        subs,
        vec![(PeerKey(1), mid("s0"), 100), (PeerKey(2), mid("s0"), 100)]
    );
}

#[test]
fn sequence_numbers_continue_per_downtrack() {
    let (mut r, tracks, now) = room_of(2);
    let mut out = vec![];
    let mut seqs = vec![];
    for i in 0..5 {
        r.on_rtp(
            &IncomingRtp {
                track: tracks[0],
                source: 1,
                seq: 60_000 + i,
                ts: 0,
                pt: 96,
                audio_level: None,
                layer: 0,
                keyframe: None,
                payload_len: 100,
                vp8: None,
            },
            now,
            &mut out,
        );
        seqs.push(out[0].seq);
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(seqs[0] < 1 << 15, "starts with ROC 0");
}

#[test]
fn unnegotiated_and_muted_tracks_are_not_forwarded() {
    let now = Instant::now();
    let mut r = Router::new(Duration::from_millis(500));
    r.add_participant(PeerKey(0), "room", Some(VideoSubscription::Auto));
    r.add_participant(PeerKey(1), "room", Some(VideoSubscription::Auto));
    let t = r
        .add_track(PeerKey(0), mid("0"), TrackKind::Audio, 48_000, false, 1)
        .unwrap();
    assert_eq!(r.take_needs_negotiation(), vec![PeerKey(1)]);
    let mut out = vec![];
    let pkt = IncomingRtp {
        track: t,
        source: 1,
        seq: 1,
        ts: 0,
        pt: 111,
        audio_level: Some(-20),
        layer: 0,
        keyframe: None,
        payload_len: 100,
        vp8: None,
    };
    r.on_rtp(&pkt, now, &mut out);
    assert!(out.is_empty(), "pending downtrack must not receive");
    let (k, _) = r.downtracks_of(PeerKey(1))[0];
    r.mark_offered(k, mid("0"));
    r.activate(k, vec![(111, 111)], now);
    r.on_rtp(&pkt, now, &mut out);
    assert_eq!(out.len(), 1);
    r.set_muted(t, true, now);
    r.on_rtp(&pkt, now, &mut out);
    assert!(out.is_empty(), "muted track must not be forwarded");
}

#[test]
fn keyframe_requests_from_many_subscribers_collapse() {
    let (mut r, _tracks, now) = room_of(3);
    let later = now + Duration::from_secs(1);
    // Subscribers 1 and 2 both lose publisher 0's video at the same moment.
    let a = r.on_keyframe_request(PeerKey(1), mid("s0"), later);
    let b = r.on_keyframe_request(PeerKey(2), mid("s0"), later + Duration::from_millis(10));
    assert_eq!(
        a,
        KeyframeDecision::Send(KeyframeRequest {
            publisher: PeerKey(0),
            mid: mid("1"),
            layer: None,
        })
    );
    assert_eq!(b, KeyframeDecision::Suppressed);
    let c = r.on_keyframe_request(PeerKey(1), mid("s0"), later + Duration::from_millis(600));
    assert!(matches!(c, KeyframeDecision::Send(_)));
    assert_eq!(
        r.on_keyframe_request(PeerKey(1), mid("zz"), later),
        KeyframeDecision::UnknownMid
    );
}

#[test]
fn leaving_publisher_closes_downtracks_and_late_joiner_gets_existing_tracks() {
    let (mut r, _tracks, _now) = room_of(2);
    r.take_needs_negotiation();
    r.remove_participant(PeerKey(0));
    assert_eq!(r.take_needs_negotiation(), vec![PeerKey(1)]);
    let dts = r.downtracks_of(PeerKey(1));
    assert_eq!(dts.len(), 1);
    assert_eq!(dts[0].1.state, DowntrackState::Closing(mid("s0")));
    let k = dts[0].0;
    r.forget(k);
    assert!(r.downtracks_of(PeerKey(1)).is_empty());

    r.add_participant(PeerKey(5), "room", Some(VideoSubscription::Auto));
    assert_eq!(r.downtracks_of(PeerKey(5)).len(), 1, "gets peer 1's track");
    r.add_participant(PeerKey(6), "room", None);
    assert!(
        r.downtracks_of(PeerKey(6)).is_empty(),
        "no can_subscribe, no downtracks"
    );
}

#[test]
fn loud_publisher_is_reported_as_dominant_speaker_and_only_on_change() {
    let mut r = Router::new(Duration::from_millis(500));
    let mut tracks = vec![];
    for p in 0..3 {
        r.add_participant(PeerKey(p), "class", Some(VideoSubscription::Auto));
        tracks.push(
            r.add_track(PeerKey(p), mid("0"), TrackKind::Audio, 48_000, false, 1)
                .unwrap(),
        );
    }
    r.add_participant(PeerKey(9), "other room", Some(VideoSubscription::Auto));
    let t0 = Instant::now();
    let mut out = vec![];
    let mut updates = vec![];
    // 2 s of 20 ms packets: peer 1 speaks at -18 dBov, the others send near-silence.
    for i in 0..100u64 {
        let now = t0 + Duration::from_millis(20 * i);
        for (p, &track) in tracks.iter().enumerate() {
            let level = if p == 1 { -18 } else { -90 };
            let pkt = IncomingRtp {
                track,
                source: p as u32,
                seq: i,
                ts: (i * 960) as u32,
                pt: 111,
                audio_level: Some(level),
                layer: 0,
                keyframe: None,
                payload_len: 100,
                vp8: None,
            };
            r.on_rtp(&pkt, now, &mut out);
        }
        updates.extend(r.poll_speakers(now));
    }
    assert_eq!(updates.len(), 1, "one change, reported once: {updates:?}");
    assert_eq!(updates[0].room, "class");
    let speakers: Vec<_> = updates[0].speakers.iter().map(|s| s.peer).collect();
    assert_eq!(speakers, vec![PeerKey(1)]);

    // The speaker mutes: the ranking empties and that change is reported too.
    r.set_muted(tracks[1], true, t0);
    let mut later = vec![];
    for i in 100..200u64 {
        later.extend(r.poll_speakers(t0 + Duration::from_millis(20 * i)));
    }
    assert_eq!(later.len(), 1, "{later:?}");
    assert!(later[0].speakers.is_empty());
}

#[test]
fn a_refused_offer_puts_its_downtracks_back_to_pending() {
    let now = Instant::now();
    let mut r = Router::new(Duration::from_millis(500));
    r.add_participant(PeerKey(0), "room", Some(VideoSubscription::Auto));
    r.add_participant(PeerKey(1), "room", Some(VideoSubscription::Auto));
    r.add_track(PeerKey(0), mid("0"), TrackKind::Video, 90_000, false, 1)
        .unwrap();
    assert_eq!(r.take_needs_negotiation(), vec![PeerKey(1)]);
    let (k, _) = r.downtracks_of(PeerKey(1))[0];
    r.mark_offered(k, mid("thrown-away"));
    r.offer_failed(k);
    assert_eq!(r.downtrack(k).unwrap().state, DowntrackState::Pending);
    assert_eq!(
        r.take_needs_negotiation(),
        vec![PeerKey(1)],
        "offered again"
    );
    // A later offer activates it as usual.
    r.mark_offered(k, mid("s0"));
    r.activate(k, vec![(96, 96)], now);
    assert!(matches!(
        r.downtrack(k).unwrap().state,
        DowntrackState::Active { .. }
    ));
}
