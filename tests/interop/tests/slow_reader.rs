//! Clients that stop reading: the server cuts them within a bound, does not keep their data in
//! memory, and everyone else (the same room, other rooms, media) carries on.
//!
//! The tests run one at a time: one of them measures this process's memory, which is the
//! server's (it runs in-process), and a parallel test would disturb the measure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use zvon_interop::cluster::sum_metric;
use zvon_interop::http_get;
use zvon_interop::{bounded, claims, sign, HealthyCall, SignalClient, TestServer, SIGNAL_TIMEOUT};
use zvon_signaling::ServerConfig;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type RawWs = WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket whose kernel receive buffer is small, so that a client that stops reading
/// pushes back on the server after a few KiB instead of after the loopback's megabytes.
async fn raw_socket(addr: SocketAddr) -> Result<RawWs> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/rtc"), tcp)
        .await
        .context("websocket upgrade")?;
    Ok(ws)
}

/// Writes one text frame straight to the TCP stream: the client library would keep a buffer as
/// large as the frame, and this process's memory is measured as the server's.
async fn send_raw_text(ws: &mut RawWs, payload: &[u8]) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    // FIN + text; masked (clients must mask) with a zero key, which leaves the payload as is;
    // 64-bit length.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    let tcp = ws.get_mut();
    tcp.write_all(&header).await?;
    tcp.write_all(payload).await?;
    Ok(())
}

/// Resident memory of this process (the in-process server), after handing freed memory back
/// to the kernel: what is measured is what the server still holds, not the allocator's cache.
fn rss_mib() -> f64 {
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn metric(server: &TestServer, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let (status, body) = http_get(server.server.metrics_addr, "/metrics").await?;
    ensure!(status == 200, "/metrics answered {status}");
    Ok(sum_metric(&body, name, labels))
}

/// Waits until `name` is at most `max`, returning how long it took.
async fn wait_metric_at_most(
    server: &TestServer,
    name: &str,
    labels: &[(&str, &str)],
    max: f64,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let value = metric(server, name, labels).await?;
        if value <= max {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("{name} still {value} after {within:?} (expected at most {max})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads what the server left in `ws` and expects the connection to end within `within`
/// (close frame, EOF or reset). Returns the JSON messages read.
async fn drain_until_closed(ws: &mut RawWs, within: Duration) -> Result<Vec<Value>> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Err(_) => bail!("socket still open {within:?} after we started reading"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Ok(seen),
            Ok(Some(Ok(Message::Text(t)))) => {
                seen.push(serde_json::from_str(&t).unwrap_or(Value::Null));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sockets_that_never_read_are_cut_and_their_memory_freed() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(Duration::from_secs(120), async {
        let mut config = ServerConfig::for_tests();
        // All 60 come from one address; the per-address upgrade limit is another test's.
        config.limits.upgrades_per_second_per_ip = 1000;
        let server = TestServer::start_with(config).await?;
        let call = HealthyCall::start(&server, "healthy").await?;
        let open_before = metric(&server, "zvon_signaling_connections", &[]).await?;
        let rss_before = rss_mib();

        // 60 clients each send ~900 KB messages of an unknown type, then never read. Five
        // each: echoed back in full, that is more than the kernel's socket buffers take.
        let big = json!({"type": "x".repeat(900 * 1024)}).to_string();
        let mut sockets = Vec::new();
        for _ in 0..60 {
            let mut ws = raw_socket(server.http_addr()).await?;
            for _ in 0..5 {
                send_raw_text(&mut ws, big.as_bytes()).await?;
            }
            sockets.push(ws);
        }
        drop(big);
        let rss_attack = rss_mib();

        // Unjoined sockets meet the 10 s join timeout; a stuck write meets the write deadline.
        let took = wait_metric_at_most(
            &server,
            "zvon_signaling_connections",
            &[],
            open_before,
            Duration::from_secs(30),
        )
        .await
        .context("the server did not close sockets that never read")?;
        let rss_after = rss_mib();
        eprintln!(
            "RSS {rss_before:.1} MiB before, {rss_attack:.1} during, {rss_after:.1} after; \
             sockets closed after {took:?}"
        );
        ensure!(
            rss_after - rss_before < 20.0,
            "the server still holds {:.1} MiB more than before the attack",
            rss_after - rss_before
        );

        // What the clients see once they read: a short unknown_type (the type is not echoed
        // in full), then the end of the socket.
        for ws in &mut sockets {
            let seen = drain_until_closed(ws, Duration::from_secs(5)).await?;
            let err = seen
                .iter()
                .find(|v| v["code"] == "unknown_type")
                .with_context(|| format!("no unknown_type error among {} messages", seen.len()))?;
            let message = err["message"].as_str().unwrap_or_default();
            ensure!(
                message.len() < 300,
                "unknown_type message is {} bytes long",
                message.len()
            );
        }

        call.assert_flowing(Duration::from_secs(10))
            .await
            .context("healthy call after the slow readers")?;
        call.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}

/// A member of a busy room stops reading; many others send it private chat lines of 2000
/// bytes, more than the kernel's socket buffers (up to 4 MiB on loopback) hold.
/// With `edit` shaping the server's limits, expects the others to see it leave, its socket to
/// end, and the room, the metrics and a call in another room to be fine.
async fn member_that_stops_reading_is_cut(edit: impl FnOnce(&mut ServerConfig)) -> Result<()> {
    let mut config = ServerConfig::for_tests();
    config.limits.reconnect_grace = Duration::from_millis(500);
    config.limits.upgrades_per_second_per_ip = 1000;
    edit(&mut config);
    let server = TestServer::start_with(config).await?;
    let call = HealthyCall::start(&server, "healthy").await?;
    let room = "busy";

    let mut slow = raw_socket(server.http_addr()).await?;
    let join =
        json!({"type": "join", "protocol": 1, "token": sign(&claims(room, "slow")), "room": room});
    slow.send(Message::Text(join.to_string().into())).await?;
    let slow_id = loop {
        match tokio::time::timeout(SIGNAL_TIMEOUT, slow.next()).await? {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t)?;
                if v["type"] == "joined" {
                    break v["participant"]["id"].clone();
                }
            }
            Some(Ok(_)) => {}
            other => bail!("slow reader's join ended with {other:?}"),
        }
    };
    // From here on `slow` is never read until the end.

    let mut chatters = Vec::new();
    for i in 0..60 {
        let ws = SignalClient::connect(server.http_addr(), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let c = claims(room, &format!("chatter{i}"));
        ws.send_json(&json!({"type": "join", "protocol": 1, "token": sign(&c), "room": room}))
            .await?;
        ws.wait_type("joined", SIGNAL_TIMEOUT).await?;
        chatters.push(ws);
    }
    let line = "z".repeat(2000);
    let started = Instant::now();
    let left = loop {
        for ws in &chatters {
            ws.send_json(&json!({"type": "chat", "text": line, "to": slow_id}))
                .await?;
        }
        if let Some(left) = chatters[0]
            .log()
            .into_iter()
            .find(|v| v["type"] == "participant_left" && v["participant_id"] == slow_id)
        {
            break left;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(25),
            "the member that stopped reading is still in the room after 25 s"
        );
        // 4 lines a second each: under the per-participant chat limit.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let cut_after = started.elapsed();
    eprintln!("slow member left after {cut_after:?}: {left}");
    ensure!(left["reason"] == "disconnected", "left with {left}");

    // Its socket is over: it reads what was on the wire, then the end.
    drain_until_closed(&mut slow, Duration::from_secs(10)).await?;
    let cut = metric(
        &server,
        "zvon_signaling_errors_total",
        &[("code", "slow_consumer")],
    )
    .await?;
    ensure!(cut >= 1.0, "slow_consumer not counted");
    wait_metric_at_most(
        &server,
        "zvon_signaling_queued_bytes",
        &[],
        64.0 * 1024.0,
        Duration::from_secs(5),
    )
    .await
    .context("bytes still queued after the cut")?;

    // The room goes on: a line still reaches everybody else.
    let mark = chatters[5].log_len();
    tokio::time::sleep(Duration::from_secs(1)).await; // a fresh chat allowance
    chatters[0]
        .send_json(&json!({"type": "chat", "text": "still here?"}))
        .await?;
    chatters[5]
        .wait_from(mark, SIGNAL_TIMEOUT, "chat after the cut", |v| {
            v["type"] == "chat" && v["text"] == "still here?"
        })
        .await?;
    call.assert_flowing(Duration::from_secs(10))
        .await
        .context("healthy call after the slow member")?;
    for ws in &chatters {
        ws.close().await;
    }
    call.close().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_too_far_behind_is_cut_by_its_queue_bound() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(Duration::from_secs(120), async {
        member_that_stops_reading_is_cut(|c| {
            c.limits.max_queued_bytes = 256 * 1024;
            // Only the queue bound can cut it within the test's time.
            c.limits.write_timeout = Duration::from_secs(600);
        })
        .await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_whose_socket_takes_nothing_is_cut_by_the_write_deadline() {
    let _one = ONE_AT_A_TIME.lock().await;
    bounded(Duration::from_secs(120), async {
        member_that_stops_reading_is_cut(|c| {
            // Only the write deadline can cut it within the test's time.
            c.limits.max_queued_bytes = usize::MAX;
            c.limits.max_queued_messages = 1 << 20;
            c.limits.write_timeout = Duration::from_secs(3);
        })
        .await
    })
    .await;
}
