//! Publisher renegotiation with an independent WebRTC stack (webrtc-rs): a publisher that
//! already sends a camera adds a screen share with a second `publish_offer` on the same
//! connection; a viewer receives it as a new track with source `screen` while the camera keeps
//! flowing; setting the m-line inactive and offering again withdraws it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{json, Value};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use zvon_interop::media::{self, vp8_frame_payloads};
use zvon_interop::{bounded, msg_type, TestParticipant, TestServer, SIGNAL_TIMEOUT};

const SCREEN_SSRC: u32 = 0x5C4E_E001;

fn id_of(answer: &Value, mid: &str) -> Option<String> {
    answer["tracks"]
        .as_array()?
        .iter()
        .find(|t| t["mid"] == mid)
        .and_then(|t| t["id"].as_str())
        .map(str::to_string)
}

/// VP8 frames (a keyframe every 30th) on the screen track while `running`.
async fn send_screen(
    track: Arc<TrackLocalStaticRTP>,
    pt: u8,
    running: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(media::VIDEO_FRAME_INTERVAL_MS));
    let (mut seq, mut ts): (u16, u32) = (rand::random(), rand::random());
    let mut frame = 0u64;
    while running.load(Ordering::SeqCst) {
        tick.tick().await;
        let payloads = vp8_frame_payloads(frame, frame % media::KEYFRAME_EVERY == 0);
        let last = payloads.len() - 1;
        for (i, payload) in payloads.into_iter().enumerate() {
            let pkt = rtp::Packet {
                header: rtp::Header {
                    version: 2,
                    marker: i == last,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc: SCREEN_SSRC,
                    ..Default::default()
                },
                payload,
            };
            if track.write_rtp(pkt).await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            seq = seq.wrapping_add(1);
        }
        ts = ts.wrapping_add(media::VIDEO_TICKS_PER_FRAME);
        frame += 1;
    }
}

fn screen_packets(viewer: &TestParticipant, track_id: &str) -> usize {
    viewer
        .received()
        .iter()
        .find(|t| t.track_id == track_id)
        .map_or(0, |t| t.packets.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_screen_share_is_added_and_withdrawn_by_renegotiation() {
    bounded(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let room = "lesson";
        let teacher = server.publishing_participant(room, "teacher").await?;
        let viewer =
            TestParticipant::join(server.http_addr(), &server.token(room, "viewer"), room).await?;
        viewer
            .wait_receiving(&teacher.id, "video", 30, Duration::from_secs(20))
            .await?;
        let publisher = teacher
            .publisher
            .as_ref()
            .ok_or_else(|| anyhow!("teacher did not publish"))?;
        let peer = &publisher.peer;

        // Start sharing: a third, sendonly VP8 m-line on the same connection.
        let screen = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "stream-teacher".to_string(),
            "screen-teacher".to_string(),
            "screen".to_string(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(SCREEN_SSRC),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: "video/VP8".to_string(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                active: true,
                ..Default::default()
            }],
        )));
        let screen_tr = peer
            .pc
            .add_transceiver_from_track(
                screen.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await
            .context("add screen transceiver")?;
        let from = viewer.signal.log_len();
        let camera = |mids: &[(&str, &str, &str)]| -> Value {
            mids.iter()
                .map(|(mid, kind, source)| json!({"mid": mid, "kind": kind, "source": source, "muted": false}))
                .collect()
        };
        let (audio_mid, video_mid) = (publisher.audio_mid.as_str(), publisher.video_mid.as_str());
        // The transceiver gets its mid with the offer; declare it after.
        let sdp = peer.make_offer().await?;
        let offer_mid = screen_tr
            .mid()
            .await?
            .ok_or_else(|| anyhow!("screen transceiver has no mid"))?;
        let answer = teacher.renegotiate(
            peer,
            sdp,
            camera(&[
                (audio_mid, "audio", "microphone"),
                (video_mid, "video", "camera"),
                (&offer_mid, "video", "screen"),
            ]),
        )
        .await?;
        ensure!(
            id_of(&answer, video_mid).as_deref() == Some(publisher.video_track_id.as_str())
                && id_of(&answer, audio_mid).as_deref() == Some(publisher.audio_track_id.as_str()),
            "the camera and microphone keep their track ids: {answer}"
        );
        let screen_id = id_of(&answer, &offer_mid)
            .ok_or_else(|| anyhow!("publish_answer has no screen track: {answer}"))?;

        let running = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicU64::new(0));
        let sender = tokio::spawn(send_screen(
            screen.clone(),
            publisher.video_pt,
            running.clone(),
            sent.clone(),
        ));

        let (_, published) = viewer
            .signal
            .wait_from(from, SIGNAL_TIMEOUT, "track_published (screen)", |v| {
                msg_type(v) == "track_published" && v["track"]["id"] == screen_id.as_str()
            })
            .await?;
        ensure!(published["track"]["source"] == "screen", "{published}");
        let (_, offer) = viewer
            .signal
            .wait_from(from, SIGNAL_TIMEOUT, "subscriber_offer with the screen", |v| {
                msg_type(v) == "subscriber_offer"
                    && v["tracks"]
                        .as_array()
                        .is_some_and(|ts| ts.iter().any(|t| t["track_id"] == screen_id.as_str()))
            })
            .await?;
        let listed = offer["tracks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["track_id"] == screen_id.as_str()))
            .cloned()
            .unwrap_or_default();
        ensure!(listed["source"] == "screen", "subscriber_offer lists {listed}");

        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while screen_packets(&viewer, &screen_id) < 60 {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "viewer got {} screen packets (teacher sent {}); received: {}",
                screen_packets(&viewer, &screen_id),
                sent.load(Ordering::Relaxed),
                zvon_interop::describe_received(&viewer.received())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        viewer
            .wait_more_packets(&teacher.id, "video", 30, Duration::from_secs(5))
            .await
            .context("the camera keeps flowing next to the screen")?;
        println!(
            "screen {screen_id} on mid {offer_mid}: viewer got {} packets",
            screen_packets(&viewer, &screen_id)
        );

        // Stop sharing: the m-line goes inactive and is no longer declared.
        let from = viewer.signal.log_len();
        screen_tr
            .set_direction(RTCRtpTransceiverDirection::Inactive)
            .await?;
        let sdp = peer.make_offer().await?;
        let answer = teacher.renegotiate(
            peer,
            sdp,
            camera(&[
                (audio_mid, "audio", "microphone"),
                (video_mid, "video", "camera"),
            ]),
        )
        .await?;
        ensure!(
            answer["tracks"].as_array().map(Vec::len) == Some(2),
            "two tracks left: {answer}"
        );
        viewer
            .signal
            .wait_from(from, SIGNAL_TIMEOUT, "track_unpublished (screen)", |v| {
                msg_type(v) == "track_unpublished" && v["track_id"] == screen_id.as_str()
            })
            .await?;
        // The server stops forwarding at once, whatever the publisher still sends.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = screen_packets(&viewer, &screen_id);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let after = screen_packets(&viewer, &screen_id);
        ensure!(
            after == before,
            "screen packets still forwarded after withdrawal: {} more",
            after - before
        );
        viewer
            .wait_more_packets(&teacher.id, "video", 30, Duration::from_secs(5))
            .await
            .context("the camera survives the screen's withdrawal")?;
        running.store(false, Ordering::SeqCst);
        let _ = sender.await;
        viewer.close().await;
        teacher.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}
