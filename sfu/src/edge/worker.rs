//! One media worker: a single-threaded loop owning a UDP socket, its participants' str0m
//! connections and the forwarding core for its rooms. Nothing here is shared with other
//! threads except the command channel, the event channel and relaxed counters.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Vp8Descriptor};
use str0m::{Event, IceConnectionState, Input, Output};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::connection::{Connection, Participant, PendingSubscriberOffer, PublishedTrackEntry};
use super::demux::{ConnectionKey, Demux, Route, Side};
use super::ice_tcp::IceTcp;
use super::local_address;
use super::meter::{WorkerMeter, MAX_BATCHES};
use super::pacer_steps::PacerSteps;
use super::payload_types::{negotiated, payload_type_map, simulcast_rids, video_codecs};
use super::relay_pipe::RelayPipe;
use super::rtx_window::{RTX_CACHE_PACKETS, RTX_RATIO_CAP};
use super::sdp_candidates;
use super::stun::is_nominating_binding_request;
use super::timers::TimerQueue;
use super::udp_batch::{recv_batch, send_batch, socket_backlog, RecvBatch, SendQueue};
use crate::api::{
    ActiveSpeaker, ParticipantId, RoomId, SfuError, SfuEvent, SfuRequest, SfuResponse,
    SubscribedTrack, TrackId, TrackKind,
};
use crate::forward::downlink_monitor::DownlinkSample;
use crate::forward::egress_backlog;
use crate::forward::keyframe::{keyframe_start, VideoCodec};
use crate::forward::layer_selector::Want;
use crate::forward::overload::{Backlog, OverloadGuard};
use crate::forward::router::{DowntrackState, KeyframeDecision, KeyframeRequest, WantOutcome};
use crate::forward::vp8_munger::Vp8Ids;
use crate::forward::{Forward, IncomingRtp, PeerKey, Router, TrackKey};
use crate::record::{RecPacket, RecorderTap};
use crate::relay::{FlowId, OriginFlows, RelayPacket, RemoteTracks};
use crate::stats::SfuStats;

mod bandwidth;
mod early_start;
mod forwarding;
mod ice_restart;
mod ice_tcp;
mod negotiation;
mod path_follow;
mod publisher_replace;
mod recording;
mod relaying;
mod requests;
mod rtx_age;
mod sending;
mod stale_queue;
mod viewing;

#[doc(hidden)]
pub use negotiation::fuzz_answer_intake;
pub use recording::RecordTap;

/// A request for this worker and where its answer goes.
pub struct Command {
    pub request: SfuRequest,
    pub reply: oneshot::Sender<Result<SfuResponse, SfuError>>,
}

/// Longest sleep without a timeout: bounds how stale `now` gets when nothing happens.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// The least a subscriber estimator probes for: audio and a low video layer.
const MIN_PROBE_TARGET_BPS: u64 = 100_000;
/// How often a subscriber short of what it wants is probed anew (see `set_probe_target`).
const PROBE_NUDGE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a subscriber's estimate may stay short of its wish without growing before the
/// estimator is restarted (see `set_probe_target`).
const ESTIMATE_STUCK_RESET: Duration = Duration::from_secs(5);
/// Receive batches handled before looking at commands and timers again.
const MAX_BATCHES_PER_WAKE: usize = 16;
// The meter attributes forwards to each batch of one wake.
const _: () = assert!(MAX_BATCHES_PER_WAKE <= MAX_BATCHES);
/// Relayed packets handled per wake before the socket gets a turn again.
const RELAY_PER_WAKE: usize = 512;
/// How often every connection's timer registration is checked against its deadlines (a
/// safety net: registrations are made where deadlines change, see `Worker::sweep_timers`).
const TIMER_SWEEP: Duration = Duration::from_secs(1);

pub struct Worker {
    candidate: SocketAddr,
    participants: Slab<Participant>,
    by_id: HashMap<ParticipantId, PeerKey>,
    demux: Demux,
    router: Router,
    track_ids: HashMap<crate::forward::TrackKey, TrackId>,
    events: mpsc::UnboundedSender<SfuEvent>,
    stats: Arc<SfuStats>,
    meter: WorkerMeter,
    overload: OverloadGuard,
    send_queue: SendQueue,
    /// Forwarded copies queued since the last send, for the latency histogram (`sending`).
    early_send: sending::EarlySend,
    forwards: Vec<Forward>,
    dirty: Vec<ConnectionKey>,
    /// When each connection next wants a timeout (or its setup deadline passes).
    timers: TimerQueue<ConnectionKey>,
    /// Due timers of one wake, reused.
    timers_due: Vec<(ConnectionKey, Instant)>,
    next_timer_sweep: Instant,
    dtls_cert: Option<DtlsCert>,
    /// Subscriber connections estimate their bandwidth and the router fits layers into it.
    bandwidth_allocation: bool,
    /// This worker's ends of the node's relay (rooms spanning workers, see `relaying`).
    relay: RelayPipe,
    /// Flows of the tracks published here, and which workers want which layers.
    origin: OriginFlows<usize>,
    origin_tracks: HashMap<FlowId, crate::forward::TrackKey>,
    /// Tracks published on other workers that this worker's subscribers receive.
    remote: RemoteTracks<usize, crate::forward::TrackKey>,
    /// Rooms that span workers: (home worker, the other workers hosting the room).
    room_peers: HashMap<String, (usize, Vec<usize>)>,
    /// Relayed packets of one wake, reused.
    relay_in: Vec<(usize, RelayPacket)>,
    /// The remote tracks' wanted layers must be recomputed (a negotiation or setting changed).
    relay_demand_dirty: bool,
    next_relay_demand: Option<Instant>,
    /// See [`crate::config::SfuConfig::media_setup_timeout`].
    media_setup_timeout: Duration,
    /// See [`crate::config::SfuConfig::max_stopped_mlines`].
    max_stopped_mlines: usize,
    /// The recording thread's queue for this worker (a node with a record directory).
    recorder: Option<RecorderTap>,
    /// Recorded rooms and their recording ids.
    recorded_rooms: HashMap<String, String>,
    /// Recorded simulcast tracks whose layer is not picked yet.
    record_pending: usize,
    /// When recorded simulcast tracks are next checked for a recorded layer that stopped.
    next_record_check: Instant,
    /// Tests set it to make the loop panic, as a bug in it would (`SfuNode::panic_worker`).
    #[cfg(feature = "fault-injection")]
    fault: Arc<std::sync::atomic::AtomicBool>,
    /// ICE-TCP streams, when the node offers them (`SfuConfig::ice_tcp`).
    ice_tcp: Option<IceTcp>,
}

impl Worker {
    pub fn new(
        candidate: SocketAddr,
        keyframe_interval: Duration,
        events: mpsc::UnboundedSender<SfuEvent>,
        stats: Arc<SfuStats>,
        index: usize,
        relay: RelayPipe,
    ) -> Self {
        Worker {
            candidate,
            participants: Slab::new(),
            by_id: HashMap::new(),
            demux: Demux::default(),
            router: Router::new(keyframe_interval),
            track_ids: HashMap::new(),
            events,
            meter: WorkerMeter::new(stats.clone(), index),
            overload: OverloadGuard::default(),
            stats,
            send_queue: SendQueue::default(),
            early_send: Default::default(),
            forwards: Vec::with_capacity(256),
            dirty: Vec::with_capacity(256),
            timers: TimerQueue::default(),
            timers_due: Vec::with_capacity(256),
            // Nothing to sweep before the first request (which sweeps itself).
            next_timer_sweep: Instant::now() + TIMER_SWEEP,
            dtls_cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
            bandwidth_allocation: false,
            relay,
            origin: OriginFlows::default(),
            origin_tracks: HashMap::new(),
            remote: RemoteTracks::default(),
            room_peers: HashMap::new(),
            relay_in: Vec::with_capacity(RELAY_PER_WAKE),
            relay_demand_dirty: false,
            next_relay_demand: None,
            media_setup_timeout: crate::config::MEDIA_SETUP_TIMEOUT,
            max_stopped_mlines: crate::config::MAX_STOPPED_MLINES,
            recorder: None,
            recorded_rooms: HashMap::new(),
            record_pending: 0,
            next_record_check: Instant::now(),
            #[cfg(feature = "fault-injection")]
            fault: Default::default(),
            ice_tcp: None,
        }
    }

    /// See [`crate::config::SfuConfig::ice_tcp`].
    pub fn with_ice_tcp(mut self, tcp: Option<IceTcp>) -> Self {
        self.ice_tcp = tcp;
        self
    }

    /// See [`Worker::fault`].
    #[cfg(feature = "fault-injection")]
    pub fn with_fault(mut self, fault: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.fault = fault;
        self
    }

    /// See [`crate::config::SfuConfig::bandwidth_allocation`].
    pub fn with_bandwidth_allocation(mut self, on: bool) -> Self {
        self.bandwidth_allocation = on;
        self
    }

    /// See [`crate::config::SfuConfig::media_setup_timeout`].
    pub fn with_media_setup_timeout(mut self, timeout: Duration) -> Self {
        self.media_setup_timeout = timeout;
        self
    }

    /// See [`crate::config::SfuConfig::max_stopped_mlines`].
    pub fn with_max_stopped_mlines(mut self, max: usize) -> Self {
        self.max_stopped_mlines = max;
        self
    }

    /// Recorded tracks go to this tap (see [`crate::record`]).
    pub fn with_recorder(mut self, tap: Option<RecorderTap>) -> Self {
        self.recorder = tap;
        self
    }

    /// Runs until the command channel closes.
    pub async fn run(mut self, socket: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
        // On 0.0.0.0 replies must leave from the address each client wrote to.
        if let Err(e) = local_address::enable(&socket) {
            warn!("media socket cannot report local addresses ({e}): on a host with several addresses replies may leave from the wrong one");
        }
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
        let (relay_wake, relay_control) = self.relay.take_inputs();
        // A worker without peers never hears from one: an open channel that stays silent.
        let (_keep, silent) = mpsc::unbounded_channel();
        let mut relay_control = relay_control.unwrap_or(silent);
        let (_keep_tcp, silent_tcp) = mpsc::channel(1);
        let mut tcp_events = self
            .ice_tcp
            .as_mut()
            .and_then(IceTcp::start)
            .unwrap_or(silent_tcp);
        self.meter.set_running(true);
        loop {
            #[cfg(feature = "fault-injection")]
            if self.fault.load(std::sync::atomic::Ordering::Relaxed) {
                panic!("injected fault in the media worker on {}", self.candidate);
            }
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(c) => {
                        self.meter.woke(Instant::now());
                        let result = self.handle_request(c.request, Instant::now());
                        let _ = c.reply.send(result);
                        // Requests make connections and start setup clocks.
                        self.sweep_timers(Instant::now());
                    }
                    None => break,
                },
                Some((from, msg)) = relay_control.recv() => {
                    let now = Instant::now();
                    self.meter.woke(now);
                    self.handle_relay_control(from, msg, now);
                    self.negotiate_all(now);
                    self.sweep_timers(now);
                }
                _ = relay_wake.notified() => {
                    let now = Instant::now();
                    self.meter.woke(now);
                    self.drain_relay(now);
                }
                ready = socket.readable() => {
                    if ready.is_err() {
                        break;
                    }
                    self.meter.woke(Instant::now());
                    for _ in 0..MAX_BATCHES_PER_WAKE {
                        // try_io clears readiness on WouldBlock so the next await really waits.
                        match socket.try_io(Interest::READABLE, || recv_batch(&socket, &mut batch)) {
                            Ok(_) => {
                                self.handle_datagrams(&batch, Instant::now());
                                // What this batch forwarded leaves before the next is read.
                                if !self.dirty.is_empty() {
                                    self.drain_sending(Instant::now(), &socket);
                                    self.send_now(&socket);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                debug!("recvmmsg: {e}");
                                break;
                            }
                        }
                    }
                }
                Some(event) = tcp_events.recv() => {
                    let now = Instant::now();
                    self.meter.woke(now);
                    self.handle_tcp_event(event, now);
                    // A burst of frames is handled in one wake, like a receive batch.
                    for _ in 0..RELAY_PER_WAKE {
                        match tcp_events.try_recv() {
                            Ok(event) => self.handle_tcp_event(event, now),
                            Err(_) => break,
                        }
                    }
                }
                // Only while something waits for room in the send buffer (`flush`).
                writable = socket.writable(), if !self.send_queue.is_empty() => {
                    if writable.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    self.meter.woke(now);
                    self.handle_timeouts(now);
                }
            }
            let now = Instant::now();
            self.drain_sending(now, &socket);
            // Other workers start on relayed packets while this one sends its own.
            self.relay.wake();
            self.update_relay_demand(now);
            self.report_speakers(now);
            self.report_bandwidth(now);
            self.report_layer_demand(now);
            self.update_recording(now);
            self.flush(&socket);
            // The copies still counted here are charged by `flushed`.
            self.early_send.take();
            let now = Instant::now();
            self.meter.flushed(now);
            if self.overload.due(now) {
                self.guard_against_overload(socket_backlog(&socket), now);
            }
        }
        self.meter.set_running(false);
        info!("media worker on {} stopped", self.candidate);
    }

    /// Sheds video when the loop stops keeping up, before the socket starts dropping.
    fn guard_against_overload(&mut self, backlog: Option<Backlog>, now: Instant) {
        let before = self.overload.level();
        // Without SO_MEMINFO (Linux before 3.9) the guard never raises.
        let Some(level) = self.overload.judge(backlog.unwrap_or_default(), now) else {
            return;
        };
        if level > before {
            warn!(
                "media worker on {} overloaded: shedding {level:?} video",
                self.candidate
            );
        } else {
            info!("media worker on {}: shedding now {level:?}", self.candidate);
        }
        self.router.set_shedding(level);
        self.meter.set_shedding(level.level());
    }

    /// The loop's next wake: the earliest connection timer, the speaker tick, the timer
    /// sweep, and at the latest [`IDLE_TICK`] from now. O(log n) in stale timer entries,
    /// never a walk over the participants.
    fn next_deadline(&mut self) -> Instant {
        let mut deadline = (Instant::now() + IDLE_TICK).min(self.next_timer_sweep);
        if let Some(tick) = self.router.next_speaker_tick() {
            deadline = deadline.min(tick);
        }
        let participants = &self.participants;
        if let Some(t) = self
            .timers
            .next(|key, at| timer_current(participants, key, at))
        {
            deadline = deadline.min(t);
        }
        deadline
    }

    /// Registers every connection whose deadline is not registered yet: connections made by
    /// a request, setup clocks started or ICE restarted, and (once a second, as a safety
    /// net) anything a path forgot. O(participants), on requests and once a second only.
    fn sweep_timers(&mut self, now: Instant) {
        for (k, p) in &mut self.participants {
            for (side, c) in [
                (Side::Publisher, p.publisher.as_deref_mut()),
                (Side::Subscriber, p.subscriber.as_deref_mut()),
            ] {
                if let Some(c) = c {
                    arm(&mut self.timers, c, (PeerKey(k as u32), side));
                }
            }
        }
        let live = 2 * self.participants.len();
        let participants = &self.participants;
        self.timers
            .compact(live, |key, at| timer_current(participants, key, at));
        self.next_timer_sweep = now + TIMER_SWEEP;
    }

    /// Sends what is queued without ever waiting: when the kernel's send buffer is full the
    /// rest stays queued for the loop's next wake on writability (waiting here stalled the
    /// whole worker, receiving included), and the queue's bound drops what does not fit.
    fn flush(&mut self, socket: &tokio::net::UdpSocket) {
        while !self.send_queue.is_empty() {
            match socket.try_io(Interest::WRITABLE, || {
                send_batch(socket, &mut self.send_queue)
            }) {
                Ok(n) => SfuStats::add(&self.stats.datagrams_sent, n as u64),
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        debug!("sendmmsg: {e}");
                    }
                    break;
                }
            }
        }
        SfuStats::add(
            &self.stats.datagrams_dropped_send_buffer_full,
            self.send_queue.take_dropped(),
        );
    }

    fn handle_datagrams(&mut self, batch: &RecvBatch, now: Instant) {
        SfuStats::add(&self.stats.datagrams_received, batch.len() as u64);
        self.meter.batch_received(now);
        for (from, local, data) in batch.iter() {
            self.handle_datagram(Protocol::Udp, from, local, data, now);
        }
    }

    /// One packet from `from` (a UDP datagram, or an RFC 4571 frame of an ICE-TCP stream);
    /// false when no connection took it.
    pub(super) fn handle_datagram(
        &mut self,
        proto: Protocol,
        from: SocketAddr,
        local: Option<IpAddr>,
        data: &[u8],
        now: Instant,
    ) -> bool {
        let (key, new_address) = match self.demux.route(from, data) {
            Route::Known(key) => (key, false),
            Route::NewAddress(key) => (key, true),
            Route::Unknown => {
                SfuStats::add(&self.stats.datagrams_dropped_unknown_source, 1);
                return false;
            }
        };
        let Ok(contents) = data.try_into() else {
            SfuStats::add(&self.stats.datagrams_dropped_malformed, 1);
            return true;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
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
            return false;
        };
        // RFC 7983: STUN starts with 0 or 1; media never does, so this costs media nothing.
        let nominating =
            data.first().is_some_and(|b| *b < 2) && is_nominating_binding_request(data);
        if new_address || nominating {
            if !conn.rtc.accepts(&input) {
                if new_address {
                    SfuStats::add(&self.stats.datagrams_dropped_unknown_source, 1);
                    return false;
                }
            } else {
                if new_address {
                    self.demux.bind_address(from, key);
                }
                if nominating {
                    conn.send_path.nominated(from, now);
                }
            }
        }
        let moved_from = conn.send_path.heard(from, now);
        if let Some(local) = local {
            conn.reply_path = Some((from, local));
        }
        let reached = early_start::reaches_early(conn, key.1, data, &input);
        if let Err(e) = conn.rtc.handle_input(input) {
            debug!("connection refused a datagram from {from}: {e}");
            SfuStats::add(&self.stats.datagrams_dropped_malformed, 1);
        }
        if let Some(stale) = moved_from {
            self.follow_send_path(key, stale, from, now);
        }
        // str0m holds at most one received RTP packet until the next poll: poll now, before
        // the next datagram for this connection overwrites it.
        self.poll_connection(key, now);
        if reached {
            self.start_early(key.0, now);
        }
        true
    }

    /// The connections whose timer is due: str0m gets its timeout, a connection not up by its
    /// setup deadline is given up. Only the due ones are touched.
    fn handle_timeouts(&mut self, now: Instant) {
        if now >= self.next_timer_sweep {
            self.sweep_timers(now);
        }
        let mut due = std::mem::take(&mut self.timers_due);
        due.clear();
        let participants = &self.participants;
        self.timers.pop_due(
            now,
            |key, at| timer_current(participants, key, at),
            &mut due,
        );
        for &((peer, side), _) in &due {
            let Some(p) = self.participants.get_mut(peer.0 as usize) else {
                continue;
            };
            let Some(c) = p.connection_mut(side) else {
                continue;
            };
            c.timer_at = None;
            if c.setup_expired(now) {
                for c in [p.publisher.as_mut(), p.subscriber.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    c.lost_reported = true;
                }
                SfuStats::add(&self.stats.media_setup_timeouts, 1);
                info!(participant = %p.id, "media connection not up within {:?}", self.media_setup_timeout);
                self.report_media_lost(peer);
                continue;
            }
            if c.next_timeout <= now {
                if let Err(e) = c.rtc.handle_input(Input::Timeout(now)) {
                    debug!("timeout input failed: {e}");
                }
                // The drain's poll registers its next timeout.
                if !std::mem::replace(&mut c.queued_for_poll, true) {
                    self.dirty.push((peer, side));
                }
            } else {
                // Only the setup deadline was due, and it moved (the connection came up or
                // its ICE came back).
                arm(&mut self.timers, c, (peer, side));
            }
        }
        self.timers_due = due;
    }

    fn connection_mut(&mut self, key: ConnectionKey) -> Option<&mut Connection> {
        self.participants
            .get_mut(key.0 .0 as usize)
            .and_then(|p| p.connection_mut(key.1))
    }

    /// Queues a connection for polling once, however often it is marked before the drain.
    pub(super) fn mark_dirty(&mut self, key: ConnectionKey) {
        if let Some(conn) = self.connection_mut(key) {
            if !std::mem::replace(&mut conn.queued_for_poll, true) {
                self.dirty.push(key);
            }
        }
    }

    /// Polls one connection until it only wants a timeout, acting on what it emits.
    fn poll_connection(&mut self, key: ConnectionKey, now: Instant) {
        let mut steps = PacerSteps::default();
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
                Ok(Output::Transmit(t)) => {
                    let from = conn.reply_from(t.destination);
                    // STUN replies go wherever a check came from; the rest goes down the
                    // nominated pair.
                    if t.contents.first().is_some_and(|b| *b >= 2) {
                        conn.send_path.sent(t.destination, now);
                    }
                    conn.written.transmitted(&t.contents);
                    if t.proto == Protocol::Tcp {
                        if let Some(tcp) = self.ice_tcp.as_mut() {
                            tcp.send(t.destination, t.contents.into());
                        }
                        continue;
                    }
                    self.send_queue.push(t.destination, from, t.contents.into())
                }
                Ok(Output::Timeout(t)) => {
                    // An empty pacer step after our media left waits for the next write;
                    // not on a connection with video (see `Connection::sends_video`).
                    let reason = conn.rtc.last_timeout_reason();
                    let deferred = conn.written.defer(reason, t, now);
                    let t = deferred.filter(|_| !conn.sends_video).unwrap_or(t);
                    // Due already: handed over now (see `pacer_steps`).
                    if let Some(at) = steps.next(t, now, Instant::now) {
                        if let Err(e) = conn.rtc.handle_input(Input::Timeout(at)) {
                            debug!("timeout input failed: {e}");
                        }
                        continue;
                    }
                    conn.next_timeout = t;
                    arm(&mut self.timers, conn, key);
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

    /// Dynacast: tells publishers which simulcast layers someone receives.
    fn report_layer_demand(&mut self, now: Instant) {
        for (track, active) in self.router.poll_layer_demand(now) {
            let (Some(t), Some(track_id)) = (self.router.track(track), self.track_ids.get(&track))
            else {
                continue;
            };
            let count = usize::from(t.layer_count());
            let Some(p) = self.participants.get(t.publisher.0 as usize) else {
                continue;
            };
            // A relayed track's layers are the origin's business (see `relaying`).
            if p.remote.is_some() {
                continue;
            }
            debug!(participant = %p.id, ?active, "publisher layers wanted");
            let _ = self.events.send(SfuEvent::PublisherLayers {
                participant: p.id.clone(),
                track_id: track_id.clone(),
                active: active[..count].to_vec(),
            });
        }
    }

    /// Reports rooms whose active speakers changed; cheap when no tick is due.
    fn report_speakers(&mut self, now: Instant) {
        for update in self.router.poll_speakers(now) {
            // A room spanning workers is reported by its home alone, which takes all its audio.
            if self
                .room_peers
                .get(&update.room)
                .is_some_and(|(home, _)| *home != self.relay.index())
            {
                continue;
            }
            let speakers = update
                .speakers
                .iter()
                .filter_map(|s| {
                    let p = self.participants.get(s.peer.0 as usize)?;
                    Some(ActiveSpeaker {
                        participant: p.id.clone(),
                        level: s.level,
                    })
                })
                .collect();
            let _ = self.events.send(SfuEvent::ActiveSpeakers {
                room: RoomId(update.room),
                speakers,
            });
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
                if let Some(c) = self
                    .participants
                    .get_mut(peer.0 as usize)
                    .and_then(|p| p.connection_mut(side))
                {
                    c.connected = true;
                }
                if side == Side::Subscriber {
                    self.early_start_on_connected(peer, now);
                    for r in self.router.on_subscriber_connected(peer, now) {
                        self.request_keyframe(r);
                    }
                }
                if let Some(p) = self.participants.get(peer.0 as usize) {
                    let _ = self.events.send(SfuEvent::MediaConnected {
                        participant: p.id.clone(),
                    });
                }
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Completed | IceConnectionState::Connected,
            ) => self.ice_came_back(key, now),
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
                // A parked subscriber's estimator sits at zero on purpose (`idle_egress`):
                // its estimate is not a sample of its link.
                let parked = side == Side::Subscriber
                    && self
                        .participants
                        .get(peer.0 as usize)
                        .and_then(|p| p.subscriber.as_ref())
                        .is_some_and(|c| c.idle.is_parked());
                self.meter.peer_stats(side == Side::Publisher, parked, &s);
                if let (Side::Subscriber, Some(rtt)) = (side, s.rtt) {
                    self.subscriber_rtt(peer, rtt);
                }
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
                if side == Side::Subscriber {
                    self.downlink_feedback(peer, &s, now);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })
                if side == Side::Subscriber =>
            {
                let worth = self
                    .participants
                    .get(peer.0 as usize)
                    .and_then(|p| p.subscriber.as_ref())
                    .map_or(Some(estimate.as_u64()), |c| {
                        c.idle.estimate_for_allocation(estimate.as_u64(), now)
                    });
                let Some(estimate) = worth.map(Bitrate::bps) else {
                    return;
                };
                let desired = self.router.set_egress_budget(peer, estimate.as_u64(), now);
                debug!(
                    peer = peer.0,
                    estimate = estimate.as_u64(),
                    desired,
                    "subscriber estimate"
                );
                self.set_probe_target(peer, desired, None, now);
            }
            Event::MediaIngressStats(s) if side == Side::Publisher => {
                let track = self
                    .participants
                    .get(peer.0 as usize)
                    .and_then(|p| p.track_by_mid(s.mid))
                    .and_then(|t| self.router.track(t));
                if let Some(t) = track {
                    self.meter.ingress_stats(t.kind, &s);
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(p) = self.participants.get_mut(peer.0 as usize) {
                    if let (Side::Subscriber, Some(c)) = (side, p.subscriber.as_mut()) {
                        self.meter.egress_stats(&mut c.egress, &s);
                    }
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
}

/// Registers `c`'s next deadline under `key` unless that exact instant is registered already.
fn arm(timers: &mut TimerQueue<ConnectionKey>, c: &mut Connection, key: ConnectionKey) {
    if c.lost_reported {
        c.timer_at = None;
        return;
    }
    let at = c.wake_at();
    if c.timer_at != Some(at) {
        c.timer_at = Some(at);
        timers.schedule(key, at);
    }
}

/// A timer entry still stands: its connection exists, is not lost, and waits for `at`.
fn timer_current(participants: &Slab<Participant>, key: ConnectionKey, at: Instant) -> bool {
    participants
        .get(key.0 .0 as usize)
        .and_then(|p| match key.1 {
            Side::Publisher => p.publisher.as_deref(),
            Side::Subscriber => p.subscriber.as_deref(),
        })
        .is_some_and(|c| !c.lost_reported && c.timer_at == Some(at))
}
