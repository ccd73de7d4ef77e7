//! One room on two media workers of one node: the publisher sits on one worker, the
//! subscriber on the other (`spread_after = 1` forces the spread), and everything a user
//! notices still works through the in-node relay: audio and video arrive complete, a
//! subscriber's keyframe request reaches the publisher and a keyframe follows, a teacher's
//! mute stops the audio on the other worker (and it resumes without a gap), and revoking
//! publishing stops everything.

use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::json;
use zvon_interop::{bounded, claims, sign, TestParticipant, TestServer, SIGNAL_TIMEOUT};
use zvon_sfu::api::ParticipantId;
use zvon_signaling::ServerConfig;

use zvon_interop::streams::{
    admin_mute_stops_audio, complete, pli_brings_keyframe, received_during_quiet,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publisher_and_subscriber_on_different_workers() {
    bounded(Duration::from_secs(120), async {
        let mut config = ServerConfig::for_tests();
        config.sfu.workers = 2;
        config.sfu.spread_after = 1;
        let server = TestServer::start_with(config).await?;
        let node = server
            .server
            .embedded_media()
            .context("an all-in-one server embeds its media node")?;
        let room = "spread";

        let publisher = server.publishing_participant(room, "teacher-cam").await?;
        let viewer =
            TestParticipant::join(server.http_addr(), &server.token(room, "viewer"), room).await?;
        let mut admin = claims(room, "admin");
        admin.grants.room_admin = true;
        let teacher = TestParticipant::join(server.http_addr(), &sign(&admin), room).await?;
        let on = |p: &TestParticipant| node.worker_of(&ParticipantId(p.id.clone()));
        ensure!(
            on(&publisher).is_some() && on(&publisher) != on(&viewer),
            "not spread: publisher on {:?}, viewer on {:?}",
            on(&publisher),
            on(&viewer)
        );

        // Audio and video arrive through the relay, complete, with keyframes to start from.
        let video = viewer
            .wait_receiving(&publisher.id, "video", 150, Duration::from_secs(20))
            .await?;
        viewer
            .wait_receiving(&publisher.id, "audio", 100, Duration::from_secs(20))
            .await?;
        ensure!(
            video.packets.iter().any(|p| p.vp8_keyframe),
            "no keyframe among {} video packets",
            video.packets.len()
        );
        complete(&viewer, &publisher.id, "audio")?;
        complete(&viewer, &publisher.id, "video")?;

        // A keyframe request from the other worker reaches the publisher, and a keyframe
        // reaches the viewer after it.
        pli_brings_keyframe(&viewer, &publisher, "workers").await?;

        // A teacher's mute stops the audio on the other worker; video goes on.
        admin_mute_stops_audio(&teacher, &publisher, &viewer, "the other worker's viewer").await?;
        complete(&viewer, &publisher.id, "audio").context("audio after the unmute")?;

        // Publishing revoked: the tracks close on the other worker too.
        teacher
            .signal
            .send_json(&json!({"type":"set_publish","participant_id":publisher.id,"allowed":false}))
            .await?;
        publisher
            .signal
            .wait_type("permission_changed", SIGNAL_TIMEOUT)
            .await?;
        let (a, v) = tokio::join!(
            received_during_quiet(&viewer, &publisher.id, "audio"),
            received_during_quiet(&viewer, &publisher.id, "video"),
        );
        ensure!(
            a == 0 && v == 0,
            "unpublished tracks still relayed: audio {a}, video {v}"
        );

        teacher.close().await;
        viewer.close().await;
        publisher.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
