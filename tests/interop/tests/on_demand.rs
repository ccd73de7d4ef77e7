//! What a subscriber is offered without asking, with an independent WebRTC stack (webrtc-rs):
//! an on-demand subscriber (`video_subscription: on_demand`, what a big classroom uses) gets
//! the room's audio at once but a camera only after its `track_settings` asks for it, while an
//! auto subscriber in the same room gets everything; a microphone published muted reaches
//! nobody until its first unmute, then everyone.

use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use serde_json::{json, Value};
use zvon_interop::{bounded, msg_type, TestParticipant, TestServer, SIGNAL_TIMEOUT};

/// Every track listed in the subscriber offers `p` got so far: (participant id, kind).
fn offered(p: &TestParticipant) -> Vec<(String, String)> {
    p.signal
        .log()
        .iter()
        .filter(|m| msg_type(m) == "subscriber_offer")
        .flat_map(|m| m["tracks"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            let field = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (field("participant_id"), field("kind"))
        })
        .collect()
}

/// The camera track id of `publisher`, as `joined` announced it to `p`.
fn announced_camera(p: &TestParticipant, publisher: &str) -> Result<String> {
    p.joined["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["id"] == publisher)
        .flat_map(|o| o["tracks"].as_array().cloned().unwrap_or_default())
        .find(|t: &Value| t["kind"] == "video")
        .and_then(|t| t["id"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow!("joined announced no camera of {publisher}: {}", p.joined))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_demand_subscriber_gets_a_camera_only_after_asking() {
    bounded(Duration::from_secs(90), async {
        let server = TestServer::start().await?;
        let room = "class";
        let teacher = server.publishing_participant(room, "teacher").await?;
        let student = TestParticipant::join_with(
            server.http_addr(),
            &server.token(room, "student"),
            room,
            json!({"video_subscription": "on_demand"}),
        )
        .await?;
        let auto =
            TestParticipant::join(server.http_addr(), &server.token(room, "auto"), room).await?;

        // The auto subscriber gets the camera unasked; the on-demand one only the audio.
        auto.wait_receiving(&teacher.id, "video", 30, Duration::from_secs(20))
            .await?;
        student
            .wait_receiving(&teacher.id, "audio", 50, Duration::from_secs(20))
            .await?;
        ensure!(
            !offered(&student).iter().any(|(_, kind)| kind == "video"),
            "an on-demand subscriber was offered a camera it did not ask for: {:?}",
            offered(&student)
        );
        ensure!(student.received_from(&teacher.id, "video").is_none());

        // Asking for it (a rendered size) brings it: a new m-line, then frames. The batch
        // form, as a scrolled gallery sends it; a track that is gone meanwhile is ignored.
        let camera = announced_camera(&student, &teacher.id)?;
        let asked_at = std::time::Instant::now();
        student
            .signal
            .send_json(&json!({"type": "track_settings_batch", "tracks": [
                {"track_id": "TR_gone", "width": 320, "height": 180},
                {"track_id": camera, "width": 640, "height": 360},
            ]}))
            .await?;
        let video = student
            .wait_receiving(&teacher.id, "video", 30, Duration::from_secs(20))
            .await?;
        ensure!(
            offered(&student).contains(&(teacher.id.clone(), "video".to_string())),
            "the requested camera came without being listed in an offer"
        );
        ensure!(video.packets.len() >= 30);
        ensure!(
            !teacher.keyframe_requests_since(asked_at).is_empty(),
            "the new subscription did not ask the publisher for a keyframe to start decoding"
        );
        ensure!(
            student.answer_errors().is_empty(),
            "{:?}",
            student.answer_errors()
        );
        ensure!(
            !student.signal.log().iter().any(|m| msg_type(m) == "error"),
            "the batch was refused: {:?}",
            student.signal.log()
        );

        // An empty batch is a client bug: a clear error, and the session goes on.
        let from = student.signal.log_len();
        student
            .signal
            .send_json(
                &json!({"type": "track_settings_batch", "request_id": "empty", "tracks": []}),
            )
            .await?;
        let (_, error) = student
            .signal
            .wait_from(from, SIGNAL_TIMEOUT, "error", |m| msg_type(m) == "error")
            .await?;
        ensure!(error["code"] == "invalid_request", "{error}");
        student.ping().await?;

        for p in [auto, student, teacher] {
            p.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_microphone_published_muted_is_offered_at_its_first_unmute() {
    bounded(Duration::from_secs(90), async {
        let server = TestServer::start().await?;
        let room = "class";
        let mut student =
            TestParticipant::join(server.http_addr(), &server.token(room, "student"), room).await?;
        student.publish_with_audio_muted(true).await?;
        student.start_media()?;
        let listener =
            TestParticipant::join(server.http_addr(), &server.token(room, "listener"), room)
                .await?;
        listener
            .wait_receiving(&student.id, "video", 30, Duration::from_secs(20))
            .await?;
        let audio_offered =
            |p: &TestParticipant| offered(p).contains(&(student.id.clone(), "audio".to_string()));
        ensure!(
            !audio_offered(&listener),
            "a microphone published muted was offered: {:?}",
            offered(&listener)
        );

        let mic = student
            .publisher
            .as_ref()
            .map(|p| p.audio_track_id.clone())
            .ok_or_else(|| anyhow!("no publisher"))?;
        student
            .signal
            .send_json(&json!({"type": "mute", "track_id": mic, "muted": false}))
            .await?;
        listener
            .wait_receiving(&student.id, "audio", 50, Duration::from_secs(20))
            .await?;
        ensure!(audio_offered(&listener));
        ensure!(
            listener.answer_errors().is_empty(),
            "{:?}",
            listener.answer_errors()
        );

        for p in [listener, student] {
            p.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await;
}
