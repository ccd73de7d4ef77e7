//! Calls between users across a real fleet (`redis-server` and several `zvon serve --cluster`
//! processes): device sockets on different nodes, decided in one place; the server API through
//! any node.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use zvon_interop::cluster::{ClusterNode, NodeOptions, TestRedis};
use zvon_interop::{bounded, msg_type, SignalClient, TestParticipant, SIGNAL_TIMEOUT};

/// One fleet at a time: each test runs several processes on a 2-core machine.
static FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A device socket (calls) registered through `node`.
async fn device(node: &ClusterNode, identity: &str, device: &str) -> Result<SignalClient> {
    let mut claims = zvon_interop::claims("", identity);
    claims.device = Some(device.to_string());
    let socket = SignalClient::connect(node.http_addr, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    socket
        .send_json(
            &json!({"type": "register", "protocol": 1, "token": zvon_interop::sign(&claims)}),
        )
        .await?;
    socket
        .wait_type("registered", SIGNAL_TIMEOUT)
        .await
        .with_context(|| format!("{identity}/{device} registering through {}", node.id))?;
    Ok(socket)
}

/// The first message of type `ty` about `call_id` (any call when empty) after index `from`.
async fn call_event(socket: &SignalClient, from: usize, ty: &str, call_id: &str) -> Result<Value> {
    Ok(socket
        .wait_from(from, SIGNAL_TIMEOUT, ty, |v| {
            msg_type(v) == ty && (call_id.is_empty() || v["call_id"] == call_id)
        })
        .await?
        .1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_decided_once_with_devices_on_three_nodes() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        let redis = TestRedis::start()?;
        let mut nodes = vec![];
        for id in ["n1", "n2", "n3"] {
            let mut options = NodeOptions::new(id, "both");
            options.extra = vec!["--ring-timeout".into(), "2s".into()];
            nodes.push(ClusterNode::start(&redis, options).await?);
        }
        let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

        // Ring every device, wherever it is registered; the first accept wins.
        let alice = device(n1, "alice", "a-phone").await?;
        let bob_phone = device(n2, "bob", "b-phone").await?;
        let bob_laptop = device(n3, "bob", "b-laptop").await?;
        alice
            .send_json(&json!({"type": "call_invite", "to": ["bob"], "media": "audio", "request_id": "inv"}))
            .await?;
        let created = call_event(&alice, 0, "call_created", "").await?;
        let call_id = created["call_id"].as_str().context("no call_id")?.to_string();
        for bob in [&bob_phone, &bob_laptop] {
            call_event(bob, 0, "call_incoming", &call_id).await?;
            bob.send_json(&json!({"type": "call_ack", "call_id": call_id})).await?;
        }
        call_event(&alice, 0, "call_ringing", &call_id).await?;
        // Both of bob's devices accept at once: exactly one gets the call.
        let accept = json!({"type": "call_accept", "call_id": call_id});
        tokio::try_join!(bob_phone.send_json(&accept), bob_laptop.send_json(&accept))?;
        let (phone, laptop) = tokio::join!(
            bob_phone.wait_from(0, SIGNAL_TIMEOUT, "answer", |v| {
                msg_type(v) == "call_accepted" || v["code"] == "call_already_answered"
            }),
            bob_laptop.wait_from(0, SIGNAL_TIMEOUT, "answer", |v| {
                msg_type(v) == "call_accepted" || v["code"] == "call_already_answered"
            }),
        );
        let winners = [phone?.1, laptop?.1]
            .iter()
            .filter(|v| msg_type(v) == "call_accepted")
            .count();
        assert_eq!(winners, 1, "double accept across nodes");
        let accepted = call_event(&alice, 0, "call_accepted", &call_id).await?;
        // The call room works from any node: alice through n1, bob through n2.
        let room = accepted["room"].as_str().context("no room")?.to_string();
        let a = TestParticipant::join(
            n1.http_addr,
            accepted["token"].as_str().context("no token")?,
            &room,
        )
        .await?;
        let bob_accepted = bob_phone
            .log()
            .into_iter()
            .chain(bob_laptop.log())
            .find(|v| msg_type(v) == "call_accepted")
            .context("bob's accepted")?;
        let b = TestParticipant::join(
            n2.http_addr,
            bob_accepted["token"].as_str().context("no token")?,
            &room,
        )
        .await?;
        a.signal
            .wait_from(0, SIGNAL_TIMEOUT, "bob in the call room", |v| {
                msg_type(v) == "participant_joined"
            })
            .await?;
        alice
            .send_json(&json!({"type": "call_hangup", "call_id": call_id}))
            .await?;
        call_event(&alice, 0, "call_ended", &call_id).await?;
        a.close().await;
        b.close().await;

        // Decline through another node; a missed call (ring timeout 2 s) too.
        let erin = device(n3, "erin", "e1").await?;
        let frank = device(n2, "frank", "f1").await?;
        let from = erin.log_len();
        erin.send_json(&json!({"type": "call_invite", "to": ["frank"], "media": "video"}))
            .await?;
        let call = call_event(&erin, from, "call_created", "").await?;
        let id = call["call_id"].as_str().unwrap_or_default().to_string();
        call_event(&frank, 0, "call_incoming", &id).await?;
        frank.send_json(&json!({"type": "call_decline", "call_id": id})).await?;
        call_event(&erin, from, "call_declined", &id).await?;
        let ended = call_event(&erin, from, "call_ended", &id).await?;
        assert_eq!(ended["reason"], "declined");
        let from = erin.log_len();
        erin.send_json(&json!({"type": "call_invite", "to": ["frank"], "media": "audio"}))
            .await?;
        let call = call_event(&erin, from, "call_created", "").await?;
        let id = call["call_id"].as_str().unwrap_or_default().to_string();
        let ended = call_event(&erin, from, "call_ended", &id).await?;
        assert_eq!(ended["reason"], "missed");

        // Glare, five times: two users on different nodes call each other at once and get
        // one call between them.
        for round in 0..5 {
            let (x, y) = (format!("carol{round}"), format!("dave{round}"));
            let carol = device(n2, &x, "c").await?;
            let dave = device(n3, &y, "d").await?;
            let to_dave = json!({"type": "call_invite", "to": [y], "media": "audio"});
            let to_carol = json!({"type": "call_invite", "to": [x], "media": "audio"});
            tokio::try_join!(carol.send_json(&to_dave), dave.send_json(&to_carol))?;
            let (c, d) = tokio::try_join!(
                call_event(&carol, 0, "call_created", ""),
                call_event(&dave, 0, "call_created", ""),
            )?;
            assert_eq!(c["call_id"], d["call_id"], "glare round {round}: two calls");
        }
        // Every decision happened on the node holding the calls lease.
        assert!(redis.cli(&["GET", "zvon:room:#calls"])?.starts_with("n1|"));
        assert!(n2.metric("zvon_cluster_proxied_sessions_total", &[]).await? >= 8.0);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api_calls_work_through_any_node() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(60), async {
        let redis = TestRedis::start()?;
        let n1 = ClusterNode::start(&redis, NodeOptions::new("n1", "both")).await?;
        let n2 = ClusterNode::start(&redis, NodeOptions::new("n2", "both")).await?;
        let bob = device(&n1, "bob", "b1").await?;
        let _alice = device(&n2, "alice", "a1").await?;
        let mut backend = zvon_interop::claims("", "backend");
        backend.grants.server_api = true;
        let bearer = format!("Bearer {}", zvon_interop::sign(&backend));
        // The backend talks to n2; calls live on n1 (bob registered there first).
        let created = http_json(
            n2.http_addr,
            "POST",
            "/api/calls",
            &bearer,
            Some(json!({"from": "alice", "to": ["bob"], "media": "audio"})),
        )
        .await?;
        assert_eq!(created.0, 200, "{:?}", created.1);
        let call_id = created.1["call_id"]
            .as_str()
            .context("no call_id")?
            .to_string();
        call_event(&bob, 0, "call_incoming", &call_id).await?;
        let report = http_json(
            n2.http_addr,
            "GET",
            &format!("/api/calls/{call_id}"),
            &bearer,
            None,
        )
        .await?;
        assert_eq!(report.0, 200, "{:?}", report.1);
        let unknown = http_json(n2.http_addr, "GET", "/api/calls/nope", &bearer, None).await?;
        assert_eq!(unknown.0, 404);
        let refused = http_json(n2.http_addr, "GET", "/api/calls/nope", "Bearer bad", None).await?;
        assert_eq!(refused.0, 401);
        Ok(())
    })
    .await;
}

/// One HTTP request with a JSON answer (status, body).
async fn http_json(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    authorization: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(SIGNAL_TIMEOUT, stream.read_to_end(&mut reply)).await??;
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}
