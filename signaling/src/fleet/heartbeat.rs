//! The load a node reports in its lease: what placement compares nodes by.

use std::sync::Arc;
use std::time::Instant;

use zvon_sfu::stats::KINDS;
use zvon_sfu::SfuStats;

use crate::cluster::NodeLoad;

/// Turns the media node's cumulative counters into rates between two leases.
pub struct LoadMeter {
    stats: Option<Arc<SfuStats>>,
    last_busy: Vec<u64>,
    last_bytes: u64,
    last_at: Instant,
}

impl LoadMeter {
    /// `None` for a node without a media role: it reports no load.
    pub fn new(stats: Option<Arc<SfuStats>>) -> Self {
        LoadMeter {
            stats,
            last_busy: vec![],
            last_bytes: 0,
            last_at: Instant::now(),
        }
    }

    pub fn sample(&mut self) -> NodeLoad {
        let Some(stats) = &self.stats else {
            return NodeLoad::default();
        };
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        self.last_at = now;
        let busy: Vec<u64> = stats
            .workers
            .iter()
            .map(|w| SfuStats::get(&w.busy_nanos))
            .collect();
        let busiest = busy
            .iter()
            .enumerate()
            .map(|(i, b)| b.saturating_sub(self.last_busy.get(i).copied().unwrap_or(*b)))
            .max()
            .unwrap_or(0);
        self.last_busy = busy;
        let bytes: u64 = KINDS
            .iter()
            .map(|k| SfuStats::get(&stats.rtp_bytes_sent[zvon_sfu::stats::kind_index(*k)]))
            .sum();
        let sent = bytes.saturating_sub(self.last_bytes);
        self.last_bytes = bytes;
        let participants: u64 = stats.workers.iter().map(|w| SfuStats::get(&w.peers)).sum();
        NodeLoad {
            participants: u32::try_from(participants).unwrap_or(u32::MAX),
            busy: ((busiest as f64 / 1e9) / elapsed).min(1.0) as f32,
            bitrate_bps: (sent as f64 * 8.0 / elapsed) as u64,
        }
    }
}
