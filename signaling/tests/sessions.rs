//! Protocol-level tests of sessions and rooms over a real WebSocket, without media:
//! vanishing and resuming participants, replaced identities, room limits, timeouts, floods,
//! dev-mode tokens.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn vanished_participant_is_removed_after_grace_and_others_are_told() {
    let s = server(|c| c.limits.reconnect_grace = Duration::from_millis(400)).await;
    let (mut a, _) = join(&s, "r", "alice").await;
    let (b, b_joined) = join(&s, "r", "bob").await;
    let bob_id = b_joined["participant"]["id"].clone();
    expect_type(&mut a, "participant_joined").await;
    let dropped_at = std::time::Instant::now();
    drop(b); // TCP gone, no leave
    let left = expect_type(&mut a, "participant_left").await;
    assert_eq!(left["participant_id"], bob_id);
    assert_eq!(left["reason"], "disconnected");
    assert!(
        dropped_at.elapsed() >= Duration::from_millis(350),
        "removed only after the grace period"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn resume_within_grace_keeps_the_participant() {
    let s = server(|c| c.limits.reconnect_grace = Duration::from_millis(1500)).await;
    let (mut a, _) = join(&s, "r", "alice").await;
    let (b, b_joined) = join(&s, "r", "bob").await;
    expect_type(&mut a, "participant_joined").await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut b2 = connect(&s).await;
    let resume = b_joined["resume_token"]
        .as_str()
        .expect("resume token")
        .to_string();
    send(
        &mut b2,
        json!({"type":"join","protocol":1,"token":token("r","bob",|_|{}),"resume":resume}),
    )
    .await;
    let rejoined = expect_type(&mut b2, "joined").await;
    assert_eq!(rejoined["resumed"], true);
    assert_eq!(rejoined["participant"]["id"], b_joined["participant"]["id"]);
    // Past the original grace period alice has heard nothing about bob leaving.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    send(&mut a, json!({"type":"ping"})).await;
    let m = next(&mut a).await.expect("alice still connected");
    assert_eq!(
        m["type"], "pong",
        "no participant_left for a resumed participant, got {m}"
    );
    // A stale resume token is refused.
    let mut c = connect(&s).await;
    send(
        &mut c,
        json!({"type":"join","protocol":1,"token":token("r","bob",|_|{}),"resume":"nope"}),
    )
    .await;
    assert_eq!(expect_type(&mut c, "error").await["code"], "resume_failed");
    assert_eq!(close_code(&mut c).await, Some(CloseCode::from(4005)));
    s.shutdown().await;
}

#[tokio::test]
async fn same_identity_replaces_the_old_session() {
    let s = server(|_| {}).await;
    let (mut a, _) = join(&s, "r", "alice").await;
    let (mut b1, b1_joined) = join(&s, "r", "bob").await;
    expect_type(&mut a, "participant_joined").await;
    let (_b2, b2_joined) = join(&s, "r", "bob").await;
    assert_ne!(
        b1_joined["participant"]["id"],
        b2_joined["participant"]["id"]
    );
    let old = expect_type(&mut b1, "participant_left").await;
    assert_eq!(old["reason"], "replaced");
    let left = expect_type(&mut a, "participant_left").await;
    assert_eq!(left["participant_id"], b1_joined["participant"]["id"]);
    assert_eq!(left["reason"], "replaced");
    let joined = expect_type(&mut a, "participant_joined").await;
    assert_eq!(joined["participant"]["id"], b2_joined["participant"]["id"]);
    assert_eq!(
        b2_joined["participants"].as_array().map(Vec::len),
        Some(1),
        "sees alice only"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn full_room_refuses_and_other_rooms_keep_working() {
    let s = server(|c| c.limits.max_participants = 2).await;
    let (_a, _) = join(&s, "small", "a").await;
    let (_b, _) = join(&s, "small", "b").await;
    let mut c = connect(&s).await;
    send(
        &mut c,
        json!({"type":"join","protocol":1,"token":token("small","c",|_|{})}),
    )
    .await;
    assert_eq!(expect_type(&mut c, "error").await["code"], "room_full");
    assert_eq!(close_code(&mut c).await, Some(CloseCode::from(4004)));
    let (_d, joined) = join(&s, "other", "d").await;
    assert_eq!(joined["room"]["name"], "other");
    s.shutdown().await;
}

#[tokio::test]
async fn hidden_participant_is_not_announced() {
    let s = server(|_| {}).await;
    let (mut a, _) = join(&s, "r", "alice").await;
    let mut h = connect(&s).await;
    send(&mut h, json!({"type":"join","protocol":1,"token":token("r","recorder",|c| c.grants.hidden = true)})).await;
    let hj = expect_type(&mut h, "joined").await;
    assert_eq!(hj["participants"].as_array().map(Vec::len), Some(1));
    let (_b, bj) = join(&s, "r", "bob").await;
    assert_eq!(
        bj["participants"].as_array().map(Vec::len),
        Some(1),
        "bob sees alice, not the recorder"
    );
    let m = expect_type(&mut a, "participant_joined").await;
    assert_eq!(
        m["participant"]["identity"], "bob",
        "the recorder was never announced"
    );
    send(&mut h, json!({"type":"publish_offer","sdp":"v=0","tracks":[{"mid":"0","kind":"audio"}],"request_id":"p"})).await;
    let e = expect_type(&mut h, "error").await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("permission_denied"), Some("p"))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn silent_socket_times_out_and_floods_are_cut_off() {
    let s = server(|c| {
        c.limits.join_timeout = Duration::from_millis(300);
        c.limits.messages_per_second = 20;
    })
    .await;
    let mut idle = connect(&s).await;
    assert_eq!(
        expect_type(&mut idle, "error").await["code"],
        "join_timeout"
    );
    assert_eq!(close_code(&mut idle).await, Some(CloseCode::from(4001)));

    let (mut flooder, _) = join(&s, "r", "flooder").await;
    for _ in 0..200 {
        if flooder
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut saw_rate_limited = false;
    while let Some(m) = next(&mut flooder).await {
        if m["code"] == "rate_limited" {
            saw_rate_limited = true;
        }
    }
    assert!(saw_rate_limited, "a message flood ends with rate_limited");
    let (_ok, joined) = join(&s, "r2", "calm").await;
    assert_eq!(joined["type"], "joined");
    s.shutdown().await;
}

#[tokio::test]
async fn dev_tokens_only_in_dev_mode() {
    let dev = server(|_| {}).await;
    let (status, body) = http_get(&dev, "/api/dev-token?room=r&name=Ann").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"token\""));
    let (status, _) = http_get(&dev, "/").await;
    assert_eq!(status, 200, "browser client served");
    dev.shutdown().await;

    let prod = server(|c| c.dev_mode = false).await;
    let (status, body) = http_get(&prod, "/api/dev-token?room=r&name=Ann").await;
    assert_eq!(status, 403);
    assert!(body.contains("dev_mode_disabled"), "{body}");
    prod.shutdown().await;
}

#[tokio::test]
async fn empty_rooms_close_immediately_or_after_the_empty_timeout() {
    let s = server(|_| {}).await;
    let (mut a, _) = join(&s, "r", "alice").await;
    assert_eq!(s.room_count(), 1);
    send(&mut a, json!({"type":"leave"})).await;
    expect_type(&mut a, "left").await;
    assert_eq!(s.room_count(), 0, "closed at the last leave");
    s.shutdown().await;

    let s = server(|c| c.limits.empty_timeout = Duration::from_millis(300)).await;
    let (mut a, _) = join(&s, "r", "alice").await;
    send(&mut a, json!({"type":"leave"})).await;
    expect_type(&mut a, "left").await;
    assert_eq!(s.room_count(), 1, "kept open for the empty timeout");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.room_count(), 0, "closed after the empty timeout");
    s.shutdown().await;
}

#[tokio::test]
async fn closing_the_socket_is_leaving_without_waiting_for_grace() {
    let s = server(|c| c.limits.reconnect_grace = Duration::from_secs(30)).await;
    let (mut a, _) = join(&s, "r", "alice").await;
    let (mut b, b_joined) = join(&s, "r", "bob").await;
    expect_type(&mut a, "participant_joined").await;
    b.close(None).await.expect("close handshake");
    let left = expect_type(&mut a, "participant_left").await;
    assert_eq!(left["participant_id"], b_joined["participant"]["id"]);
    assert_eq!(left["reason"], "left");
    s.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_100_messages_passes_and_more_is_rate_limited() {
    let s = server(|_| {}).await;
    let mut ws = connect(&s).await;
    // As documented: 50 per second on average, bursts of up to 100.
    for _ in 0..100 {
        ws.feed(Message::Text(json!({"type":"ping"}).to_string().into()))
            .await
            .expect("feed");
    }
    ws.flush().await.expect("flush");
    for i in 0..100 {
        let m = next(&mut ws).await.expect("socket open");
        assert_eq!(m["type"], "pong", "reply {i} to the burst: {m}");
    }
    for _ in 0..20 {
        if ws
            .send(Message::Text(json!({"type":"ping"}).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(expect_type(&mut ws, "error").await["code"], "rate_limited");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::from(4029)));
    s.shutdown().await;
}

#[tokio::test]
async fn a_first_publish_offer_must_declare_a_track() {
    let s = server(|_| {}).await;
    let (mut ws, _) = join(&s, "r", "alice").await;
    send(
        &mut ws,
        json!({"type":"publish_offer","sdp":"v=0\r\n","tracks":[],"request_id":"p"}),
    )
    .await;
    let err = expect_type(&mut ws, "error").await;
    assert_eq!(err["code"], "invalid_request", "{err}");
    assert_eq!(err["request_id"], "p");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 to 8")),
        "{err}"
    );
    s.shutdown().await;
}
