//! A participant as the edge holds it: its two str0m connections and what they carry.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;
use str0m::bwe::Bitrate;
use str0m::change::SdpPendingOffer;
use str0m::config::DtlsCert;
use str0m::media::{Mid, Rid};
use str0m::{Candidate, IceCreds, Rtc, RtcError};

use super::meter::EgressTally;
use super::pacer_defer::WrittenMedia;
use super::rtx_window::RtxWindow;
use super::send_path::SendPath;
use crate::api::{ParticipantId, PeerStats, TrackId};
use crate::forward::idle_egress::IdleEgress;
use crate::forward::keyframe::VideoCodec;
use crate::forward::layer_selector::Layer;
use crate::forward::{DowntrackKey, TrackKey};
use crate::relay::OriginSlot;
use str0m::format::PayloadParams;

/// Where a subscriber's estimate starts: audio and the low layer, so a subscriber on a thin
/// link is not flooded in its first seconds; str0m's initial probes (at several times this
/// rate) find an open link's capacity within a few seconds and the layers follow.
const INITIAL_SUBSCRIBER_ESTIMATE: Bitrate = Bitrate::kbps(500);

/// How often a subscriber connection reports its feedback (TWCC loss, round-trip time, the
/// raw estimate): the downlink monitor cuts a drowning link within one interval
/// (`forward::downlink_monitor`).
const SUBSCRIBER_STATS_INTERVAL: Duration = Duration::from_millis(250);

/// RTCP reports (a sender report per stream we send, a receiver report per stream we
/// receive) at least this often on every stream, muted or not. They are the liveness signal
/// the protocol promises clients (docs/protocol.md, "Network changes"): a connection with
/// at least one live m-line hears from the server twice a second even in a silent room, so
/// a client can tell a dead path after ~1.5 s of silence instead of waiting for its ICE
/// consent checks (~2.5 s apart, and a browser reports `disconnected` only after ~7 s).
/// str0m's defaults are 1 s for video and 5 s for audio; a report is ~50-100 bytes.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(500);

/// One str0m `Rtc` and when it next wants a timeout.
pub struct Connection {
    pub rtc: Rtc,
    pub next_timeout: Instant,
    /// The instant this connection is registered for in the worker's timer queue
    /// (`edge::timers`): the sooner of `next_timeout` and the setup deadline; `None` while
    /// it is not registered (just created, handled, or lost).
    pub timer_at: Option<Instant>,
    /// Media was written since the last poll: str0m stamps its send queue only on a
    /// timeout, so the drain hands it one before polling (see `Worker::drain`).
    pub media_written: bool,
    /// What was written since the last poll and whether it all left: decides whether the
    /// pacer's next "immediate" step can wait for the next write (`edge::pacer_defer`).
    pub written: WrittenMedia,
    /// A video m-line was set up to send on it: its pacer's steps are never deferred
    /// (`edge::pacer_defer`), since a paused video's estimate must grow by str0m's probes.
    pub sends_video: bool,
    pub ufrag: String,
    /// The media-lost event was sent; never again.
    pub lost_reported: bool,
    /// Already in the worker's to-poll list: forwarding marks a subscriber once per packet,
    /// but one poll drains everything queued, and each extra poll walks str0m's ICE, DTLS
    /// and session state machines for nothing (22% of the CPU in a 1→100 profile).
    pub queued_for_poll: bool,
    /// What was sent on this connection's streams, for the retransmission count.
    pub egress: EgressTally,
    /// ICE and DTLS are up (str0m's `Event::Connected`): media is written to it only then,
    /// since str0m queues what is written before without bound.
    pub connected: bool,
    /// When its client reached this subscriber connection before it was up (its first track
    /// settings after the answer, or its first check): media is written ahead from then
    /// (`worker/early_start.rs`).
    pub early_start: Option<Instant>,
    /// Set when the remote got everything it needs to connect (our answer, or its answer to
    /// our offer): past it, a connection still not up is given up (`media_setup_timeout`).
    pub setup_deadline: Option<Instant>,
    /// Set by an ICE restart: past it, a connection whose ICE has not come back (no
    /// nominated pair for the new credentials) is given up like one that never came up.
    pub restart_deadline: Option<Instant>,
    /// The last remote address heard from and the local address it wrote to: what is sent
    /// back there leaves from that address (see `edge::local_address`).
    pub reply_path: Option<(SocketAddr, IpAddr)>,
    /// Where str0m sends and whether the client has moved on from there (`edge::send_path`).
    pub send_path: SendPath,
    /// m-lines stopped on this connection by our offers (subscriber side).
    pub stopped_mlines: usize,
    /// When the subscriber's desired rate was last raised to make str0m probe.
    pub probe_nudged_at: Option<Instant>,
    /// Since when (and from which estimate) the estimate has stayed short of the wish
    /// without growing, for the estimator reset in `Worker::set_probe_target`.
    pub estimate_stuck_since: Option<(Instant, u64)>,
    /// The queued bytes a video frame may start behind on this connection, from what the
    /// allocator counts on (see `forward::egress_backlog`); no limit before an estimate.
    pub egress_limit_bytes: usize,
    /// Video m-lines sent unpaced: after a cut until they start over or run empty
    /// (`edge/worker/stale_queue.rs`), and in the connection's first seconds
    /// (`edge::startup_pacing`); paced again at a frame start (`Worker::fan_out`).
    pub unpaced_video: Vec<Mid>,
    /// When a video of this connection last started over at a keyframe: what is queued
    /// after it is the new layer, not to be flushed by the next cut of the same collapse.
    pub video_started_over_at: Option<Instant>,
    /// Until when its video is sent unpaced (`edge::startup_pacing`): a subscriber
    /// connection's first seconds with bandwidth estimation; at once for the others.
    pub paced_from: Instant,
    /// Parks str0m's estimator (and so its padding) while nothing is sent
    /// (`forward::idle_egress`); subscriber connections with bandwidth allocation only.
    pub idle: IdleEgress,
    /// How long its video streams keep sent packets for NACKs, from its RTT
    /// (`edge::rtx_window`; subscriber connections).
    pub rtx_window: RtxWindow,
}

impl Connection {
    /// Starts the setup clock, once: a renegotiation does not restart it.
    pub fn start_setup_clock(&mut self, deadline: Instant) {
        if !self.connected && self.setup_deadline.is_none() {
            self.setup_deadline = Some(deadline);
        }
    }

    /// The setup deadline passed without ICE and DTLS coming up, or an ICE restart's
    /// without ICE coming back.
    pub fn setup_expired(&self, now: Instant) -> bool {
        (!self.connected && self.setup_deadline.is_some_and(|d| d <= now))
            || self.restart_deadline.is_some_and(|d| d <= now)
    }

    /// The local address to send to `to` from: the one `to` last wrote to, when known.
    pub fn reply_from(&self, to: SocketAddr) -> Option<IpAddr> {
        self.reply_path.filter(|(r, _)| *r == to).map(|(_, l)| l)
    }

    /// When the worker must next look at this connection: str0m's timeout, or sooner the
    /// setup deadline.
    pub fn wake_at(&self) -> Instant {
        self.setup_deadline_pending()
            .map_or(self.next_timeout, |d| d.min(self.next_timeout))
    }

    /// When [`Connection::setup_expired`] turns true, if it can.
    pub fn setup_deadline_pending(&self) -> Option<Instant> {
        let setup = self.setup_deadline.filter(|_| !self.connected);
        match (setup, self.restart_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Also offers ICE-TCP (RFC 6544) on `addr`: the worker's TCP listener on the media
    /// port (`edge::ice_tcp`). Passive: the client connects.
    pub fn add_tcp_passive_candidate(&mut self, addr: SocketAddr) -> Result<(), RtcError> {
        let c = Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(str0m::net::TcpType::Passive)
            .build()
            .map_err(RtcError::Ice)?;
        self.rtc.add_local_candidate(c);
        Ok(())
    }

    /// An ICE-lite, RTP-mode connection whose only candidate is this worker's socket.
    /// `cert` is shared by the worker's connections: generating a key per connection costs
    /// CPU at every join and memory for every participant.
    pub fn new(
        candidate: SocketAddr,
        cert: Option<&DtlsCert>,
        now: Instant,
    ) -> Result<Self, RtcError> {
        Self::build(candidate, cert, None, now)
    }

    /// A subscriber connection: like [`Connection::new`], plus a send-side bandwidth
    /// estimate (TWCC) that the forwarding core fits the subscriber's layers into.
    pub fn new_subscriber(
        candidate: SocketAddr,
        cert: Option<&DtlsCert>,
        now: Instant,
    ) -> Result<Self, RtcError> {
        Self::build(candidate, cert, Some(INITIAL_SUBSCRIBER_ESTIMATE), now)
    }

    fn build(
        candidate: SocketAddr,
        cert: Option<&DtlsCert>,
        bwe: Option<Bitrate>,
        now: Instant,
    ) -> Result<Self, RtcError> {
        let mut rng = rand::thread_rng();
        let ufrag: String = (&mut rng)
            .sample_iter(Alphanumeric)
            .take(12)
            .map(char::from)
            .collect();
        let pass: String = (&mut rng)
            .sample_iter(Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let mut builder = Rtc::builder();
        if let Some(cert) = cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        let mut rtc = builder
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass,
            })
            .set_stats_interval(Some(if bwe.is_some() {
                SUBSCRIBER_STATS_INTERVAL
            } else {
                Duration::from_secs(2)
            }))
            // Opus RED is offered and accepted so that it passes through: publishers that
            // send it protect every subscriber's audio against loss on its own link.
            .enable_opus(true, true)
            .set_rtcp_report_interval_audio(REPORT_INTERVAL)
            .set_rtcp_report_interval_video(REPORT_INTERVAL)
            .enable_bwe(bwe)
            .build(now);
        let host = Candidate::host(candidate, "udp").map_err(RtcError::Ice)?;
        rtc.add_local_candidate(host);
        Ok(Connection {
            rtc,
            next_timeout: now,
            timer_at: None,
            media_written: false,
            written: WrittenMedia::default(),
            sends_video: false,
            ufrag,
            lost_reported: false,
            queued_for_poll: false,
            egress: EgressTally::default(),
            connected: false,
            early_start: None,
            setup_deadline: None,
            restart_deadline: None,
            reply_path: None,
            send_path: SendPath::default(),
            stopped_mlines: 0,
            probe_nudged_at: None,
            estimate_stuck_since: None,
            egress_limit_bytes: usize::MAX,
            unpaced_video: Vec::new(),
            video_started_over_at: None,
            paced_from: if bwe.is_some() {
                now + super::startup_pacing::UNPACED_START
            } else {
                now
            },
            idle: IdleEgress::default(),
            rtx_window: RtxWindow::default(),
        })
    }
}

/// A subscriber offer waiting for its answer.
pub struct PendingSubscriberOffer {
    pub pending: SdpPendingOffer,
    pub offered: Vec<DowntrackKey>,
    pub closing: Vec<DowntrackKey>,
    /// The offer's `a=mid` values in m-line order: an answer must have the same.
    pub mids: Vec<String>,
    /// The new local ufrag when the offer restarts ICE (str0m takes it at the answer).
    pub ice_restart_ufrag: Option<String>,
}

pub struct PublishedTrackEntry {
    pub mid: Mid,
    pub key: TrackKey,
    pub id: TrackId,
    /// Simulcast rids, lowest layer first (the offer's order); empty without simulcast.
    pub rids: Vec<Rid>,
    /// Negotiated video payload types and their codecs, for keyframe detection.
    pub codecs: Vec<(u8, VideoCodec)>,
    /// A local track's entry in the relay's origin table (other workers may receive it).
    pub relay: Option<OriginSlot>,
    /// A remote track's payload types as its origin negotiated them (a local one reads them
    /// from its publisher connection).
    pub params: Vec<PayloadParams>,
    /// Set while the track's room is recorded (local tracks only).
    pub record: Option<super::worker::RecordTap>,
}

impl PublishedTrackEntry {
    /// The layer a stream with this rid carries; a few entries, so a scan.
    pub fn layer_of(&self, rid: Option<Rid>) -> Layer {
        rid.and_then(|r| self.rids.iter().position(|x| *x == r))
            .map_or(0, |i| i as Layer)
    }

    pub fn codec_of(&self, pt: u8) -> VideoCodec {
        self.codecs
            .iter()
            .find(|(p, _)| *p == pt)
            .map_or(VideoCodec::Other, |(_, c)| *c)
    }
}

pub struct Participant {
    pub id: ParticipantId,
    pub can_subscribe: bool,
    // Boxed: a `Connection` holds a str0m `Rtc` of several KiB inline, and the worker's slab
    // of participants reserves whole slots; inline, every slot (free ones and participants
    // with one connection or none) would carry two of them.
    pub publisher: Option<Box<Connection>>,
    pub subscriber: Option<Box<Connection>>,
    pub published: Vec<PublishedTrackEntry>,
    pub pending_offer: Option<PendingSubscriberOffer>,
    /// The client asked for a subscriber ICE restart; the next subscriber offer carries it.
    pub subscriber_ice_restart: bool,
    pub stats: PeerStats,
    /// Set for a relay proxy: a publisher on another worker whose tracks reach this worker's
    /// subscribers through the relay. It has no connection and no requests of its own.
    pub remote: Option<RemoteOrigin>,
    /// A viewer's (WHEP) fixed m-lines, audio then video; empty for everyone else.
    pub viewer_slots: Vec<crate::forward::DowntrackKey>,
}

/// Where a relay proxy's publisher really is.
#[derive(Debug, Clone)]
pub struct RemoteOrigin {
    pub worker: usize,
    pub room: String,
}

impl Participant {
    pub fn new(id: ParticipantId, can_subscribe: bool) -> Self {
        Participant {
            id,
            can_subscribe,
            publisher: None,
            subscriber: None,
            published: vec![],
            pending_offer: None,
            subscriber_ice_restart: false,
            stats: PeerStats::default(),
            remote: None,
            viewer_slots: vec![],
        }
    }

    pub fn connection_mut(&mut self, side: super::demux::Side) -> Option<&mut Connection> {
        match side {
            super::demux::Side::Publisher => self.publisher.as_deref_mut(),
            super::demux::Side::Subscriber => self.subscriber.as_deref_mut(),
        }
    }

    /// The published track on the publisher connection's m-line `mid`; at most a few, so a scan.
    pub fn track_by_mid(&self, mid: Mid) -> Option<TrackKey> {
        self.published_by_mid(mid).map(|t| t.key)
    }

    pub fn published_by_mid(&self, mid: Mid) -> Option<&PublishedTrackEntry> {
        self.published.iter().find(|t| t.mid == mid)
    }
}
