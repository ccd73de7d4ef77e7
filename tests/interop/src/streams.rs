//! What a participant received of another's stream, as the media-path tests ask it: how many
//! packets, whether a stream stopped (nothing new over a quiet window), whether it is complete.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::media::SeqReport;
use crate::TestParticipant;

/// Packets that may still arrive after the server acted: already in flight or queued.
pub const IN_FLIGHT: Duration = Duration::from_millis(300);
/// How long a stopped stream is watched for stray packets.
pub const QUIET: Duration = Duration::from_millis(1500);

/// Packets of `kind` from participant `from` that `p` has received so far.
pub fn count(p: &TestParticipant, from: &str, kind: &str) -> usize {
    p.received_from(from, kind)
        .map(|t| t.packets.len())
        .unwrap_or(0)
}

/// Packets of `kind` from `from` that `p` receives during [`QUIET`], after in-flight ones land.
pub async fn received_during_quiet(p: &TestParticipant, from: &str, kind: &str) -> usize {
    tokio::time::sleep(IN_FLIGHT).await;
    let before = count(p, from, kind);
    tokio::time::sleep(QUIET).await;
    count(p, from, kind) - before
}

/// The received stream of `kind` from `from` has no hole and no duplicate.
pub fn complete(p: &TestParticipant, from: &str, kind: &str) -> Result<SeqReport> {
    let t = p.received_from(from, kind).context("nothing received")?;
    let r = SeqReport::of(&t.packets);
    ensure!(
        r.missing == 0 && r.duplicates == 0,
        "{kind} from {from}: {r:?}"
    );
    Ok(r)
}

/// `viewer` asks for a keyframe of `publisher`'s video (after the publisher's own start-up
/// requests settle): the request must reach the publisher, and a keyframe must reach the
/// viewer after it, each within 3 s. `across` names the hop in errors ("workers", "nodes").
pub async fn pli_brings_keyframe(
    viewer: &TestParticipant,
    publisher: &TestParticipant,
    across: &str,
) -> Result<()> {
    publisher
        .wait_keyframe_requests_quiet(Duration::from_millis(1000), Duration::from_secs(15))
        .await
        .context("keyframe requests to the publisher did not settle")?;
    let asked = std::time::Instant::now();
    viewer.send_pli(&publisher.id).await?;
    let deadline = asked + Duration::from_secs(3);
    while publisher.keyframe_requests_since(asked).is_empty() {
        ensure!(
            std::time::Instant::now() < deadline,
            "the viewer's PLI did not reach the publisher across {across}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = asked + Duration::from_secs(3);
    loop {
        let got = viewer
            .received_from(&publisher.id, "video")
            .is_some_and(|t| t.packets.iter().any(|p| p.vp8_keyframe && p.at > asked));
        if got {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no keyframe after the request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `teacher` (a room admin) mutes `publisher`'s microphone: `viewer` is told, receives no audio
/// over a quiet window while video goes on; released, audio flows again. `at` names the
/// viewer's place in errors ("the viewer's node", "the other worker's viewer").
pub async fn admin_mute_stops_audio(
    teacher: &TestParticipant,
    publisher: &TestParticipant,
    viewer: &TestParticipant,
    at: &str,
) -> Result<()> {
    let audio = publisher
        .publisher
        .as_ref()
        .map(|p| p.audio_track_id.clone())
        .unwrap_or_default();
    let mute = |muted: bool| serde_json::json!({"type":"admin_mute","participant_id":publisher.id,"track_id":audio,"muted":muted});
    let from = viewer.signal.log_len();
    teacher.signal.send_json(&mute(true)).await?;
    viewer
        .signal
        .wait_from(from, crate::SIGNAL_TIMEOUT, "track_muted", |v| {
            crate::msg_type(v) == "track_muted" && v["muted"] == true
        })
        .await?;
    let muted = received_during_quiet(viewer, &publisher.id, "audio").await;
    ensure!(muted == 0, "{muted} muted audio packets reached {at}");
    viewer
        .wait_more_packets(&publisher.id, "video", 20, Duration::from_secs(5))
        .await?;
    teacher.signal.send_json(&mute(false)).await?;
    viewer
        .wait_more_packets(&publisher.id, "audio", 50, Duration::from_secs(5))
        .await
        .context("audio after the unmute")?;
    Ok(())
}
