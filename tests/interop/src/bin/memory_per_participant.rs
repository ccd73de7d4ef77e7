//! Benchmark: server memory per connected participant.
//!
//! Starts the release `zvon` binary as a child process (so its RSS holds only the server), drives
//! it with the webrtc-rs harness clients from this process and reads the server's
//! `/proc/<pid>/smaps_rollup` (falls back to `/proc/<pid>/status`) in phases:
//!
//! 1. baseline: after start and a warm-up pair that joins, publishes, forwards and leaves;
//! 2. `joined`: N participants joined (WebSocket + room state only; the server creates a
//!    subscriber connection only once there is something to receive);
//! 3. `idle`: in each room of `--room-size` the first participant publishes audio + video but
//!    sends no RTP, so every other participant gets a subscriber offer and its subscriber
//!    connection comes up (ICE + DTLS); no media flows;
//! 4. `forwarding`: half of each room publishes (Opus 50 pkt/s + VP8 30 fps × 3 pkt), everyone
//!    receives the others; sampled every second for `--forward-secs`;
//! 5. `after_leave`: everybody left; what the server kept.
//!
//! Phases 2–5 run `--rounds` times (default 2, fresh rooms each time) so that memory which keeps
//! growing from one round to the next shows. The headline numbers are round 1's.
//! Every measurement is the median of 3 samples 1 s apart. Prints a table and one JSON line.
//!
//! ```sh
//! cargo build --release -p zvon-signaling -p zvon-interop
//! target/release/memory_per_participant [--participants 40] [--room-size 4]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use zvon_interop::child_server::{
    cpu_ticks, join_retrying as join, numeric_flags, peak_rss, read_mem, ChildServer as Server, Mem,
};
use zvon_interop::{TestParticipant, CONNECT_TIMEOUT};

struct Args {
    participants: usize,
    room_size: usize,
    settle: Duration,
    forward: Duration,
    limit: Duration,
    concurrency: usize,
    rounds: usize,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut a = Args {
            participants: 40,
            room_size: 4,
            settle: Duration::from_secs(3),
            forward: Duration::from_secs(10),
            limit: Duration::from_secs(150),
            concurrency: 4,
            rounds: 2,
        };
        let usage = "memory_per_participant [--participants N=40] [--room-size K=4] \
                     [--settle-secs 3] [--forward-secs 10] [--timeout-secs 150] [--concurrency 4] [--rounds 2]";
        for (flag, n) in numeric_flags(usage)? {
            match flag.as_str() {
                "--participants" => a.participants = n as usize,
                "--room-size" => a.room_size = n as usize,
                "--settle-secs" => a.settle = Duration::from_secs(n),
                "--forward-secs" => a.forward = Duration::from_secs(n),
                "--timeout-secs" => a.limit = Duration::from_secs(n),
                "--concurrency" => a.concurrency = n as usize,
                "--rounds" => a.rounds = n as usize,
                _ => bail!("unknown flag {flag} (try --help)"),
            }
        }
        if a.participants == 0 || a.room_size < 2 || a.concurrency == 0 || a.rounds == 0 {
            bail!("need --participants >= 1, --room-size >= 2, --concurrency >= 1, --rounds >= 1");
        }
        if a.forward < Duration::from_secs(3) {
            bail!("--forward-secs must be at least 3 (three samples 1 s apart)");
        }
        Ok(a)
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn median_mem(samples: &[Mem]) -> Mem {
    Mem {
        rss: median(samples.iter().map(|m| m.rss).collect()),
        pss: median(samples.iter().map(|m| m.pss).collect()),
        anon: median(samples.iter().map(|m| m.anon).collect()),
    }
}

/// Three samples one second apart; the median of each field.
async fn sample3(pid: u32) -> Result<(Mem, Vec<Mem>)> {
    let mut samples = Vec::with_capacity(3);
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples.push(read_mem(pid)?);
    }
    Ok((median_mem(&samples), samples))
}

/// Runs `f(i)` for `0..n` with at most `limit` in flight; results in index order.
async fn run_limited<T, F, Fut>(n: usize, limit: usize, f: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    use futures_util::stream::{self, StreamExt};
    let mut results: Vec<(usize, T)> = stream::iter(0..n)
        .map(|i| {
            let fut = f(i);
            async move { fut.await.map(|v| (i, v)) }
        })
        .buffer_unordered(limit)
        .collect::<Vec<Result<(usize, T)>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, v)| v).collect())
}

fn room_of(i: usize, room_size: usize) -> usize {
    i / room_size
}

fn index_in_room(i: usize, room_size: usize) -> usize {
    i % room_size
}

/// Participants in room `r` (the last room may be smaller).
fn room_len(r: usize, n: usize, room_size: usize) -> usize {
    (n - r * room_size).min(room_size)
}

/// Publishers per room in the forwarding phase: half, at least one.
fn publishers_in(len: usize) -> usize {
    (len / 2).max(1)
}

/// Waits until the subscriber connection of each participant that has something to receive is
/// connected and every offer it got is answered.
async fn wait_subscribers(
    ps: &[TestParticipant],
    expects_media: impl Fn(usize) -> bool,
) -> Result<()> {
    for (i, p) in ps.iter().enumerate() {
        if !expects_media(i) {
            continue;
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        // The offer may still be on its way: wait for at least one.
        while p.answers_sent() == 0 {
            if Instant::now() >= deadline {
                bail!(
                    "{} got no subscriber_offer within {CONNECT_TIMEOUT:?}",
                    p.id
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.subscriber()
            .wait_connected(CONNECT_TIMEOUT)
            .await
            .with_context(|| format!("{} subscriber connection", p.id))?;
        p.wait_offers_answered(CONNECT_TIMEOUT).await?;
        let errors = p.answer_errors();
        if !errors.is_empty() {
            bail!("{}: answering subscriber offers failed: {errors:?}", p.id);
        }
    }
    Ok(())
}

fn total_received(ps: &[TestParticipant]) -> usize {
    ps.iter()
        .map(|p| p.received().iter().map(|t| t.packets.len()).sum::<usize>())
        .sum()
}

struct Report {
    rows: Vec<(String, Mem, Option<usize>)>,
    baseline: Mem,
    start: Mem,
    forwarding_series: Vec<(u64, Mem)>,
    received_rate: f64,
    expected_rate: f64,
    server_cpu: f64,
    bench_cpu: f64,
    peak_rss: u64,
}

async fn run(server: &mut Server, args: &Args) -> Result<Report> {
    server.wait_ready(Duration::from_secs(15)).await?;
    let pid = server.pid;
    let addr = server.http_addr;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (start, _) = sample3(pid).await?;

    // Warm-up: a pair that connects, forwards briefly and leaves, so one-time allocations
    // (TLS/crypto tables, worker buffers, allocator arenas) are in the baseline.
    let mut warm = Vec::new();
    for who in ["warm-a", "warm-b"] {
        let mut p = join(addr, "mem-warmup", who).await?;
        p.publish().await?;
        p.start_media()?;
        warm.push(p);
    }
    let (a, b) = (&warm[0], &warm[1]);
    for kind in ["audio", "video"] {
        a.wait_receiving(&b.id, kind, 20, CONNECT_TIMEOUT).await?;
        b.wait_receiving(&a.id, kind, 20, CONNECT_TIMEOUT).await?;
    }
    for mut p in warm {
        p.leave().await?;
        p.close().await;
    }
    tokio::time::sleep(args.settle).await;
    let (baseline, _) = sample3(pid).await?;

    let mut rows = Vec::new();
    let mut last = None;
    for round in 1..=args.rounds {
        let tag = |name: &str| {
            if args.rounds > 1 {
                format!("{name}#{round}")
            } else {
                name.to_string()
            }
        };
        let r = run_round(pid, addr, args, round).await?;
        rows.push((tag("joined"), r.joined, Some(args.participants)));
        rows.push((tag("idle"), r.idle, Some(args.participants)));
        rows.push((tag("forwarding"), r.forwarding, Some(args.participants)));
        rows.push((tag("after_leave"), r.after_leave, None));
        last = Some(r);
    }
    let last = last.ok_or_else(|| anyhow!("no round ran"))?;
    Ok(Report {
        rows,
        baseline,
        start,
        forwarding_series: last.series,
        received_rate: last.received_rate,
        expected_rate: last.expected_rate,
        server_cpu: last.server_cpu,
        bench_cpu: last.bench_cpu,
        peak_rss: peak_rss(pid),
    })
}

struct Round {
    joined: Mem,
    idle: Mem,
    forwarding: Mem,
    after_leave: Mem,
    series: Vec<(u64, Mem)>,
    received_rate: f64,
    expected_rate: f64,
    server_cpu: f64,
    bench_cpu: f64,
}

/// One cycle: N join, go idle-connected, forward, leave.
async fn run_round(pid: u32, addr: SocketAddr, args: &Args, round: usize) -> Result<Round> {
    let n = args.participants;
    let k = args.room_size;

    // Phase: joined (signaling only).
    let mut ps = run_limited(n, args.concurrency, |i| async move {
        join(
            addr,
            &format!("mem{round}-r{}", room_of(i, k)),
            &format!("p{i}"),
        )
        .await
    })
    .await?;
    tokio::time::sleep(args.settle).await;
    let joined = sample3(pid).await?.0;

    // Phase: idle. The first of each room publishes without sending, the others' subscriber
    // connections come up.
    let anchors: Vec<usize> = (0..n).filter(|i| index_in_room(*i, k) == 0).collect();
    publish_all(&mut ps, &anchors, args.concurrency).await?;
    wait_subscribers(&ps, |i| {
        index_in_room(i, k) != 0 && room_len(room_of(i, k), n, k) > 1
    })
    .await?;
    tokio::time::sleep(args.settle).await;
    let idle = sample3(pid).await?.0;

    // Phase: forwarding. Half of each room publishes and sends.
    let is_publisher =
        |i: usize| index_in_room(i, k) < publishers_in(room_len(room_of(i, k), n, k));
    let more: Vec<usize> = (0..n)
        .filter(|i| is_publisher(*i) && index_in_room(*i, k) != 0)
        .collect();
    publish_all(&mut ps, &more, args.concurrency).await?;
    for i in (0..n).filter(|i| is_publisher(*i)) {
        ps[i].start_media()?;
    }
    // Everyone receives every other publisher of its room before the window starts.
    for (i, p) in ps.iter().enumerate() {
        let r = room_of(i, k);
        let pubs = publishers_in(room_len(r, n, k));
        for j in (r * k..r * k + pubs).filter(|j| *j != i) {
            for kind in ["audio", "video"] {
                p.wait_receiving(&ps[j].id, kind, 5, CONNECT_TIMEOUT)
                    .await
                    .with_context(|| format!("p{i} receiving {kind} from p{j}"))?;
            }
        }
    }
    let mut expected_rate = 0.0;
    let per_publisher = 1000.0 / zvon_interop::media::AUDIO_PACKET_INTERVAL_MS as f64
        + 1000.0 / zvon_interop::media::VIDEO_FRAME_INTERVAL_MS as f64
            * zvon_interop::media::VIDEO_PACKETS_PER_FRAME as f64;
    for i in 0..n {
        let len = room_len(room_of(i, k), n, k);
        let pubs = publishers_in(len);
        let others = if is_publisher(i) { pubs - 1 } else { pubs };
        expected_rate += others as f64 * per_publisher;
    }
    let received_before = total_received(&ps);
    let ticks_before = (cpu_ticks(&pid.to_string()), cpu_ticks("self"));
    let started = Instant::now();
    let mut series = Vec::new();
    let secs = args.forward.as_secs();
    for s in 1..=secs {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        series.push((s, read_mem(pid)?));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let received_rate = (total_received(&ps) - received_before) as f64 / elapsed;
    // Clock ticks are 100 per second on Linux.
    let server_cpu =
        (cpu_ticks(&pid.to_string()) - ticks_before.0) as f64 / 100.0 / elapsed * 100.0;
    let bench_cpu = (cpu_ticks("self") - ticks_before.1) as f64 / 100.0 / elapsed * 100.0;
    let last3: Vec<Mem> = series.iter().rev().take(3).map(|(_, m)| *m).collect();
    let forwarding = median_mem(&last3);

    // Phase: everybody leaves.
    for_each_limited(&mut ps, args.concurrency, |p| async move {
        let id = p.id.clone();
        p.leave().await.with_context(|| format!("{id} leaving"))
    })
    .await?;
    for p in ps {
        p.close().await;
    }
    tokio::time::sleep(args.settle).await;
    let after_leave = sample3(pid).await?.0;
    Ok(Round {
        joined,
        idle,
        forwarding,
        after_leave,
        series,
        received_rate,
        expected_rate,
        server_cpu,
        bench_cpu,
    })
}

async fn publish_all(ps: &mut [TestParticipant], which: &[usize], limit: usize) -> Result<()> {
    let mut chosen: Vec<&mut TestParticipant> = ps
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| which.contains(i))
        .map(|(_, p)| p)
        .collect();
    for_each_limited(&mut chosen, limit, |p| async move {
        let id = p.id.clone();
        p.publish()
            .await
            .with_context(|| format!("{id} publishing"))
    })
    .await
}

/// Runs `f` on each item with at most `limit` in flight; fails if any failed.
async fn for_each_limited<'a, T: 'a, F, Fut>(items: &'a mut [T], limit: usize, f: F) -> Result<()>
where
    F: Fn(&'a mut T) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    use futures_util::stream::{self, StreamExt};
    stream::iter(items.iter_mut())
        .map(f)
        .buffer_unordered(limit)
        .collect::<Vec<Result<()>>>()
        .await
        .into_iter()
        .collect()
}

fn per_participant(v: u64, base: u64, n: usize) -> f64 {
    (v as f64 - base as f64) / n as f64
}

fn print_report(r: &Report, args: &Args, pid: u32) {
    let b = r.baseline;
    println!();
    println!(
        "zvon server memory (pid {pid}), {} participants in rooms of {}, KiB (1 KiB = 1024 B)",
        args.participants, args.room_size
    );
    println!(
        "start: RSS {} PSS {} anon {}; baseline after warm-up: RSS {} PSS {} anon {}",
        r.start.rss, r.start.pss, r.start.anon, b.rss, b.pss, b.anon
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>14} {:>14} {:>15}",
        "phase", "RSS", "PSS", "anon", "ΔRSS/part.", "ΔPSS/part.", "Δanon/part."
    );
    for (name, m, n) in &r.rows {
        match n {
            Some(n) => println!(
                "{:<12} {:>9} {:>9} {:>9} {:>14.1} {:>14.1} {:>15.1}",
                name,
                m.rss,
                m.pss,
                m.anon,
                per_participant(m.rss, b.rss, *n),
                per_participant(m.pss, b.pss, *n),
                per_participant(m.anon, b.anon, *n),
            ),
            None => println!(
                "{:<12} {:>9} {:>9} {:>9} {:>14} {:>14} {:>15}   (ΔRSS vs baseline {:+} KiB total)",
                name,
                m.rss,
                m.pss,
                m.anon,
                "-",
                "-",
                "-",
                m.rss as i64 - b.rss as i64
            ),
        }
    }
    let series: Vec<String> = r
        .forwarding_series
        .iter()
        .map(|(s, m)| format!("{s}s:{}", m.rss))
        .collect();
    println!("forwarding RSS over time: {}", series.join(" "));
    println!(
        "forwarding: clients received {:.0} pkt/s of {:.0} expected ({:.0}%); server CPU {:.0}% of a core, benchmark (clients) {:.0}%; server peak RSS (VmHWM) {} KiB",
        r.received_rate,
        r.expected_rate,
        100.0 * r.received_rate / r.expected_rate.max(1.0),
        r.server_cpu,
        r.bench_cpu,
        r.peak_rss,
    );
    let round1 = |name: &str| {
        r.rows
            .iter()
            .find(|(n, _, _)| n == name || n == &format!("{name}#1"))
    };
    let per = |name: &str, f: fn(&Mem) -> u64| {
        round1(name)
            .map(|(_, m, n)| per_participant(f(m), f(&b), n.unwrap_or(1)))
            .map(|v| (v * 10.0).round() / 10.0)
    };
    let phases: Vec<_> = r
        .rows
        .iter()
        .map(|(name, m, n)| {
            json!({
                "phase": name,
                "rss": m.rss,
                "pss": m.pss,
                "anon": m.anon,
                "per_participant_rss": n.map(|n| (per_participant(m.rss, b.rss, n) * 10.0).round() / 10.0),
            })
        })
        .collect();
    let line = json!({
        "bench": "memory_per_participant",
        "participants": args.participants,
        "room_size": args.room_size,
        "rounds": args.rounds,
        "unit": "KiB",
        "start_rss": r.start.rss,
        "baseline_rss": b.rss,
        "baseline_anon": b.anon,
        "joined_per_participant_rss": per("joined", |m| m.rss),
        "idle_per_participant_rss": per("idle", |m| m.rss),
        "idle_per_participant_anon": per("idle", |m| m.anon),
        "forwarding_per_participant_rss": per("forwarding", |m| m.rss),
        "forwarding_per_participant_anon": per("forwarding", |m| m.anon),
        "phases": phases,
        "peak_rss": r.peak_rss,
        "forwarding_series_rss": r.forwarding_series.iter().map(|(_, m)| m.rss).collect::<Vec<_>>(),
        "received_pkt_per_s": r.received_rate.round(),
        "expected_pkt_per_s": r.expected_rate.round(),
        "server_cpu_pct": r.server_cpu.round(),
        "bench_cpu_pct": r.bench_cpu.round(),
    });
    println!("{line}");
}

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    zvon_interop::init_tracing();
    // Spawned from the main thread, before the runtime exists.
    let mut server = match Server::spawn("mem-bench", &[]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    };
    let pid = server.pid;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let limit = args.limit;
    let result = runtime.block_on(async {
        match tokio::time::timeout(limit, run(&mut server, &args)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("gave up after {limit:?}")),
        }
    });
    // Clients (and their sockets) go away with the runtime; the server goes with `server`.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let code = match result {
        Ok(report) => {
            print_report(&report, &args, pid);
            0
        }
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            eprintln!("server log (tail):\n{}", server.log_tail(30));
            1
        }
    };
    drop(server);
    std::process::exit(code);
}
