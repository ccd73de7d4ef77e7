//! `TestParticipant`: one client of the protocol — a WebSocket, a publisher connection that
//! offers audio + video, and a subscriber connection that answers every `subscriber_offer`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::RTCSessionDescription;
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::media::{self, opus_payload, vp8_frame_payloads};
use crate::peer::{classify_feedback, Peer, ReceivedTrack, RtcpSeen};
use crate::signal::{msg_type, SignalClient};

/// Bound on every single signaling round trip the harness waits for.
pub const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on ICE + DTLS coming up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What this participant publishes, once `publish` succeeded.
pub struct Publisher {
    pub peer: Peer,
    pub audio: Arc<TrackLocalStaticRTP>,
    pub video: Arc<TrackLocalStaticRTP>,
    pub audio_ssrc: u32,
    pub video_ssrc: u32,
    pub audio_pt: u8,
    pub video_pt: u8,
    pub audio_mid: String,
    pub video_mid: String,
    /// Server-assigned track ids (`TR_…`) from `publish_answer`.
    pub audio_track_id: String,
    pub video_track_id: String,
    pub answer: Value,
    feedback: Arc<Mutex<Vec<RtcpSeen>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Counters of the media sender.
#[derive(Debug, Default)]
pub struct SentCounters {
    pub audio_packets: AtomicU64,
    pub video_packets: AtomicU64,
    pub video_frames: AtomicU64,
    pub keyframes: AtomicU64,
    pub write_errors: AtomicU64,
}

pub struct TestParticipant {
    /// Participant id from `joined` (`PA_…`).
    pub id: String,
    pub identity: String,
    pub room: String,
    pub joined: Value,
    pub signal: Arc<SignalClient>,
    /// The subscriber connection; replaced by a new one at a `media_reset`.
    subscriber: Arc<Mutex<Arc<Peer>>>,
    pub publisher: Option<Publisher>,
    pub sent: Arc<SentCounters>,
    answer_errors: Arc<Mutex<Vec<String>>>,
    answers_sent: Arc<AtomicU64>,
    sending: Arc<AtomicBool>,
    sender_task: Option<tokio::task::JoinHandle<()>>,
    answer_task: tokio::task::JoinHandle<()>,
}

impl TestParticipant {
    /// Opens the socket, creates the subscriber connection and sends `join` with `room`
    /// (optional field). Fails unless the server answers `joined`.
    pub async fn join(http_addr: SocketAddr, token: &str, room: &str) -> Result<TestParticipant> {
        Self::join_with(http_addr, token, room, json!({})).await
    }

    /// [`TestParticipant::join`] with more `join` fields (e.g. `video_subscription`).
    pub async fn join_with(
        http_addr: SocketAddr,
        token: &str,
        room: &str,
        extra: Value,
    ) -> Result<TestParticipant> {
        let subscriber = Arc::new(Mutex::new(Arc::new(Peer::new("subscriber").await?)));
        let (offer_tx, offer_rx) = mpsc::unbounded_channel();
        // Resets travel in the same queue as offers: the offer after a reset must be answered
        // on the new connection, never on the old one.
        let routed = vec!["subscriber_offer", "media_reset", "subscriber_reset"];
        let signal = SignalClient::connect(http_addr, Some((routed, offer_tx)))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let signal = Arc::new(signal);
        let answer_errors = Arc::new(Mutex::new(Vec::new()));
        let answers_sent = Arc::new(AtomicU64::new(0));
        let answer_task = tokio::spawn(answer_loop(
            signal.clone(),
            subscriber.clone(),
            offer_rx,
            answer_errors.clone(),
            answers_sent.clone(),
        ));
        let mut join = json!({"type": "join", "protocol": 1, "token": token, "room": room, "request_id": "join-1"});
        if let (Some(join), Some(extra)) = (join.as_object_mut(), extra.as_object()) {
            join.extend(extra.clone());
        }
        signal.send_json(&join).await?;
        let (_, reply) = signal
            .wait_from(0, SIGNAL_TIMEOUT, "joined", |v| {
                matches!(msg_type(v), "joined" | "error")
            })
            .await?;
        if msg_type(&reply) != "joined" {
            bail!("join refused: {reply}");
        }
        let id = reply["participant"]["id"]
            .as_str()
            .ok_or_else(|| anyhow!("joined without participant.id: {reply}"))?
            .to_string();
        let identity = reply["participant"]["identity"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Ok(TestParticipant {
            id,
            identity,
            room: room.to_string(),
            joined: reply,
            signal,
            subscriber,
            publisher: None,
            sent: Arc::new(SentCounters::default()),
            answer_errors,
            answers_sent,
            sending: Arc::new(AtomicBool::new(false)),
            sender_task: None,
            answer_task,
        })
    }

    /// Publishes a microphone (Opus) and a camera (VP8) track: `publish_offer` →
    /// `publish_answer`, then waits for the publisher connection to be up.
    pub async fn publish(&mut self) -> Result<()> {
        self.publish_with_audio_muted(false).await
    }

    /// [`TestParticipant::publish`], declaring the microphone muted (or not) from the start.
    pub async fn publish_with_audio_muted(&mut self, audio_muted: bool) -> Result<()> {
        let offer = PublisherOffer::create(&self.identity).await?;
        let from = self.signal.log_len();
        self.signal
            .send_json(&json!({
                "type": "publish_offer",
                "request_id": "publish-1",
                "sdp": offer.sdp,
                "tracks": [
                    {"mid": offer.audio_mid, "kind": "audio", "source": "microphone", "muted": audio_muted},
                    {"mid": offer.video_mid, "kind": "video", "source": "camera", "muted": false},
                ],
            }))
            .await?;
        let (_, reply) = self
            .signal
            .wait_from(from, SIGNAL_TIMEOUT, "publish_answer", |v| {
                // Only an error about this offer: a late subscriber_answer refused after a
                // media_reset (its offer came from the old node) is not a publish refusal.
                msg_type(v) == "publish_answer"
                    || (msg_type(v) == "error" && v["request_id"] == "publish-1")
            })
            .await?;
        if msg_type(&reply) != "publish_answer" {
            bail!("publish refused: {reply}");
        }
        let answer_sdp = reply["sdp"]
            .as_str()
            .ok_or_else(|| anyhow!("publish_answer without sdp"))?;
        let track_id_for = |mid: &str| -> Result<String> {
            reply["tracks"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["mid"] == mid))
                .and_then(|t| t["id"].as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("publish_answer has no track for mid {mid}: {reply}"))
        };
        let audio_track_id = track_id_for(&offer.audio_mid)?;
        let video_track_id = track_id_for(&offer.video_mid)?;
        let publisher = offer
            .accept(answer_sdp, audio_track_id, video_track_id, reply.clone())
            .await?;
        self.publisher = Some(publisher);
        Ok(())
    }

    /// Starts sending audio (50 packets/s) and VP8 video (30 frames/s, 3 packets each, a
    /// keyframe every 30th frame) on the published tracks.
    pub fn start_media(&mut self) -> Result<()> {
        let p = self
            .publisher
            .as_ref()
            .ok_or_else(|| anyhow!("start_media before publish"))?;
        if self.sender_task.is_some() {
            return Ok(());
        }
        self.sending.store(true, Ordering::SeqCst);
        self.sender_task = Some(p.spawn_sender(self.sent.clone(), self.sending.clone()));
        Ok(())
    }

    pub async fn stop_media(&mut self) {
        self.sending.store(false, Ordering::SeqCst);
        if let Some(t) = self.sender_task.take() {
            let _ = t.await;
        }
    }

    /// Join + publish + start media.
    pub async fn join_and_publish(
        http_addr: SocketAddr,
        token: &str,
        room: &str,
    ) -> Result<TestParticipant> {
        let mut p = TestParticipant::join(http_addr, token, room).await?;
        p.publish().await?;
        p.start_media()?;
        Ok(p)
    }

    /// The current subscriber connection.
    pub fn subscriber(&self) -> Arc<Peer> {
        self.subscriber
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a `media_reset`: publishes again on a new publisher connection with the same mids
    /// (so the track ids stay) and resumes sending if it was sending. The subscriber side was
    /// already replaced when the reset arrived.
    pub async fn republish(&mut self) -> Result<()> {
        let was_sending = self.sender_task.is_some();
        self.stop_media().await;
        if let Some(old) = self.publisher.take() {
            for t in &old.tasks {
                t.abort();
            }
            old.peer.close().await;
        }
        self.publish().await?;
        if was_sending {
            self.start_media()?;
        }
        Ok(())
    }

    /// Waits (up to `limit`) for a `media_reset` after log index `from`, then publishes again
    /// as the protocol asks; returns the reset's reason.
    pub async fn recover_media(&mut self, from: usize, limit: Duration) -> Result<String> {
        let (_, reset) = self
            .signal
            .wait_from(from, limit, "media_reset", |v| msg_type(v) == "media_reset")
            .await?;
        self.republish().await?;
        Ok(reset["reason"].as_str().unwrap_or("").to_string())
    }

    /// What the subscriber connection received so far.
    pub fn received(&self) -> Vec<ReceivedTrack> {
        self.subscriber().received()
    }

    /// The received track of `kind` published by `participant_id` (by `a=msid`), if any.
    pub fn received_from(&self, participant_id: &str, kind: &str) -> Option<ReceivedTrack> {
        self.received()
            .into_iter()
            .filter(|t| t.participant_id() == participant_id && t.kind == kind)
            .max_by_key(|t| t.packets.len())
    }

    /// Waits until at least `min_packets` packets of `kind` from `participant_id` arrived.
    pub async fn wait_receiving(
        &self,
        participant_id: &str,
        kind: &str,
        min_packets: usize,
        timeout: Duration,
    ) -> Result<ReceivedTrack> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.received_from(participant_id, kind) {
                if t.packets.len() >= min_packets {
                    return Ok(t);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: after {timeout:?}, fewer than {min_packets} {kind} packets from {participant_id}; received: {}; answer errors: {:?}; subscriber state {:?}; log: {}",
                    self.id,
                    describe_received(&self.received()),
                    self.answer_errors(),
                    self.subscriber().connection_state(),
                    crate::signal::summarize(&self.signal.log()),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` more packets (beyond what is there now) of `kind` from `participant_id`
    /// arrive: the stream is still flowing.
    pub async fn wait_more_packets(
        &self,
        participant_id: &str,
        kind: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<()> {
        let now = self
            .received_from(participant_id, kind)
            .map(|t| t.packets.len())
            .unwrap_or(0);
        self.wait_receiving(participant_id, kind, now + n, timeout)
            .await
            .map(|_| ())
    }

    /// Sends a PLI for the video track received from `participant_id`, with `media_ssrc` the
    /// SSRC this subscriber receives it on. Returns that SSRC.
    pub async fn send_pli(&self, participant_id: &str) -> Result<u32> {
        let tracks = self.received();
        let (index, _) = tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.participant_id() == participant_id && t.kind == "video")
            .max_by_key(|(_, t)| t.packets.len())
            .ok_or_else(|| anyhow!("no video track received from {participant_id}"))?;
        self.subscriber().send_pli(index).await
    }

    /// RTCP feedback that reached this participant's publisher so far.
    pub fn publisher_feedback(&self) -> Vec<RtcpSeen> {
        self.publisher
            .as_ref()
            .map(Publisher::feedback)
            .unwrap_or_default()
    }

    /// PLIs/FIRs for this participant's own video SSRC seen since `since`.
    pub fn keyframe_requests_since(&self, since: Instant) -> Vec<RtcpSeen> {
        let Some(p) = &self.publisher else {
            return vec![];
        };
        self.publisher_feedback()
            .into_iter()
            .filter(|s| {
                s.at >= since
                    && (s.kind == "pli" || s.kind == "fir")
                    && s.media_ssrc == p.video_ssrc
            })
            .collect()
    }

    /// Waits until no keyframe request reached the publisher for `quiet`, within `timeout`.
    pub async fn wait_keyframe_requests_quiet(
        &self,
        quiet: Duration,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let since = Instant::now()
                .checked_sub(quiet)
                .unwrap_or_else(Instant::now);
            let last = self.keyframe_requests_since(since);
            if last.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "keyframe requests did not stop within {timeout:?}: {:?}",
                    last
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `leave`, waits for `left` and the socket's end.
    pub async fn leave(&mut self) -> Result<()> {
        self.stop_media().await;
        let from = self.signal.log_len();
        self.signal.send_json(&json!({"type": "leave"})).await?;
        self.signal
            .wait_from(from, SIGNAL_TIMEOUT, "left", |v| msg_type(v) == "left")
            .await?;
        self.signal.wait_closed(SIGNAL_TIMEOUT).await?;
        Ok(())
    }

    /// Sends a ping and waits for the pong after it.
    pub async fn ping(&self) -> Result<()> {
        let from = self.signal.log_len();
        self.signal.send_json(&json!({"type": "ping"})).await?;
        self.signal
            .wait_from(from, SIGNAL_TIMEOUT, "pong", |v| msg_type(v) == "pong")
            .await?;
        Ok(())
    }

    /// Errors the subscriber side hit while answering offers.
    pub fn answer_errors(&self) -> Vec<String> {
        self.answer_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn answers_sent(&self) -> u64 {
        self.answers_sent.load(Ordering::SeqCst)
    }

    /// Waits until every `subscriber_offer` received since `from` was answered.
    pub async fn wait_offers_answered(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let offers = self
                .signal
                .log()
                .iter()
                .filter(|v| msg_type(v) == "subscriber_offer")
                .count() as u64;
            if self.answers_sent() >= offers {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} offers, {} answered; errors {:?}",
                    offers,
                    self.answers_sent(),
                    self.answer_errors()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops media and closes both connections and the socket.
    pub async fn close(mut self) {
        self.stop_media().await;
        self.signal.close().await;
        if let Some(p) = self.publisher.take() {
            for t in &p.tasks {
                t.abort();
            }
            p.peer.close().await;
        }
        self.answer_task.abort();
        self.subscriber().close().await;
    }
}

impl Drop for TestParticipant {
    fn drop(&mut self) {
        self.sending.store(false, Ordering::SeqCst);
        self.answer_task.abort();
        if let Some(p) = &self.publisher {
            for t in &p.tasks {
                t.abort();
            }
        }
    }
}

/// A publisher connection with its offer made (local description set, gathering done).
pub struct PublisherOffer {
    pub peer: Peer,
    pub sdp: String,
    pub audio_mid: String,
    pub video_mid: String,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    audio_tr: Arc<dyn webrtc::rtp_transceiver::RtpTransceiver>,
    video_tr: Arc<dyn webrtc::rtp_transceiver::RtpTransceiver>,
    audio_ssrc: u32,
    video_ssrc: u32,
}

impl PublisherOffer {
    /// Opus + VP8 `sendonly` transceivers on a fresh connection, offer created and applied.
    pub async fn create(identity: &str) -> Result<PublisherOffer> {
        let peer = Peer::new("publisher").await?;
        let audio_ssrc: u32 = rand::random::<u32>() | 1;
        let video_ssrc: u32 = audio_ssrc.wrapping_add(0x1000_0000) | 1;
        let audio = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("stream-{identity}"),
            format!("audio-{identity}"),
            "microphone".to_string(),
            RtpCodecKind::Audio,
            vec![encoding(audio_ssrc, opus_codec())],
        )));
        let video = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("stream-{identity}"),
            format!("video-{identity}"),
            "camera".to_string(),
            RtpCodecKind::Video,
            vec![encoding(video_ssrc, vp8_codec())],
        )));
        let init = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            })
        };
        let audio_tr = peer
            .pc
            .add_transceiver_from_track(audio.clone() as Arc<dyn TrackLocal>, init())
            .await
            .context("add audio transceiver")?;
        let video_tr = peer
            .pc
            .add_transceiver_from_track(video.clone() as Arc<dyn TrackLocal>, init())
            .await
            .context("add video transceiver")?;
        let offer = peer.pc.create_offer(None).await.context("create_offer")?;
        peer.pc
            .set_local_description(offer)
            .await
            .context("set_local_description(offer)")?;
        peer.wait_gathering_complete(Duration::from_secs(3)).await;
        let sdp = peer
            .pc
            .local_description()
            .await
            .ok_or_else(|| anyhow!("no local description"))?
            .sdp;
        let audio_mid = audio_tr
            .mid()
            .await?
            .ok_or_else(|| anyhow!("audio transceiver has no mid"))?;
        let video_mid = video_tr
            .mid()
            .await?
            .ok_or_else(|| anyhow!("video transceiver has no mid"))?;
        Ok(PublisherOffer {
            peer,
            sdp,
            audio_mid,
            video_mid,
            audio,
            video,
            audio_tr,
            video_tr,
            audio_ssrc,
            video_ssrc,
        })
    }

    /// Applies the answer, waits for the connection, starts watching RTCP feedback.
    pub async fn accept(
        self,
        answer_sdp: &str,
        audio_track_id: String,
        video_track_id: String,
        answer: Value,
    ) -> Result<Publisher> {
        let PublisherOffer {
            peer,
            audio,
            video,
            audio_tr,
            video_tr,
            audio_ssrc,
            video_ssrc,
            audio_mid,
            video_mid,
            ..
        } = self;
        let desc = RTCSessionDescription::answer(answer_sdp.to_string()).context("parse answer")?;
        peer.pc
            .set_remote_description(desc)
            .await
            .context("set_remote_description(answer)")?;
        let audio_pt = negotiated_pt(&audio_tr, "audio/opus").await.unwrap_or(111);
        let video_pt = negotiated_pt(&video_tr, "video/vp8").await.unwrap_or(96);
        peer.wait_connected(CONNECT_TIMEOUT)
            .await
            .context("publisher connection")?;
        let feedback = Arc::new(Mutex::new(Vec::new()));
        let tasks = vec![
            tokio::spawn(feedback_loop(audio.clone(), feedback.clone())),
            tokio::spawn(feedback_loop(video.clone(), feedback.clone())),
        ];
        Ok(Publisher {
            peer,
            audio,
            video,
            audio_ssrc,
            video_ssrc,
            audio_pt,
            video_pt,
            audio_mid,
            video_mid,
            audio_track_id,
            video_track_id,
            answer,
            feedback,
            tasks,
        })
    }
}

impl Publisher {
    /// Starts the synthetic media sender; it runs while `running` is true.
    pub fn spawn_sender(
        &self,
        sent: Arc<SentCounters>,
        running: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let cfg = SenderConfig {
            audio: self.audio.clone(),
            video: self.video.clone(),
            audio_ssrc: self.audio_ssrc,
            video_ssrc: self.video_ssrc,
            audio_pt: self.audio_pt,
            video_pt: self.video_pt,
        };
        running.store(true, Ordering::SeqCst);
        tokio::spawn(send_loop(cfg, sent, running))
    }

    /// RTCP feedback that reached this publisher so far.
    pub fn feedback(&self) -> Vec<RtcpSeen> {
        self.feedback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".to_string(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_string(),
        rtcp_feedback: vec![],
    }
}

fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".to_string(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

fn encoding(ssrc: u32, codec: RTCRtpCodec) -> RTCRtpEncodingParameters {
    RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(ssrc),
            ..Default::default()
        },
        codec,
        active: true,
        ..Default::default()
    }
}

async fn negotiated_pt(
    transceiver: &Arc<dyn webrtc::rtp_transceiver::RtpTransceiver>,
    mime: &str,
) -> Option<u8> {
    let sender = transceiver.sender().await.ok()??;
    let params = sender.get_parameters().await.ok()?;
    params
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        .map(|c| c.payload_type)
}

pub fn describe_received(tracks: &[ReceivedTrack]) -> String {
    let items: Vec<String> = tracks
        .iter()
        .map(|t| {
            format!(
                "{}/{}/{} ssrc {:#x}: {} pkts{}",
                t.participant_id(),
                t.track_id,
                t.kind,
                t.ssrc,
                t.packets.len(),
                if t.ended { " (ended)" } else { "" }
            )
        })
        .collect();
    format!("[{}]", items.join("; "))
}

async fn answer_loop(
    signal: Arc<SignalClient>,
    slot: Arc<Mutex<Arc<Peer>>>,
    mut offers: mpsc::UnboundedReceiver<Value>,
    errors: Arc<Mutex<Vec<String>>>,
    answers_sent: Arc<AtomicU64>,
) {
    while let Some(offer) = offers.recv().await {
        if matches!(msg_type(&offer), "media_reset" | "subscriber_reset") {
            // The media node changed, or the server replaced our subscriber connection: the
            // old connection's peer is gone for good.
            match Peer::new("subscriber").await {
                Ok(fresh) => {
                    let old = std::mem::replace(
                        &mut *slot.lock().unwrap_or_else(|p| p.into_inner()),
                        Arc::new(fresh),
                    );
                    old.close().await;
                }
                Err(e) => errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("new subscriber after media_reset: {e:#}")),
            }
            continue;
        }
        let subscriber = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let result: Result<()> = async {
            let sdp = offer["sdp"]
                .as_str()
                .ok_or_else(|| anyhow!("subscriber_offer without sdp"))?;
            let desc = RTCSessionDescription::offer(sdp.to_string()).context("parse offer")?;
            subscriber
                .pc
                .set_remote_description(desc)
                .await
                .context("set_remote_description(offer)")?;
            let answer = subscriber
                .pc
                .create_answer(None)
                .await
                .context("create_answer")?;
            subscriber
                .pc
                .set_local_description(answer)
                .await
                .context("set_local_description(answer)")?;
            subscriber
                .wait_gathering_complete(Duration::from_secs(3))
                .await;
            let local = subscriber
                .pc
                .local_description()
                .await
                .ok_or_else(|| anyhow!("no local description after answer"))?;
            signal
                .send_json(&json!({"type": "subscriber_answer", "sdp": local.sdp}))
                .await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(target: "zvon_interop", "answering subscriber_offer failed: {e:#}");
            errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{e:#}"));
        }
        answers_sent.fetch_add(1, Ordering::SeqCst);
    }
}

async fn feedback_loop(track: Arc<TrackLocalStaticRTP>, seen: Arc<Mutex<Vec<RtcpSeen>>>) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                let at = Instant::now();
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                for p in &packets {
                    let (kind, media_ssrc) = classify_feedback(p.as_ref());
                    if kind != "other" {
                        tracing::debug!(target: "zvon_interop::pc", "publisher got {kind} for {media_ssrc:#x}");
                    }
                    seen.push(RtcpSeen {
                        at,
                        kind,
                        media_ssrc,
                    });
                }
            }
            Some(_) => {}
            // Not bound (yet or any more).
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

struct SenderConfig {
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    audio_ssrc: u32,
    video_ssrc: u32,
    audio_pt: u8,
    video_pt: u8,
}

fn rtp_packet(
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    payload: bytes::Bytes,
) -> rtp::Packet {
    rtp::Packet {
        header: rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

async fn send_loop(cfg: SenderConfig, sent: Arc<SentCounters>, running: Arc<AtomicBool>) {
    use tokio::time::{interval, MissedTickBehavior};
    let mut audio_tick = interval(Duration::from_millis(media::AUDIO_PACKET_INTERVAL_MS));
    audio_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut video_tick = interval(Duration::from_millis(media::VIDEO_FRAME_INTERVAL_MS));
    video_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut audio_seq: u16 = rand::random();
    let mut audio_ts: u32 = rand::random();
    let mut video_seq: u16 = rand::random();
    let mut video_ts: u32 = rand::random();
    let mut frame: u64 = 0;
    let mut audio_n: u64 = 0;
    while running.load(Ordering::SeqCst) {
        tokio::select! {
            _ = audio_tick.tick() => {
                let pkt = rtp_packet(cfg.audio_pt, audio_seq, audio_ts, cfg.audio_ssrc, audio_n == 0, opus_payload(audio_n));
                if cfg.audio.write_rtp(pkt).await.is_err() {
                    sent.write_errors.fetch_add(1, Ordering::Relaxed);
                }
                sent.audio_packets.fetch_add(1, Ordering::Relaxed);
                audio_seq = audio_seq.wrapping_add(1);
                audio_ts = audio_ts.wrapping_add(media::AUDIO_TICKS_PER_PACKET);
                audio_n += 1;
            }
            _ = video_tick.tick() => {
                let keyframe = frame % media::KEYFRAME_EVERY == 0;
                let payloads = vp8_frame_payloads(frame, keyframe);
                let last = payloads.len() - 1;
                for (i, payload) in payloads.into_iter().enumerate() {
                    let pkt = rtp_packet(cfg.video_pt, video_seq, video_ts, cfg.video_ssrc, i == last, payload);
                    if cfg.video.write_rtp(pkt).await.is_err() {
                        sent.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.video_packets.fetch_add(1, Ordering::Relaxed);
                    video_seq = video_seq.wrapping_add(1);
                }
                sent.video_frames.fetch_add(1, Ordering::Relaxed);
                if keyframe {
                    sent.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                video_ts = video_ts.wrapping_add(media::VIDEO_TICKS_PER_FRAME);
                frame += 1;
            }
        }
    }
}
