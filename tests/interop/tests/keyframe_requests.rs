//! A subscriber's PLI reaches the publisher (on the publisher's own SSRC), and PLIs within the
//! server's throttle window (`SfuConfig::keyframe_request_interval`, 500 ms) reach it once.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use zvon_interop::peer::feedback_summary;
use zvon_interop::{bounded, TestParticipant, TestServer};

/// Longer than the server's throttle window, so a request after this much quiet is not held back.
const QUIET: Duration = Duration::from_millis(1000);
/// Window in which throttled duplicates must not reach the publisher.
const COUNT_WINDOW: Duration = Duration::from_millis(400);

struct Setup {
    server: TestServer,
    publisher: TestParticipant,
    subs: Vec<TestParticipant>,
}

async fn setup(room: &str, subscribers: usize) -> Result<Setup> {
    let server = TestServer::start().await?;
    let publisher = server.publishing_participant(room, "camera").await?;
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let token = server.token(room, &format!("viewer{i}"));
        subs.push(TestParticipant::join(server.http_addr(), &token, room).await?);
    }
    for s in &subs {
        s.wait_receiving(&publisher.id, "video", 30, Duration::from_secs(20))
            .await?;
    }
    Ok(Setup {
        server,
        publisher,
        subs,
    })
}

/// Waits out any keyframe requests the server sends on its own (new subscriber, start-up).
async fn wait_quiet(p: &TestParticipant) -> Result<()> {
    p.wait_keyframe_requests_quiet(QUIET, Duration::from_secs(15))
        .await
        .context("waiting for keyframe requests to the publisher to stop")
}

async fn count_after(p: &TestParticipant, since: Instant, window: Duration) -> usize {
    tokio::time::sleep_until((since + window).into()).await;
    p.keyframe_requests_since(since)
        .into_iter()
        .filter(|s| s.at <= since + window)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pli_reaches_publisher_on_its_own_ssrc() {
    bounded(Duration::from_secs(90), async {
        let Setup { server, publisher, subs } = setup("pli-one", 1).await?;
        wait_quiet(&publisher).await?;
        let video_ssrc = publisher.publisher.as_ref().expect("published").video_ssrc;
        let stats_before = server.server.sfu_stats.snapshot();

        let sent_at = Instant::now();
        let received_ssrc = subs[0].send_pli(&publisher.id).await?;
        ensure!(received_ssrc != video_ssrc, "subscriber receives the original SSRC {video_ssrc:#x}");
        let deadline = sent_at + Duration::from_secs(3);
        loop {
            if !publisher.keyframe_requests_since(sent_at).is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no PLI/FIR for the publisher's video SSRC {video_ssrc:#x} within 3 s of the subscriber's PLI \
                 (media_ssrc {received_ssrc:#x}); feedback seen by the publisher: {:?}; sfu stats before {:?} after {:?}",
                feedback_summary(&publisher.publisher_feedback()),
                stats_before,
                server.server.sfu_stats.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = &publisher.keyframe_requests_since(sent_at)[0];
        eprintln!("{} reached the publisher after {:?}", first.kind, first.at - sent_at);
        eprintln!("sfu stats: {:?}", server.server.sfu_stats.snapshot());
        for s in subs {
            s.close().await;
        }
        publisher.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn back_to_back_plis_from_one_subscriber_reach_publisher_once() {
    bounded(Duration::from_secs(90), async {
        let Setup { server, publisher, subs } = setup("pli-burst", 1).await?;
        wait_quiet(&publisher).await?;
        let sent_at = Instant::now();
        subs[0].send_pli(&publisher.id).await?;
        subs[0].send_pli(&publisher.id).await?;
        let n = count_after(&publisher, sent_at, COUNT_WINDOW).await;
        ensure!(
            n == 1,
            "two back-to-back PLIs gave {n} keyframe requests at the publisher within {COUNT_WINDOW:?}; \
             feedback: {:?}; sfu stats {:?}",
            feedback_summary(&publisher.publisher_feedback()),
            server.server.sfu_stats.snapshot()
        );
        for s in subs {
            s.close().await;
        }
        publisher.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_plis_from_two_subscribers_reach_publisher_once() {
    bounded(Duration::from_secs(90), async {
        let Setup { server, publisher, subs } = setup("pli-two", 2).await?;
        wait_quiet(&publisher).await?;
        let stats_before = server.server.sfu_stats.snapshot();
        let sent_at = Instant::now();
        let (a, b) = tokio::join!(subs[0].send_pli(&publisher.id), subs[1].send_pli(&publisher.id));
        a?;
        b?;
        let n = count_after(&publisher, sent_at, COUNT_WINDOW).await;
        let stats_after = server.server.sfu_stats.snapshot();
        ensure!(
            n == 1,
            "PLIs from two subscribers at once gave {n} keyframe requests at the publisher within \
             {COUNT_WINDOW:?}; feedback: {:?}; sfu stats before {stats_before:?} after {stats_after:?}",
            feedback_summary(&publisher.publisher_feedback()),
        );
        eprintln!("sfu stats before {stats_before:?}\n after {stats_after:?}");
        for s in subs {
            s.close().await;
        }
        publisher.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}
