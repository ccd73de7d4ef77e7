//! The media half of a test client: webrtc-rs peer connections set up for loopback, and what
//! they observe (received tracks and their RTP, RTCP that reaches the publisher).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rtc::interceptor::{
    Attribute, Interceptor, Packet as InterceptorPacket, Slot, StreamInfo, TaggedPacket,
};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use tokio::sync::watch;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, Registry, SettingEngineBuilder,
};

/// One RTP packet as a subscriber received it.
#[derive(Debug, Clone, Copy)]
pub struct RecvPacket {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub payload_len: usize,
    /// The payload starts a VP8 keyframe (meaningful for video tracks only).
    pub vp8_keyframe: bool,
    pub at: Instant,
}

/// A track the subscriber connection received (`on_track`).
#[derive(Debug, Clone)]
pub struct ReceivedTrack {
    /// `a=msid` track part: the published track id (`TR_…`).
    pub track_id: String,
    /// `a=msid` stream part: the publishing participant's id.
    pub stream_ids: Vec<String>,
    pub kind: String,
    /// SSRC of the first packet (from `OnOpen`).
    pub ssrc: u32,
    pub packets: Vec<RecvPacket>,
    pub ended: bool,
    pub rtcp_packets: usize,
}

impl ReceivedTrack {
    /// The publishing participant's id as given by `a=msid`.
    pub fn participant_id(&self) -> &str {
        self.stream_ids.first().map(String::as_str).unwrap_or("")
    }

    /// Packets on the track's main SSRC (ignores any RTX/probe SSRC, should one show up).
    pub fn main_packets(&self) -> Vec<RecvPacket> {
        self.packets
            .iter()
            .filter(|p| p.ssrc == self.ssrc)
            .copied()
            .collect()
    }
}

/// A piece of RTCP feedback that reached the publisher.
#[derive(Debug, Clone)]
pub struct RtcpSeen {
    pub at: Instant,
    /// "pli", "fir", or the packet's Display-less type name for anything else.
    pub kind: &'static str,
    pub media_ssrc: u32,
}

#[derive(Default)]
pub(crate) struct Observed {
    pub tracks: Mutex<Vec<ReceivedTrack>>,
    pub remotes: Mutex<Vec<Arc<dyn TrackRemote>>>,
}

/// Event handler shared by both connections of a participant.
pub(crate) struct Handler {
    label: String,
    gathering: watch::Sender<RTCIceGatheringState>,
    state: watch::Sender<RTCPeerConnectionState>,
    observed: Arc<Observed>,
    pub(crate) pc: OnceLock<Weak<dyn PeerConnection>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        tracing::debug!(target: "zvon_interop::pc", "{}: gathering {state:?}", self.label);
        self.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(target: "zvon_interop::pc", "{}: connection {state:?}", self.label);
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let kind = match track.kind().await {
            RtpCodecKind::Audio => "audio",
            RtpCodecKind::Video => "video",
            _ => "unknown",
        }
        .to_string();
        let record = ReceivedTrack {
            track_id: track.track_id().await.to_string(),
            stream_ids: vec![track.stream_id().await.to_string()],
            kind,
            ssrc: track.ssrcs().await.first().copied().unwrap_or(0),
            packets: Vec::new(),
            ended: false,
            rtcp_packets: 0,
        };
        let index = {
            let mut tracks = self
                .observed
                .tracks
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            tracks.push(record);
            tracks.len() - 1
        };
        self.observed
            .remotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(track.clone());
        tracing::debug!(target: "zvon_interop::pc", "{}: on_track #{index}", self.label);
        let observed = self.observed.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                let mut tracks = observed.tracks.lock().unwrap_or_else(|p| p.into_inner());
                let Some(t) = tracks.get_mut(index) else {
                    break;
                };
                match event {
                    TrackRemoteEvent::OnOpen(init) => {
                        t.ssrc = init.ssrc;
                        if !init.stream_ids.is_empty() {
                            t.stream_ids = init.stream_ids.iter().map(|s| s.to_string()).collect();
                        }
                        if !init.track_id.is_empty() {
                            t.track_id = init.track_id.to_string();
                        }
                    }
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        if t.ssrc == 0 {
                            t.ssrc = p.header.ssrc;
                        }
                        t.packets.push(RecvPacket {
                            ssrc: p.header.ssrc,
                            seq: p.header.sequence_number,
                            timestamp: p.header.timestamp,
                            payload_type: p.header.payload_type,
                            marker: p.header.marker,
                            payload_len: p.payload.len(),
                            vp8_keyframe: crate::media::vp8_is_keyframe_start(&p.payload),
                            at: Instant::now(),
                        });
                    }
                    TrackRemoteEvent::OnRtcpPacket(p) => t.rtcp_packets += p.len(),
                    TrackRemoteEvent::OnEnded => {
                        t.ended = true;
                        break;
                    }
                    _ => {}
                }
            }
        });
    }
}

/// A webrtc-rs peer connection plus the state its handler records.
pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub(crate) handler: Arc<Handler>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    state: watch::Receiver<RTCPeerConnectionState>,
    pub(crate) observed: Arc<Observed>,
}

/// Where test peers bind: 127.0.0.1, or what a test that puts servers on other (namespaced)
/// hosts sets with [`PeerAddress::set`] for its duration.
static PEER_IP: std::sync::Mutex<Option<std::net::IpAddr>> = std::sync::Mutex::new(None);

/// Binds test peers to another local address while alive (a test reaching a server in a
/// network namespace through a veth address); back to 127.0.0.1 on drop.
pub struct PeerAddress;

impl PeerAddress {
    pub fn set(ip: std::net::IpAddr) -> PeerAddress {
        *PEER_IP.lock().unwrap_or_else(|p| p.into_inner()) = Some(ip);
        PeerAddress
    }
}

impl Drop for PeerAddress {
    fn drop(&mut self) {
        *PEER_IP.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn peer_ip() -> String {
    PEER_IP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
}

impl Peer {
    /// A new offer on this connection, applied locally, ICE gathering waited for (a
    /// renegotiation).
    pub async fn make_offer(&self) -> Result<String> {
        let offer = self.pc.create_offer(None).await.context("create_offer")?;
        self.pc
            .set_local_description(offer)
            .await
            .context("set_local_description")?;
        self.wait_gathering_complete(Duration::from_secs(3)).await;
        Ok(self
            .pc
            .local_description()
            .await
            .context("no local description")?
            .sdp)
    }

    /// A connection bound to 127.0.0.1 only (see [`PeerAddress`]), loopback candidates allowed, default codecs
    /// (Opus 111, VP8 96, ...) and default interceptors (NACK, RTCP reports, TWCC).
    pub async fn new(label: &str) -> Result<Peer> {
        let mut media_engine = MediaEngine::default();
        media_engine
            .register_default_codecs()
            .context("register codecs")?;
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)
            .context("register interceptors")?
            .with(Slot::from(14_000), KeyframeRequestsToApp::default());
        let setting_engine = SettingEngineBuilder::new()
            .with_include_loopback_candidate(true)
            .build();
        let (gathering_tx, gathering) = watch::channel(RTCIceGatheringState::New);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let observed = Arc::new(Observed::default());
        let handler = Arc::new(Handler {
            label: label.to_string(),
            gathering: gathering_tx,
            state: state_tx,
            observed: observed.clone(),
            pc: OnceLock::new(),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .with_handler(handler.clone())
            .with_udp_addrs(vec![format!("{}:0", peer_ip())])
            .build()
            .await
            .context("build peer connection")?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let _ = handler.pc.set(Arc::downgrade(&pc));
        Ok(Peer {
            pc,
            handler,
            gathering,
            state,
            observed,
        })
    }

    /// Waits until ICE gathering is complete (or `timeout`; then returns what there is).
    pub async fn wait_gathering_complete(&self, timeout: Duration) {
        let mut rx = self.gathering.clone();
        let _ = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| *s == RTCIceGatheringState::Complete),
        )
        .await;
    }

    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Waits for `Connected`; fails early on `Failed`/`Closed`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.state.clone();
        let res = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await;
        match res {
            Ok(Ok(s)) if *s == RTCPeerConnectionState::Connected => Ok(()),
            Ok(Ok(s)) => bail!("{}: connection ended in {:?}", self.handler.label, *s),
            Ok(Err(_)) => bail!("{}: state channel closed", self.handler.label),
            Err(_) => bail!(
                "{}: not connected after {timeout:?} (state {:?})",
                self.handler.label,
                self.connection_state()
            ),
        }
    }

    /// A copy of what the connection received so far.
    pub fn received(&self) -> Vec<ReceivedTrack> {
        self.observed
            .tracks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn remote_track(&self, index: usize) -> Option<Arc<dyn TrackRemote>> {
        self.observed
            .remotes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .cloned()
    }

    /// The SSRC received track `index` arrives on, and the handle to send RTCP about it.
    fn feedback_target(&self, index: usize) -> Result<(u32, Arc<dyn TrackRemote>)> {
        let ssrc = self
            .received()
            .get(index)
            .map(|t| t.ssrc)
            .with_context(|| format!("no received track #{index}"))?;
        let remote = self
            .remote_track(index)
            .with_context(|| format!("no remote track handle #{index}"))?;
        Ok((ssrc, remote))
    }

    /// Sends a PLI on received track `index` (as in [`Peer::received`]) with `media_ssrc` the
    /// SSRC it is received on; returns that SSRC.
    pub async fn send_pli(&self, index: usize) -> Result<u32> {
        let (ssrc, remote) = self.feedback_target(index)?;
        let pli = PictureLossIndication {
            sender_ssrc: 0x5eed_0001,
            media_ssrc: ssrc,
        };
        remote
            .write_rtcp(vec![Box::new(pli)])
            .await
            .context("write PLI")?;
        Ok(ssrc)
    }

    /// Sends a NACK on received track `index` for sequence numbers `seqs` as received (so the
    /// server resends them from its RTX cache); returns the SSRC it names.
    pub async fn send_nack(&self, index: usize, seqs: &[u16]) -> Result<u32> {
        let (ssrc, remote) = self.feedback_target(index)?;
        let nack = TransportLayerNack {
            sender_ssrc: 0x5eed_0001,
            media_ssrc: ssrc,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        };
        remote
            .write_rtcp(vec![Box::new(nack)])
            .await
            .context("write NACK")?;
        Ok(ssrc)
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// Last in the interceptor chain: marks inbound PLI/FIR for delivery to the application.
///
/// webrtc-rs ends inbound RTCP at the end of its interceptor chain unless an interceptor marks a
/// packet `DeliverToApplication`; without this the publisher's `TrackLocal::poll` would never
/// see keyframe requests. Other RTCP (reports, NACK, TWCC) is left to the other interceptors.
#[derive(Default)]
struct KeyframeRequestsToApp {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestsToApp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtcp::Packet>> = packets
                .iter()
                .filter(|p| {
                    p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
                })
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = InterceptorPacket::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for KeyframeRequestsToApp {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Classifies one RTCP packet for the publisher's feedback log.
pub(crate) fn classify_feedback(p: &dyn rtcp::Packet) -> (&'static str, u32) {
    if let Some(pli) = p.as_any().downcast_ref::<PictureLossIndication>() {
        return ("pli", pli.media_ssrc);
    }
    if let Some(fir) = p.as_any().downcast_ref::<FullIntraRequest>() {
        return (
            "fir",
            fir.fir.first().map(|e| e.ssrc).unwrap_or(fir.media_ssrc),
        );
    }
    ("other", p.destination_ssrc().first().copied().unwrap_or(0))
}

/// Counts of feedback kinds, for failure messages.
pub fn feedback_summary(seen: &[RtcpSeen]) -> HashMap<(&'static str, u32), usize> {
    let mut m = HashMap::new();
    for s in seen {
        *m.entry((s.kind, s.media_ssrc)).or_insert(0) += 1;
    }
    m
}
