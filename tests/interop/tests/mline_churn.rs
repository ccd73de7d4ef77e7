//! Churn does not grow a subscriber's SDP without bound. str0m never reuses a stopped m-line,
//! so every publisher that came and went leaves two in each viewer's offers; once a
//! subscriber connection holds `max_stopped_mlines` of them the server replaces it
//! (`subscriber_reset`, then an offer for a new connection with only the live tracks). Here a
//! viewer stays while 20 publishers in turn join, publish and leave (40 stopped m-lines, limit
//! 8): its offers stay small, and it receives the last publisher.

use std::time::Duration;

use anyhow::ensure;
use zvon_interop::{bounded, msg_type, TestParticipant, TestServer};
use zvon_signaling::ServerConfig;

const CYCLES: usize = 20;
const LIMIT: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_offers_stay_bounded_under_churn() {
    bounded(Duration::from_secs(180), async {
        let mut config = ServerConfig::for_tests();
        config.sfu.max_stopped_mlines = LIMIT;
        let server = TestServer::start_with(config).await?;
        let room = "churn";
        let viewer =
            TestParticipant::join(server.http_addr(), &server.token(room, "viewer"), room).await?;
        for i in 0..CYCLES {
            let mut p = server
                .publishing_participant(room, &format!("guest-{i}"))
                .await?;
            viewer
                .wait_receiving(&p.id, "video", 3, Duration::from_secs(20))
                .await?;
            p.leave().await?;
        }
        let last = server.publishing_participant(room, "last").await?;
        viewer
            .wait_receiving(&last.id, "video", 10, Duration::from_secs(20))
            .await?;
        viewer
            .wait_receiving(&last.id, "audio", 10, Duration::from_secs(20))
            .await?;

        let log = viewer.signal.log();
        let offers: Vec<usize> = log
            .iter()
            .filter(|v| msg_type(v) == "subscriber_offer")
            .map(|v| v["sdp"].as_str().map_or(0, str::len))
            .collect();
        let resets = log
            .iter()
            .filter(|v| msg_type(v) == "subscriber_reset")
            .count();
        let first_with_media = offers.iter().copied().find(|n| *n > 0).unwrap_or(0);
        let largest = offers.iter().copied().max().unwrap_or(0);
        ensure!(
            resets >= (CYCLES * 2) / LIMIT - 1,
            "{resets} subscriber_reset for {} stopped m-lines (limit {LIMIT})",
            CYCLES * 2
        );
        // One live publisher (2 m-lines) plus at most LIMIT + 2 stopped ones.
        ensure!(
            largest < 5 * first_with_media,
            "offers grew to {largest} bytes (first {first_with_media}): {offers:?}"
        );
        ensure!(
            !log.iter().any(|v| msg_type(v) == "error"),
            "viewer got errors: {:?}",
            log.iter()
                .filter(|v| msg_type(v) == "error")
                .collect::<Vec<_>>()
        );
        ensure!(
            viewer.answer_errors().is_empty(),
            "answering failed: {:?}",
            viewer.answer_errors()
        );
        last.close().await;
        viewer.close().await;
        server.shutdown().await;
        Ok::<(), anyhow::Error>(())
    })
    .await
}
