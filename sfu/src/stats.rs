//! Counters shared between the media workers and whoever reports on them.
//!
//! Plain relaxed atomics and lock-free histograms: workers add, readers load at any time, so
//! reporting never touches the packet path. Per-packet counts are kept worker-local and
//! added here once per loop iteration (see `edge::meter`), not once per packet.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::api::TrackKind;
use crate::histogram::AtomicHistogram;

/// Forwarding latency buckets, seconds: 5 µs … 10 ms.
pub const FORWARDING_LATENCY_BOUNDS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01,
];
/// Cascade hop latency buckets, seconds: 50 µs … 1 s (loopback hops take a few hundred
/// µs, a hop between data centres tens of ms).
pub const HOP_LATENCY_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002, 0.003, 0.005,
    0.007_5, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
];
/// Round-trip time buckets, seconds.
pub const RTT_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2,
];
/// Loss fraction buckets; the first separates "no loss" from "some loss".
pub const LOSS_BOUNDS: &[f64] = &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
/// Interarrival jitter buckets, seconds.
pub const JITTER_BOUNDS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32,
];
/// Bandwidth estimate buckets, bits per second.
/// Bandwidth estimate buckets in bytes/s (Prometheus base units): 100 kbit/s … 64 Mbit/s.
pub const BANDWIDTH_BOUNDS: &[f64] = &[
    12.5e3, 31.25e3, 62.5e3, 125e3, 250e3, 500e3, 1e6, 2e6, 4e6, 8e6,
];

/// Every track kind, in the order of [`kind_index`].
pub const KINDS: [TrackKind; 2] = [TrackKind::Audio, TrackKind::Video];

pub fn kind_index(kind: TrackKind) -> usize {
    match kind {
        TrackKind::Audio => 0,
        TrackKind::Video => 1,
    }
}

pub fn kind_label(kind: TrackKind) -> &'static str {
    match kind {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    }
}

/// One worker's own numbers.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Time spent processing rather than waiting for the socket, a command or a timer.
    pub busy_nanos: AtomicU64,
    /// Busy share of the last full second, in thousandths: what placement spreads rooms by.
    pub busy_recent_permille: AtomicU64,
    /// str0m connections (publisher and subscriber sides each count).
    pub peers: AtomicU64,
    /// Published tracks and downtracks by kind ([`kind_index`]), set after every change.
    pub published_tracks: [AtomicU64; 2],
    pub subscribed_tracks: [AtomicU64; 2],
    /// The worker loop is running.
    pub running: AtomicBool,
    /// Video the worker sheds because it cannot keep up: 0 none, 1 thumbnails, 2 cameras.
    pub shedding_level: AtomicU64,
    /// Bandwidth allocation, summed over the worker's subscribers with an estimate (bits
    /// per second): what they would take with unlimited bandwidth, and what was given.
    pub bandwidth_wanted_bps: AtomicU64,
    pub bandwidth_allocated_bps: AtomicU64,
}

/// Node-wide counters. Workers add; readers take a [`StatsSnapshot`] or read fields.
#[derive(Debug)]
pub struct SfuStats {
    pub datagrams_received: AtomicU64,
    pub datagrams_sent: AtomicU64,
    /// Datagrams from an unknown address that were not a STUN binding request for a known peer.
    pub datagrams_dropped_unknown_source: AtomicU64,
    /// Datagrams a peer's WebRTC stack refused (bad SRTP, truncated RTP, garbage DTLS, ...).
    pub datagrams_dropped_malformed: AtomicU64,
    /// Datagrams not sent because the socket's send buffer stayed full and the worker's
    /// queue reached its bound.
    pub datagrams_dropped_send_buffer_full: AtomicU64,
    /// RTP from publishers, attributed to a track, by kind: packets and payload bytes.
    pub rtp_packets_received: [AtomicU64; 2],
    pub rtp_bytes_received: [AtomicU64; 2],
    /// Forwarded copies handed to subscribers' connections, by kind.
    pub rtp_packets_sent: [AtomicU64; 2],
    pub rtp_bytes_sent: [AtomicU64; 2],
    /// NACK feedback messages from subscribers (str0m's egress stats, per stats interval).
    pub nacks_received: AtomicU64,
    /// Packets str0m resent from its RTX cache (derived per stats interval, see `edge::meter`).
    pub retransmissions_sent: AtomicU64,
    pub keyframe_requests_received: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    pub keyframe_requests_suppressed: AtomicU64,
    pub peers_connected: AtomicU64,
    /// Media worker threads that panicked (see `node::supervision`); each stays dead.
    pub worker_panics: AtomicU64,
    /// Connections that did not come up within the media-setup timeout (their participants
    /// were cut).
    pub media_setup_timeouts: AtomicU64,
    /// Connections whose send path moved to the client's new address after the old one went
    /// silent (a NAT rebinding; `edge::send_path`).
    pub send_path_moves: AtomicU64,
    /// Recordings stopped by an I/O error (disk full, directory not writable).
    pub recording_errors: AtomicU64,
    /// Packets of recorded tracks dropped because the recording thread's queue was full.
    pub recording_packets_dropped: AtomicU64,
    /// Keyframes asked of publishers because a recorded video lost a packet or never saw one.
    pub recording_keyframe_requests: AtomicU64,
    /// Recordings being written on this node.
    pub recordings_active: AtomicU64,
    pub forwarding_latency: AtomicHistogram,
    pub peer_rtt: AtomicHistogram,
    pub ingress_loss: AtomicHistogram,
    pub egress_loss: AtomicHistogram,
    pub jitter: AtomicHistogram,
    pub bandwidth_estimate: AtomicHistogram,
    /// Bandwidth allocation changed a subscriber video's layer cap (pauses included).
    pub bandwidth_layer_switches: AtomicU64,
    /// ... paused a subscriber's video because not even its lowest layer fit.
    pub video_paused_for_bandwidth: AtomicU64,
    /// Origin worker's receive → this node's worker taking the packet, for packets relayed
    /// from another media node (see `crate::cascade::stamp`).
    pub cascade_hop_latency: AtomicHistogram,
    /// Video frames not forwarded because the subscriber connection's send queue was
    /// backlogged (see `forward::egress_backlog`).
    pub video_frames_held_for_backlog: AtomicU64,
    /// Video streams whose send queue a bandwidth cut let go unpaced (see
    /// `edge/worker/stale_queue.rs`).
    pub stale_video_queues_flushed: AtomicU64,
    pub workers: Box<[WorkerStats]>,
    /// Every cascade link of the node, summed (see `crate::cascade`).
    pub cascade: std::sync::Arc<crate::cascade::CascadeStats>,
    /// ICE-TCP streams and their drops (see `edge::ice_tcp`).
    pub ice_tcp: crate::edge::ice_tcp::IceTcpStats,
}

/// A copy of the main [`SfuStats`] counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub datagrams_dropped_unknown_source: u64,
    pub datagrams_dropped_malformed: u64,
    /// Forwarded copies of every kind.
    pub rtp_packets_forwarded: u64,
    pub keyframe_requests_received: u64,
    pub keyframe_requests_sent: u64,
    pub keyframe_requests_suppressed: u64,
    pub peers_connected: u64,
}

impl Default for SfuStats {
    fn default() -> Self {
        SfuStats::new(0)
    }
}

impl SfuStats {
    pub fn new(workers: usize) -> Self {
        SfuStats {
            datagrams_received: AtomicU64::new(0),
            datagrams_sent: AtomicU64::new(0),
            datagrams_dropped_unknown_source: AtomicU64::new(0),
            datagrams_dropped_malformed: AtomicU64::new(0),
            datagrams_dropped_send_buffer_full: AtomicU64::new(0),
            rtp_packets_received: Default::default(),
            rtp_bytes_received: Default::default(),
            rtp_packets_sent: Default::default(),
            rtp_bytes_sent: Default::default(),
            nacks_received: AtomicU64::new(0),
            retransmissions_sent: AtomicU64::new(0),
            keyframe_requests_received: AtomicU64::new(0),
            keyframe_requests_sent: AtomicU64::new(0),
            keyframe_requests_suppressed: AtomicU64::new(0),
            peers_connected: AtomicU64::new(0),
            worker_panics: AtomicU64::new(0),
            media_setup_timeouts: AtomicU64::new(0),
            send_path_moves: AtomicU64::new(0),
            recording_errors: AtomicU64::new(0),
            recording_packets_dropped: AtomicU64::new(0),
            recording_keyframe_requests: AtomicU64::new(0),
            recordings_active: AtomicU64::new(0),
            forwarding_latency: AtomicHistogram::new(FORWARDING_LATENCY_BOUNDS),
            peer_rtt: AtomicHistogram::new(RTT_BOUNDS),
            ingress_loss: AtomicHistogram::new(LOSS_BOUNDS),
            egress_loss: AtomicHistogram::new(LOSS_BOUNDS),
            jitter: AtomicHistogram::new(JITTER_BOUNDS),
            bandwidth_estimate: AtomicHistogram::new(BANDWIDTH_BOUNDS),
            bandwidth_layer_switches: AtomicU64::new(0),
            video_paused_for_bandwidth: AtomicU64::new(0),
            cascade_hop_latency: AtomicHistogram::new(HOP_LATENCY_BOUNDS),
            video_frames_held_for_backlog: AtomicU64::new(0),
            stale_video_queues_flushed: AtomicU64::new(0),
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            cascade: Default::default(),
            ice_tcp: Default::default(),
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Every worker's loop is running: false while starting, after a stop, and for good once a
    /// worker panicked.
    pub fn all_workers_running(&self) -> bool {
        !self.workers.is_empty()
            && self
                .workers
                .iter()
                .all(|w| w.running.load(Ordering::Relaxed))
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = Self::get;
        StatsSnapshot {
            datagrams_received: get(&self.datagrams_received),
            datagrams_sent: get(&self.datagrams_sent),
            datagrams_dropped_unknown_source: get(&self.datagrams_dropped_unknown_source),
            datagrams_dropped_malformed: get(&self.datagrams_dropped_malformed),
            rtp_packets_forwarded: self.rtp_packets_sent.iter().map(get).sum(),
            keyframe_requests_received: get(&self.keyframe_requests_received),
            keyframe_requests_sent: get(&self.keyframe_requests_sent),
            keyframe_requests_suppressed: get(&self.keyframe_requests_suppressed),
            peers_connected: get(&self.peers_connected),
        }
    }
}
