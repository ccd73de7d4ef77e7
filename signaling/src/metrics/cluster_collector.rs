//! The fleet's metrics (`docs/metrics.md`, "Cluster"): leases, room ownership, placement,
//! failovers, proxied sockets and the QUIC links, read at scrape time from relaxed atomics and
//! the links' own statistics. Registered only in cluster mode.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use super::collector::{descs, Families, FamilyTable};
use crate::fleet::{Fleet, FleetStats};

#[rustfmt::skip]
const FAMILIES: FamilyTable = &[
    ("zvon_cluster_node_lease_up", "1 when this node's last lease refresh in Redis succeeded.", MetricType::GAUGE, &[]),
    ("zvon_cluster_redis_up", "1 when the last Redis command succeeded.", MetricType::GAUGE, &[]),
    ("zvon_cluster_redis_errors_total", "Redis commands that failed or timed out.", MetricType::COUNTER, &[]),
    ("zvon_cluster_nodes", "Nodes with a live lease, as this node last saw them, by role.", MetricType::GAUGE, &["role"]),
    ("zvon_cluster_draining", "1 while this node drains.", MetricType::GAUGE, &[]),
    ("zvon_cluster_rooms_owned", "Rooms this signaling node owns.", MetricType::GAUGE, &[]),
    ("zvon_cluster_room_claims_total", "Rooms this node claimed.", MetricType::COUNTER, &[]),
    ("zvon_cluster_rooms_lost_total", "Rooms taken over by another node while this one owned them (stale epoch).", MetricType::COUNTER, &[]),
    ("zvon_cluster_placements_total", "Rooms placed on a media node, by result.", MetricType::COUNTER, &["result"]),
    ("zvon_cluster_media_nodes_lost_total", "Media nodes whose link died while rooms of this node were on them.", MetricType::COUNTER, &[]),
    ("zvon_cluster_participants_moved_total", "Participants moved to another media node (failover or drain), by result.", MetricType::COUNTER, &["result"]),
    ("zvon_cluster_participants_adopted_total", "Participants taken over from a signaling node that died, their media untouched (resumed here).", MetricType::COUNTER, &[]),
    ("zvon_cluster_joins_refused_total", "Joins refused with cluster_unavailable.", MetricType::COUNTER, &[]),
    ("zvon_cluster_proxied_sessions_total", "Sockets piped to the node owning their room.", MetricType::COUNTER, &[]),
    ("zvon_cluster_proxied_sessions", "Sockets being piped to the node owning their room.", MetricType::GAUGE, &[]),
    ("zvon_cluster_links", "Open QUIC links from this signaling node to media nodes.", MetricType::GAUGE, &[]),
    ("zvon_cluster_link_rtt_seconds", "QUIC round-trip time to a media node.", MetricType::GAUGE, &["peer"]),
    ("zvon_cluster_link_lost_packets_total", "QUIC packets lost on the link to a media node.", MetricType::COUNTER, &["peer"]),
    ("zvon_cluster_link_bytes_total", "Bytes on the QUIC link to a media node.", MetricType::COUNTER, &["peer", "direction"]),
    ("zvon_cluster_link_failures_total", "Failed attempts to open a QUIC link to a media node.", MetricType::COUNTER, &[]),
    ("zvon_cluster_control_connections", "Signaling nodes connected to this media node.", MetricType::GAUGE, &[]),
    ("zvon_cluster_control_auth_failures_total", "QUIC peers refused for wrong cluster credentials.", MetricType::COUNTER, &[]),
    ("zvon_cluster_control_requests_total", "Requests this media node served over QUIC.", MetricType::COUNTER, &[]),
    ("zvon_cluster_orphans_removed_total", "Participants removed after their signaling node stayed away past the grace period.", MetricType::COUNTER, &[]),
];

pub struct ClusterCollector {
    fleet: Arc<Fleet>,
    descs: Vec<Desc>,
}

impl ClusterCollector {
    pub fn new(fleet: Arc<Fleet>) -> prometheus::Result<Self> {
        Ok(ClusterCollector {
            fleet,
            descs: descs(FAMILIES)?,
        })
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

impl Collector for ClusterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut f = Families::new(FAMILIES);
        let s = &*self.fleet.stats;
        let get = |c: &std::sync::atomic::AtomicU64| FleetStats::get(c) as f64;
        let registry = self.fleet.registry.stats().snapshot();
        let redis_errors = registry.errors_lease
            + registry.errors_nodes
            + registry.errors_claim
            + registry.errors_refresh
            + registry.errors_release
            + registry.errors_other;
        f.gauge(
            "zvon_cluster_node_lease_up",
            &[],
            flag(s.lease_ok.load(Ordering::Relaxed)),
        );
        f.gauge("zvon_cluster_redis_up", &[], flag(registry.up));
        f.counter("zvon_cluster_redis_errors_total", &[], redis_errors as f64);
        f.gauge(
            "zvon_cluster_nodes",
            &[("role", "signaling")],
            get(&s.nodes_signaling),
        );
        f.gauge(
            "zvon_cluster_nodes",
            &[("role", "media")],
            get(&s.nodes_media),
        );
        f.gauge(
            "zvon_cluster_draining",
            &[],
            flag(s.draining.load(Ordering::Relaxed)),
        );
        f.gauge("zvon_cluster_rooms_owned", &[], get(&s.rooms_owned));
        f.counter("zvon_cluster_room_claims_total", &[], get(&s.rooms_claimed));
        f.counter("zvon_cluster_rooms_lost_total", &[], get(&s.rooms_lost));
        f.counter(
            "zvon_cluster_placements_total",
            &[("result", "ok")],
            get(&s.placements),
        );
        f.counter(
            "zvon_cluster_placements_total",
            &[("result", "failed")],
            get(&s.placement_failures),
        );
        f.counter(
            "zvon_cluster_media_nodes_lost_total",
            &[],
            get(&s.nodes_lost),
        );
        f.counter(
            "zvon_cluster_participants_moved_total",
            &[("result", "ok")],
            get(&s.participants_moved),
        );
        f.counter(
            "zvon_cluster_participants_moved_total",
            &[("result", "failed")],
            get(&s.failovers_failed),
        );
        f.counter(
            "zvon_cluster_participants_adopted_total",
            &[],
            get(&s.adopted),
        );
        f.counter(
            "zvon_cluster_joins_refused_total",
            &[],
            get(&s.joins_refused),
        );
        f.counter(
            "zvon_cluster_proxied_sessions_total",
            &[],
            get(&s.proxied_sessions),
        );
        f.gauge(
            "zvon_cluster_proxied_sessions",
            &[],
            get(&s.proxied_sessions_open),
        );
        let links = self
            .fleet
            .media
            .as_ref()
            .map(|m| m.links())
            .unwrap_or_default();
        f.gauge("zvon_cluster_links", &[], links.len() as f64);
        for (peer, link) in &links {
            let l = [("peer", peer.as_str())];
            f.gauge("zvon_cluster_link_rtt_seconds", &l, link.rtt.as_secs_f64());
            f.counter(
                "zvon_cluster_link_lost_packets_total",
                &l,
                link.lost_packets as f64,
            );
            f.counter(
                "zvon_cluster_link_bytes_total",
                &[("peer", peer.as_str()), ("direction", "sent")],
                link.sent_bytes as f64,
            );
            f.counter(
                "zvon_cluster_link_bytes_total",
                &[("peer", peer.as_str()), ("direction", "received")],
                link.received_bytes as f64,
            );
        }
        f.counter(
            "zvon_cluster_link_failures_total",
            &[],
            get(&s.link_failures),
        );
        if let Some(server) = self.fleet.link_server_stats() {
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
            f.gauge(
                "zvon_cluster_control_connections",
                &[],
                load(&server.open_connections),
            );
            f.counter(
                "zvon_cluster_control_auth_failures_total",
                &[],
                load(&server.auth_failures),
            );
            f.counter(
                "zvon_cluster_control_requests_total",
                &[],
                load(&server.requests_served),
            );
            f.counter(
                "zvon_cluster_orphans_removed_total",
                &[],
                load(&server.orphans_removed),
            );
        }
        f.into_vec()
    }
}
