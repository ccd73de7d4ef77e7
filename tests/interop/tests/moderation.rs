//! A teacher's moderation reaches the media path: muting a student's audio stops the packets
//! every other subscriber receives (the student keeps sending), releasing it resumes them, and
//! revoking the student's publishing stops its audio and video altogether.

use std::time::Duration;

use anyhow::ensure;
use serde_json::json;
use zvon_interop::{bounded, claims, msg_type, sign, TestParticipant, TestServer, SIGNAL_TIMEOUT};

use zvon_interop::streams::{count, received_during_quiet, QUIET};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn teacher_mute_and_revoke_stop_forwarding() {
    bounded(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let room = "lesson";
        let mut admin = claims(room, "teacher");
        admin.grants.room_admin = true;
        let teacher = TestParticipant::join(server.http_addr(), &sign(&admin), room).await?;
        let student = server.publishing_participant(room, "student").await?;
        let observer =
            TestParticipant::join(server.http_addr(), &server.token(room, "observer"), room)
                .await?;
        let audio = student
            .publisher
            .as_ref()
            .map(|p| p.audio_track_id.clone())
            .unwrap_or_default();
        for p in [&teacher, &observer] {
            p.wait_receiving(&student.id, "audio", 50, Duration::from_secs(20))
                .await?;
            p.wait_receiving(&student.id, "video", 30, Duration::from_secs(20))
                .await?;
        }

        // Mute: nobody receives the student's audio any more; its video goes on.
        let from = observer.signal.log_len();
        teacher
            .signal
            .send_json(&json!({"type":"admin_mute","participant_id":student.id,"track_id":audio,"muted":true}))
            .await?;
        observer
            .signal
            .wait_from(from, SIGNAL_TIMEOUT, "track_muted", |v| {
                msg_type(v) == "track_muted" && v["muted"] == true
            })
            .await?;
        student.signal.wait_type("admin_muted", SIGNAL_TIMEOUT).await?;
        let sent_before = student.sent.audio_packets.load(std::sync::atomic::Ordering::Relaxed);
        let (obs, tea) = tokio::join!(
            received_during_quiet(&observer, &student.id, "audio"),
            received_during_quiet(&teacher, &student.id, "audio"),
        );
        let sent = student.sent.audio_packets.load(std::sync::atomic::Ordering::Relaxed) - sent_before;
        println!("while muted: student sent {sent} audio packets, observer got {obs}, teacher got {tea}");
        ensure!(sent > 50, "the student kept sending audio ({sent} packets)");
        ensure!(
            obs == 0 && tea == 0,
            "muted audio still forwarded: observer {obs}, teacher {tea} packets in {QUIET:?}"
        );
        observer
            .wait_more_packets(&student.id, "video", 20, Duration::from_secs(5))
            .await?;

        // Release: audio flows again.
        teacher
            .signal
            .send_json(&json!({"type":"admin_mute","participant_id":student.id,"track_id":audio,"muted":false}))
            .await?;
        let before = count(&observer, &student.id, "audio");
        observer
            .wait_more_packets(&student.id, "audio", 50, Duration::from_secs(5))
            .await?;
        teacher
            .wait_more_packets(&student.id, "audio", 50, Duration::from_secs(5))
            .await?;
        println!(
            "after release: observer audio {} -> {}",
            before,
            count(&observer, &student.id, "audio")
        );

        // Revoke publishing: audio and video stop for everyone; the student stays in the room.
        teacher
            .signal
            .send_json(&json!({"type":"set_publish","participant_id":student.id,"allowed":false}))
            .await?;
        student
            .signal
            .wait_type("permission_changed", SIGNAL_TIMEOUT)
            .await?;
        let (a, v) = tokio::join!(
            received_during_quiet(&observer, &student.id, "audio"),
            received_during_quiet(&observer, &student.id, "video"),
        );
        println!("after revoke: observer got {a} audio, {v} video packets in {QUIET:?}");
        ensure!(a == 0 && v == 0, "unpublished tracks still forwarded: audio {a}, video {v}");
        student.ping().await?;

        teacher.close().await;
        observer.close().await;
        student.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
