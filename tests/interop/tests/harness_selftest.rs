//! The harness against itself, no server: a webrtc-rs publisher straight to a webrtc-rs
//! subscriber on loopback. Checks that what the other tests rely on (synthetic media, packet
//! recording, PLI reaching the publisher) works, so their failures point at the server.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use serde_json::json;
use webrtc::peer_connection::RTCSessionDescription;
use zvon_interop::media::SeqReport;
use zvon_interop::participant::{PublisherOffer, SentCounters};
use zvon_interop::peer::Peer;
use zvon_interop::{bounded, describe_received, init_tracing};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publisher_to_subscriber_directly() {
    bounded(Duration::from_secs(60), async {
        init_tracing();
        let offer = PublisherOffer::create("self").await?;
        let sub = Peer::new("self-subscriber").await?;
        sub.pc
            .set_remote_description(RTCSessionDescription::offer(offer.sdp.clone())?)
            .await
            .context("sub set_remote")?;
        let answer = sub.pc.create_answer(None).await?;
        sub.pc.set_local_description(answer).await?;
        sub.wait_gathering_complete(Duration::from_secs(3)).await;
        let answer_sdp = sub
            .pc
            .local_description()
            .await
            .ok_or_else(|| anyhow!("no answer"))?
            .sdp;
        let publisher = offer
            .accept(&answer_sdp, "TR_A".into(), "TR_V".into(), json!({}))
            .await?;
        let sent = Arc::new(SentCounters::default());
        let running = Arc::new(AtomicBool::new(true));
        let sender = publisher.spawn_sender(sent.clone(), running.clone());

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = sub.received();
            if r.len() == 2 && r.iter().all(|t| t.packets.len() >= 100) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "not enough received: {}",
                describe_received(&r)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in sub.received() {
            let report = SeqReport::of(&t.main_packets());
            eprintln!("{} {} ssrc {:#x}: {report:?}", t.kind, t.track_id, t.ssrc);
            ensure!(report.missing == 0, "{} has gaps: {report:?}", t.kind);
        }
        let video_index = sub
            .received()
            .iter()
            .position(|t| t.kind == "video")
            .ok_or_else(|| anyhow!("no video received"))?;
        let before = Instant::now();
        let ssrc = sub.send_pli(video_index).await?;
        ensure!(
            ssrc == publisher.video_ssrc,
            "direct call: received SSRC {ssrc:#x} != sent {:#x}",
            publisher.video_ssrc
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let fb = publisher.feedback();
            if fb
                .iter()
                .any(|s| s.at >= before && s.kind == "pli" && s.media_ssrc == publisher.video_ssrc)
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "PLI never reached the publisher; feedback {fb:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = sender.await;
        eprintln!("sent {sent:?}");
        sub.close().await;
        publisher.peer.close().await;
        Ok(())
    })
    .await;
}
