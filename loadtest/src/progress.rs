//! Live counters every participant adds to (in batches, not per packet) and the progress line
//! drawn from them.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct LiveCounters {
    pub launched: AtomicU64,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub finished: AtomicU64,
    pub packets_sent: AtomicU64,
    pub packets_received: AtomicU64,
    pub packets_expected: AtomicU64,
}

impl LiveCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Draws the progress line until `done` flips; draws nothing when stdout is not a terminal or
/// `quiet` is set.
pub fn spawn(
    live: Arc<LiveCounters>,
    total: u64,
    quiet: bool,
    mut done: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if quiet || !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} connected {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let (mut last_sent, mut last_recv, mut last_at) = (0u64, 0u64, Instant::now());
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = done.changed() => break,
            }
            let now = Instant::now();
            let secs = (now - last_at).as_secs_f64().max(1e-3);
            let sent = LiveCounters::get(&live.packets_sent);
            let recv = LiveCounters::get(&live.packets_received);
            let expected = LiveCounters::get(&live.packets_expected);
            let loss = if expected > 0 {
                100.0 * expected.saturating_sub(recv) as f64 / expected as f64
            } else {
                0.0
            };
            bar.set_position(LiveCounters::get(&live.connected));
            bar.set_message(format!(
                "| failed {} | tx {:.0} pkt/s | rx {:.0} pkt/s | loss {:.2}%",
                LiveCounters::get(&live.failed),
                (sent - last_sent) as f64 / secs,
                (recv - last_recv) as f64 / secs,
                loss
            ));
            (last_sent, last_recv, last_at) = (sent, recv, now);
        }
        bar.finish_and_clear();
    }))
}
