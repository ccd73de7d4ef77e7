//! Every participant of a room receives every other participant's audio and video, on
//! rewritten SSRCs, with continuous sequence numbers.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Result};
use zvon_interop::media::SeqReport;
use zvon_interop::{bounded, describe_received, TestParticipant, TestServer};

/// Packets each received stream must show without a gap.
const MIN_AUDIO: usize = 100;
const MIN_VIDEO: usize = 150;

async fn room_of(n: usize) -> Result<()> {
    let server = TestServer::start().await?;
    let room = format!("forward-{n}");
    let mut people: Vec<TestParticipant> = Vec::new();
    for i in 0..n {
        people.push(
            server
                .publishing_participant(&room, &format!("p{i}"))
                .await?,
        );
    }

    // Everybody gets enough of everybody else.
    let mut waits = Vec::new();
    for r in &people {
        for o in &people {
            if r.id == o.id {
                continue;
            }
            waits.push(r.wait_receiving(&o.id, "audio", MIN_AUDIO, Duration::from_secs(30)));
            waits.push(r.wait_receiving(&o.id, "video", MIN_VIDEO, Duration::from_secs(30)));
        }
    }
    if let Err(e) = futures_util::future::try_join_all(waits).await {
        anyhow::bail!("{e:#}\nsfu stats: {:?}", server.server.sfu_stats.snapshot());
    }

    let original_ssrcs: HashSet<u32> = people
        .iter()
        .filter_map(|p| p.publisher.as_ref())
        .flat_map(|p| [p.audio_ssrc, p.video_ssrc])
        .collect();

    for r in &people {
        let mut seen_ssrcs = HashSet::new();
        for o in &people {
            if r.id == o.id {
                continue;
            }
            let publisher = o.publisher.as_ref().expect("published");
            for (kind, track_id, min) in [
                ("audio", &publisher.audio_track_id, MIN_AUDIO),
                ("video", &publisher.video_track_id, MIN_VIDEO),
            ] {
                let t = r.received_from(&o.id, kind).expect("waited for it above");
                let ctx = format!("{} receiving {kind} of {}", r.id, o.id);
                ensure!(
                    &t.track_id == track_id,
                    "{ctx}: a=msid track id {} is not the published track id {track_id}",
                    t.track_id
                );
                ensure!(
                    !original_ssrcs.contains(&t.ssrc),
                    "{ctx}: SSRC {:#x} is a publisher's original SSRC (not rewritten)",
                    t.ssrc
                );
                ensure!(
                    seen_ssrcs.insert(t.ssrc),
                    "{ctx}: SSRC {:#x} used for two received tracks",
                    t.ssrc
                );
                let main = t.main_packets();
                let report = SeqReport::of(&main);
                ensure!(
                    main.len() >= min,
                    "{ctx}: only {} packets on the main SSRC ({} in all)",
                    main.len(),
                    t.packets.len()
                );
                ensure!(
                    report.missing == 0 && report.duplicates == 0,
                    "{ctx}: sequence numbers not continuous: {report:?}"
                );
                let pts: HashSet<u8> = main.iter().map(|p| p.payload_type).collect();
                ensure!(
                    pts.len() == 1,
                    "{ctx}: several payload types on one stream: {pts:?}"
                );
                // Timestamps never go backwards by more than reordering could explain.
                let backwards = main
                    .windows(2)
                    .filter(|w| (w[1].timestamp.wrapping_sub(w[0].timestamp) as i32) < 0)
                    .count();
                ensure!(
                    backwards <= report.reordered,
                    "{ctx}: timestamps go backwards {backwards} times"
                );
                eprintln!(
                    "{ctx}: ssrc {:#x}, {} packets, {} reordered, max jump {}",
                    t.ssrc, report.packets, report.reordered, report.max_jump
                );
            }
        }
        ensure!(
            r.answer_errors().is_empty(),
            "{}: errors answering subscriber offers: {:?}",
            r.id,
            r.answer_errors()
        );
        eprintln!("{} received {}", r.id, describe_received(&r.received()));
    }

    let stats = server.server.sfu_stats.snapshot();
    eprintln!("sfu stats: {stats:?}");
    for p in people {
        p.close().await;
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_participants_receive_each_other() {
    bounded(Duration::from_secs(90), room_of(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_participants_receive_each_other() {
    bounded(Duration::from_secs(90), room_of(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_participants_receive_each_other() {
    bounded(Duration::from_secs(120), room_of(5)).await;
}
