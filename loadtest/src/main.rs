//! `zvon-loadtest`: runs a scenario against a server and reports; non-zero exit when a
//! threshold is crossed (1) or the run could not be made (2).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use zvon_loadtest::report::{self, Thresholds};
use zvon_loadtest::runner::{self, RunConfig};
use zvon_loadtest::scenario::{Scenario, VideoProfiles};
use zvon_loadtest::targets::janus::JanusTarget;
use zvon_loadtest::targets::mediasoup::MediasoupTarget;
use zvon_loadtest::targets::raw::RawTarget;
use zvon_loadtest::targets::zvon::{TokenSource, ZvonTarget};
use zvon_loadtest::targets::Target;

/// Dev key pair of `zvon serve --dev` (signaling/src/config.rs).
const DEV_API_KEY: &str = "devkey";
const DEV_API_SECRET: &str = "devsecret-change-me-devsecret-change-me";

#[derive(Parser, Debug)]
#[command(
    name = "zvon-loadtest",
    version,
    about = "Load test a Zvon server with simulated WebRTC participants"
)]
struct Cli {
    #[command(subcommand)]
    scenario: ScenarioCmd,
    /// The server's signaling URL. Repeat it for the nodes of a fleet: participants join
    /// through them round robin in plan order (the first participant, a publisher, through the
    /// first URL).
    #[arg(long, global = true, default_value = "http://127.0.0.1:7350")]
    url: Vec<String>,
    /// What `--url` points at: `zvon`; `janus` (its HTTP API root, e.g.
    /// http://192.0.2.2:8088/janus); `raw` (a zvon-rawrelay, `host:port`).
    #[arg(long, global = true, value_enum, default_value_t = TargetKind::Zvon)]
    target: TargetKind,
    /// API key that signs tokens minted here.
    #[arg(long, global = true, env = "ZVON_API_KEY", default_value = DEV_API_KEY)]
    api_key: String,
    #[arg(long, global = true, env = "ZVON_API_SECRET", default_value = DEV_API_SECRET, hide_default_value = true)]
    api_secret: String,
    /// Fetch tokens from /api/dev-token (server in --dev mode) instead of minting them.
    #[arg(long, global = true)]
    dev_token: bool,
    /// Copies of the scenario, each in its own room (`call` uses --pairs instead).
    #[arg(long, global = true, default_value_t = 1)]
    rooms: usize,
    /// Join rate, participants per second.
    #[arg(long, global = true, default_value_t = 10.0)]
    ramp: f64,
    /// How long everybody stays after the last join, e.g. 30s, 2m.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Write the JSON report here.
    #[arg(long, global = true)]
    report: Option<std::path::PathBuf>,
    /// Fail when loss exceeds this, e.g. 1%.
    #[arg(long, global = true, value_parser = parse_percent)]
    max_loss: Option<f64>,
    /// Fail when the end-to-end p99 latency exceeds this, e.g. 50ms.
    #[arg(long, global = true, value_parser = parse_duration)]
    max_p99_latency: Option<Duration>,
    /// Fail when more participants than this failed.
    #[arg(long, global = true)]
    max_failures: Option<u64>,
    /// Camera video bitrate, kbit/s.
    #[arg(long, global = true, default_value_t = 800)]
    video_kbps: u64,
    #[arg(long, global = true, default_value_t = 30)]
    video_fps: u32,
    #[arg(long, global = true, default_value = "3s", value_parser = parse_duration)]
    keyframe_interval: Duration,
    /// Local address of the participants' UDP sockets.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    bind_ip: IpAddr,
    /// Spread signaling connections over N loopback source addresses (127.0.0.2…) so a per-IP
    /// join limit does not cap --ramp. Default: 50 when the server is on 127.x and --ramp > 10
    /// (the server allows 20 upgrades/s per IP, and a busy runtime launches joins in bursts).
    #[arg(long, global = true)]
    source_ips: Option<u8>,
    /// Runtime threads driving the participants (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Receive-only participants are light receivers: full ICE/DTLS/SRTP through str0m, but
    /// media is accounted from the plain RTP headers and only one packet in --light-sample is
    /// decrypted (for latency), so one box drives thousands. See BENCHMARKS.md for what they
    /// do and do not check.
    #[arg(long, global = true)]
    light_receivers: bool,
    /// Light receivers decrypt the packets whose sequence number is a multiple of this.
    #[arg(long, global = true, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    light_sample: u16,
    /// No progress display.
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// The server under test (the benchmark compares them under the same load).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum TargetKind {
    Zvon,
    Janus,
    /// The benchmark's mediasoup app (scripts/bench/mediasoup/server.mjs).
    Mediasoup,
    Raw,
}

#[derive(Subcommand, Debug)]
enum ScenarioCmd {
    /// 1:1 calls, each pair in its own room.
    Call {
        #[arg(long, default_value_t = 1)]
        pairs: usize,
    },
    /// N×N video meeting.
    Meeting {
        #[arg(long, default_value_t = 4)]
        size: usize,
    },
    /// One teacher with video + audio, students with small video and mostly muted audio.
    Classroom {
        #[arg(long, default_value_t = 20)]
        students: usize,
        /// Students whose microphone is on.
        #[arg(long, default_value_t = 2)]
        unmuted: usize,
        /// Students' videos each participant renders (thumbnails, besides the teacher's); it
        /// subscribes on demand and never asks for the others.
        #[arg(long, default_value_t = 8)]
        visible: usize,
    },
    /// One publisher to many viewers.
    Livestream {
        #[arg(long, default_value_t = 50)]
        viewers: usize,
    },
    /// Audio only: speakers to listeners.
    Audio {
        #[arg(long, default_value_t = 2)]
        speakers: usize,
        #[arg(long, default_value_t = 20)]
        listeners: usize,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown unit in {s} (ms, s, m, h)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration out of range: {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("not a percentage: {s}"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("percentage out of range: {s}"));
    }
    Ok(v)
}

/// `http://host:port`, `ws://host:port` or `host:port` → the one address we will talk to.
fn resolve(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or(url);
    if url.starts_with("https://") || url.starts_with("wss://") {
        bail!("TLS URLs are not supported: point --url at the plain HTTP listener");
    }
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolve {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} has no address"))
}

fn scenario(cmd: &ScenarioCmd) -> Scenario {
    match *cmd {
        ScenarioCmd::Call { pairs } => Scenario::Call { pairs },
        ScenarioCmd::Meeting { size } => Scenario::Meeting { size },
        ScenarioCmd::Classroom {
            students,
            unmuted,
            visible,
        } => Scenario::Classroom {
            students,
            unmuted,
            visible,
        },
        ScenarioCmd::Livestream { viewers } => Scenario::Livestream { viewers },
        ScenarioCmd::Audio {
            speakers,
            listeners,
        } => Scenario::Audio {
            speakers,
            listeners,
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("zvon-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let addrs = cli
        .url
        .iter()
        .map(|u| resolve(u))
        .collect::<Result<Vec<_>>>()?;
    let addr = addrs[0];
    if cli.light_receivers && !matches!(cli.scenario, ScenarioCmd::Audio { .. }) {
        // str0m still sends NACKs for the video packets it never saw, so the server would
        // resend them: light receivers are for audio only.
        bail!("--light-receivers works with the audio scenario only");
    }
    if addrs.len() > 1 && !matches!(cli.target, TargetKind::Zvon) {
        bail!("only a Zvon fleet takes several --url");
    }
    let tokens = if cli.dev_token {
        TokenSource::DevEndpoint
    } else {
        TokenSource::Mint {
            api_key: cli.api_key.clone(),
            api_secret: cli.api_secret.clone(),
        }
    };
    let source_ips = cli.source_ips.unwrap_or(match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && cli.ramp > 10.0 => 50,
        _ => 0,
    });
    let mut video = VideoProfiles::default();
    video.main.bitrate_bps = cli.video_kbps * 1000;
    video.main.fps = cli.video_fps;
    video.main.keyframe_interval = cli.keyframe_interval;
    video.small.keyframe_interval = cli.keyframe_interval;
    let thresholds = Thresholds {
        max_loss_percent: cli.max_loss,
        max_p99_latency_ms: cli.max_p99_latency.map(|d| d.as_secs_f64() * 1000.0),
        max_failures: cli.max_failures,
    };
    let config = RunConfig {
        targets: match cli.target {
            TargetKind::Zvon => addrs
                .iter()
                .map(|a| Arc::new(ZvonTarget::new(*a, tokens.clone())) as Arc<dyn Target>)
                .collect(),
            TargetKind::Janus => vec![Arc::new(JanusTarget::new(&cli.url[0]))],
            TargetKind::Mediasoup => vec![Arc::new(MediasoupTarget::new(addr))],
            TargetKind::Raw => vec![Arc::new(RawTarget::new(addr))],
        },
        scenario: scenario(&cli.scenario),
        rooms: cli.rooms.max(1),
        ramp: cli.ramp,
        duration: cli.duration,
        bind_ip: cli.bind_ip,
        source_ips,
        video,
        thresholds,
        quiet: cli.quiet,
        run_id: format!("{:x}", rand::random::<u32>()),
        light_sample: cli.light_receivers.then_some(cli.light_sample),
    };
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut report = rt.block_on(runner::run(config))?;
    report.command_line = std::env::args().collect();
    println!("{}", report::summary(&report));
    if let Some(path) = &cli.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(report.passed)
}
