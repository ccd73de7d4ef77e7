//! Calls between users over real sockets: several simulated devices per user, the exact
//! events each device sees, the races the protocol resolves, and signed webhooks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::*;
use serde_json::{json, Value};
use zvon_signaling::calls::webhooks::verify;
use zvon_signaling::{RunningServer, ServerConfig};

async fn register(s: &RunningServer, user: &str, device: &str) -> Ws {
    let mut ws = connect(s).await;
    let t = token("", user, |c| {
        c.device = Some(device.into());
        c.name = Some(format!("{user} on {device}"));
    });
    send(&mut ws, json!({"type":"register","protocol":1,"token":t})).await;
    let r = expect_type(&mut ws, "registered").await;
    assert_eq!(
        (r["identity"].as_str(), r["device"].as_str()),
        (Some(user), Some(device))
    );
    ws
}

/// Asserts that nothing but pings arrives for a short while.
async fn quiet(ws: &mut Ws, what: &str) {
    send(ws, json!({"type":"ping","request_id":"quiet"})).await;
    let m = next(ws)
        .await
        .unwrap_or_else(|| panic!("{what}: socket closed"));
    assert_eq!(m["type"], "pong", "{what}: expected nothing, got {m}");
}

/// Records every webhook POST: (event, identity, call, signature valid).
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<(String, Value, bool)>>>);

impl Hooks {
    async fn serve(&self) -> String {
        let store = self.0.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let store = store.clone();
                async move {
                    let sig = headers
                        .get("zvon-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let now = zvon_signaling::token::now_secs();
                    let ok = verify(
                        ServerConfig::DEV_API_SECRET,
                        sig,
                        &body,
                        now,
                        Duration::from_secs(300),
                    );
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let event = v["event"].as_str().unwrap_or("?").to_string();
                    store.lock().expect("lock").push((event, v, ok));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/hooks")
    }

    fn events(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|(e, _, _)| e.clone())
            .collect()
    }

    async fn wait_for(&self, event: &str) -> Value {
        for _ in 0..100 {
            if let Some((_, v, ok)) = self
                .0
                .lock()
                .expect("lock")
                .iter()
                .find(|(e, _, _)| e == event)
            {
                assert!(ok, "webhook {event} signature verifies");
                return v.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {event} webhook; got {:?}", self.events());
    }
}

#[tokio::test]
async fn one_to_one_call_rings_all_devices_and_ends_for_both() {
    let hooks = Hooks::default();
    let url = hooks.serve().await;
    let s = server(|c| c.webhook_url = Some(url)).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    let mut b2 = register(&s, "bob", "b2").await;

    send(
        &mut a1,
        json!({"type":"call_invite","to":["bob"],"media":"video","request_id":"inv"}),
    )
    .await;
    let created = expect_type(&mut a1, "call_created").await;
    assert_eq!(created["request_id"], "inv");
    let call = created["call_id"].as_str().expect("id").to_string();
    for b in [&mut b1, &mut b2] {
        let inc = expect_type(b, "call_incoming").await;
        assert_eq!(
            (inc["call_id"].as_str(), inc["from"]["identity"].as_str()),
            (Some(call.as_str()), Some("alice"))
        );
        send(b, json!({"type":"call_ack","call_id":call})).await;
    }
    let ringing = expect_type(&mut a1, "call_ringing").await;
    assert_eq!(ringing["identity"], "bob");

    send(&mut b1, json!({"type":"call_accept","call_id":call})).await;
    let a_acc = expect_type(&mut a1, "call_accepted").await;
    let b_acc = expect_type(&mut b1, "call_accepted").await;
    let stopped = expect_type(&mut b2, "call_stopped_ringing").await;
    assert_eq!(stopped["reason"], "answered_elsewhere");
    assert_eq!(a_acc["room"], b_acc["room"]);
    assert_ne!(a_acc["token"], b_acc["token"], "tokens are personal");

    // Both join the call's room with the tokens they were given.
    let room = a_acc["room"].as_str().expect("room").to_string();
    let mut a_media = connect(&s).await;
    send(
        &mut a_media,
        json!({"type":"join","protocol":1,"token":a_acc["token"],"room":room}),
    )
    .await;
    expect_type(&mut a_media, "joined").await;
    let mut b_media = connect(&s).await;
    send(
        &mut b_media,
        json!({"type":"join","protocol":1,"token":b_acc["token"],"room":room}),
    )
    .await;
    let joined = expect_type(&mut b_media, "joined").await;
    assert_eq!(joined["participants"][0]["identity"], "alice");

    send(&mut a1, json!({"type":"call_hangup","call_id":call})).await;
    assert_eq!(expect_type(&mut a1, "call_ended").await["reason"], "hangup");
    assert_eq!(expect_type(&mut b1, "call_ended").await["reason"], "hangup");
    expect_type(&mut b_media, "left").await;
    quiet(&mut b2, "the other device is not part of the call").await;
    // The room's tokens outlive the call; the room does not.
    let mut late = connect(&s).await;
    send(
        &mut late,
        json!({"type":"join","protocol":1,"token":b_acc["token"]}),
    )
    .await;
    assert_eq!(
        expect_type(&mut late, "error").await["code"],
        "unknown_call"
    );

    let ended = hooks.wait_for("call.ended").await;
    assert_eq!(ended["call"]["members"], json!(["alice", "bob"]));
    assert_eq!(ended["call"]["end_reason"], "hangup");
    let events = hooks.events();
    assert_eq!(
        events,
        [
            "call.started",
            "call.ringing",
            "call.answered",
            "call.ended"
        ],
        "in order"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn calling_each_other_at_the_same_moment_makes_one_call() {
    let s = server(|_| {}).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    send(
        &mut a1,
        json!({"type":"call_invite","to":["bob"],"media":"audio"}),
    )
    .await;
    send(
        &mut b1,
        json!({"type":"call_invite","to":["alice"],"media":"audio"}),
    )
    .await;
    let a_created = expect_type(&mut a1, "call_created").await;
    let b_created = expect_type(&mut b1, "call_created").await;
    assert_eq!(
        a_created["call_id"], b_created["call_id"],
        "one call, not two"
    );
    let a_acc = expect_type(&mut a1, "call_accepted").await;
    let b_acc = expect_type(&mut b1, "call_accepted").await;
    assert_eq!(a_acc["room"], b_acc["room"]);
    s.shutdown().await;
}

#[tokio::test]
async fn two_devices_accepting_at_once_exactly_one_wins() {
    let s = server(|_| {}).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    let mut b2 = register(&s, "bob", "b2").await;
    send(
        &mut a1,
        json!({"type":"call_invite","to":["bob"],"media":"video"}),
    )
    .await;
    let call = expect_type(&mut a1, "call_created").await["call_id"].clone();
    expect_type(&mut b1, "call_incoming").await;
    expect_type(&mut b2, "call_incoming").await;
    send(&mut b1, json!({"type":"call_accept","call_id":call})).await;
    send(&mut b2, json!({"type":"call_accept","call_id":call})).await;
    let mut winners = 0;
    let mut losers = 0;
    for b in [&mut b1, &mut b2] {
        loop {
            let m = next(b).await.expect("socket open");
            match m["type"].as_str() {
                Some("call_accepted") => {
                    winners += 1;
                    break;
                }
                Some("error") => {
                    assert_eq!(m["code"], "call_already_answered");
                    losers += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    assert_eq!((winners, losers), (1, 1));
    expect_type(&mut a1, "call_accepted").await;
    s.shutdown().await;
}

#[tokio::test]
async fn caller_leaving_while_ringing_stops_the_ringing() {
    let s = server(|_| {}).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    send(
        &mut a1,
        json!({"type":"call_invite","to":["bob"],"media":"video"}),
    )
    .await;
    expect_type(&mut b1, "call_incoming").await;
    a1.close(None).await.expect("close");
    assert_eq!(
        expect_type(&mut b1, "call_stopped_ringing").await["reason"],
        "cancelled"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn callee_dropping_mid_call_and_coming_back_keeps_the_call() {
    let s = server(|c| c.limits.reconnect_grace = Duration::from_secs(2)).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    send(
        &mut a1,
        json!({"type":"call_invite","to":["bob"],"media":"video"}),
    )
    .await;
    let call = expect_type(&mut a1, "call_created").await["call_id"].clone();
    expect_type(&mut b1, "call_incoming").await;
    send(&mut b1, json!({"type":"call_accept","call_id":call})).await;
    let b_acc = expect_type(&mut b1, "call_accepted").await;
    let a_acc = expect_type(&mut a1, "call_accepted").await;
    let room = b_acc["room"].clone();
    let mut a_media = connect(&s).await;
    send(
        &mut a_media,
        json!({"type":"join","protocol":1,"token":a_acc["token"]}),
    )
    .await;
    expect_type(&mut a_media, "joined").await;
    let mut b_media = connect(&s).await;
    send(
        &mut b_media,
        json!({"type":"join","protocol":1,"token":b_acc["token"]}),
    )
    .await;
    let b_joined = expect_type(&mut b_media, "joined").await;
    expect_type(&mut a_media, "participant_joined").await;

    // Bob's network goes away: both sockets drop without a goodbye.
    drop(b1);
    drop(b_media);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _b1 = register(&s, "bob", "b1").await;
    let mut b_media = connect(&s).await;
    let resume = b_joined["resume_token"].clone();
    send(
        &mut b_media,
        json!({"type":"join","protocol":1,"token":b_acc["token"],"room":room,"resume":resume}),
    )
    .await;
    assert_eq!(expect_type(&mut b_media, "joined").await["resumed"], true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    quiet(&mut a1, "alice's call goes on").await;
    quiet(&mut a_media, "alice's room goes on").await;
    let state = s
        .call_report(call.as_str().expect("id"))
        .expect("call known");
    assert_eq!(state["state"], "active");
    s.shutdown().await;
}

#[tokio::test]
async fn self_offline_and_flooding_callers_get_clear_answers() {
    let hooks = Hooks::default();
    let url = hooks.serve().await;
    let s = server(|c| c.webhook_url = Some(url)).await;
    let mut a1 = register(&s, "alice", "a1").await;
    send(
        &mut a1,
        json!({"type":"call_invite","to":["alice"],"media":"audio","request_id":"self"}),
    )
    .await;
    let e = expect_type(&mut a1, "error").await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("cannot_call_self"), Some("self"))
    );

    send(
        &mut a1,
        json!({"type":"call_invite","to":["nobody-online"],"media":"audio"}),
    )
    .await;
    expect_type(&mut a1, "call_created").await;
    assert_eq!(
        expect_type(&mut a1, "call_unreachable").await["identity"],
        "nobody-online"
    );
    let push = hooks.wait_for("call.unreachable").await;
    assert_eq!(
        push["identity"], "nobody-online",
        "the backend learns whom to push"
    );

    let mut limited = false;
    for _ in 0..15 {
        send(
            &mut a1,
            json!({"type":"call_invite","to":["carol"],"media":"audio"}),
        )
        .await;
    }
    while let Some(m) = next(&mut a1).await {
        if m["code"] == "too_many_calls" {
            limited = true;
            break;
        }
    }
    assert!(limited, "an invite flood is refused with too_many_calls");
    send(&mut a1, json!({"type":"ping"})).await;
    expect_type(&mut a1, "pong").await;
    s.shutdown().await;
}

#[tokio::test]
async fn unanswered_call_is_missed_on_every_device() {
    let s = server(|c| c.calls.ring_timeout = Duration::from_millis(700)).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    let mut b2 = register(&s, "bob", "b2").await;
    send(
        &mut a1,
        json!({"type":"call_invite","to":["bob"],"media":"audio"}),
    )
    .await;
    let call = expect_type(&mut a1, "call_created").await["call_id"].clone();
    expect_type(&mut b1, "call_incoming").await;
    send(&mut b1, json!({"type":"call_ack","call_id":call})).await;
    expect_type(&mut b2, "call_incoming").await;
    expect_type(&mut a1, "call_missed").await;
    assert_eq!(expect_type(&mut a1, "call_ended").await["reason"], "missed");
    assert_eq!(
        expect_type(&mut b1, "call_stopped_ringing").await["reason"],
        "missed"
    );
    assert_eq!(
        expect_type(&mut b2, "call_stopped_ringing").await["reason"],
        "missed"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn calls_work_while_the_webhook_endpoint_is_down() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hooks", dead.local_addr().expect("addr"));
    drop(dead);
    let s = server(|c| c.webhook_url = Some(url)).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    let started = std::time::Instant::now();
    send(
        &mut a1,
        json!({"type":"call_invite","to":["bob"],"media":"audio"}),
    )
    .await;
    let call = expect_type(&mut a1, "call_created").await["call_id"].clone();
    expect_type(&mut b1, "call_incoming").await;
    send(&mut b1, json!({"type":"call_accept","call_id":call})).await;
    expect_type(&mut a1, "call_accepted").await;
    send(&mut b1, json!({"type":"call_hangup","call_id":call})).await;
    expect_type(&mut a1, "call_ended").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "webhook retries never hold a call up"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn backend_rings_and_ends_calls_through_the_server_api() {
    let s = server(|_| {}).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    let backend = token("", "backend", |c| c.grants.server_api = true);
    let user = token("", "mallory", |_| {});
    let body = json!({"from":"alice","to":["bob"],"media":"video"}).to_string();
    let (status, _) = http_request(&s, "POST", "/api/calls", Some(&user), Some(&body)).await;
    assert_eq!(status, 403, "a user token cannot use the server API");
    let (status, reply) = http_request(&s, "POST", "/api/calls", Some(&backend), Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
    let call = expect_type(&mut b1, "call_incoming").await["call_id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _) = http_request(
        &s,
        "POST",
        &format!("/api/calls/{call}/end"),
        Some(&backend),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        expect_type(&mut a1, "call_ended").await["reason"],
        "ended_by_server"
    );
    assert_eq!(
        expect_type(&mut b1, "call_stopped_ringing").await["reason"],
        "ended"
    );
    let (status, report) = http_request(
        &s,
        "GET",
        &format!("/api/calls/{call}"),
        Some(&backend),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(report.contains("ended_by_server"), "{report}");
    s.shutdown().await;
}

#[tokio::test]
async fn server_api_errors_are_json_with_a_code() {
    let s = server(|_| {}).await;
    let backend = token("", "backend", |c| c.grants.server_api = true);
    for body in [
        json!({"from":"alice","to":["bob"],"media":"smoke"}).to_string(),
        "{not json".to_string(),
        json!({"from":"alice"}).to_string(),
    ] {
        let (status, reply) =
            http_request(&s, "POST", "/api/calls", Some(&backend), Some(&body)).await;
        assert_eq!(status, 400, "{body}: {reply}");
        let (head, json_body) = reply.split_once("\r\n\r\n").expect("HTTP response");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{body}: {head}"
        );
        let v: serde_json::Value = serde_json::from_str(json_body).expect("a JSON body");
        assert_eq!(v["error"], "invalid_request", "{body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn an_answered_call_ends_when_a_member_never_joins_its_room() {
    let s = server(|c| c.calls.join_timeout = Duration::from_millis(800)).await;
    let mut a1 = register(&s, "alice", "a1").await;
    let mut b1 = register(&s, "bob", "b1").await;
    let invite = json!({"type":"call_invite","to":["bob"],"media":"audio"});

    // Both join: the call outlives the join timeout.
    send(&mut a1, invite.clone()).await;
    let id = expect_type(&mut a1, "call_created").await["call_id"].clone();
    expect_type(&mut b1, "call_incoming").await;
    send(&mut b1, json!({"type":"call_accept","call_id":id})).await;
    let a_acc = expect_type(&mut a1, "call_accepted").await;
    let b_acc = expect_type(&mut b1, "call_accepted").await;
    let mut media = vec![];
    for acc in [&a_acc, &b_acc] {
        let mut ws = connect(&s).await;
        send(
            &mut ws,
            json!({"type":"join","protocol":1,"token":acc["token"],"room":acc["room"]}),
        )
        .await;
        expect_type(&mut ws, "joined").await;
        media.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    quiet(&mut a1, "a call both joined goes on").await;
    assert_eq!(
        s.call_report(id.as_str().expect("id")).expect("report")["state"],
        "active"
    );
    send(&mut a1, json!({"type":"call_hangup","call_id":id})).await;
    expect_type(&mut a1, "call_ended").await;
    expect_type(&mut b1, "call_ended").await;

    // Bob answers and never joins (his app died): the call ends instead of staying active.
    send(&mut a1, invite.clone()).await;
    let id = expect_type(&mut a1, "call_created").await["call_id"].clone();
    expect_type(&mut b1, "call_incoming").await;
    send(&mut b1, json!({"type":"call_accept","call_id":id})).await;
    let a_acc = expect_type(&mut a1, "call_accepted").await;
    expect_type(&mut b1, "call_accepted").await;
    let mut a_media = connect(&s).await;
    send(
        &mut a_media,
        json!({"type":"join","protocol":1,"token":a_acc["token"],"room":a_acc["room"]}),
    )
    .await;
    expect_type(&mut a_media, "joined").await;
    assert_eq!(
        expect_type(&mut a1, "call_ended").await["reason"],
        "not_joined"
    );
    assert_eq!(
        expect_type(&mut b1, "call_ended").await["reason"],
        "not_joined"
    );
    expect_type(&mut a_media, "left").await;
    let report = s.call_report(id.as_str().expect("id")).expect("report");
    assert_eq!(report["end_reason"], "not_joined");
    s.shutdown().await;
}
