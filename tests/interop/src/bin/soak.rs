//! Soak: an hour (or `--duration-secs`) of churn against one release `zvon serve`, watching the
//! server for leaks.
//!
//! The server runs as a child process (`$ZVON_BIN`, default `target/release/zvon`) so its
//! `/proc/<pid>` holds only the server. This process drives it with webrtc-rs participants:
//!
//! - `--rooms` rooms of `--room-size` participants, each publishing Opus + VP8 and receiving the
//!   others. Every `--action-ms` (jittered) each room does one of: a participant leaves and a new
//!   one joins and publishes (40 %; the newcomer must hear someone within 10 s), a microphone
//!   mute + unmute (30 %; the room must keep receiving video), a renegotiation on the publisher
//!   connection (30 %; a fresh offer with the same tracks; the others must keep receiving its
//!   audio).
//! - Every `--call-secs`, a 1:1 call between two freshly registered devices: invite, ring, accept,
//!   both join the call room, audio both ways, hang up.
//!
//! Every `--sample-secs` it reads the server's RSS, open file descriptors and threads. The
//! verdict compares the first minute after `--warmup-secs` with the last minute of churn (medians):
//! RSS drift < 5 % (`--max-drift-percent`), descriptors within +16, no worker panic, and the server's error counters
//! (`/metrics` names with `error`, `dropped`, `panic`, `timeout`, `failed`) not growing faster in
//! the second half than in the first. Failed actions are counted and must stay under 2 %.
//! Prints a table and one JSON line; exits non-zero when the verdict fails.
//!
//! ```sh
//! cargo build --release -p zvon-signaling -p zvon-interop
//! target/release/soak --duration-secs 3600
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::Rng;
use serde_json::{json, Value};
use zvon_interop::child_server::{join_retrying, numeric_flags, read_mem, ChildServer};
use zvon_interop::{
    http_get, msg_type, SignalClient, TestParticipant, CONNECT_TIMEOUT, SIGNAL_TIMEOUT,
};

struct Args {
    duration: Duration,
    warmup: Duration,
    rooms: usize,
    room_size: usize,
    action: Duration,
    call_every: Duration,
    sample_every: Duration,
    max_drift_percent: u64,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut a = Args {
            duration: Duration::from_secs(3600),
            warmup: Duration::from_secs(120),
            rooms: 3,
            room_size: 4,
            action: Duration::from_millis(2000),
            call_every: Duration::from_secs(30),
            sample_every: Duration::from_secs(15),
            max_drift_percent: 5,
        };
        let usage = "soak [--duration-secs 3600] [--warmup-secs 120] [--rooms 3] [--room-size 4] \
                     [--action-ms 2000] [--call-secs 30] [--sample-secs 15] [--max-drift-percent 5]";
        for (flag, n) in numeric_flags(usage)? {
            match flag.as_str() {
                "--duration-secs" => a.duration = Duration::from_secs(n),
                "--warmup-secs" => a.warmup = Duration::from_secs(n),
                "--rooms" => a.rooms = n as usize,
                "--room-size" => a.room_size = n as usize,
                "--action-ms" => a.action = Duration::from_millis(n),
                "--call-secs" => a.call_every = Duration::from_secs(n),
                "--sample-secs" => a.sample_every = Duration::from_secs(n),
                "--max-drift-percent" => a.max_drift_percent = n,
                _ => bail!("unknown flag {flag} (try --help)"),
            }
        }
        if a.rooms == 0 || a.room_size < 2 || a.action.is_zero() || a.sample_every.is_zero() {
            bail!("need --rooms >= 1, --room-size >= 2, --action-ms > 0, --sample-secs > 0");
        }
        // Two comparison windows of a minute (or a quarter of the churn when shorter) must fit
        // after the warm-up.
        if a.duration <= a.warmup + a.sample_every * 4 {
            bail!("--duration-secs must exceed --warmup-secs by at least 4 samples");
        }
        Ok(a)
    }

    /// Length of each comparison window (start of churn after warm-up, end of churn).
    fn window(&self) -> Duration {
        ((self.duration - self.warmup) / 4).min(Duration::from_secs(60))
    }
}

/// What the churn did, by kind of action.
#[derive(Default)]
struct Tally {
    done: BTreeMap<&'static str, AtomicU64>,
    failed: BTreeMap<&'static str, AtomicU64>,
    first_errors: std::sync::Mutex<Vec<String>>,
}

const ACTIONS: [&str; 4] = ["replace", "mute", "renegotiate", "call"];

impl Tally {
    fn new() -> Tally {
        let mut t = Tally::default();
        for a in ACTIONS {
            t.done.insert(a, AtomicU64::new(0));
            t.failed.insert(a, AtomicU64::new(0));
        }
        t
    }

    fn record(&self, action: &'static str, result: &Result<()>) {
        let counter = match result {
            Ok(()) => &self.done[action],
            Err(_) => &self.failed[action],
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            let mut errors = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
            if errors.len() < 10 {
                let text = format!("{action}: {e:#}");
                eprintln!("soak: {}", text.chars().take(400).collect::<String>());
                errors.push(text);
            }
        }
    }

    fn totals(&self) -> (u64, u64) {
        let sum = |m: &BTreeMap<&'static str, AtomicU64>| {
            m.values().map(|c| c.load(Ordering::Relaxed)).sum::<u64>()
        };
        (sum(&self.done), sum(&self.failed))
    }
}

/// One reading of the server process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn count_dir(path: &str) -> u64 {
    std::fs::read_dir(path)
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn sample(pid: u32, at: Duration) -> Result<Sample> {
    Ok(Sample {
        at,
        rss_kib: read_mem(pid)?.rss,
        fds: count_dir(&format!("/proc/{pid}/fd")),
        threads: count_dir(&format!("/proc/{pid}/task")),
    })
}

/// The error-like counters of a Prometheus exposition, summed over labels, by name and labels.
fn error_counters(exposition: &str) -> BTreeMap<String, f64> {
    const WORDS: [&str; 5] = ["error", "dropped", "panic", "timeout", "failed"];
    let mut out = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if !name.ends_with("_total") || !WORDS.iter().any(|w| name.contains(w)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(series.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

async fn scrape(metrics: SocketAddr) -> Result<BTreeMap<String, f64>> {
    let (status, body) = http_get(metrics, "/metrics").await?;
    if status != 200 {
        bail!("GET /metrics answered {status}");
    }
    Ok(error_counters(&body))
}

fn delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

/// A participant that joined, published and sends media.
async fn newcomer(addr: SocketAddr, room: &str, serial: u64) -> Result<TestParticipant> {
    let mut p = join_retrying(addr, room, &format!("soak-{serial}")).await?;
    p.publish().await?;
    p.start_media()?;
    Ok(p)
}

/// One room's churn until `until`.
async fn churn_room(
    addr: SocketAddr,
    room: String,
    size: usize,
    every: Duration,
    until: Instant,
    tally: Arc<Tally>,
    serial: Arc<AtomicU64>,
) -> Result<()> {
    let mut people = Vec::with_capacity(size);
    for _ in 0..size {
        people.push(newcomer(addr, &room, serial.fetch_add(1, Ordering::Relaxed)).await?);
    }
    let mut last_ping = Instant::now();
    while Instant::now() < until {
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        tokio::time::sleep(every.mul_f64(jitter)).await;
        if last_ping.elapsed() > Duration::from_secs(10) {
            for p in &people {
                // Keepalive (the protocol asks for one at least every 20 s).
                let _ = p.signal.send_json(&json!({"type": "ping"})).await;
            }
            last_ping = Instant::now();
        }
        let (roll, who, other) = {
            let mut rng = rand::thread_rng();
            let who = rng.gen_range(0..people.len());
            let other = (who + rng.gen_range(1..people.len())) % people.len();
            (rng.gen_range(0..100u32), who, other)
        };
        let action: &'static str = match roll {
            0..=39 => "replace",
            40..=69 => "mute",
            _ => "renegotiate",
        };
        let result = match action {
            "replace" => {
                let mut gone = people.swap_remove(who);
                let left = gone.leave().await;
                gone.close().await;
                let joined = newcomer(addr, &room, serial.fetch_add(1, Ordering::Relaxed)).await;
                match (left, joined) {
                    (Ok(()), Ok(p)) => {
                        let heard = p
                            .wait_more_packets(&people[0].id, "audio", 10, CONNECT_TIMEOUT)
                            .await;
                        people.push(p);
                        heard
                    }
                    (Err(e), Ok(p)) => {
                        people.push(p);
                        Err(e.context("leave"))
                    }
                    (_, Err(e)) => {
                        // Keep the room at size: try again on the next action.
                        match newcomer(addr, &room, serial.fetch_add(1, Ordering::Relaxed)).await {
                            Ok(p) => people.push(p),
                            Err(again) => {
                                return Err(again.context(format!("room {room} cannot refill")))
                            }
                        }
                        Err(e.context("join"))
                    }
                }
            }
            "mute" => mute_and_unmute(&people[who], &people[other]).await,
            _ => {
                let r = people[who].renegotiate_unchanged().await;
                match r {
                    Ok(()) => {
                        people[other]
                            .wait_more_packets(&people[who].id, "audio", 10, CONNECT_TIMEOUT)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        tally.record(action, &result);
    }
    for mut p in people {
        let _ = p.leave().await;
        p.close().await;
    }
    Ok(())
}

async fn mute_and_unmute(p: &TestParticipant, watcher: &TestParticipant) -> Result<()> {
    let track = p
        .publisher
        .as_ref()
        .map(|x| x.audio_track_id.clone())
        .context("not publishing")?;
    for muted in [true, false] {
        p.signal
            .send_json(&json!({"type": "mute", "track_id": track, "muted": muted}))
            .await?;
        watcher
            .signal
            .wait_from(0, SIGNAL_TIMEOUT, "track_muted", |v| {
                msg_type(v) == "track_muted" && v["track_id"] == track && v["muted"] == muted
            })
            .await?;
    }
    // Video kept flowing through the mute.
    watcher
        .wait_more_packets(&p.id, "video", 10, CONNECT_TIMEOUT)
        .await
}

/// A device socket for calls.
async fn device(addr: SocketAddr, identity: &str) -> Result<SignalClient> {
    let mut claims = zvon_interop::claims("", identity);
    claims.device = Some(format!("{identity}-phone"));
    let socket = SignalClient::connect(addr, None)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    socket
        .send_json(
            &json!({"type": "register", "protocol": 1, "token": zvon_interop::sign(&claims)}),
        )
        .await?;
    socket.wait_type("registered", SIGNAL_TIMEOUT).await?;
    Ok(socket)
}

async fn call_event(socket: &SignalClient, ty: &str, call_id: &str) -> Result<Value> {
    Ok(socket
        .wait_from(0, SIGNAL_TIMEOUT, ty, |v| {
            msg_type(v) == ty && (call_id.is_empty() || v["call_id"] == call_id)
        })
        .await?
        .1)
}

/// A whole 1:1 call: ring, answer, audio both ways, hang up.
async fn one_call(addr: SocketAddr, serial: u64) -> Result<()> {
    let (caller_id, callee_id) = (format!("caller-{serial}"), format!("callee-{serial}"));
    let caller = device(addr, &caller_id).await?;
    let callee = device(addr, &callee_id).await?;
    caller
        .send_json(&json!({"type": "call_invite", "to": [callee_id], "media": "audio"}))
        .await?;
    let incoming = call_event(&callee, "call_incoming", "").await?;
    let call_id = incoming["call_id"]
        .as_str()
        .context("no call_id")?
        .to_string();
    callee
        .send_json(&json!({"type": "call_ack", "call_id": call_id}))
        .await?;
    callee
        .send_json(&json!({"type": "call_accept", "call_id": call_id}))
        .await?;
    let for_callee = call_event(&callee, "call_accepted", &call_id).await?;
    let for_caller = call_event(&caller, "call_accepted", &call_id).await?;
    let mut sides = Vec::new();
    for accepted in [for_caller, for_callee] {
        let room = accepted["room"].as_str().context("no room")?;
        let token = accepted["token"].as_str().context("no token")?;
        let mut p = TestParticipant::join(addr, token, room).await?;
        p.publish().await?;
        p.start_media()?;
        sides.push(p);
    }
    let result = async {
        sides[0]
            .wait_more_packets(&sides[1].id, "audio", 10, CONNECT_TIMEOUT)
            .await?;
        sides[1]
            .wait_more_packets(&sides[0].id, "audio", 10, CONNECT_TIMEOUT)
            .await
    }
    .await;
    caller
        .send_json(&json!({"type": "call_hangup", "call_id": call_id}))
        .await?;
    call_event(&callee, "call_ended", &call_id).await?;
    for p in sides {
        p.close().await;
    }
    caller.close().await;
    callee.close().await;
    result
}

async fn calls(
    addr: SocketAddr,
    every: Duration,
    until: Instant,
    tally: Arc<Tally>,
    serial: Arc<AtomicU64>,
) {
    while Instant::now() + every < until {
        tokio::time::sleep(every).await;
        let n = serial.fetch_add(1, Ordering::Relaxed);
        let r = tokio::time::timeout(Duration::from_secs(60), one_call(addr, n))
            .await
            .unwrap_or_else(|_| Err(anyhow!("call did not finish within 60 s")));
        tally.record("call", &r);
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn window_median(samples: &[Sample], from: Duration, to: Duration, f: fn(&Sample) -> u64) -> u64 {
    median(
        samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .map(f)
            .collect(),
    )
}

fn sum(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

async fn run(server: &mut ChildServer, args: &Args) -> Result<bool> {
    server.wait_ready(Duration::from_secs(15)).await?;
    let (pid, addr, metrics) = (server.pid, server.http_addr, server.metrics_addr);
    let start = Instant::now();
    let until = start + args.duration;
    let tally = Arc::new(Tally::new());
    let serial = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for r in 0..args.rooms {
        tasks.push(tokio::spawn(churn_room(
            addr,
            format!("soak-{r}"),
            args.room_size,
            args.action,
            until,
            tally.clone(),
            serial.clone(),
        )));
    }
    let call_task = tokio::spawn(calls(
        addr,
        args.call_every,
        until,
        tally.clone(),
        serial.clone(),
    ));

    let window = args.window();
    let churn_start = args.warmup;
    let churn_mid = args.warmup + (args.duration - args.warmup) / 2;
    let mut samples = Vec::new();
    let mut counters = BTreeMap::new();
    let mut next = start;
    while Instant::now() < until {
        next += args.sample_every;
        tokio::time::sleep_until(next.into()).await;
        if let Some(status) = server.exited() {
            bail!("server exited during the soak: {status}");
        }
        let at = start.elapsed();
        let s = sample(pid, at)?;
        let (done, failed) = tally.totals();
        println!(
            "{:>6.0} s  rss {:>7} KiB  fds {:>4}  threads {:>3}  actions {done} ok / {failed} failed",
            at.as_secs_f64(),
            s.rss_kib,
            s.fds,
            s.threads
        );
        samples.push(s);
        for (label, mark) in [("start", churn_start), ("mid", churn_mid)] {
            if at >= mark && !counters.contains_key(label) {
                counters.insert(label, scrape(metrics).await?);
            }
        }
        if tasks.iter().any(|t| t.is_finished()) {
            break;
        }
    }
    let churn_end = start.elapsed();
    let end_counters = scrape(metrics).await?;
    for t in tasks {
        t.await.context("room task panicked")??;
    }
    call_task.await.context("call task panicked")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = sample(pid, start.elapsed())?;

    let rss_a = window_median(&samples, churn_start, churn_start + window, |s| s.rss_kib);
    let rss_b = window_median(&samples, churn_end - window, churn_end, |s| s.rss_kib);
    let fds_a = window_median(&samples, churn_start, churn_start + window, |s| s.fds);
    let fds_b = window_median(&samples, churn_end - window, churn_end, |s| s.fds);
    let drift = (rss_b as f64 - rss_a as f64) / rss_a.max(1) as f64 * 100.0;
    let empty = BTreeMap::new();
    let c_start = counters.get("start").unwrap_or(&empty);
    let c_mid = counters.get("mid").unwrap_or(&empty);
    let first_half = delta(c_start, c_mid);
    let second_half = delta(c_mid, &end_counters);
    let panics = end_counters
        .iter()
        .filter(|(k, _)| k.contains("panic"))
        .map(|(_, v)| *v)
        .sum::<f64>();
    let (done, failed) = tally.totals();
    let failed_share = failed as f64 / (done + failed).max(1) as f64 * 100.0;

    println!(
        "\nsoak: {:.0} s of churn, {} rooms × {}, action every ~{} ms, a call every {} s",
        churn_end.as_secs_f64(),
        args.rooms,
        args.room_size,
        args.action.as_millis(),
        args.call_every.as_secs()
    );
    println!("| action | done | failed |\n|---|---:|---:|");
    for a in ACTIONS {
        println!(
            "| {a} | {} | {} |",
            tally.done[a].load(Ordering::Relaxed),
            tally.failed[a].load(Ordering::Relaxed)
        );
    }
    println!(
        "RSS: {rss_a} KiB (first {:.0} s after warm-up) → {rss_b} KiB (last {:.0} s): {drift:+.2} %; after everyone left: {} KiB",
        window.as_secs_f64(),
        window.as_secs_f64(),
        after.rss_kib
    );
    println!("fds: {fds_a} → {fds_b}; after everyone left: {}", after.fds);
    println!("error-like counters, first half of churn: {first_half:?}");
    println!("error-like counters, second half of churn: {second_half:?}");

    let growth_ok = sum(&second_half) <= sum(&first_half) * 1.5 + 5.0;
    let max_drift = args.max_drift_percent as f64;
    let ok = drift < max_drift
        && fds_b <= fds_a + 16
        && panics == 0.0
        && growth_ok
        && failed_share < 2.0;
    println!(
        "{}",
        json!({
            "bench": "soak",
            "churn_secs": churn_end.as_secs(),
            "rooms": args.rooms,
            "room_size": args.room_size,
            "actions_ok": done,
            "actions_failed": failed,
            "rss_kib_start": rss_a,
            "rss_kib_end": rss_b,
            "rss_drift_percent": (drift * 100.0).round() / 100.0,
            "rss_kib_after_leave": after.rss_kib,
            "fds_start": fds_a,
            "fds_end": fds_b,
            "fds_after_leave": after.fds,
            "errors_first_half": sum(&first_half),
            "errors_second_half": sum(&second_half),
            "worker_panics": panics,
            "pass": ok,
        })
    );
    if !ok {
        eprintln!(
            "soak FAILED: drift {drift:+.2} % (< {max_drift}), fds {fds_a} → {fds_b} (≤ +16), panics {panics}, \
             error growth ok {growth_ok}, failed actions {failed_share:.2} % (< 2); first errors: {:#?}",
            tally
                .first_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        );
    }
    Ok(ok)
}

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e:#}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    let mut server = match ChildServer::spawn("soak", &[]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: {e:#}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(run(&mut server, &args)) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("server log (tail):\n{}", server.log_tail(30));
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("soak: {e:#}\nserver log (tail):\n{}", server.log_tail(30));
            std::process::exit(1);
        }
    }
}
