//! Counters shared between the media workers and whoever reports on them.
//!
//! Plain relaxed atomics: they are bumped on the packet path, so no lock and no map.

use std::sync::atomic::{AtomicU64, Ordering};

/// Node-wide counters. Workers add; readers take a [`StatsSnapshot`].
#[derive(Debug, Default)]
pub struct SfuStats {
    pub datagrams_received: AtomicU64,
    pub datagrams_sent: AtomicU64,
    /// Datagrams from an unknown address that were not a STUN binding request for a known peer.
    pub datagrams_dropped_unknown_source: AtomicU64,
    /// Datagrams a peer's WebRTC stack refused (bad SRTP, truncated RTP, garbage DTLS, ...).
    pub datagrams_dropped_malformed: AtomicU64,
    pub rtp_packets_forwarded: AtomicU64,
    pub keyframe_requests_received: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    pub keyframe_requests_suppressed: AtomicU64,
    pub peers_connected: AtomicU64,
}

/// A copy of [`SfuStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub datagrams_dropped_unknown_source: u64,
    pub datagrams_dropped_malformed: u64,
    pub rtp_packets_forwarded: u64,
    pub keyframe_requests_received: u64,
    pub keyframe_requests_sent: u64,
    pub keyframe_requests_suppressed: u64,
    pub peers_connected: u64,
}

impl SfuStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            datagrams_received: get(&self.datagrams_received),
            datagrams_sent: get(&self.datagrams_sent),
            datagrams_dropped_unknown_source: get(&self.datagrams_dropped_unknown_source),
            datagrams_dropped_malformed: get(&self.datagrams_dropped_malformed),
            rtp_packets_forwarded: get(&self.rtp_packets_forwarded),
            keyframe_requests_received: get(&self.keyframe_requests_received),
            keyframe_requests_sent: get(&self.keyframe_requests_sent),
            keyframe_requests_suppressed: get(&self.keyframe_requests_suppressed),
            peers_connected: get(&self.peers_connected),
        }
    }
}
