//! The metrics listener as an operator sees it: scraped over HTTP from a live server during a
//! two-party call, every documented series present, numbers that match the call, and an
//! exposition that `promtool check metrics` accepts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use zvon_interop::{bounded, http_get as get, HealthyCall, TestServer};

/// One scrape: `name{labels}` exactly as exposed → value, plus the `# TYPE` of each family.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    async fn take(addr: SocketAddr) -> Result<Scrape> {
        let (status, text) = get(addr, "/metrics").await?;
        ensure!(status == 200, "/metrics answered {status}");
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                if let (Some(n), Some(t)) = (parts.next(), parts.next()) {
                    types.insert(n.to_string(), t.to_string());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').context("sample without value")?;
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    v => v
                        .parse()
                        .with_context(|| format!("bad value in {line:?}"))?,
                };
                samples.insert(series.to_string(), value);
            }
        }
        Ok(Scrape {
            text,
            samples,
            types,
        })
    }

    fn value(&self, series: &str) -> Result<f64> {
        self.samples
            .get(series)
            .copied()
            .with_context(|| format!("{series} missing from /metrics"))
    }

    /// The median of a histogram, interpolated within its bucket as `histogram_quantile` does.
    fn median(&self, name: &str) -> Result<f64> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
        ensure!(total > 0.0, "{name} has no observations");
        let rank = total / 2.0;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, count) in buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Ok(f64::INFINITY);
                }
                return Ok(lower + (le - lower) * (rank - below) / (count - below).max(1.0));
            }
            (lower, below) = (le, count);
        }
        bail!("{name}: no bucket reaches the median")
    }
}

/// Metric names in the tables of docs/metrics.md (the contract dashboards are built on).
fn documented_names() -> Result<Vec<String>> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .context("reading docs/metrics.md")?;
    let names: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .filter(|n| n.starts_with("zvon_"))
        .map(str::to_string)
        .collect();
    ensure!(
        names.len() >= 20,
        "only {} names found in docs/metrics.md",
        names.len()
    );
    Ok(names)
}

/// `promtool check metrics` on the scraped text; skipped loudly when promtool is absent.
fn promtool_check(text: &str) -> Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "\n!!!!!!!! promtool not found: SKIPPING the exposition-format check \
                 (apt-get install prometheus) !!!!!!!!\n"
            );
            return Ok(());
        }
        Err(e) => return Err(e).context("starting promtool"),
    };
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    // Exit 3 is lint findings, 1 a parse error: neither is accepted (every name is in base
    // units, the bandwidth estimate included).
    ensure!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn wait_ready(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(addr, "/readyz").await?;
        if status == 200 {
            ensure!(body.trim() == "ready", "/readyz body {body:?}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("/readyz still {status} after 5 s: {body:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_server_exposes_every_documented_metric() {
    bounded(Duration::from_secs(30), async {
        let server = TestServer::start().await?;
        let addr = server.server.metrics_addr;
        let (status, body) = get(addr, "/healthz").await?;
        ensure!(
            status == 200 && body.trim() == "ok",
            "/healthz: {status} {body:?}"
        );
        wait_ready(addr).await?;

        let scrape = Scrape::take(addr).await?;
        let mut missing = vec![];
        // Cluster metrics exist only on fleet nodes: scripts/check_ops.sh checks them against
        // a live fleet, and an all-in-one server must not expose them.
        for name in documented_names()? {
            let cluster = name.starts_with("zvon_cluster_");
            if cluster == scrape.types.contains_key(&name) {
                missing.push(name);
            }
        }
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            if !scrape.types.contains_key(name) {
                missing.push(name.to_string());
            }
        }
        ensure!(
            missing.is_empty(),
            "not exposed by an idle server (or, cluster metrics, exposed): {missing:?}"
        );
        // Label values known in advance are there as zeros, so rate() works from the start.
        for series in [
            "zvon_rtp_packets_sent_total{kind=\"video\"}",
            "zvon_udp_datagrams_dropped_total{reason=\"malformed\"}",
            "zvon_signaling_errors_total{code=\"room_full\"}",
            "zvon_signaling_messages_total{direction=\"in\",type=\"publish_offer\"}",
            "zvon_signaling_messages_total{direction=\"out\",type=\"joined\"}",
            "zvon_peer_loss_ratio_count{direction=\"egress\"}",
            "zvon_worker_busy_seconds_total{worker=\"0\"}",
        ] {
            ensure!(
                scrape.value(series)? == 0.0,
                "{series} is not 0 on an idle server"
            );
        }
        ensure!(scrape.value("zvon_workers")? == 1.0);
        promtool_check(&scrape.text)?;
        server.shutdown().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_party_call_shows_in_the_metrics() {
    bounded(Duration::from_secs(60), async {
        let server = TestServer::start().await?;
        let addr = server.server.metrics_addr;
        wait_ready(addr).await?;
        let call = HealthyCall::start(&server, "metrics").await?;
        call.assert_flowing(Duration::from_secs(20)).await?;

        // A message the server does not know earns an error, which must be counted.
        call.a.signal.send_text(r#"{"type":"fly"}"#).await?;
        call.a
            .signal
            .wait_error("unknown_type", Duration::from_secs(5))
            .await?;

        // Steady state: between two scrapes each packet received is forwarded to the one other
        // participant, so sent and received grow alike.
        let first = Scrape::take(addr).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        call.assert_flowing(Duration::from_secs(10)).await?;
        let s = Scrape::take(addr).await?;
        for kind in ["audio", "video"] {
            let received = format!("zvon_rtp_packets_received_total{{kind=\"{kind}\"}}");
            let sent = format!("zvon_rtp_packets_sent_total{{kind=\"{kind}\"}}");
            let (r, t) = (s.value(&received)?, s.value(&sent)?);
            ensure!(r > 0.0 && t > 0.0, "{kind}: received {r}, sent {t}");
            ensure!(
                t <= r,
                "{kind}: sent {t} more than received {r} in a 2-party call"
            );
            let dr = r - first.value(&received)?;
            let dt = t - first.value(&sent)?;
            ensure!(
                dr > 0.0 && (dt - dr).abs() <= 0.05 * dr + 5.0,
                "{kind}: over 2 s received {dr} but forwarded {dt}"
            );
            let bytes = format!("zvon_rtp_bytes_sent_total{{kind=\"{kind}\"}}");
            ensure!(
                s.value(&bytes)? > t,
                "{kind}: bytes sent not above packets sent"
            );
            let published = format!("zvon_published_tracks{{kind=\"{kind}\"}}");
            let subscribed = format!("zvon_subscribed_tracks{{kind=\"{kind}\"}}");
            ensure!(s.value(&published)? == 2.0, "{published}");
            ensure!(s.value(&subscribed)? == 2.0, "{subscribed}");
        }

        let forwarded = s.value("zvon_forwarding_latency_seconds_count")?;
        let p50 = s.median("zvon_forwarding_latency_seconds")?;
        eprintln!(
            "forwarding latency: {forwarded} samples, p50 {:.1} µs",
            p50 * 1e6
        );
        ensure!(forwarded > 0.0, "no forwarding latency recorded");
        ensure!(p50 < 0.010, "forwarding latency p50 {p50} s on loopback");

        ensure!(s.value("zvon_participants")? == 2.0, "participants");
        ensure!(s.value("zvon_rooms")? == 1.0, "rooms");
        ensure!(s.value("zvon_signaling_connections")? == 2.0, "connections");
        ensure!(
            s.value("zvon_worker_peers{worker=\"0\"}")? == 4.0,
            "2 publisher + 2 subscriber connections"
        );
        ensure!(
            s.value("zvon_worker_busy_seconds_total{worker=\"0\"}")? > 0.0,
            "worker busy time"
        );
        ensure!(s.value("zvon_udp_datagrams_received_total")? > 0.0);
        ensure!(s.value("zvon_udp_datagrams_sent_total")? > 0.0);
        ensure!(
            s.value("zvon_join_latency_seconds_count")? >= 2.0,
            "join latency"
        );
        ensure!(
            s.value("zvon_signaling_errors_total{code=\"unknown_type\"}")? >= 1.0,
            "the unknown_type error sent to the client is not counted"
        );
        ensure!(
            s.value("zvon_signaling_messages_total{direction=\"in\",type=\"invalid\"}")? >= 1.0,
            "the unparsable message is not counted as invalid"
        );
        ensure!(s.value("zvon_signaling_messages_total{direction=\"in\",type=\"join\"}")? >= 2.0);
        ensure!(
            s.value("zvon_signaling_messages_total{direction=\"out\",type=\"subscriber_offer\"}")?
                >= 2.0
        );
        ensure!(
            !s.text.contains("type=\"fly\""),
            "a client-chosen type became a label value"
        );
        let (status, _) = get(addr, "/healthz").await?;
        ensure!(status == 200, "/healthz during the call: {status}");
        wait_ready(addr).await?;
        promtool_check(&s.text)?;

        // A NACK from a subscriber for packets still in the RTX cache: counted when str0m's
        // next stats (every 2 s) report it, and the resends with it.
        let tracks = call.a.subscriber().received();
        let (index, video) = tracks
            .iter()
            .enumerate()
            .find(|(_, t)| t.participant_id() == call.b.id && t.kind == "video")
            .context("a receives no video from b")?;
        let main: Vec<u16> = video
            .packets
            .iter()
            .filter(|p| p.ssrc == video.ssrc)
            .map(|p| p.seq)
            .collect();
        let recent = &main[main.len().saturating_sub(4)..];
        call.a.subscriber().send_nack(index, recent).await?;
        let deadline = Instant::now() + Duration::from_secs(6);
        let (nacks, resent) = loop {
            let s = Scrape::take(addr).await?;
            let nacks = s.value("zvon_nacks_received_total")?;
            let resent = s.value("zvon_retransmissions_sent_total")?;
            if (nacks >= 1.0 && resent >= 1.0) || Instant::now() > deadline {
                break (nacks, resent);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        eprintln!("after NACKing {recent:?}: {nacks} NACKs, {resent} retransmissions counted");
        ensure!(nacks >= 1.0, "the NACK was not counted");
        ensure!(
            (1.0..=recent.len() as f64 + 2.0).contains(&resent),
            "{resent} retransmissions counted for a NACK of {} packets",
            recent.len()
        );

        call.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}
