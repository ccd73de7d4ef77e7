//! Runs a scenario: launches participants at the ramp rate, keeps them for the duration,
//! collects their results and builds the report. Every wait here is bounded.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::client::{self, Env, ParticipantResult, CONNECT_LIMIT};
use crate::media::opus_source::OpusClip;
use crate::progress::{self, LiveCounters};
use crate::report::{self, Report, RunInfo, Thresholds};
use crate::scenario::{self, Scenario, VideoProfiles};
use crate::targets::Target;

pub struct RunConfig {
    /// The servers participants join through, round robin in plan order ([`spread`]): the
    /// nodes of a fleet, or one server.
    pub targets: Vec<Arc<dyn Target>>,
    pub scenario: Scenario,
    pub rooms: usize,
    /// Participants launched per second.
    pub ramp: f64,
    /// How long everybody stays after the last one was launched.
    pub duration: Duration,
    /// Address the participants' UDP sockets bind to (and announce as their candidate).
    pub bind_ip: IpAddr,
    /// Spread signaling connections over this many loopback source addresses (127.0.0.2…), so a
    /// per-IP upgrade limit does not cap the join rate. 0: the OS picks the source.
    pub source_ips: u8,
    pub video: VideoProfiles,
    pub thresholds: Thresholds,
    pub quiet: bool,
    pub run_id: String,
    /// Receive-only participants are light receivers decrypting one packet in this many
    /// (`client::light`); `None`: full clients.
    pub light_sample: Option<u16>,
}

/// Which of `targets` participant `i` (in plan order) joins through: round robin, so a room's
/// subscribers sit on every node (the plan's first participant, a publisher, on the first).
pub fn spread(i: usize, targets: usize) -> usize {
    i % targets.max(1)
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(!cfg.targets.is_empty(), "no target to run against");
    let plans = scenario::plan(&cfg.scenario, cfg.rooms, &cfg.run_id, &cfg.video);
    let clip = OpusClip::generate(10, 32_000, 0x5eed)?;
    let live = Arc::new(LiveCounters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let cpu_start = report::process_cpu_seconds();

    let ramp = cfg.ramp.max(0.01);
    let start = Instant::now();
    let ramp_time = Duration::from_secs_f64(plans.len() as f64 / ramp);
    let end_at = start + ramp_time + cfg.duration;
    let env = Env {
        target: cfg.targets[0].clone(),
        clip,
        bind_ip: cfg.bind_ip,
        live: live.clone(),
        stop: stop_rx,
        end_at,
        epoch: start,
        cert: client::peer::shared_cert(),
        light_sample: cfg.light_sample,
    };
    let bar = progress::spawn(live.clone(), plans.len() as u64, cfg.quiet, done_rx);

    let ctrl_c = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(true);
            }
        })
    };

    let mut tasks = Vec::with_capacity(plans.len());
    for (i, plan) in plans.into_iter().enumerate() {
        let at = start + Duration::from_secs_f64(i as f64 / ramp);
        tokio::time::sleep_until(at.into()).await;
        if *env.stop.borrow() {
            break;
        }
        let local_ip = (cfg.source_ips > 0).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                2 + (i % cfg.source_ips as usize) as u8,
            ))
        });
        LiveCounters::add(&live.launched, 1);
        let target = &cfg.targets[spread(i, cfg.targets.len())];
        let env = Env {
            target: target.clone(),
            ..env.clone()
        };
        tasks.push(match target.raw_relay() {
            Some(relay) => tokio::spawn(crate::targets::raw::run(plan, relay, env)),
            None => tokio::spawn(client::run(plan, local_ip, env)),
        });
    }

    // Participants end by themselves at `end_at`; this bound only catches a stuck one.
    let hard_limit = end_at + CONNECT_LIMIT + Duration::from_secs(10);
    let mut results: Vec<ParticipantResult> = Vec::with_capacity(tasks.len());
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout_at(hard_limit.into(), t).await {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => tracing::warn!("participant task failed: {e}"),
            Err(_) => {
                abort.abort();
                tracing::warn!("participant task did not finish in time");
            }
        }
    }
    let elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    let _ = done_tx.send(true);
    ctrl_c.abort();
    if let Some(bar) = bar {
        let _ = bar.await;
    }
    let cpu = match (cpu_start, report::process_cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let info = RunInfo {
        target: cfg.targets[0].name().to_string(),
        scenario: cfg.scenario.name().to_string(),
        rooms: match cfg.scenario {
            Scenario::Call { pairs } => pairs,
            _ => cfg.rooms,
        },
        duration: elapsed,
        cpu_seconds: cpu,
    };
    Ok(report::build(info, &results, cfg.thresholds))
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn participants_spread_round_robin_over_the_nodes() {
        let nodes: Vec<usize> = (0..7).map(|i| spread(i, 3)).collect();
        assert_eq!(nodes, [0, 1, 2, 0, 1, 2, 0]);
        assert!((0..5).all(|i| spread(i, 1) == 0));
        assert_eq!(spread(4, 0), 0, "no node list is one node");
    }
}
