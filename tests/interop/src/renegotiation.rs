//! A participant renegotiating on its publisher connection (`publish_offer` again on the same
//! connection, as docs/protocol.md allows).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use webrtc::peer_connection::RTCSessionDescription;

use crate::participant::{TestParticipant, SIGNAL_TIMEOUT};
use crate::peer::Peer;
use crate::signal::msg_type;

impl TestParticipant {
    /// Sends `sdp` (an offer made on `peer`, this participant's publisher connection) as a
    /// further `publish_offer` declaring `tracks`; applies the answer and returns it.
    pub async fn renegotiate(&self, peer: &Peer, sdp: String, tracks: Value) -> Result<Value> {
        let from = self.signal.log_len();
        self.signal
            .send_json(&json!({"type": "publish_offer", "request_id": "republish", "sdp": sdp, "tracks": tracks}))
            .await?;
        let (_, reply) = self
            .signal
            .wait_from(from, SIGNAL_TIMEOUT, "publish_answer", |v| {
                matches!(msg_type(v), "publish_answer" | "error")
            })
            .await?;
        if msg_type(&reply) != "publish_answer" {
            bail!("renegotiation refused: {reply}");
        }
        let answer = reply["sdp"].as_str().unwrap_or_default().to_string();
        peer.pc
            .set_remote_description(RTCSessionDescription::answer(answer).context("parse answer")?)
            .await
            .context("set_remote_description(answer)")?;
        Ok(reply)
    }

    /// A renegotiation that changes nothing: a fresh offer on the same publisher connection
    /// declaring the same microphone and camera.
    pub async fn renegotiate_unchanged(&self) -> Result<()> {
        let publisher = self.publisher.as_ref().context("not publishing")?;
        let sdp = publisher.peer.make_offer().await?;
        let tracks = json!([
            {"mid": publisher.audio_mid, "kind": "audio", "source": "microphone", "muted": false},
            {"mid": publisher.video_mid, "kind": "video", "source": "camera", "muted": false},
        ]);
        self.renegotiate(&publisher.peer, sdp, tracks).await?;
        Ok(())
    }
}
