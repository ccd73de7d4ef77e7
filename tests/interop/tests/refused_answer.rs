//! A subscriber answer whose m-lines do not fit the offer (a client that munged its SDP) is
//! refused with `invalid_sdp` without touching the connection, and the offer stays
//! outstanding: the client's corrected answer to the same offer is taken, and the subscriber
//! receives the tracks. (Before, the refused answer spent the offer and left its tracks
//! half-negotiated for good: the corrected answer got `invalid_request`, and no media came.)

use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use serde_json::json;
use webrtc::peer_connection::RTCSessionDescription;
use zvon_interop::peer::Peer;
use zvon_interop::{bounded, msg_type, SignalClient, TestServer, SIGNAL_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_answer_leaves_the_offer_to_answer_again() {
    bounded(Duration::from_secs(60), async {
        let server = TestServer::start().await?;
        let room = "refused-answer";
        let ann = server.publishing_participant(room, "ann").await?;

        let bob = SignalClient::connect(server.http_addr(), None)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        bob.send_json(&json!({"type": "join", "protocol": 1,
            "token": server.token(room, "bob"), "room": room}))
            .await?;
        bob.wait_type("joined", SIGNAL_TIMEOUT).await?;
        let offer = bob.wait_type("subscriber_offer", SIGNAL_TIMEOUT).await?;
        ensure!(
            offer["tracks"].as_array().map_or(0, Vec::len) == 2,
            "offer: {offer}"
        );

        let peer = Peer::new("subscriber").await?;
        let sdp = offer["sdp"].as_str().context("offer without sdp")?;
        peer.pc
            .set_remote_description(RTCSessionDescription::offer(sdp.to_string())?)
            .await?;
        let answer = peer.pc.create_answer(None).await?;
        peer.pc.set_local_description(answer).await?;
        peer.wait_gathering_complete(Duration::from_secs(3)).await;
        let good = peer
            .pc
            .local_description()
            .await
            .context("no local description")?
            .sdp;

        // The same answer with m-lines naming mids the offer never had.
        let munged: String = good
            .lines()
            .map(|l| match l.strip_prefix("a=mid:") {
                Some(mid) => format!("a=mid:x{mid}\r\n"),
                None => format!("{l}\r\n"),
            })
            .collect();
        bob.send_json(&json!({"type": "subscriber_answer", "sdp": munged}))
            .await?;
        bob.wait_error("invalid_sdp", SIGNAL_TIMEOUT).await?;

        bob.send_json(&json!({"type": "subscriber_answer", "sdp": good}))
            .await?;
        peer.wait_connected(Duration::from_secs(15)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got: Vec<(String, usize)> = peer
                .received()
                .iter()
                .map(|t| (t.kind.clone(), t.packets.len()))
                .collect();
            if ["audio", "video"]
                .iter()
                .all(|k| got.iter().any(|(kind, n)| kind == k && *n >= 10))
            {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "bob does not receive ann's audio and video: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let errors: Vec<_> = bob
            .log()
            .into_iter()
            .filter(|v| msg_type(v) == "error")
            .collect();
        ensure!(
            errors.len() == 1,
            "errors besides the refused answer: {errors:?}"
        );
        peer.close().await;
        ann.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
