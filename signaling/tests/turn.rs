//! TURN credentials in `joined` over a real WebSocket: present and fresh when a TURN server is
//! configured (also on a resume), an empty list when not. The relay itself is tested with a
//! real coturn and Chromium (tests/browser/turn.mjs).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use zvon_signaling::token::now_secs;
use zvon_signaling::turn::{credential, TurnConfig};

const SECRET: &str = "coturn-static-auth-secret";

fn check_ice_servers(joined: &serde_json::Value, identity: &str, ttl: u64) {
    let servers = joined["ice_servers"].as_array().expect("ice_servers list");
    assert_eq!(servers.len(), 1, "{joined}");
    let s = &servers[0];
    assert_eq!(
        s["urls"],
        json!([
            "turn:127.0.0.1:3478?transport=udp",
            "turns:127.0.0.1:443?transport=tcp"
        ])
    );
    let username = s["username"].as_str().expect("username");
    let (expiry, who) = username.split_once(':').expect("expiry:identity");
    assert_eq!(who, identity);
    let expiry: u64 = expiry.parse().expect("expiry in unix seconds");
    let now = now_secs();
    assert!(
        expiry >= now + ttl - 5 && expiry <= now + ttl,
        "expiry {expiry} is not now ({now}) + {ttl}"
    );
    assert_eq!(s["credential"], credential(SECRET, username));
}

#[tokio::test]
async fn joined_carries_turn_credentials_and_a_resume_gets_fresh_ones() {
    let s = server(|c| {
        c.limits.reconnect_grace = Duration::from_secs(5);
        c.turn = TurnConfig::new(
            vec![
                "turn:127.0.0.1:3478?transport=udp".into(),
                "turns:127.0.0.1:443?transport=tcp".into(),
            ],
            Some(SECRET.into()),
            Duration::from_secs(3600),
        )
        .expect("valid TURN settings");
    })
    .await;
    let (b, joined) = join(&s, "r", "bob").await;
    check_ice_servers(&joined, "bob", 3600);
    drop(b);
    // A second later the resume's credentials expire a second later too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut b2 = connect(&s).await;
    let resume = joined["resume_token"].as_str().expect("resume token");
    send(
        &mut b2,
        json!({"type":"join","protocol":1,"token":token("r","bob",|_|{}),"resume":resume}),
    )
    .await;
    let rejoined = expect_type(&mut b2, "joined").await;
    assert_eq!(rejoined["resumed"], true);
    check_ice_servers(&rejoined, "bob", 3600);
    assert_ne!(
        rejoined["ice_servers"][0]["username"], joined["ice_servers"][0]["username"],
        "a resume brings fresh credentials"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn without_a_turn_server_ice_servers_is_empty() {
    let s = server(|_| {}).await;
    let (_a, joined) = join(&s, "r", "alice").await;
    assert_eq!(joined["ice_servers"], json!([]));
    s.shutdown().await;
}
