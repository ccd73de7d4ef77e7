//! A subscriber that answers its offer and then never connects (its ICE never reaches the
//! server: a client that crashed, a network that drops UDP): nothing is written towards it while
//! its connection is not up (str0m would queue it without bound), and once the media-setup
//! timeout passes it is cut with `media_timeout` (4504) and counted in
//! `zvon_media_setup_timeouts_total`. The publisher in the same room is unaffected.

use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use serde_json::json;
use webrtc::peer_connection::RTCSessionDescription;
use zvon_interop::peer::Peer;
use zvon_interop::{bounded, http_get, msg_type, SignalClient, TestServer, SIGNAL_TIMEOUT};
use zvon_signaling::ServerConfig;

const SETUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The sum of every sample of `family` in a /metrics text.
fn metric_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_never_connects_gets_nothing_and_is_cut() {
    bounded(Duration::from_secs(60), async {
        let mut config = ServerConfig::for_tests();
        config.sfu.media_setup_timeout = SETUP_TIMEOUT;
        let server = TestServer::start_with(config).await?;
        let metrics = server.server.metrics_addr;
        let room = "never-connects";
        let ann = server.publishing_participant(room, "ann").await?;

        // Bob answers with a real webrtc-rs answer, but his connection is closed before it
        // ever sends a connectivity check.
        let bob = SignalClient::connect(server.http_addr(), None)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        bob.send_json(&json!({"type": "join", "protocol": 1,
            "token": server.token(room, "bob"), "room": room}))
            .await?;
        bob.wait_type("joined", SIGNAL_TIMEOUT).await?;
        let offer = bob.wait_type("subscriber_offer", SIGNAL_TIMEOUT).await?;
        let peer = Peer::new("silent-subscriber").await?;
        let sdp = offer["sdp"].as_str().context("offer without sdp")?;
        peer.pc
            .set_remote_description(RTCSessionDescription::offer(sdp.to_string())?)
            .await?;
        let answer = peer.pc.create_answer(None).await?;
        peer.close().await;
        bob.send_json(&json!({"type": "subscriber_answer", "sdp": answer.sdp}))
            .await?;

        // Ann keeps sending audio and video all along; none of it goes to Bob.
        tokio::time::sleep(SETUP_TIMEOUT - Duration::from_secs(1)).await;
        ensure!(
            !bob.log().iter().any(|v| msg_type(v) == "error"),
            "bob was cut before the timeout: {:?}",
            bob.log()
        );
        let (_, text) = http_get(metrics, "/metrics").await?;
        let forwarded = metric_sum(&text, "zvon_rtp_packets_sent_total");
        let received = metric_sum(&text, "zvon_rtp_packets_received_total");
        ensure!(received > 0.0, "ann's media does not reach the server");
        ensure!(
            forwarded == 0.0,
            "{forwarded} packets written to a subscriber whose connection never came up"
        );

        let error = bob
            .wait_error("media_timeout", SETUP_TIMEOUT + Duration::from_secs(5))
            .await?;
        ensure!(
            error["message"].is_string(),
            "error without message: {error}"
        );
        let code = bob.wait_closed(Duration::from_secs(5)).await?;
        ensure!(code == Some(4504), "closed with {code:?}, not 4504");
        let (_, text) = http_get(metrics, "/metrics").await?;
        ensure!(
            metric_sum(&text, "zvon_media_setup_timeouts_total") == 1.0,
            "zvon_media_setup_timeouts_total is not 1"
        );

        // Ann is told Bob left, and was not cut herself: her connection came up.
        ann.signal
            .wait_from(0, Duration::from_secs(5), "participant_left", |v| {
                msg_type(v) == "participant_left"
            })
            .await?;
        ensure!(
            !ann.signal.log().iter().any(|v| msg_type(v) == "error"),
            "ann got an error: {:?}",
            ann.signal.log()
        );
        ann.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
