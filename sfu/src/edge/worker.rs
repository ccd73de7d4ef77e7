//! One media worker: a single-threaded loop owning a UDP socket, its participants' str0m
//! connections and the forwarding core for its rooms. Nothing here is shared with other
//! threads except the command channel, the event channel and relaxed counters.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Input, Output};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::connection::{Connection, Participant, PendingSubscriberOffer, PublishedTrackEntry};
use super::demux::{ConnectionKey, Demux, Route, Side};
use super::payload_types::payload_type_map;
use super::udp_batch::{recv_batch, send_batch, RecvBatch, SendQueue};
use crate::api::{
    ParticipantId, SfuError, SfuEvent, SfuRequest, SfuResponse, SubscribedTrack, TrackId, TrackKind,
};
use crate::forward::router::{DowntrackState, KeyframeDecision, KeyframeRequest};
use crate::forward::{Forward, IncomingRtp, PeerKey, Router};
use crate::stats::SfuStats;

/// A request for this worker and where its answer goes.
pub struct Command {
    pub request: SfuRequest,
    pub reply: oneshot::Sender<Result<SfuResponse, SfuError>>,
}

/// Longest sleep without a timeout: bounds how stale `now` gets when nothing happens.
const IDLE_TICK: Duration = Duration::from_millis(100);
const RTX_CACHE_PACKETS: usize = 512;
const RTX_CACHE_AGE: Duration = Duration::from_millis(1500);
/// Receive batches handled before looking at commands and timers again.
const MAX_BATCHES_PER_WAKE: usize = 16;

pub struct Worker {
    candidate: SocketAddr,
    participants: Slab<Participant>,
    by_id: HashMap<ParticipantId, PeerKey>,
    demux: Demux,
    router: Router,
    track_ids: HashMap<crate::forward::TrackKey, TrackId>,
    events: mpsc::UnboundedSender<SfuEvent>,
    stats: Arc<SfuStats>,
    send_queue: SendQueue,
    forwards: Vec<Forward>,
    dirty: Vec<ConnectionKey>,
    dtls_cert: Option<DtlsCert>,
}

impl Worker {
    pub fn new(
        candidate: SocketAddr,
        keyframe_interval: Duration,
        events: mpsc::UnboundedSender<SfuEvent>,
        stats: Arc<SfuStats>,
    ) -> Self {
        Worker {
            candidate,
            participants: Slab::new(),
            by_id: HashMap::new(),
            demux: Demux::default(),
            router: Router::new(keyframe_interval),
            track_ids: HashMap::new(),
            events,
            stats,
            send_queue: SendQueue::default(),
            forwards: Vec::with_capacity(256),
            dirty: Vec::with_capacity(256),
            dtls_cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
        }
    }

    /// Runs until the command channel closes.
    pub async fn run(mut self, socket: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
        let socket = match socket
            .set_nonblocking(true)
            .and_then(|_| tokio::net::UdpSocket::from_std(socket))
        {
            Ok(s) => s,
            Err(e) => {
                warn!("media socket unusable: {e}");
                return;
            }
        };
        let mut batch = RecvBatch::default();
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(c) => {
                        let result = self.handle_request(c.request, Instant::now());
                        let _ = c.reply.send(result);
                    }
                    None => break,
                },
                ready = socket.readable() => {
                    if ready.is_err() {
                        break;
                    }
                    for _ in 0..MAX_BATCHES_PER_WAKE {
                        // try_io clears readiness on WouldBlock so the next await really waits.
                        match socket.try_io(Interest::READABLE, || recv_batch(&socket, &mut batch)) {
                            Ok(_) => self.handle_datagrams(&batch, Instant::now()),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                debug!("recvmmsg: {e}");
                                break;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => self.handle_timeouts(Instant::now()),
            }
            self.drain(Instant::now());
            self.flush(&socket).await;
        }
        info!("media worker on {} stopped", self.candidate);
    }

    fn next_deadline(&self) -> Instant {
        let mut deadline = Instant::now() + IDLE_TICK;
        for (_, p) in &self.participants {
            for c in [&p.publisher, &p.subscriber].into_iter().flatten() {
                if !c.lost_reported && c.next_timeout < deadline {
                    deadline = c.next_timeout;
                }
            }
        }
        deadline
    }

    async fn flush(&mut self, socket: &tokio::net::UdpSocket) {
        while !self.send_queue.is_empty() {
            match socket.try_io(Interest::WRITABLE, || {
                send_batch(socket, &mut self.send_queue)
            }) {
                Ok(n) => SfuStats::add(&self.stats.datagrams_sent, n as u64),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The kernel's send buffer is full: wait for room rather than drop.
                    if !matches!(
                        tokio::time::timeout(Duration::from_millis(50), socket.writable()).await,
                        Ok(Ok(()))
                    ) {
                        return;
                    }
                }
                Err(e) => {
                    debug!("sendmmsg: {e}");
                    return;
                }
            }
        }
    }

    fn handle_datagrams(&mut self, batch: &RecvBatch, now: Instant) {
        SfuStats::add(&self.stats.datagrams_received, batch.len() as u64);
        for (from, data) in batch.iter() {
            self.handle_datagram(from, data, now);
        }
    }

    fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let (key, new_address) = match self.demux.route(from, data) {
            Route::Known(key) => (key, false),
            Route::NewAddress(key) => (key, true),
            Route::Unknown => {
                SfuStats::add(&self.stats.datagrams_dropped_unknown_source, 1);
                return;
            }
        };
        let Ok(contents) = data.try_into() else {
            SfuStats::add(&self.stats.datagrams_dropped_malformed, 1);
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.candidate,
                contents,
            },
        );
        let Some(conn) = self
            .participants
            .get_mut(key.0 .0 as usize)
            .and_then(|p| p.connection_mut(key.1))
        else {
            SfuStats::add(&self.stats.datagrams_dropped_unknown_source, 1);
            return;
        };
        if new_address {
            if !conn.rtc.accepts(&input) {
                SfuStats::add(&self.stats.datagrams_dropped_unknown_source, 1);
                return;
            }
            self.demux.bind_address(from, key);
        }
        if let Err(e) = conn.rtc.handle_input(input) {
            debug!("connection refused a datagram from {from}: {e}");
            SfuStats::add(&self.stats.datagrams_dropped_malformed, 1);
        }
        // str0m holds at most one received RTP packet until the next poll: poll now, before
        // the next datagram for this connection overwrites it.
        self.poll_connection(key, now);
    }

    fn handle_timeouts(&mut self, now: Instant) {
        let mut due = vec![];
        for (k, p) in &mut self.participants {
            for (side, conn) in [
                (Side::Publisher, &mut p.publisher),
                (Side::Subscriber, &mut p.subscriber),
            ] {
                if let Some(c) = conn {
                    if !c.lost_reported && c.next_timeout <= now {
                        if let Err(e) = c.rtc.handle_input(Input::Timeout(now)) {
                            debug!("timeout input failed: {e}");
                        }
                        due.push((PeerKey(k as u32), side));
                    }
                }
            }
        }
        self.dirty.extend(due);
    }

    /// Polls every connection that got input until it only wants a timeout, acting on its
    /// events; forwarding makes more connections dirty, which are polled in turn.
    fn drain(&mut self, now: Instant) {
        while let Some(key) = self.dirty.pop() {
            self.poll_connection(key, now);
        }
    }

    /// Polls one connection until it only wants a timeout, acting on what it emits.
    fn poll_connection(&mut self, key: ConnectionKey, now: Instant) {
        while let Some(conn) = self
            .participants
            .get_mut(key.0 .0 as usize)
            .and_then(|p| p.connection_mut(key.1))
        {
            if conn.lost_reported {
                break;
            }
            if !conn.rtc.is_alive() {
                conn.lost_reported = true;
                self.report_media_lost(key.0);
                break;
            }
            match conn.rtc.poll_output() {
                Ok(Output::Transmit(t)) => self.send_queue.push(t.destination, t.contents.into()),
                Ok(Output::Timeout(t)) => {
                    conn.next_timeout = t;
                    break;
                }
                Ok(Output::Event(e)) => self.handle_event(key, e, now),
                Err(e) => {
                    debug!("poll_output: {e}");
                    conn.rtc.disconnect();
                }
            }
        }
    }

    fn report_media_lost(&mut self, peer: PeerKey) {
        if let Some(p) = self.participants.get(peer.0 as usize) {
            info!(participant = %p.id, "media connection lost");
            let _ = self.events.send(SfuEvent::MediaLost {
                participant: p.id.clone(),
            });
        }
    }

    fn handle_event(&mut self, key: ConnectionKey, event: Event, now: Instant) {
        let (peer, side) = key;
        match event {
            Event::RtpPacket(pkt) if side == Side::Publisher => self.forward(peer, pkt, now),
            Event::KeyframeRequest(req) if side == Side::Subscriber => {
                SfuStats::add(&self.stats.keyframe_requests_received, 1);
                match self.router.on_keyframe_request(peer, req.mid, now) {
                    KeyframeDecision::Send(r) => self.request_keyframe(r),
                    KeyframeDecision::Suppressed => {
                        SfuStats::add(&self.stats.keyframe_requests_suppressed, 1)
                    }
                    KeyframeDecision::UnknownMid => {}
                }
            }
            Event::Connected => {
                SfuStats::add(&self.stats.peers_connected, 1);
                if let Some(p) = self.participants.get(peer.0 as usize) {
                    let _ = self.events.send(SfuEvent::MediaConnected {
                        participant: p.id.clone(),
                    });
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                if let Some(c) = self
                    .participants
                    .get_mut(peer.0 as usize)
                    .and_then(|p| p.connection_mut(side))
                {
                    if !c.lost_reported {
                        c.lost_reported = true;
                        self.report_media_lost(peer);
                    }
                }
            }
            Event::PeerStats(s) => {
                if let Some(p) = self.participants.get_mut(peer.0 as usize) {
                    match side {
                        Side::Publisher => {
                            p.stats.ingress_loss = s.ingress_loss_fraction.or(p.stats.ingress_loss);
                            p.stats.bytes_received = s.peer_bytes_rx;
                        }
                        Side::Subscriber => {
                            p.stats.egress_loss = s.egress_loss_fraction.or(p.stats.egress_loss);
                            p.stats.bytes_sent = s.peer_bytes_tx;
                            if let Some(rtt) = s.rtt {
                                p.stats.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                            }
                        }
                    }
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(p) = self.participants.get_mut(peer.0 as usize) {
                    if let Some(rtt) = s.rtt {
                        p.stats.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                    }
                    if s.loss.is_some() {
                        p.stats.egress_loss = s.loss;
                    }
                }
            }
            _ => {}
        }
    }

    /// The packet path: attribute, fan out, write to each subscriber. No allocation beyond
    /// what str0m does per encrypted datagram.
    fn forward(&mut self, publisher: PeerKey, pkt: RtpPacket, now: Instant) {
        let Some(p) = self.participants.get_mut(publisher.0 as usize) else {
            return;
        };
        let Some(conn) = p.publisher.as_mut() else {
            return;
        };
        let Some(mid) = conn
            .rtc
            .direct_api()
            .stream_rx(&pkt.header.ssrc)
            .map(|s| s.mid())
        else {
            return;
        };
        let Some(track) = p.track_by_mid(mid) else {
            return;
        };
        let incoming = IncomingRtp {
            track,
            source: *pkt.header.ssrc,
            seq: *pkt.seq_no,
            ts: pkt.header.timestamp,
            pt: *pkt.header.payload_type,
        };
        let mut forwards = std::mem::take(&mut self.forwards);
        self.router.on_rtp(&incoming, now, &mut forwards);
        let video = self
            .router
            .track(track)
            .is_some_and(|t| t.kind == TrackKind::Video);
        for f in &forwards {
            let Some(sub) = self
                .participants
                .get_mut(f.subscriber.0 as usize)
                .and_then(|s| s.subscriber.as_mut())
            else {
                continue;
            };
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(f.mid, None) else {
                continue;
            };
            let ext = ExtensionValues {
                audio_level: pkt.header.ext_vals.audio_level,
                voice_activity: pkt.header.ext_vals.voice_activity,
                video_orientation: pkt.header.ext_vals.video_orientation,
                ..Default::default()
            };
            let write = RtpWrite::new(
                f.pt.into(),
                SeqNo::from(f.seq),
                f.ts,
                pkt.timestamp,
                pkt.payload.clone(),
            )
            .marker(pkt.header.marker)
            .ext_vals(ext)
            .nackable(video);
            tx.write_rtp(write);
            SfuStats::add(&self.stats.rtp_packets_forwarded, 1);
            self.dirty.push((f.subscriber, Side::Subscriber));
        }
        self.forwards = forwards;
    }

    fn request_keyframe(&mut self, req: KeyframeRequest) {
        let Some(conn) = self
            .participants
            .get_mut(req.publisher.0 as usize)
            .and_then(|p| p.publisher.as_mut())
        else {
            return;
        };
        if let Some(rx) = conn.rtc.direct_api().stream_rx_by_mid(req.mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            SfuStats::add(&self.stats.keyframe_requests_sent, 1);
            self.dirty.push((req.publisher, Side::Publisher));
        }
    }

    fn peer_of(&self, id: &ParticipantId) -> Result<PeerKey, SfuError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or(SfuError::UnknownParticipant)
    }

    pub fn handle_request(
        &mut self,
        request: SfuRequest,
        now: Instant,
    ) -> Result<SfuResponse, SfuError> {
        let result = match request {
            SfuRequest::AddParticipant {
                room,
                participant,
                can_subscribe,
            } => {
                if self.by_id.contains_key(&participant) {
                    return Err(SfuError::ParticipantExists);
                }
                let key = PeerKey(
                    self.participants
                        .insert(Participant::new(participant.clone(), can_subscribe))
                        as u32,
                );
                self.by_id.insert(participant, key);
                self.router.add_participant(key, &room.0, can_subscribe);
                Ok(SfuResponse::Done)
            }
            SfuRequest::PublishOffer {
                participant,
                sdp,
                tracks,
            } => {
                let peer = self.peer_of(&participant)?;
                self.publish(peer, &sdp, &tracks, now)
                    .map(|sdp| SfuResponse::PublishAnswer { sdp })
            }
            SfuRequest::SubscriberAnswer { participant, sdp } => {
                let peer = self.peer_of(&participant)?;
                self.accept_subscriber_answer(peer, &sdp, now)
                    .map(|_| SfuResponse::Done)
            }
            SfuRequest::SetTrackMuted {
                participant,
                track_id,
                muted,
            } => {
                let peer = self.peer_of(&participant)?;
                let track = self.participants[peer.0 as usize]
                    .published
                    .iter()
                    .find(|t| t.id == track_id)
                    .map(|t| t.key)
                    .ok_or_else(|| SfuError::InvalidRequest(format!("unknown track {track_id}")))?;
                if let Some(req) = self.router.set_muted(track, muted, now) {
                    self.request_keyframe(req);
                }
                Ok(SfuResponse::Done)
            }
            SfuRequest::RemoveParticipant { participant } => {
                let peer = self.peer_of(&participant)?;
                self.remove(peer);
                Ok(SfuResponse::Done)
            }
            SfuRequest::PeerStats { participant } => {
                let peer = self.peer_of(&participant)?;
                Ok(SfuResponse::PeerStats(
                    self.participants[peer.0 as usize].stats.clone(),
                ))
            }
        };
        self.negotiate_all(now);
        result
    }

    fn publish(
        &mut self,
        peer: PeerKey,
        sdp: &str,
        tracks: &[crate::api::PublishedTrack],
        now: Instant,
    ) -> Result<String, SfuError> {
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        if self.participants[peer.0 as usize].publisher.is_some() {
            return Err(SfuError::InvalidRequest("already published".into()));
        }
        let mut conn = Connection::new(self.candidate, self.dtls_cert.as_ref(), now)
            .map_err(|e| SfuError::Unavailable(e.to_string()))?;
        let answer = conn
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let mut checked = vec![];
        for t in tracks {
            let mid = Mid::from(t.mid.as_str());
            let media = conn
                .rtc
                .media(mid)
                .ok_or_else(|| SfuError::InvalidSdp(format!("no m-line with mid {}", t.mid)))?;
            let kind_ok = matches!(
                (media.kind(), t.kind),
                (MediaKind::Audio, TrackKind::Audio) | (MediaKind::Video, TrackKind::Video)
            );
            if !kind_ok {
                return Err(SfuError::InvalidSdp(format!(
                    "m-line {} is not {:?}",
                    t.mid, t.kind
                )));
            }
            if !matches!(media.direction(), Direction::RecvOnly | Direction::SendRecv) {
                return Err(SfuError::InvalidSdp(format!(
                    "m-line {} does not send",
                    t.mid
                )));
            }
            checked.push((mid, t.clone()));
        }
        let ufrag = conn.ufrag.clone();
        let participant = &mut self.participants[peer.0 as usize];
        participant.publisher = Some(conn);
        for (mid, t) in checked {
            let clock_rate = if t.kind == TrackKind::Audio {
                48_000
            } else {
                90_000
            };
            if let Some(key) = self
                .router
                .add_track(peer, mid, t.kind, clock_rate, t.muted)
            {
                self.track_ids.insert(key, t.track_id.clone());
                self.participants[peer.0 as usize]
                    .published
                    .push(PublishedTrackEntry {
                        mid,
                        key,
                        id: t.track_id,
                    });
            }
        }
        self.demux.add_ufrag(ufrag, (peer, Side::Publisher));
        self.dirty.push((peer, Side::Publisher));
        Ok(answer.to_sdp_string())
    }

    fn negotiate_all(&mut self, now: Instant) {
        for peer in self.router.take_needs_negotiation() {
            self.negotiate(peer, now);
        }
    }

    /// Sends a subscriber offer for everything that changed, unless one is outstanding (the
    /// answer will trigger the next round).
    fn negotiate(&mut self, peer: PeerKey, now: Instant) {
        let Some(p) = self.participants.get(peer.0 as usize) else {
            return;
        };
        if p.pending_offer.is_some() {
            return;
        }
        let downtracks: Vec<_> = self
            .router
            .downtracks_of(peer)
            .into_iter()
            .map(|(k, d)| (k, d.state.clone(), d.kind, d.publisher, d.track))
            .collect();
        if !downtracks
            .iter()
            .any(|d| matches!(d.1, DowntrackState::Pending | DowntrackState::Closing(_)))
        {
            return;
        }
        if self.participants[peer.0 as usize].subscriber.is_none() {
            let conn = match Connection::new(self.candidate, self.dtls_cert.as_ref(), now) {
                Ok(c) => c,
                Err(e) => {
                    warn!("cannot create subscriber connection: {e}");
                    return;
                }
            };
            self.demux
                .add_ufrag(conn.ufrag.clone(), (peer, Side::Subscriber));
            self.participants[peer.0 as usize].subscriber = Some(conn);
        }
        let publisher_ids: Vec<Option<ParticipantId>> = downtracks
            .iter()
            .map(|d| self.participants.get(d.3 .0 as usize).map(|p| p.id.clone()))
            .collect();
        let Some(conn) = self.participants[peer.0 as usize].subscriber.as_mut() else {
            return;
        };
        let mut api = conn.rtc.sdp_api();
        let mut offered = vec![];
        let mut closing = vec![];
        let mut listed = vec![];
        for ((key, state, kind, _, track), publisher_id) in downtracks.iter().zip(publisher_ids) {
            match state {
                DowntrackState::Pending => {
                    let (Some(track), Some(publisher_id)) = (track, publisher_id) else {
                        continue;
                    };
                    let track_id = self
                        .track_ids
                        .get(track)
                        .cloned()
                        .unwrap_or_else(|| TrackId(String::new()));
                    let media_kind = if *kind == TrackKind::Audio {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    };
                    let mid = api.add_media(
                        media_kind,
                        Direction::SendOnly,
                        Some(publisher_id.0.clone()),
                        Some(track_id.0.clone()),
                        None,
                    );
                    offered.push((*key, mid));
                    listed.push(SubscribedTrack {
                        mid: mid.to_string(),
                        track_id,
                        participant_id: publisher_id,
                        kind: *kind,
                    });
                }
                DowntrackState::Closing(mid) => {
                    api.stop_media(*mid);
                    closing.push(*key);
                }
                DowntrackState::Offered(mid) | DowntrackState::Active { mid, .. } => {
                    if let (Some(track), Some(publisher_id)) = (track, publisher_id) {
                        let track_id = self
                            .track_ids
                            .get(track)
                            .cloned()
                            .unwrap_or_else(|| TrackId(String::new()));
                        listed.push(SubscribedTrack {
                            mid: mid.to_string(),
                            track_id,
                            participant_id: publisher_id,
                            kind: *kind,
                        });
                    }
                }
            }
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        for (key, mid) in &offered {
            self.router.mark_offered(*key, *mid);
        }
        let participant = &mut self.participants[peer.0 as usize];
        participant.pending_offer = Some(PendingSubscriberOffer {
            pending,
            offered: offered.into_iter().map(|(k, _)| k).collect(),
            closing,
        });
        let _ = self.events.send(SfuEvent::SubscriberOffer {
            participant: participant.id.clone(),
            sdp: offer.to_sdp_string(),
            tracks: listed,
        });
        self.dirty.push((peer, Side::Subscriber));
    }

    fn accept_subscriber_answer(
        &mut self,
        peer: PeerKey,
        sdp: &str,
        now: Instant,
    ) -> Result<(), SfuError> {
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let participant = &mut self.participants[peer.0 as usize];
        let Some(pending) = participant.pending_offer.take() else {
            return Err(SfuError::InvalidRequest(
                "no subscriber offer is outstanding".into(),
            ));
        };
        let Some(conn) = participant.subscriber.as_mut() else {
            return Err(SfuError::InvalidRequest("no subscriber connection".into()));
        };
        if let Err(e) = conn.rtc.sdp_api().accept_answer(pending.pending, answer) {
            // The offer is spent either way; its downtracks go back to pending so the next
            // offer carries them again.
            warn!("subscriber answer refused: {e}");
            return Err(SfuError::InvalidSdp(e.to_string()));
        }
        for key in pending.closing {
            self.router.forget(key);
        }
        let mut keyframe_requests = vec![];
        for key in pending.offered {
            let Some(dt) = self.router.downtrack(key) else {
                continue;
            };
            let DowntrackState::Offered(sub_mid) = dt.state else {
                continue;
            };
            let Some(track) = dt.track.and_then(|t| self.router.track(t)) else {
                continue;
            };
            let (publisher, pub_mid) = (track.publisher, track.publisher_mid);
            let map = match (
                self.participants
                    .get(publisher.0 as usize)
                    .and_then(|p| p.publisher.as_ref()),
                self.participants[peer.0 as usize].subscriber.as_ref(),
            ) {
                (Some(p), Some(s)) => payload_type_map(&p.rtc, pub_mid, &s.rtc, sub_mid),
                _ => vec![],
            };
            if map.is_empty() {
                warn!("no common codec between publisher and subscriber for m-line {sub_mid}");
            }
            keyframe_requests.extend(self.router.activate(key, map, now));
            if let Some(sub) = self.participants[peer.0 as usize].subscriber.as_mut() {
                if let Some(tx) = sub.rtc.direct_api().stream_tx_by_mid(sub_mid, None) {
                    // Answer NACKs for 1.5 s of video (RTTs up to about a second), not str0m's
                    // default 3 s: the cache is per subscriber and dominates its memory.
                    tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(0.15));
                }
            }
        }
        for r in keyframe_requests {
            self.request_keyframe(r);
        }
        self.dirty.push((peer, Side::Subscriber));
        // Changes that arrived while the offer was out.
        self.negotiate(peer, now);
        Ok(())
    }

    fn remove(&mut self, peer: PeerKey) {
        self.router.remove_participant(peer);
        self.demux.remove_peer(peer);
        if let Some(mut p) = self.participants.try_remove(peer.0 as usize) {
            self.by_id.remove(&p.id);
            for t in &p.published {
                self.track_ids.remove(&t.key);
            }
            // Tell the remote we are gone (DTLS close_notify) before forgetting the connection.
            for conn in [p.publisher.as_mut(), p.subscriber.as_mut()]
                .into_iter()
                .flatten()
            {
                let _ = conn.rtc.close();
                while let Ok(out) = conn.rtc.poll_output() {
                    match out {
                        Output::Transmit(t) => {
                            self.send_queue.push(t.destination, t.contents.into())
                        }
                        Output::Timeout(_) => break,
                        Output::Event(_) => {}
                    }
                }
            }
        }
        self.dirty.retain(|(p, _)| *p != peer);
    }
}
