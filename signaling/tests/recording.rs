//! Recording a room over real WebSockets and the server API: only room admins may switch it,
//! everyone (late joiners too) is told, a server without a record directory refuses, and the
//! server API starts, reports and stops it. The files themselves are checked in Chromium
//! (`tests/browser/record.mjs`) and by the recorder's own tests.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};

const ROOM: &str = "rec-room";

async fn join_with(s: &zvon_signaling::RunningServer, identity: &str, admin: bool) -> (Ws, Value) {
    let mut ws = connect(s).await;
    let tok = token(ROOM, identity, |c| c.grants.room_admin = admin);
    send(&mut ws, json!({"type":"join","protocol":1,"token":tok})).await;
    let joined = expect_type(&mut ws, "joined").await;
    (ws, joined)
}

/// A backend on loopback that keeps every webhook body it gets; returns its URL.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let app = Router::new().route(
        "/hooks",
        post(move |Json(v): Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hooks"), seen)
}

/// The first webhook of `event` (bounded wait).
async fn webhook(seen: &Mutex<Vec<Value>>, event: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = seen.lock().unwrap().iter().find(|v| v["event"] == event) {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "no {event} webhook within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn body(response: &str) -> Value {
    let json = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(json).unwrap_or(Value::Null)
}

#[tokio::test]
async fn without_a_record_dir_recording_is_refused() {
    let s = server(|_| {}).await;
    let (mut teacher, _) = join_with(&s, "teacher", true).await;
    send(
        &mut teacher,
        json!({"type":"set_recording","enabled":true,"request_id":"r"}),
    )
    .await;
    let e = expect_type(&mut teacher, "error").await;
    assert_eq!(e["code"], "recording_unavailable", "{e}");
    let api = token("", "backend", |c| c.grants.server_api = true);
    let (status, out) = http_request(
        &s,
        "POST",
        &format!("/api/rooms/{ROOM}/recording"),
        Some(&api),
        Some(r#"{"enabled":true}"#),
    )
    .await;
    assert_eq!(status, 503, "{out}");
    assert_eq!(body(&out)["error"], "recording_unavailable");
}

#[tokio::test]
async fn admins_switch_recording_and_everyone_is_told() {
    let dir = std::env::temp_dir().join(format!("zvon-rec-test-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.clone();
    let (hook_url, hooks) = webhook_receiver().await;
    let s = server(move |c| {
        c.sfu.record_dir = Some(d);
        c.webhook_url = Some(hook_url);
    })
    .await;
    let (mut teacher, _) = join_with(&s, "teacher", true).await;
    let (mut student, _) = join_with(&s, "sam", false).await;
    expect_type(&mut teacher, "participant_joined").await;

    send(
        &mut student,
        json!({"type":"set_recording","enabled":true,"request_id":"s"}),
    )
    .await;
    let e = expect_type(&mut student, "error").await;
    assert_eq!(e["code"], "permission_denied", "{e}");

    send(&mut teacher, json!({"type":"set_recording","enabled":true})).await;
    let on = expect_type(&mut student, "recording").await;
    assert_eq!(on["active"], true, "{on}");
    let id = on["recording_id"]
        .as_str()
        .expect("recording id")
        .to_string();
    assert_eq!(expect_type(&mut teacher, "recording").await["active"], true);

    // A late joiner hears it right after `joined`.
    let (mut late, _) = join_with(&s, "late", false).await;
    let told = expect_type(&mut late, "recording").await;
    assert_eq!(
        (told["active"].as_bool(), told["recording_id"].as_str()),
        (Some(true), Some(id.as_str()))
    );

    let api = token("", "backend", |c| c.grants.server_api = true);
    let path = format!("/api/rooms/{ROOM}/recording");
    let (status, out) = http_request(&s, "GET", &path, Some(&api), None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(body(&out)["recording_id"], id.as_str());
    let student_token = token(ROOM, "sam", |_| {});
    let (status, _) = http_request(
        &s,
        "POST",
        &path,
        Some(&student_token),
        Some(r#"{"enabled":false}"#),
    )
    .await;
    assert_eq!(status, 403);

    let (status, out) =
        http_request(&s, "POST", &path, Some(&api), Some(r#"{"enabled":false}"#)).await;
    assert_eq!(
        (status, body(&out)["active"].as_bool()),
        (200, Some(false)),
        "{out}"
    );
    let off = expect_type(&mut student, "recording").await;
    assert_eq!(off["active"], false, "{off}");
    // The manifest is on disk, the room named in it, and the API lists it.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join(&id).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["room"], ROOM);
    let (status, out) = http_request(&s, "GET", "/api/recordings", Some(&api), None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(body(&out)["recordings"][0]["recording_id"], id.as_str());
    // The backend heard both ends of it, the end with the list of files written.
    let started = webhook(&hooks, "recording.started").await;
    assert_eq!(
        (started["room"].as_str(), started["recording_id"].as_str()),
        (Some(ROOM), Some(id.as_str())),
        "{started}"
    );
    let finished = webhook(&hooks, "recording.finished").await;
    assert_eq!(finished["recording_id"], id.as_str(), "{finished}");
    assert!(finished["files"].is_array(), "{finished}");
    let _ = std::fs::remove_dir_all(dir);
}
