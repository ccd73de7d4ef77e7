//! The run's outcome: aggregated from every participant's result into a JSON-serializable
//! report, a summary table for people, and the pass/fail verdict against the thresholds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::ParticipantResult;
use crate::measure::histogram::Histogram;
use crate::targets::Kind;

/// A stream counts as received with at least this many packets.
const MIN_PACKETS_PER_STREAM: u64 = 5;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Thresholds {
    pub max_loss_percent: Option<f64>,
    pub max_p99_latency_ms: Option<f64>,
    pub max_failures: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Quantiles {
    /// From a histogram of µs, in ms.
    fn from_us(h: &Histogram) -> Self {
        let ms = |q: f64| h.quantile(q).map(|v| v as f64 / 1000.0);
        Quantiles {
            count: h.count(),
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
            max: (h.count() > 0).then(|| h.max() as f64 / 1000.0),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Distribution {
    pub count: usize,
    pub min: Option<f64>,
    pub p5: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl Distribution {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let i = ((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1);
            Some(v[i])
        };
        Distribution {
            count: v.len(),
            min: v.first().copied(),
            p5: at(0.05),
            p50: at(0.5),
            p95: at(0.95),
            max: v.last().copied(),
            mean: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Packets {
    /// RTP packets the publishers handed to their connections.
    pub sent_by_publishers: u64,
    pub audio_sent: u64,
    pub video_sent: u64,
    pub bytes_sent: u64,
    /// Unique RTP packets subscribers received (duplicates excluded).
    pub received_by_subscribers: u64,
    /// What subscribers should have received according to sequence numbers.
    pub expected_by_subscribers: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub loss_percent: f64,
    /// Received packets without a readable send stamp (latency not measured for them).
    pub unstamped: u64,
    /// Received audio packets carrying the ssrc-audio-level extension.
    pub audio_with_level: u64,
    /// Packets of videos the subscriber did not ask for (a classroom subscribes to cameras on
    /// demand, so a server that honours that sends none); not in the counts above.
    #[serde(default)]
    pub unwanted_received: u64,
}

/// What subscribers received from one kind of publisher track, e.g. the teacher's audio.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceStats {
    /// Received streams the subscribers asked for.
    pub streams: usize,
    pub received: u64,
    pub expected: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub latency_ms: Quantiles,
    /// Freezes of 0.5 s or more between packets (e.g. video the server shed under load,
    /// which keeps sequence numbers continuous and so is not loss), summed over streams.
    #[serde(default)]
    pub stalls: u64,
    #[serde(default)]
    pub stalled_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Streams {
    /// (subscriber, publisher, kind) triples that should flow: every sending track of every
    /// other joined participant of the room (muted microphones do not send), except the
    /// cameras the subscriber did not ask for or asked for too late in the run to get them.
    pub expected: usize,
    pub received: usize,
    /// Up to 20 missing ones, `subscriber <- publisher/kind`.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// How the run was started (the binary's arguments), to reproduce it.
    #[serde(default)]
    pub command_line: Vec<String>,
    pub target: String,
    pub scenario: String,
    pub rooms: usize,
    pub duration_s: f64,
    pub participants_planned: usize,
    pub participants_connected: usize,
    pub participants_failed: usize,
    /// Failed participants by reason: `connect`, `http_<status>` (upgrade refused),
    /// `join_<error code>`, `join_timeout`, `ice_timeout` (no media connection within 20 s),
    /// `ice_disconnected`, `signaling_<how it closed>`, `token*`.
    pub failures: BTreeMap<String, u64>,
    pub server_errors: BTreeMap<String, u64>,
    /// From sending `join` to the participant's media connection being up (ICE + DTLS): the
    /// publisher connection for those who publish, the subscriber connection for the others.
    pub join_latency_ms: Quantiles,
    /// Publisher's send stamp to subscriber's receipt, over every received packet.
    pub e2e_latency_ms: Quantiles,
    /// Per publisher role and kind (`teacher_audio`, `student_video`, …; `peer_*` outside a
    /// classroom): loss over the streams subscribers asked for, latency over every packet.
    #[serde(default)]
    pub by_source: BTreeMap<String, SourceStats>,
    pub packets: Packets,
    /// RFC 3550 jitter per received stream, ms.
    pub jitter_ms: Distribution,
    /// Received bitrate per subscriber, kbit/s.
    pub recv_bitrate_kbps: Distribution,
    pub keyframes_received: u64,
    pub streams: Streams,
    /// CPU the tester process used (user + system), to size how many participants a core drives.
    pub tester_cpu_seconds: Option<f64>,
    /// Peak resident memory of the tester process, MiB.
    pub tester_peak_rss_mib: Option<f64>,
    pub thresholds: Thresholds,
    pub violations: Vec<String>,
    pub passed: bool,
}

/// User + system CPU of this process so far, from /proc (Linux); `None` elsewhere.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// Peak resident set size of this process (VmHWM), MiB; `None` off Linux.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub struct RunInfo {
    pub target: String,
    pub scenario: String,
    pub rooms: usize,
    pub duration: Duration,
    pub cpu_seconds: Option<f64>,
}

pub fn build(info: RunInfo, results: &[ParticipantResult], thresholds: Thresholds) -> Report {
    let mut r = Report {
        target: info.target,
        scenario: info.scenario,
        rooms: info.rooms,
        duration_s: info.duration.as_secs_f64(),
        participants_planned: results.len(),
        tester_cpu_seconds: info.cpu_seconds,
        tester_peak_rss_mib: peak_rss_mib(),
        thresholds,
        ..Default::default()
    };
    let mut join = Histogram::default();
    let mut latency = Histogram::default();
    let mut jitters = Vec::new();
    let mut bitrates = Vec::new();
    let mut source_latency: BTreeMap<String, Histogram> = BTreeMap::new();
    for p in results {
        if let Some(f) = &p.failure {
            *r.failures.entry(f.clone()).or_default() += 1;
        }
        if let Some(j) = p.join_latency {
            r.participants_connected += 1;
            join.record(j.as_micros() as u64);
        }
        for e in &p.errors {
            *r.server_errors.entry(e.clone()).or_default() += 1;
        }
        latency.merge(&p.latency);
        for (role, kind, h) in &p.latency_by_source {
            source_latency
                .entry(source_key(role, *kind))
                .or_default()
                .merge(h);
        }
        r.packets.sent_by_publishers += p.sent.packets();
        r.packets.audio_sent += p.sent.audio_packets;
        r.packets.video_sent += p.sent.video_packets;
        r.packets.bytes_sent += p.sent.bytes;
        r.packets.unstamped += p.unstamped;
        r.packets.audio_with_level += p.audio_with_level;
        for s in &p.streams {
            if !s.wanted {
                r.packets.unwanted_received += s.received;
                continue;
            }
            let src = r.by_source.entry(source_key(s.source, s.kind)).or_default();
            src.streams += 1;
            src.received += s.received;
            src.expected += s.expected;
            src.lost += s.lost;
            src.stalls += s.stalls;
            src.stalled_seconds += s.stalled_seconds;
            r.packets.received_by_subscribers += s.received;
            r.packets.expected_by_subscribers += s.expected;
            r.packets.lost += s.lost;
            r.packets.duplicates += s.duplicates;
            r.keyframes_received += s.keyframes;
            jitters.push(s.jitter_ms);
        }
        if let Some(b) = p.recv_bitrate_bps {
            bitrates.push(b / 1000.0);
        }
    }
    r.participants_failed = results.iter().filter(|p| p.failure.is_some()).count();
    if r.packets.expected_by_subscribers > 0 {
        r.packets.loss_percent =
            100.0 * r.packets.lost as f64 / r.packets.expected_by_subscribers as f64;
    }
    for (key, h) in &source_latency {
        r.by_source.entry(key.clone()).or_default().latency_ms = Quantiles::from_us(h);
    }
    for src in r.by_source.values_mut() {
        if src.expected > 0 {
            src.loss_percent = 100.0 * src.lost as f64 / src.expected as f64;
        }
    }
    r.join_latency_ms = Quantiles::from_us(&join);
    r.e2e_latency_ms = Quantiles::from_us(&latency);
    r.jitter_ms = Distribution::of(jitters);
    r.recv_bitrate_kbps = Distribution::of(bitrates);
    r.streams = streams(results);

    let t = &r.thresholds;
    if let Some(max) = t.max_loss_percent {
        if r.packets.loss_percent > max {
            r.violations
                .push(format!("loss {:.3}% > {max}%", r.packets.loss_percent));
        }
    }
    if let Some(max) = t.max_p99_latency_ms {
        match r.e2e_latency_ms.p99 {
            Some(p99) if p99 > max => r
                .violations
                .push(format!("p99 latency {p99:.2} ms > {max} ms")),
            None => r
                .violations
                .push("p99 latency not measured (no media received)".into()),
            _ => {}
        }
    }
    if let Some(max) = t.max_failures {
        if r.participants_failed as u64 > max {
            r.violations.push(format!(
                "{} failed participants > {max}",
                r.participants_failed
            ));
        }
    }
    r.passed = r.violations.is_empty();
    r
}

fn source_key(role: &str, kind: Kind) -> String {
    match kind {
        Kind::Audio => format!("{role}_audio"),
        Kind::Video => format!("{role}_video"),
    }
}

fn streams(results: &[ParticipantResult]) -> Streams {
    // Per room: who joined and what they sent.
    let mut senders: HashMap<&str, Vec<(&str, Kind)>> = HashMap::new();
    for p in results {
        if let (Some(id), None) = (&p.participant_id, &p.failure) {
            for k in &p.sending {
                senders
                    .entry(p.room.as_str())
                    .or_default()
                    .push((id.as_str(), *k));
            }
        }
    }
    let mut out = Streams::default();
    for p in results {
        let (Some(me), None) = (&p.participant_id, &p.failure) else {
            continue;
        };
        let got: HashSet<(&str, Kind)> = p
            .streams
            .iter()
            .filter(|s| s.received >= MIN_PACKETS_PER_STREAM)
            .map(|s| (s.from.as_str(), s.kind))
            .collect();
        for (from, kind) in senders.get(p.room.as_str()).into_iter().flatten() {
            if from == me || (*kind == Kind::Video && p.unrequested_from.iter().any(|f| f == from))
            {
                continue;
            }
            out.expected += 1;
            if got.contains(&(*from, *kind)) {
                out.received += 1;
            } else if out.missing.len() < 20 {
                out.missing
                    .push(format!("{} <- {from}/{kind:?}", p.identity));
            }
        }
    }
    out
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// The human summary printed at the end.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<26} {v}\n"));
    line(
        "target / scenario",
        format!(
            "{} / {} ({} rooms, {:.0} s)",
            r.target, r.scenario, r.rooms, r.duration_s
        ),
    );
    line(
        "participants",
        format!(
            "{} planned, {} connected, {} failed",
            r.participants_planned, r.participants_connected, r.participants_failed
        ),
    );
    for (reason, n) in &r.failures {
        line("  failed", format!("{n} × {reason}"));
    }
    for (code, n) in &r.server_errors {
        line("  server error", format!("{n} × {code}"));
    }
    let q = &r.join_latency_ms;
    line(
        "join latency ms",
        format!(
            "p50 {} p95 {} p99 {} max {}",
            opt(q.p50),
            opt(q.p95),
            opt(q.p99),
            opt(q.max)
        ),
    );
    let q = &r.e2e_latency_ms;
    line(
        "e2e latency ms",
        format!(
            "p50 {} p95 {} p99 {} max {} ({} pkts)",
            opt(q.p50),
            opt(q.p95),
            opt(q.p99),
            opt(q.max),
            q.count
        ),
    );
    for (key, src) in &r.by_source {
        let q = &src.latency_ms;
        line(
            key,
            format!(
                "loss {:.3}% ({} of {}, {} streams), latency p50 {} p99 {}, stalls {} ({:.1} s)",
                src.loss_percent,
                src.lost,
                src.expected,
                src.streams,
                opt(q.p50),
                opt(q.p99),
                src.stalls,
                src.stalled_seconds
            ),
        );
    }
    let p = &r.packets;
    line(
        "packets",
        format!(
            "sent {} (audio {}, video {}), received {}",
            p.sent_by_publishers, p.audio_sent, p.video_sent, p.received_by_subscribers
        ),
    );
    line(
        "loss",
        format!(
            "{:.3}% ({} of {} expected; {} duplicates)",
            p.loss_percent, p.lost, p.expected_by_subscribers, p.duplicates
        ),
    );
    if p.unwanted_received > 0 {
        line(
            "unrequested videos",
            format!("{} packets of videos nobody asked for", p.unwanted_received),
        );
    }
    let j = &r.jitter_ms;
    line(
        "jitter ms (per stream)",
        format!("p50 {} p95 {} max {}", opt(j.p50), opt(j.p95), opt(j.max)),
    );
    let b = &r.recv_bitrate_kbps;
    line(
        "rx kbit/s (per subscriber)",
        format!(
            "min {} p5 {} p50 {} p95 {} max {}",
            opt(b.min),
            opt(b.p5),
            opt(b.p50),
            opt(b.p95),
            opt(b.max)
        ),
    );
    line(
        "streams",
        format!(
            "{} of {} expected flowing",
            r.streams.received, r.streams.expected
        ),
    );
    if let Some(cpu) = r.tester_cpu_seconds {
        line("tester cpu", format!("{cpu:.1} s"));
    }
    if let Some(rss) = r.tester_peak_rss_mib {
        line("tester peak memory", format!("{rss:.0} MiB"));
    }
    let t = &r.thresholds;
    let verdict = if !r.passed {
        format!("FAIL: {}", r.violations.join("; "))
    } else if t.max_loss_percent.is_none()
        && t.max_p99_latency_ms.is_none()
        && t.max_failures.is_none()
    {
        "no thresholds set (--max-loss, --max-p99-latency, --max-failures)".into()
    } else {
        "PASS".into()
    };
    line("verdict", verdict);
    s
}
