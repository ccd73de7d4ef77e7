//! Two media nodes on two hosts (network namespaces) joined by a wire that drops 2 % of the
//! packets at random both ways (nftables on each end's input hook; this kernel has no netem).
//! A lecturer's media sits on one node, a student's on the other, so everything the student
//! receives crossed the lossy QUIC cascade. What a user notices: the student's video keeps
//! decoding — every frame arrives whole, no freeze — and the audio has no holes, because each
//! lost datagram is NACKed by the receiving node and re-sent from the sending node's cache,
//! and the student's webrtc-rs peer (an independent stack) never sees a packet twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use zvon_interop::cluster::{ClusterNode, NodeOptions, TestHost, TestRedis};
use zvon_interop::host_link::HostLink;
use zvon_interop::media::{
    unwrap_seqs, SeqReport, VIDEO_FRAME_INTERVAL_MS, VIDEO_PACKETS_PER_FRAME, VIDEO_TICKS_PER_FRAME,
};
use zvon_interop::{bounded, token, PeerAddress, RecvPacket, TestParticipant};

/// How long the student watches through the lossy wire.
const LOSSY: Duration = Duration::from_secs(15);

/// Video as a decoder would see it: frames (by RTP timestamp) whole or not, and the longest
/// stretch without a decodable frame (a frame is decodable when it is whole and so was every
/// frame since the last keyframe).
#[derive(Debug)]
struct Decoding {
    frames: usize,
    whole: usize,
    decodable: usize,
    longest_freeze: Duration,
}

fn decoding(packets: &[RecvPacket]) -> Decoding {
    // Each sequence number once; per frame (RTP timestamp): packets and whether it is a keyframe.
    let mut seen = std::collections::HashSet::new();
    let mut frames: BTreeMap<u32, (usize, bool)> = BTreeMap::new();
    for (p, s) in packets.iter().zip(unwrap_seqs(packets)) {
        if seen.insert(s) {
            let f = frames.entry(p.timestamp).or_default();
            f.0 += 1;
            f.1 |= p.vp8_keyframe;
        }
    }
    // The student was decoding when the window opened: the chain starts unbroken.
    let (mut decodable, mut whole, mut chain) = (0, 0, true);
    let (mut freeze, mut longest, mut prev) = (0u64, 0u64, None::<u32>);
    for (&ts, &(n, key)) in &frames {
        // A frame lost whole shows as a jump of the timestamps (no wrap in a test's time).
        let lost = prev
            .map_or(0, |p| (ts - p) / VIDEO_TICKS_PER_FRAME)
            .saturating_sub(1);
        if lost > 0 {
            chain = false;
            freeze += u64::from(lost);
        }
        prev = Some(ts);
        let is_whole = n == VIDEO_PACKETS_PER_FRAME;
        whole += usize::from(is_whole);
        chain = is_whole && (key || chain);
        if chain {
            decodable += 1;
            freeze = 0;
        } else {
            freeze += 1;
        }
        longest = longest.max(freeze);
    }
    Decoding {
        frames: frames.len(),
        whole,
        decodable,
        longest_freeze: Duration::from_millis(longest * VIDEO_FRAME_INTERVAL_MS),
    }
}

/// What `p` received of `from`'s `kind` since `since`.
fn since(p: &TestParticipant, from: &str, kind: &str, since: Instant) -> Vec<RecvPacket> {
    p.received_from(from, kind)
        .map(|t| t.packets.into_iter().filter(|x| x.at >= since).collect())
        .unwrap_or_default()
}

/// A node's loss-repair counter.
async fn repair(node: &ClusterNode, event: &str) -> Result<f64> {
    node.metric("zvon_cascade_repair_total", &[("event", event)])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_keeps_decoding_across_a_lossy_cascade_link() {
    bounded(Duration::from_secs(120), async {
        let (a, b) = (TestHost::create(41)?, TestHost::create(42)?);
        let wire = HostLink::connect(&a, &b)?;
        // The participants reach both hosts from here through their veths.
        let _bind = PeerAddress::set(a.gateway);
        let redis = TestRedis::start_for_hosts(a.gateway)?;
        let mut spread = NodeOptions::new("sig", "signaling");
        spread.extra = vec!["--room-spread-after".into(), "1".into()];
        let signaling = ClusterNode::start(&redis, spread).await?;
        let mut media = vec![];
        for (id, host) in [("m1", &a), ("m2", &b)] {
            let mut o = NodeOptions::new(id, "media");
            o.host = Some((host.netns.clone(), host.ip));
            media.push(ClusterNode::start(&redis, o).await?);
        }
        let room = "lossy";
        let lecturer =
            TestParticipant::join_and_publish(signaling.http_addr, &token(room, "lecturer"), room)
                .await?;
        let student =
            TestParticipant::join(signaling.http_addr, &token(room, "student"), room).await?;
        student
            .wait_receiving(&lecturer.id, "video", 60, Duration::from_secs(20))
            .await?;
        student
            .wait_receiving(&lecturer.id, "audio", 30, Duration::from_secs(20))
            .await?;
        let origin = redis.cli(&["GET", &format!("zvon:room-media:{room}")])?;
        let edge = media
            .iter()
            .find(|n| n.id != origin)
            .context("the student's node")?;

        wire.drop_randomly(&a, &b, 2)?;
        let start = Instant::now();
        let sent_before = lecturer
            .sent
            .video_packets
            .load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(LOSSY).await;
        // Repairs of the last packets land within a few round trips.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = lecturer
            .sent
            .video_packets
            .load(std::sync::atomic::Ordering::Relaxed)
            - sent_before;

        let dropped = wire.dropped(&a, &b)?;
        let video = since(&student, &lecturer.id, "video", start);
        let audio = since(&student, &lecturer.id, "audio", start);
        let (v, au) = (SeqReport::of(&video), SeqReport::of(&audio));
        let d = decoding(&video);
        let (requested, repaired, unrepaired, duplicates) = (
            repair(edge, "requested").await?,
            repair(edge, "repaired").await?,
            repair(edge, "unrepaired").await?,
            repair(edge, "duplicate").await?,
        );
        let origin_node = media.iter().find(|n| n.id == origin).context("origin")?;
        let resent = repair(origin_node, "resent").await?;
        println!(
            "2 % loss on the wire for {LOSSY:?}: {dropped} packets dropped by the wire; \
             {sent} video packets sent; student video {v:?}, audio {au:?}; {d:?}; \
             edge asked for {requested}, repaired {repaired}, gave up {unrepaired}, \
             dropped {duplicates} duplicates; origin re-sent {resent}"
        );
        // The wire did lose packets of the media ...
        ensure!(dropped >= 20, "the wire dropped only {dropped} packets");
        ensure!(
            requested >= 10.0 && repaired >= 10.0,
            "nothing was repaired"
        );
        // ... and the student saw (almost) none of it: no hole left, nothing twice.
        let loss = |r: &SeqReport| r.missing as f64 / (r.distinct + r.missing).max(1) as f64;
        ensure!(
            loss(&v) <= 0.002,
            "video loss after repair {:.3} %",
            loss(&v) * 100.0
        );
        ensure!(
            loss(&au) <= 0.002,
            "audio loss after repair {:.3} %",
            loss(&au) * 100.0
        );
        // The student's node forwarded nothing twice (`duplicates` counts what it dropped); a
        // packet the repair delivered late may still be NACKed by the student and re-sent by
        // its own node's str0m (that hop's repair), so a late packet can arrive twice (seen
        // once in a first run): a few, never more than the late ones.
        ensure!(
            v.duplicates + au.duplicates <= v.reordered + au.reordered,
            "more duplicates than late packets reached the student"
        );
        // The picture kept going: (nearly) every frame whole and decodable, no freeze.
        ensure!(d.frames >= 300, "{d:?}");
        ensure!(d.whole as f64 >= 0.99 * d.frames as f64, "{d:?}");
        ensure!(d.decodable as f64 >= 0.99 * d.frames as f64, "{d:?}");
        ensure!(d.longest_freeze <= Duration::from_millis(300), "{d:?}");

        student.close().await;
        lecturer.close().await;
        drop(media);
        drop(wire);
        Ok(())
    })
    .await;
}
