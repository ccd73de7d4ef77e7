//! Hostile and broken input: each case gets the documented error, and a healthy call in another
//! room of the same server keeps receiving media afterwards.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use zvon_interop::{
    bounded, claims, sign, token, ConnectError, HealthyCall, SignalClient, TestParticipant,
    TestServer, SIGNAL_TIMEOUT,
};

const LIMIT: Duration = Duration::from_secs(90);

async fn start() -> Result<(TestServer, HealthyCall)> {
    let server = TestServer::start().await?;
    let call = HealthyCall::start(&server, "healthy").await?;
    Ok((server, call))
}

async fn finish(server: TestServer, call: HealthyCall) -> Result<()> {
    call.assert_flowing(Duration::from_secs(10))
        .await
        .context("healthy call after the attack")?;
    call.close().await;
    server.shutdown().await;
    Ok(())
}

async fn connect(server: &TestServer) -> Result<SignalClient> {
    SignalClient::connect(server.http_addr(), None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Sends a ping and expects the pong: the session is still alive.
async fn still_alive(ws: &SignalClient) -> Result<()> {
    let from = ws.log_len();
    ws.send_json(&json!({"type": "ping"})).await?;
    ws.wait_from(from, SIGNAL_TIMEOUT, "pong", |v| {
        zvon_interop::msg_type(v) == "pong"
    })
    .await?;
    Ok(())
}

/// Expects `error` with `code` and then the socket closed with `close_code`.
async fn expect_fatal(ws: &SignalClient, code: &str, close_code: u16) -> Result<()> {
    ws.wait_error(code, SIGNAL_TIMEOUT).await?;
    let closed = ws.wait_closed(SIGNAL_TIMEOUT).await?;
    ensure!(
        closed == Some(close_code),
        "after {code}: socket closed with {closed:?}, expected {close_code}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_json_is_invalid_message() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let ws = connect(&server).await?;
        ws.send_text("{\"type\": \"join\", \"protocol\": 1,")
            .await?;
        let err = ws.wait_error("invalid_message", SIGNAL_TIMEOUT).await?;
        ensure!(
            err.get("request_id").is_none(),
            "error to unparseable input carries request_id: {err}"
        );
        let mark = ws.log_len();
        ws.send_text("[1, 2, 3]").await?;
        ws.wait_from(mark, SIGNAL_TIMEOUT, "second invalid_message", |v| {
            v["code"] == "invalid_message"
        })
        .await?;
        still_alive(&ws).await?;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_type_is_unknown_type() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let ws = connect(&server).await?;
        ws.send_json(&json!({"type": "frobnicate", "request_id": "x1"}))
            .await?;
        let err = ws.wait_error("unknown_type", SIGNAL_TIMEOUT).await?;
        ensure!(
            err["request_id"] == "x1",
            "unknown_type error does not echo request_id: {err}"
        );
        still_alive(&ws).await?;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_message_is_refused_and_closed() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let ws = connect(&server).await?;
        let big = json!({"type": "ping", "pad": "x".repeat(1100 * 1024)}).to_string();
        ensure!(big.len() > 1024 * 1024);
        ws.send_text(big).await?;
        expect_fatal(&ws, "message_too_large", 1009).await?;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_without_token_is_unauthorized() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let ws = connect(&server).await?;
        ws.send_json(&json!({"type": "join", "protocol": 1, "request_id": "j"}))
            .await?;
        expect_fatal(&ws, "unauthorized", 4001).await?;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_with_bad_signature_is_unauthorized() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let ws = connect(&server).await?;
        let forged = zvon_signaling::token::mint(
            &claims("attack", "mallory"),
            "not-the-secret-not-the-secret",
        )
        .expect("sign");
        ws.send_json(&json!({"type": "join", "protocol": 1, "token": forged}))
            .await?;
        expect_fatal(&ws, "unauthorized", 4001).await?;
        // Garbage that is not a JWT at all.
        let ws2 = connect(&server).await?;
        ws2.send_json(&json!({"type": "join", "protocol": 1, "token": "not.a.jwt"}))
            .await?;
        expect_fatal(&ws2, "unauthorized", 4001).await?;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_with_expired_token_is_token_expired() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let ws = connect(&server).await?;
        let mut c = claims("attack", "late");
        c.exp = zvon_signaling::token::now_secs() - 60;
        ws.send_json(&json!({"type": "join", "protocol": 1, "token": sign(&c)}))
            .await?;
        expect_fatal(&ws, "token_expired", 4001).await?;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_naming_another_room_is_wrong_room() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let ws = connect(&server).await?;
        ws.send_json(
            &json!({"type": "join", "protocol": 1, "token": token("X", "xavier"), "room": "Y"}),
        )
        .await?;
        expect_fatal(&ws, "wrong_room", 4003).await?;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_sdp_is_invalid_sdp_and_session_goes_on() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let p =
            TestParticipant::join(server.http_addr(), &token("attack", "sloppy"), "attack").await?;
        p.signal
            .send_json(&json!({
                "type": "publish_offer",
                "request_id": "bad-sdp",
                "sdp": "v=0\r\nthis is not\r\nm=an sdp at all\r\n",
                "tracks": [{"mid": "0", "kind": "audio", "source": "microphone", "muted": false}],
            }))
            .await?;
        let err = p.signal.wait_error("invalid_sdp", SIGNAL_TIMEOUT).await?;
        ensure!(
            err["request_id"] == "bad-sdp",
            "invalid_sdp does not echo request_id: {err}"
        );
        // A message for the client's developer: no memory addresses, no parser internals.
        let message = err["message"].as_str().unwrap_or_default();
        ensure!(
            !message.is_empty()
                && !message.contains("0x")
                && !message.contains('{')
                && !message.contains("Error")
                && message.len() < 160,
            "invalid_sdp message leaks internals: {message:?}"
        );
        p.ping().await.context("session after invalid_sdp")?;
        ensure!(
            !p.signal.is_ended(),
            "socket closed after a non-fatal error"
        );
        p.close().await;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_without_grant_is_permission_denied() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let mut c = claims("attack", "viewer");
        c.grants.can_publish = false;
        let mut p = TestParticipant::join(server.http_addr(), &sign(&c), "attack").await?;
        let res = p.publish().await;
        ensure!(
            res.is_err(),
            "publish_offer without can_publish was accepted"
        );
        p.signal
            .wait_error("permission_denied", SIGNAL_TIMEOUT)
            .await?;
        p.ping().await.context("session after permission_denied")?;
        p.close().await;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_datagrams_are_dropped_and_counted() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let before = server.server.sfu_stats.snapshot();
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let mut random = [0u8; 120];
        for b in random.iter_mut() {
            *b = rand::random();
        }
        random[0] = 0xff; // not STUN (0-3), DTLS (20-63) nor RTP (128-191)
        let datagrams: Vec<Vec<u8>> = vec![
            random.to_vec(),
            // RTP version 2, PT 96, but only 6 of the 12 header bytes.
            vec![0x80, 0x60, 0x12, 0x34, 0x00, 0x01],
            // STUN binding request type + length, cut inside the magic cookie.
            vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12],
            // A DTLS 1.2 handshake record header announcing 64 bytes, with garbage after it.
            {
                let mut d = vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x40];
                d.extend((0..64).map(|i| i as u8 ^ 0x5a));
                d
            },
            // A ClientHello-looking record that stops after the record header.
            vec![0x16, 0xfe, 0xff, 0, 0],
        ];
        let mut sent = 0u64;
        for addr in &server.server.media_addrs {
            for _round in 0..3 {
                for d in &datagrams {
                    sock.send_to(d, addr).await?;
                    sent += 1;
                }
            }
        }
        ensure!(sent > 0, "server has no media addresses");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = server.server.sfu_stats.snapshot();
            let grew = now.datagrams_dropped_unknown_source - before.datagrams_dropped_unknown_source;
            if grew >= sent {
                ensure!(grew == sent, "sent {sent} garbage datagrams but dropped_unknown_source grew by {grew}");
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "sent {sent} garbage datagrams, dropped_unknown_source grew by only {grew} in 5 s; stats {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_flood_is_rate_limited() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let addr = server.http_addr();
        let attempts = (0..200).map(|i| async move {
            match SignalClient::connect(addr, None).await {
                Err(ConnectError::Http(429)) => "http_429".to_string(),
                Err(ConnectError::Http(s)) => format!("http_{s}"),
                Err(ConnectError::Other(e)) => format!("connect_error: {e:#}"),
                Ok(ws) => {
                    let t = token("flood", &format!("flood{i}"));
                    if ws
                        .send_json(&json!({"type": "join", "protocol": 1, "token": t}))
                        .await
                        .is_err()
                    {
                        return "send_failed".to_string();
                    }
                    let reply = ws
                        .wait_from(0, SIGNAL_TIMEOUT, "join reply", |v| {
                            matches!(
                                zvon_interop::msg_type(v),
                                "joined" | "error" | "__closed" | "__eof"
                            )
                        })
                        .await;
                    ws.close().await;
                    match reply {
                        Ok((_, v)) if v["type"] == "error" => {
                            format!("error_{}", v["code"].as_str().unwrap_or("?"))
                        }
                        Ok((_, v)) => v["type"].as_str().unwrap_or("?").to_string(),
                        Err(e) => format!("no_reply: {e:#}"),
                    }
                }
            }
        });
        let outcomes = futures_util::future::join_all(attempts).await;
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for o in &outcomes {
            let key = if o.starts_with("connect_error") || o.starts_with("no_reply") {
                o.split(':').next().unwrap_or(o).to_string()
            } else {
                o.clone()
            };
            *counts.entry(key).or_default() += 1;
        }
        eprintln!("flood outcomes: {counts:?}");
        let refused = counts.get("http_429").copied().unwrap_or(0)
            + counts.get("error_rate_limited").copied().unwrap_or(0);
        ensure!(
            refused > 0,
            "200 join attempts, none refused with 429 / rate_limited: {counts:?}"
        );
        ensure!(
            refused < 200,
            "every one of 200 join attempts refused, even the first: {counts:?}"
        );

        call.assert_flowing(Duration::from_secs(10))
            .await
            .context("healthy call during/after the flood")?;

        // The limit is per second: a legitimate join a little later works again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let late = TestParticipant::join(addr, &token("after-flood", "latecomer"), "after-flood")
            .await
            .context("a legitimate join 1.5 s after the flood")?;
        late.close().await;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_whose_media_connection_dies_gets_media_timeout_not_media_unavailable() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let mut p = server.publishing_participant("flaky", "flaky").await?;
        // The client's network drops its media (ICE goes silent); its socket stays.
        p.stop_media().await;
        let publisher = p.publisher.take().context("publisher")?;
        publisher.peer.close().await;
        p.subscriber().close().await;
        p.signal
            .wait_error("media_timeout", Duration::from_secs(40))
            .await?;
        let closed = p.signal.wait_closed(SIGNAL_TIMEOUT).await?;
        ensure!(
            closed == Some(4504),
            "closed with {closed:?}, expected 4504"
        );
        let (_, metrics) = zvon_interop::http_get(server.server.metrics_addr, "/metrics").await?;
        let paged = zvon_interop::cluster::sum_metric(
            &metrics,
            "zvon_signaling_errors_total",
            &[("code", "media_unavailable")],
        );
        ensure!(
            paged == 0.0,
            "a client's failed media counted as media_unavailable ({paged})"
        );
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_oversized_message_is_message_too_large() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        // Just over the limit, and far over it: both get the documented error and 1009.
        for size in [1024 * 1024 + 1, 3 * 1024 * 1024] {
            let ws = connect(&server).await?;
            let pad = size - r#"{"type":"ping","pad":""}"#.len();
            let big = json!({"type": "ping", "pad": "x".repeat(pad)}).to_string();
            ensure!(big.len() == size);
            ws.send_text(big).await?;
            expect_fatal(&ws, "message_too_large", 1009)
                .await
                .with_context(|| format!("a {size}-byte message"))?;
        }
        finish(server, call).await
    })
    .await;
}

/// Opens `/rtc` with `headers`, joins `room` and waits for `joined`; the socket is closed after.
async fn upgrade_and_join(
    server: &TestServer,
    headers: &[(&'static str, &str)],
    room: &str,
    identity: &str,
) -> Result<()> {
    let ws = SignalClient::connect_with_headers(server.http_addr(), headers, None)
        .await
        .map_err(|e| anyhow::anyhow!("upgrade with {headers:?}: {e}"))?;
    ws.send_json(&json!({"type": "join", "protocol": 1, "token": token(room, identity)}))
        .await?;
    ws.wait_type("joined", SIGNAL_TIMEOUT)
        .await
        .with_context(|| format!("join after an upgrade with {headers:?}"))?;
    ws.close().await;
    Ok(())
}

/// `n` upgrades at once, the i-th with the headers `headers(i)` gives; how many got a socket
/// and how many were refused with 429.
async fn upgrade_burst(
    server: &TestServer,
    n: usize,
    headers: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> Result<(usize, usize)> {
    let addr = server.http_addr();
    let attempts = (0..n).map(|i| {
        let headers = headers(i);
        async move {
            let borrowed: Vec<(&'static str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            match SignalClient::connect_with_headers(addr, &borrowed, None).await {
                Ok(ws) => {
                    ws.close().await;
                    Ok(true)
                }
                Err(ConnectError::Http(429)) => Ok(false),
                Err(e) => Err(anyhow::anyhow!("upgrade {i}: {e}")),
            }
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let mut upgraded = 0;
    for o in outcomes {
        if o? {
            upgraded += 1;
        }
    }
    Ok((upgraded, n - upgraded))
}

/// Behind a trusted reverse proxy every user arrives from the proxy's address: the upgrade
/// limit must count the client the proxy names, or one flooding user locks everybody out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_limit_is_per_client_behind_a_trusted_proxy() {
    bounded(LIMIT, async {
        let mut config = zvon_signaling::ServerConfig::for_tests();
        config.trusted_proxies =
            zvon_signaling::client_ip::TrustedProxies::new(vec!["127.0.0.1".parse()?]);
        let server = TestServer::start_with(config).await?;
        let call = HealthyCall::start(&server, "healthy").await?;
        let flooder = || vec![("x-forwarded-for", "203.0.113.1".to_string())];
        let (_, refused) = upgrade_burst(&server, 100, |_| flooder()).await?;
        ensure!(
            refused > 0,
            "100 upgrades at once from one client behind the proxy, none refused"
        );
        // Right after the flood another user behind the same proxy gets in.
        upgrade_and_join(
            &server,
            &[("x-forwarded-for", "203.0.113.2")],
            "behind-proxy",
            "neighbour",
        )
        .await
        .context("another client behind the proxy while the first one is throttled")?;
        // Still limited: 30 more at once exceed any refill (the bucket holds at most 20).
        let (_, refused) = upgrade_burst(&server, 30, |_| flooder()).await?;
        ensure!(refused > 0, "the flooding client is no longer limited");
        finish(server, call).await
    })
    .await;
}

/// Without --trusted-proxies a client's own X-Forwarded-For is ignored: it cannot make up a new
/// address per upgrade to escape the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_headers_of_an_untrusted_peer_are_ignored() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let (_, refused) = upgrade_burst(&server, 100, |i| {
            vec![
                ("x-forwarded-for", format!("198.51.100.{}", i % 250)),
                ("forwarded", format!("for=198.51.100.{}", i % 250)),
            ]
        })
        .await?;
        ensure!(
            refused > 0,
            "100 upgrades with made-up forwarding headers, none refused: the headers were believed"
        );
        finish(server, call).await
    })
    .await;
}

/// A page on another site must not open `/rtc` in its visitor's name (a dev server on the
/// visitor's machine hands out tokens); the server's own pages and non-browser clients may.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_from_a_foreign_origin_is_refused_403() {
    bounded(LIMIT, async {
        let (server, call) = start().await?;
        let addr = server.http_addr();
        match SignalClient::connect_with_headers(addr, &[("origin", "http://evil.example")], None)
            .await
        {
            Err(ConnectError::Http(403)) => {}
            Err(e) => anyhow::bail!("upgrade from http://evil.example: {e}, expected HTTP 403"),
            Ok(ws) => {
                ws.close().await;
                anyhow::bail!("upgrade from http://evil.example was accepted");
            }
        }
        let own = format!("http://{addr}");
        upgrade_and_join(&server, &[("origin", &own)], "origins", "same-origin").await?;
        upgrade_and_join(&server, &[], "origins", "no-origin").await?;
        finish(server, call).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listed_origin_may_upgrade() {
    bounded(LIMIT, async {
        let mut config = zvon_signaling::ServerConfig::for_tests();
        config.allowed_origins =
            zvon_signaling::origin::AllowedOrigins::new(vec!["https://app.example".parse()?]);
        let server = TestServer::start_with(config).await?;
        let call = HealthyCall::start(&server, "healthy").await?;
        upgrade_and_join(
            &server,
            &[("origin", "https://app.example")],
            "origins",
            "listed",
        )
        .await?;
        let evil = SignalClient::connect_with_headers(
            server.http_addr(),
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
        ensure!(
            matches!(evil, Err(ConnectError::Http(403))),
            "an origin not in the list was not refused with 403"
        );
        finish(server, call).await
    })
    .await;
}
