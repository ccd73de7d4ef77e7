//! `leave`: the others are told (`participant_left`, `track_unpublished`), the departed tracks'
//! m-lines go inactive in the next `subscriber_offer`, and the rest of the call goes on.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::Value;
use zvon_interop::{bounded, msg_type, TestParticipant, TestServer, SIGNAL_TIMEOUT};

/// `a=mid` values of the m-lines of `sdp` whose direction is `inactive` (or whose port is 0).
fn inactive_mids(sdp: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut mid = None;
        let mut inactive = section.split_whitespace().nth(1) == Some("0");
        for line in section.lines() {
            let line = line.trim_end();
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_string());
            }
            if line == "a=inactive" {
                inactive = true;
            }
        }
        if let (Some(mid), true) = (mid, inactive) {
            out.insert(mid);
        }
    }
    out
}

/// The mids that carried `track_ids` in any `subscriber_offer` before index `before`.
fn mids_of(log: &[Value], before: usize, track_ids: &[&str]) -> HashSet<String> {
    log.iter()
        .take(before)
        .filter(|v| msg_type(v) == "subscriber_offer")
        .flat_map(|v| v["tracks"].as_array().cloned().unwrap_or_default())
        .filter(|t| track_ids.iter().any(|id| t["track_id"] == *id))
        .filter_map(|t| t["mid"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leave_is_announced_and_others_keep_receiving() {
    bounded(Duration::from_secs(90), async {
        let server = TestServer::start().await?;
        let room = "leave";
        let a = server.publishing_participant(room, "alice").await?;
        let b = server.publishing_participant(room, "bob").await?;
        let mut c = server.publishing_participant(room, "carol").await?;
        let everyone = [&a, &b, &c];
        for r in everyone {
            for o in everyone {
                if r.id != o.id {
                    r.wait_receiving(&o.id, "audio", 20, Duration::from_secs(20)).await?;
                    r.wait_receiving(&o.id, "video", 30, Duration::from_secs(20)).await?;
                }
            }
        }
        let (c_audio, c_video) = {
            let p = c.publisher.as_ref().expect("published");
            (p.audio_track_id.clone(), p.video_track_id.clone())
        };
        let marks: Vec<usize> = [&a, &b].iter().map(|p| p.signal.log_len()).collect();

        c.leave().await.context("carol leaving")?;

        for (p, from) in [&a, &b].into_iter().zip(marks) {
            let who = format!("{} after carol left", p.id);
            let (_, left) = p
                .signal
                .wait_from(from, SIGNAL_TIMEOUT, "participant_left", |v| {
                    msg_type(v) == "participant_left" && v["participant_id"] == c.id.as_str()
                })
                .await
                .context(who.clone())?;
            ensure!(left["reason"] == "left", "{who}: participant_left reason is {}", left["reason"]);
            for track in [&c_audio, &c_video] {
                p.signal
                    .wait_from(from, SIGNAL_TIMEOUT, "track_unpublished", |v| {
                        msg_type(v) == "track_unpublished"
                            && v["participant_id"] == c.id.as_str()
                            && v["track_id"] == track.as_str()
                    })
                    .await
                    .with_context(|| format!("{who}: track_unpublished for {track}"))?;
            }
            // The next offer no longer maps carol's tracks and marks their m-lines inactive.
            let (idx, offer) = p
                .signal
                .wait_from(from, SIGNAL_TIMEOUT, "subscriber_offer after leave", |v| {
                    msg_type(v) == "subscriber_offer"
                })
                .await
                .context(who.clone())?;
            let mapped: Vec<String> = offer["tracks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t["track_id"].as_str().map(str::to_string))
                .collect();
            ensure!(
                !mapped.contains(&c_audio) && !mapped.contains(&c_video),
                "{who}: offer still maps carol's tracks: {:?}",
                offer["tracks"]
            );
            let log = p.signal.log();
            let carol_mids = mids_of(&log, idx, &[&c_audio, &c_video]);
            ensure!(carol_mids.len() == 2, "{who}: carol's tracks were on mids {carol_mids:?} before");
            let sdp = offer["sdp"].as_str().unwrap_or("");
            let inactive = inactive_mids(sdp);
            ensure!(
                carol_mids.is_subset(&inactive),
                "{who}: carol's m-lines {carol_mids:?} are not all inactive in the next offer (inactive: {inactive:?})"
            );
            p.wait_offers_answered(SIGNAL_TIMEOUT).await?;
            ensure!(p.answer_errors().is_empty(), "{who}: answer errors {:?}", p.answer_errors());
        }

        // Alice and Bob still receive each other.
        a.wait_more_packets(&b.id, "audio", 50, Duration::from_secs(10)).await?;
        a.wait_more_packets(&b.id, "video", 50, Duration::from_secs(10)).await?;
        b.wait_more_packets(&a.id, "audio", 50, Duration::from_secs(10)).await?;
        b.wait_more_packets(&a.id, "video", 50, Duration::from_secs(10)).await?;

        // Nothing arrives any more from carol: counts are stable over one second of media.
        let count = |p: &TestParticipant| -> usize {
            p.received().iter().filter(|t| t.participant_id() == c.id).map(|t| t.packets.len()).sum()
        };
        let before = (count(&a), count(&b));
        a.wait_more_packets(&b.id, "audio", 50, Duration::from_secs(10)).await?;
        let after = (count(&a), count(&b));
        ensure!(before == after, "packets from carol still arrive after she left: {before:?} -> {after:?}");

        c.close().await;
        a.close().await;
        b.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}
