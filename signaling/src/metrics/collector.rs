//! Reads the media node's counters and the hub's census at scrape time and turns them into
//! Prometheus metric families (`docs/metrics.md`). Nothing here runs unless `/metrics` is
//! scraped, and reading never blocks a media worker: the counters are relaxed atomics.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use zvon_sfu::histogram::HistogramSnapshot;
use zvon_sfu::stats::{kind_index, kind_label, KINDS};
use zvon_sfu::SfuStats;

use crate::rooms::Hub;

/// Every family this collector emits: name, help, type, label names.
#[rustfmt::skip]
const FAMILIES: FamilyTable = &[
    ("zvon_rooms", "Rooms open on this node.", MetricType::GAUGE, &[]),
    ("zvon_participants", "Participants joined, not counting those in reconnect grace.", MetricType::GAUGE, &[]),
    ("zvon_calls_active", "Calls ringing or in progress.", MetricType::GAUGE, &[]),
    ("zvon_published_tracks", "Tracks being published.", MetricType::GAUGE, &["kind"]),
    ("zvon_subscribed_tracks", "Downtracks: one per subscriber per track.", MetricType::GAUGE, &["kind"]),
    ("zvon_rtp_packets_received_total", "RTP packets received from publishers.", MetricType::COUNTER, &["kind"]),
    ("zvon_rtp_bytes_received_total", "RTP payload bytes received from publishers.", MetricType::COUNTER, &["kind"]),
    ("zvon_rtp_packets_sent_total", "RTP packets forwarded to subscribers.", MetricType::COUNTER, &["kind"]),
    ("zvon_rtp_bytes_sent_total", "RTP payload bytes forwarded to subscribers.", MetricType::COUNTER, &["kind"]),
    ("zvon_udp_datagrams_received_total", "Datagrams read from the media sockets.", MetricType::COUNTER, &[]),
    ("zvon_udp_datagrams_sent_total", "Datagrams written to the media sockets.", MetricType::COUNTER, &[]),
    ("zvon_udp_datagrams_dropped_total", "Datagrams dropped, by reason.", MetricType::COUNTER, &["reason"]),
    ("zvon_ice_tcp_connections", "ICE-TCP streams open now.", MetricType::GAUGE, &[]),
    ("zvon_ice_tcp_streams_closed_total", "ICE-TCP streams the server closed, by reason: limit (refused at accept, too many open), idle (no frame for 30 s), oversize (a frame over 16 KiB), stalled (a write blocked for 10 s), rejected (not a binding request for one of our connections).", MetricType::COUNTER, &["reason"]),
    ("zvon_ice_tcp_packets_dropped_total", "ICE-TCP packets dropped, by direction: in (the worker's queue was full), out (the stream's write queue was full or the stream is gone).", MetricType::COUNTER, &["direction"]),
    ("zvon_nacks_received_total", "NACK feedback received from subscribers.", MetricType::COUNTER, &[]),
    ("zvon_retransmissions_sent_total", "Packets resent from the RTX cache.", MetricType::COUNTER, &[]),
    ("zvon_keyframe_requests_received_total", "PLI/FIR received from subscribers.", MetricType::COUNTER, &[]),
    ("zvon_keyframe_requests_sent_total", "PLI/FIR sent to publishers.", MetricType::COUNTER, &[]),
    ("zvon_keyframe_requests_suppressed_total", "Keyframe requests collapsed by the throttle.", MetricType::COUNTER, &[]),
    ("zvon_forwarding_latency_seconds", "Datagram received (recvmmsg returned) to forwarded copy handed to the socket (sendmmsg returned).", MetricType::HISTOGRAM, &[]),
    ("zvon_peer_rtt_seconds", "RTT samples from RTCP, every stats interval per peer connection.", MetricType::HISTOGRAM, &[]),
    ("zvon_peer_loss_ratio", "Loss fraction samples per peer connection.", MetricType::HISTOGRAM, &["direction"]),
    ("zvon_peer_jitter_seconds", "Interarrival jitter samples per incoming stream.", MetricType::HISTOGRAM, &[]),
    ("zvon_bandwidth_estimate_bytes_per_second", "Egress bandwidth estimate samples per subscriber (needs send-side BWE).", MetricType::HISTOGRAM, &[]),
    ("zvon_bandwidth_layer_switches_total", "Layer cap changes made by bandwidth allocation (pauses included).", MetricType::COUNTER, &[]),
    ("zvon_video_paused_for_bandwidth_total", "Subscriber videos paused because not even their lowest layer fit the connection.", MetricType::COUNTER, &[]),
    ("zvon_video_frames_held_for_backlog_total", "Video frames not forwarded because the subscriber connection's send queue was backlogged; the video resumes at a keyframe.", MetricType::COUNTER, &[]),
    ("zvon_stale_video_queues_flushed_total", "Video streams whose send queue a bandwidth cut let go unpaced, so that the lower layer's keyframe does not wait behind the old layer.", MetricType::COUNTER, &[]),
    ("zvon_bandwidth_wanted_bytes_per_second", "Sum over subscribers of what their audio and wanted video layers would take.", MetricType::GAUGE, &[]),
    ("zvon_bandwidth_allocated_bytes_per_second", "Sum over subscribers of what bandwidth allocation gave them.", MetricType::GAUGE, &[]),
    ("zvon_workers", "Media worker threads, one UDP socket each.", MetricType::GAUGE, &[]),
    ("zvon_cascade_links", "QUIC cascade links to other media nodes open now.", MetricType::GAUGE, &[]),
    ("zvon_cascade_datagrams_sent_total", "Relayed RTP packets sent to other media nodes (QUIC datagrams).", MetricType::COUNTER, &[]),
    ("zvon_cascade_datagrams_received_total", "QUIC datagrams received from other media nodes.", MetricType::COUNTER, &[]),
    ("zvon_cascade_hop_latency_seconds", "Packets relayed from another media node: the origin worker receiving it from the publisher to a worker here taking it (send stamp in the datagram; across hosts only as exact as their clocks).", MetricType::HISTOGRAM, &[]),
    ("zvon_cascade_repair_total", "Loss repair on the cascade links, by event: nack_sent (NACK messages), requested (packets asked for), resent (answered from the cache), cache_miss, repaired (missing packets that arrived), unrepaired (given up), duplicate (dropped: forwarded already).", MetricType::COUNTER, &["event"]),
    ("zvon_cascade_datagrams_dropped_total", "Relayed packets not sent to another media node, by reason: too_large for the path, queue_audio/queue_video over the send budget, staging full; malformed: received and refused.", MetricType::COUNTER, &["reason"]),
    ("zvon_worker_busy_seconds_total", "Time a media worker spent processing rather than waiting.", MetricType::COUNTER, &["worker"]),
    ("zvon_worker_peers", "Peer connections (publisher and subscriber sides) on a media worker.", MetricType::GAUGE, &["worker"]),
    ("zvon_worker_panics_total", "Media worker threads that panicked; each stays dead and the node is not ready.", MetricType::COUNTER, &[]),
    ("zvon_media_setup_timeouts_total", "Participants cut because a media connection (ICE + DTLS) did not come up within the media-setup timeout.", MetricType::COUNTER, &[]),
    ("zvon_send_path_moves_total", "Peer connections whose media moved to the client's new address because the address it was sent to went silent while the client nominated another (a NAT rebinding).", MetricType::COUNTER, &[]),
    ("zvon_recording_errors_total", "Recordings a media node stopped because it could not write them (disk full, directory not writable).", MetricType::COUNTER, &[]),
    ("zvon_recording_keyframe_requests_total", "Keyframes asked of publishers because a recorded video lost a packet, or has not seen a keyframe yet.", MetricType::COUNTER, &[]),
    ("zvon_recording_packets_dropped_total", "Packets of recorded tracks dropped because the recording thread fell behind (its queue was full).", MetricType::COUNTER, &[]),
    ("zvon_recordings_active", "Recordings being written on this media node.", MetricType::GAUGE, &[]),
    ("zvon_worker_shedding_level", "Video an overloaded media worker stops forwarding: 0 none, 1 thumbnails, 2 all cameras.", MetricType::GAUGE, &["worker"]),
];

pub struct NodeCollector {
    sfu: Arc<SfuStats>,
    hub: Arc<Hub>,
    descs: Vec<Desc>,
}

impl NodeCollector {
    pub fn new(sfu: Arc<SfuStats>, hub: Arc<Hub>) -> prometheus::Result<Self> {
        let descs = descs(FAMILIES)?;
        Ok(NodeCollector { sfu, hub, descs })
    }
}

/// A table of metric families: name, help, type, label names.
pub(super) type FamilyTable = &'static [(
    &'static str,
    &'static str,
    MetricType,
    &'static [&'static str],
)];

/// The descriptors of a family table, for `Collector::desc`.
pub(super) fn descs(table: FamilyTable) -> prometheus::Result<Vec<Desc>> {
    table
        .iter()
        .map(|(name, help, _, labels)| {
            Desc::new(
                (*name).into(),
                (*help).into(),
                labels.iter().map(|l| (*l).into()).collect(),
                HashMap::new(),
            )
        })
        .collect()
}

/// Builds the families of a table in its order; each `add_*` fills the named family.
pub(super) struct Families(HashMap<&'static str, MetricFamily>, FamilyTable);

impl Families {
    pub(super) fn new(table: FamilyTable) -> Self {
        let map = table
            .iter()
            .map(|(name, help, kind, _)| {
                let mut mf = MetricFamily::default();
                mf.set_name((*name).into());
                mf.set_help((*help).into());
                mf.set_field_type(*kind);
                (*name, mf)
            })
            .collect();
        Families(map, table)
    }

    pub(super) fn push(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        fill: impl FnOnce(&mut Metric),
    ) {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name((*k).into());
                    l.set_value((*v).into());
                    l
                })
                .collect(),
        );
        fill(&mut m);
        if let Some(mf) = self.0.get_mut(name) {
            mf.mut_metric().push(m);
        }
    }

    pub(super) fn counter(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, labels, |m| {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        });
    }

    pub(super) fn gauge(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, labels, |m| {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        });
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snap: &HistogramSnapshot) {
        self.push(name, labels, |m| {
            let mut h = Histogram::default();
            h.set_sample_count(snap.count());
            h.set_sample_sum(snap.sum);
            // The encoder adds `+Inf` from the sample count; give it only the finite bounds.
            h.set_bucket(
                snap.cumulative()
                    .into_iter()
                    .filter(|(bound, _)| bound.is_finite())
                    .map(|(bound, count)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(bound);
                        b.set_cumulative_count(count);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(h);
        });
    }

    pub(super) fn into_vec(mut self) -> Vec<MetricFamily> {
        self.1
            .iter()
            .filter_map(|(name, ..)| self.0.remove(name))
            .collect()
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &*self.sfu;
        let get = |c: &std::sync::atomic::AtomicU64| SfuStats::get(c) as f64;
        let mut f = Families::new(FAMILIES);

        let census = self.hub.census();
        f.gauge("zvon_rooms", &[], census.rooms as f64);
        f.gauge("zvon_participants", &[], census.participants as f64);
        f.gauge("zvon_calls_active", &[], census.calls_active as f64);

        for kind in KINDS {
            let (k, l) = (kind_index(kind), [("kind", kind_label(kind))]);
            let sum =
                |pick: fn(&zvon_sfu::stats::WorkerStats) -> &[std::sync::atomic::AtomicU64; 2]| {
                    s.workers.iter().map(|w| get(&pick(w)[k])).sum::<f64>()
                };
            f.gauge("zvon_published_tracks", &l, sum(|w| &w.published_tracks));
            f.gauge("zvon_subscribed_tracks", &l, sum(|w| &w.subscribed_tracks));
            f.counter(
                "zvon_rtp_packets_received_total",
                &l,
                get(&s.rtp_packets_received[k]),
            );
            f.counter(
                "zvon_rtp_bytes_received_total",
                &l,
                get(&s.rtp_bytes_received[k]),
            );
            f.counter(
                "zvon_rtp_packets_sent_total",
                &l,
                get(&s.rtp_packets_sent[k]),
            );
            f.counter("zvon_rtp_bytes_sent_total", &l, get(&s.rtp_bytes_sent[k]));
        }

        f.counter(
            "zvon_udp_datagrams_received_total",
            &[],
            get(&s.datagrams_received),
        );
        f.counter("zvon_udp_datagrams_sent_total", &[], get(&s.datagrams_sent));
        f.gauge("zvon_ice_tcp_connections", &[], get(&s.ice_tcp.connections));
        for (reason, c) in [
            ("limit", &s.ice_tcp.refused_limit),
            ("idle", &s.ice_tcp.closed_idle),
            ("oversize", &s.ice_tcp.closed_oversize),
            ("stalled", &s.ice_tcp.closed_stalled),
            ("rejected", &s.ice_tcp.closed_rejected),
        ] {
            f.counter(
                "zvon_ice_tcp_streams_closed_total",
                &[("reason", reason)],
                get(c),
            );
        }
        for (direction, c) in [
            ("in", &s.ice_tcp.dropped_inbound),
            ("out", &s.ice_tcp.dropped_outbound),
        ] {
            f.counter(
                "zvon_ice_tcp_packets_dropped_total",
                &[("direction", direction)],
                get(c),
            );
        }
        for (reason, c) in [
            ("unknown_source", &s.datagrams_dropped_unknown_source),
            ("malformed", &s.datagrams_dropped_malformed),
            ("send_buffer_full", &s.datagrams_dropped_send_buffer_full),
        ] {
            f.counter(
                "zvon_udp_datagrams_dropped_total",
                &[("reason", reason)],
                get(c),
            );
        }
        f.counter("zvon_nacks_received_total", &[], get(&s.nacks_received));
        f.counter(
            "zvon_retransmissions_sent_total",
            &[],
            get(&s.retransmissions_sent),
        );
        f.counter(
            "zvon_keyframe_requests_received_total",
            &[],
            get(&s.keyframe_requests_received),
        );
        f.counter(
            "zvon_keyframe_requests_sent_total",
            &[],
            get(&s.keyframe_requests_sent),
        );
        f.counter(
            "zvon_keyframe_requests_suppressed_total",
            &[],
            get(&s.keyframe_requests_suppressed),
        );

        f.histogram(
            "zvon_forwarding_latency_seconds",
            &[],
            &s.forwarding_latency.snapshot(),
        );
        f.histogram("zvon_peer_rtt_seconds", &[], &s.peer_rtt.snapshot());
        f.histogram(
            "zvon_peer_loss_ratio",
            &[("direction", "ingress")],
            &s.ingress_loss.snapshot(),
        );
        f.histogram(
            "zvon_peer_loss_ratio",
            &[("direction", "egress")],
            &s.egress_loss.snapshot(),
        );
        f.histogram("zvon_peer_jitter_seconds", &[], &s.jitter.snapshot());
        f.histogram(
            "zvon_bandwidth_estimate_bytes_per_second",
            &[],
            &s.bandwidth_estimate.snapshot(),
        );

        f.counter(
            "zvon_bandwidth_layer_switches_total",
            &[],
            get(&s.bandwidth_layer_switches),
        );
        f.counter(
            "zvon_video_paused_for_bandwidth_total",
            &[],
            get(&s.video_paused_for_bandwidth),
        );
        f.counter(
            "zvon_video_frames_held_for_backlog_total",
            &[],
            get(&s.video_frames_held_for_backlog),
        );
        f.counter(
            "zvon_stale_video_queues_flushed_total",
            &[],
            get(&s.stale_video_queues_flushed),
        );
        let sum_bytes = |f: fn(&zvon_sfu::stats::WorkerStats) -> &std::sync::atomic::AtomicU64| {
            s.workers.iter().map(|w| get(f(w))).sum::<f64>() / 8.0
        };
        f.gauge(
            "zvon_bandwidth_wanted_bytes_per_second",
            &[],
            sum_bytes(|w| &w.bandwidth_wanted_bps),
        );
        f.gauge(
            "zvon_bandwidth_allocated_bytes_per_second",
            &[],
            sum_bytes(|w| &w.bandwidth_allocated_bps),
        );
        f.gauge("zvon_workers", &[], s.workers.len() as f64);
        let c = &*s.cascade;
        f.gauge("zvon_cascade_links", &[], get(&c.links));
        f.counter(
            "zvon_cascade_datagrams_sent_total",
            &[],
            get(&c.datagrams_sent),
        );
        f.counter(
            "zvon_cascade_datagrams_received_total",
            &[],
            get(&c.datagrams_received),
        );
        f.histogram(
            "zvon_cascade_hop_latency_seconds",
            &[],
            &s.cascade_hop_latency.snapshot(),
        );
        for (reason, counter) in [
            ("too_large", &c.too_large),
            ("queue_audio", &c.dropped_audio),
            ("queue_video", &c.dropped_video),
            ("staging", &c.staging_dropped),
            ("malformed", &c.datagrams_malformed),
        ] {
            f.counter(
                "zvon_cascade_datagrams_dropped_total",
                &[("reason", reason)],
                get(counter),
            );
        }
        for (event, counter) in [
            ("nack_sent", &c.repair_nacks_sent),
            ("requested", &c.repair_requested),
            ("resent", &c.repair_resent),
            ("cache_miss", &c.repair_cache_misses),
            ("repaired", &c.repair_repaired),
            ("unrepaired", &c.repair_unrepaired),
            ("duplicate", &c.repair_duplicates),
        ] {
            f.counter(
                "zvon_cascade_repair_total",
                &[("event", event)],
                get(counter),
            );
        }
        f.counter("zvon_worker_panics_total", &[], get(&s.worker_panics));
        f.counter(
            "zvon_media_setup_timeouts_total",
            &[],
            get(&s.media_setup_timeouts),
        );
        f.counter("zvon_send_path_moves_total", &[], get(&s.send_path_moves));
        f.counter("zvon_recording_errors_total", &[], get(&s.recording_errors));
        f.counter(
            "zvon_recording_packets_dropped_total",
            &[],
            get(&s.recording_packets_dropped),
        );
        f.counter(
            "zvon_recording_keyframe_requests_total",
            &[],
            get(&s.recording_keyframe_requests),
        );
        f.gauge("zvon_recordings_active", &[], get(&s.recordings_active));
        for (i, w) in s.workers.iter().enumerate() {
            let worker = i.to_string();
            let l = [("worker", worker.as_str())];
            f.counter(
                "zvon_worker_busy_seconds_total",
                &l,
                SfuStats::get(&w.busy_nanos) as f64 / 1e9,
            );
            f.gauge("zvon_worker_peers", &l, get(&w.peers));
            f.gauge("zvon_worker_shedding_level", &l, get(&w.shedding_level));
        }
        f.into_vec()
    }
}
