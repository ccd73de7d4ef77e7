//! Through the real server, with an independent WebRTC stack (webrtc-rs): a subscriber's
//! video numbering has no hole across a mute/unmute or a pause/resume (`track_settings`
//! `enabled: false` then `true`), while the publisher keeps sending (a browser sends black
//! frames for a disabled track). A receiver that waits for missing packets (aiortc) would
//! otherwise freeze for seconds after the unmute, keyframe or not.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use zvon_interop::media::{unwrap_seqs, SeqReport};
use zvon_interop::peer::RecvPacket;
use zvon_interop::{bounded, TestParticipant, TestServer};

/// How long the video stays muted or paused: ~100 packets of the harness's 90 packets/s.
const OFF_FOR: Duration = Duration::from_millis(1200);

/// The received video's packets around the longest silence: the last one before it and
/// the first one after it.
fn around_the_silence(packets: &[RecvPacket]) -> (RecvPacket, RecvPacket) {
    let (mut before, mut after) = (packets[0], packets[0]);
    for w in packets.windows(2) {
        if w[1].at - w[0].at > after.at - before.at {
            (before, after) = (w[0], w[1]);
        }
    }
    (before, after)
}

/// Sends `off`, waits [`OFF_FOR`] while the publisher keeps sending, sends `on`, and checks
/// that the viewer's video went quiet and then resumed with no hole in its numbering and a
/// timestamp that moved on by about the time that passed.
async fn video_continues_across(
    what: &str,
    publisher: &TestParticipant,
    viewer: &TestParticipant,
    sender: &TestParticipant,
    off: Value,
    on: Value,
) -> Result<()> {
    viewer
        .wait_receiving(&publisher.id, "video", 60, Duration::from_secs(20))
        .await?;
    sender.signal.send_json(&off).await?;
    // Let what was in flight arrive, then count: nothing more may come while off.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quiet_from = viewer
        .received_from(&publisher.id, "video")
        .map_or(0, |t| t.packets.len());
    let sent_from = publisher
        .sent
        .video_packets
        .load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(OFF_FOR).await;
    let quiet_to = viewer
        .received_from(&publisher.id, "video")
        .map_or(0, |t| t.packets.len());
    let sent_while_off = publisher
        .sent
        .video_packets
        .load(std::sync::atomic::Ordering::SeqCst)
        - sent_from;
    ensure!(
        quiet_to == quiet_from,
        "{what}: {} video packets forwarded while off",
        quiet_to - quiet_from
    );
    ensure!(
        sent_while_off > 50,
        "{what}: the publisher sent only {sent_while_off} packets while off: nothing to skip"
    );
    let on_at = Instant::now();
    sender.signal.send_json(&on).await?;
    viewer
        .wait_more_packets(&publisher.id, "video", 60, Duration::from_secs(10))
        .await?;
    let video = viewer
        .received_from(&publisher.id, "video")
        .expect("video received");
    let packets = video.main_packets();
    let report = SeqReport::of(&packets);
    let (before, after) = around_the_silence(&packets);
    let seqs = unwrap_seqs(&[before, after]);
    let elapsed = (after.at - before.at).as_secs_f64();
    let ts_seconds = f64::from(after.timestamp.wrapping_sub(before.timestamp)) / 90_000.0;
    eprintln!(
        "{what}: {sent_while_off} packets withheld; across the {elapsed:.2} s silence seq {} -> {} \
         (ts +{ts_seconds:.2} s); first packet {:?} after the request; whole stream {report:?}",
        before.seq,
        after.seq,
        after.at.saturating_duration_since(on_at)
    );
    ensure!(
        seqs[1] - seqs[0] == 1,
        "{what}: the viewer's video jumps from seq {} to {} across the silence ({sent_while_off} \
         packets withheld): a receiver waiting for the missing ones freezes",
        before.seq,
        after.seq
    );
    ensure!(
        report.missing == 0,
        "{what}: holes in the viewer's video: {report:?}"
    );
    ensure!(
        ts_seconds > 0.5 * elapsed && ts_seconds < elapsed + 1.0,
        "{what}: timestamp moved {ts_seconds:.2} s over a {elapsed:.2} s silence"
    );
    Ok(())
}

async fn call(room: &str) -> Result<(TestServer, TestParticipant, TestParticipant)> {
    let server = TestServer::start().await?;
    let publisher = server.publishing_participant(room, "camera").await?;
    let viewer =
        TestParticipant::join(server.http_addr(), &server.token(room, "viewer"), room).await?;
    Ok((server, publisher, viewer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_sequence_gap_across_mute_and_unmute() {
    bounded(Duration::from_secs(90), async {
        let (server, publisher, viewer) = call("seq-mute").await?;
        let track = publisher
            .publisher
            .as_ref()
            .expect("published")
            .video_track_id
            .clone();
        video_continues_across(
            "mute",
            &publisher,
            &viewer,
            &publisher,
            json!({"type": "mute", "track_id": track, "muted": true}),
            json!({"type": "mute", "track_id": track, "muted": false}),
        )
        .await?;
        viewer.close().await;
        publisher.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_sequence_gap_across_pause_and_resume() {
    bounded(Duration::from_secs(90), async {
        let (server, publisher, viewer) = call("seq-pause").await?;
        let track = publisher
            .publisher
            .as_ref()
            .expect("published")
            .video_track_id
            .clone();
        video_continues_across(
            "pause",
            &publisher,
            &viewer,
            &viewer,
            json!({"type": "track_settings", "track_id": track, "enabled": false}),
            json!({"type": "track_settings", "track_id": track, "enabled": true, "width": 640, "height": 480}),
        )
        .await?;
        viewer.close().await;
        publisher.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}
