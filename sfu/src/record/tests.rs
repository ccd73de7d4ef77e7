//! The recording thread's state driven directly (no thread, no sockets): files, manifest and
//! events for a short recording, and an unwritable directory.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::writer::Writer;
use super::*;
use crate::api::{RecordedPerson, RecordingSpec, SfuEvent};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "zvon-rec-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spec() -> RecordingSpec {
    RecordingSpec {
        id: "REC_t1".into(),
        people: vec![RecordedPerson {
            participant: ParticipantId("PA_a".into()),
            identity: "ann".into(),
            name: "Ann".into(),
        }],
    }
}

fn start_track(slot: u32, kind: TrackKind, pt: u8, pk: PayloadKind) -> Control {
    Control::StartTrack {
        slot,
        recording: "REC_t1".into(),
        participant: ParticipantId("PA_a".into()),
        track: TrackId(format!("TR_{slot}")),
        kind,
        source: if kind == TrackKind::Audio {
            TrackSource::Microphone
        } else {
            TrackSource::Camera
        },
        muted: false,
        payloads: vec![(pt, pk)],
    }
}

fn opus(slot: u32, i: u16, t0: Instant) -> RecPacket {
    RecPacket {
        slot,
        layer: 0,
        seq: i,
        ts: u32::from(i) * 960,
        pt: 111,
        marker: false,
        arrival: t0 + Duration::from_millis(u64::from(i) * 20),
        payload: Arc::from(&[0x78u8, 1, 2, 3][..]),
    }
}

fn vp8_keyframe(slot: u32, seq: u16, ts: u32, arrival: Instant) -> RecPacket {
    let mut p = vec![0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    p.extend_from_slice(&320u16.to_le_bytes());
    p.extend_from_slice(&240u16.to_le_bytes());
    p.extend_from_slice(&[0; 20]);
    RecPacket {
        slot,
        layer: 0,
        seq,
        ts,
        pt: 96,
        marker: true,
        arrival,
        payload: Arc::from(p),
    }
}

#[test]
fn a_recording_writes_a_file_per_track_and_a_manifest_with_mutes() {
    let dir = temp_dir("ok");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stats = Arc::new(SfuStats::new(1));
    let mut w = Writer::new(dir.clone(), tx, stats.clone());
    let now = SystemTime::now();
    w.handle(Control::Start {
        room: RoomId("class".into()),
        spec: spec(),
        at: now,
    });
    w.handle(start_track(1, TrackKind::Audio, 111, PayloadKind::Opus));
    w.handle(start_track(2, TrackKind::Video, 96, PayloadKind::Vp8));
    let t0 = Instant::now();
    for i in 0..100 {
        w.packet(opus(1, i, t0));
    }
    w.handle(Control::Mute {
        slot: 1,
        muted: true,
        at: now + Duration::from_secs(2),
    });
    w.packet(vp8_keyframe(2, 7, 1000, t0));
    w.packet(vp8_keyframe(
        2,
        8,
        1000 + 90_000,
        t0 + Duration::from_secs(1),
    ));
    w.handle(Control::Stop {
        recording: "REC_t1".into(),
        at: now + Duration::from_secs(3),
    });
    let Ok(SfuEvent::RecordingFinished { files, error, .. }) = rx.try_recv() else {
        panic!("no RecordingFinished");
    };
    assert_eq!(error, None);
    assert_eq!(files, vec!["PA_a_TR_1.webm", "PA_a_TR_2.webm"]);
    let rec = dir.join("REC_t1");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["room"], "class");
    assert!(manifest["ended_at"].is_u64());
    let audio = &manifest["tracks"][0];
    assert_eq!(audio["name"], "Ann");
    assert_eq!(audio["frames"], 100);
    assert_eq!(audio["mutes"][0]["muted"], true);
    // 100 frames of 20 ms: the last one starts at 1980 ms.
    let span = audio["end"].as_u64().unwrap() - audio["start"].as_u64().unwrap();
    assert_eq!(span, 1980);
    let video = &manifest["tracks"][1];
    assert_eq!(
        (video["width"].as_u64(), video["frames"].as_u64()),
        (Some(320), Some(2))
    );
    assert!(std::fs::metadata(rec.join("PA_a_TR_1.webm")).unwrap().len() > 400);
    assert_eq!(SfuStats::get(&stats.recording_errors), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unwritable_directory_fails_the_recording_with_an_event_and_a_count() {
    let dir = temp_dir("bad");
    // A file where the recordings directory should be: even root cannot write under it.
    let blocked = dir.join("not-a-dir");
    std::fs::write(&blocked, b"x").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stats = Arc::new(SfuStats::new(1));
    let mut w = Writer::new(blocked, tx, stats.clone());
    w.handle(Control::Start {
        room: RoomId("class".into()),
        spec: spec(),
        at: SystemTime::now(),
    });
    let Ok(SfuEvent::RecordingFailed { room, error, .. }) = rx.try_recv() else {
        panic!("no RecordingFailed");
    };
    assert_eq!(room.0, "class");
    assert!(error.contains("cannot write"), "{error}");
    assert_eq!(SfuStats::get(&stats.recording_errors), 1);
    // Packets and tracks of the failed recording are ignored; stopping still reports.
    w.handle(start_track(1, TrackKind::Audio, 111, PayloadKind::Opus));
    w.packet(opus(1, 0, Instant::now()));
    w.handle(Control::Stop {
        recording: "REC_t1".into(),
        at: SystemTime::now(),
    });
    let Ok(SfuEvent::RecordingFinished { files, error, .. }) = rx.try_recv() else {
        panic!("no RecordingFinished");
    };
    assert!(files.is_empty());
    assert!(error.is_some());
    assert_eq!(SfuStats::get(&stats.recording_errors), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// A writer recording one VP8 track (slot 2) under a fresh directory.
fn recording_one_video(name: &str) -> (Writer, PathBuf) {
    let dir = temp_dir(name);
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut w = Writer::new(dir.clone(), tx, Arc::new(SfuStats::new(1)));
    w.handle(Control::Start {
        room: RoomId("class".into()),
        spec: spec(),
        at: SystemTime::now(),
    });
    w.handle(start_track(2, TrackKind::Video, 96, PayloadKind::Vp8));
    (w, dir)
}

fn vp8_delta(slot: u32, seq: u16, ts: u32, arrival: Instant) -> RecPacket {
    let mut p = vp8_keyframe(slot, seq, ts, arrival);
    // The P bit of the VP8 frame header: an inter frame.
    let mut bytes = p.payload.to_vec();
    bytes[1] |= 0x01;
    p.payload = Arc::from(bytes);
    p
}

#[test]
fn a_video_that_lost_a_packet_asks_for_a_keyframe_once_a_second_until_one_comes() {
    use super::writer::PacketOutcome::{Taken, WantsKeyframe};
    let (mut w, dir) = recording_one_video("pli");
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // Joined mid-stream: inter frames cannot start a file, so the first one asks.
    assert_eq!(w.packet(vp8_delta(2, 1, 0, at(0))), WantsKeyframe);
    assert_eq!(w.packet(vp8_delta(2, 2, 3000, at(33))), Taken);
    assert_eq!(w.packet(vp8_keyframe(2, 3, 6000, at(66))), Taken);
    assert_eq!(w.packet(vp8_delta(2, 4, 9000, at(1200))), Taken);
    // Seq 5 never comes: the frames after it are dropped and the track asks again, but
    // not for every packet.
    assert_eq!(w.packet(vp8_delta(2, 6, 15000, at(1266))), WantsKeyframe);
    assert_eq!(w.packet(vp8_delta(2, 7, 18000, at(1300))), Taken);
    assert_eq!(w.packet(vp8_delta(2, 8, 21000, at(2200))), Taken);
    // A second later, still without a keyframe (the PLI or its answer was lost).
    assert_eq!(w.packet(vp8_delta(2, 9, 24000, at(2270))), WantsKeyframe);
    assert_eq!(w.packet(vp8_keyframe(2, 10, 27000, at(2300))), Taken);
    assert_eq!(w.packet(vp8_delta(2, 11, 30000, at(3600))), Taken);
    w.handle(Control::Stop {
        recording: "REC_t1".into(),
        at: SystemTime::now(),
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_video_moved_to_another_layer_goes_on_at_its_arrival_time() {
    let (mut w, dir) = recording_one_video("relayer");
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let on_layer = |mut p: RecPacket, layer: u8| {
        p.layer = layer;
        p
    };
    w.packet(vp8_keyframe(2, 100, 1000, at(0)));
    w.packet(vp8_delta(2, 101, 1000 + 90_000, at(1000)));
    // Another simulcast layer 2 s later, with its own sequence numbers and RTP clock, which
    // happen to lie close to the old layer's: only the layer tells the streams apart.
    w.packet(on_layer(vp8_keyframe(2, 99, 1000 + 200_000, at(3000)), 1));
    w.packet(on_layer(vp8_delta(2, 100, 1000 + 245_000, at(3500)), 1));
    // And back to the first layer, whose clock now is far from the file's.
    w.packet(vp8_keyframe(2, 400, 3_000_000_000, at(5000)));
    w.handle(Control::Stop {
        recording: "REC_t1".into(),
        at: SystemTime::now(),
    });
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("REC_t1").join("manifest.json")).unwrap())
            .unwrap();
    let video = &manifest["tracks"][0];
    assert_eq!(video["frames"], 5);
    let span = video["end"].as_u64().unwrap() - video["start"].as_u64().unwrap();
    assert_eq!(span, 5000, "the last frame lands where it arrived");
    let _ = std::fs::remove_dir_all(dir);
}
