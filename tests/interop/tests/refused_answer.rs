//! A subscriber answer the server cannot apply (its m-lines do not match the offer) is refused
//! with `invalid_sdp`, and the tracks of that offer are not lost with it: a new
//! `subscriber_offer` carries them again, and once that one is answered properly the
//! subscriber receives them.

use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::{json, Value};
use webrtc::peer_connection::RTCSessionDescription;
use zvon_interop::peer::Peer;
use zvon_interop::{bounded, msg_type, SignalClient, TestServer, SIGNAL_TIMEOUT};

/// A real answer to `offer` from `peer`, after gathering.
async fn answer(peer: &Peer, offer: &Value) -> Result<String> {
    let sdp = offer["sdp"].as_str().context("offer without sdp")?;
    peer.pc
        .set_remote_description(RTCSessionDescription::offer(sdp.to_string())?)
        .await?;
    let answer = peer.pc.create_answer(None).await?;
    peer.pc.set_local_description(answer).await?;
    peer.wait_gathering_complete(Duration::from_secs(3)).await;
    Ok(peer
        .pc
        .local_description()
        .await
        .context("no local description")?
        .sdp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tracks_of_a_refused_answer_are_offered_again() {
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
        let (first_at, first) = bob
            .wait_from(0, SIGNAL_TIMEOUT, "subscriber_offer", |v| {
                msg_type(v) == "subscriber_offer"
            })
            .await?;
        ensure!(
            first["tracks"].as_array().map_or(0, Vec::len) == 2,
            "first offer: {first}"
        );

        // An answer whose m-lines name mids the offer never had.
        let scratch = Peer::new("scratch").await?;
        let good = answer(&scratch, &first).await?;
        scratch.close().await;
        let bad: String = good
            .lines()
            .map(|l| match l.strip_prefix("a=mid:") {
                Some(mid) => format!("a=mid:x{mid}\r\n"),
                None => format!("{l}\r\n"),
            })
            .collect();
        bob.send_json(&json!({"type": "subscriber_answer", "sdp": bad}))
            .await?;
        bob.wait_error("invalid_sdp", SIGNAL_TIMEOUT).await?;

        let (_, second) = bob
            .wait_from(first_at + 1, Duration::from_secs(5), "a new subscriber_offer", |v| {
                msg_type(v) == "subscriber_offer"
            })
            .await?;
        let listed: Vec<&str> = second["tracks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["participant_id"].as_str())
            .collect();
        ensure!(
            listed == [ann.id.as_str(), ann.id.as_str()],
            "the new offer lists {listed:?}, not ann's two tracks: {second}"
        );

        let peer = Peer::new("subscriber").await?;
        let sdp = answer(&peer, &second).await?;
        bob.send_json(&json!({"type": "subscriber_answer", "sdp": sdp}))
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
        ensure!(
            bob.log()
                .iter()
                .filter(|v| msg_type(v) == "error")
                .count()
                == 1,
            "errors besides the refused answer: {:?}",
            bob.log()
        );
        peer.close().await;
        ann.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await
}
