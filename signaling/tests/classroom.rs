//! Classroom controls over real WebSockets: a teacher (`room_admin`) moderates students, hands
//! are queued, lecture mode restricts publishing, chat reaches the right people. Publishing
//! uses a real SDP offer so the media node accepts it and unpublishing really happens there.

mod common;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const ROOM: &str = "class-7b";

/// A publisher offer the media node accepts: one Opus audio m-line.
fn audio_offer() -> String {
    let fingerprint = (0..32)
        .map(|i| format!("{:02X}", i * 7 % 256))
        .collect::<Vec<_>>()
        .join(":");
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Zv0n",
        "a=ice-pwd:zvonzvonzvonzvonzvonzvon",
        &format!("a=fingerprint:sha-256 {fingerprint}"),
        "a=setup:actpass",
        "a=mid:0",
        "a=sendonly",
        "a=msid:s a",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=ssrc:4242 cname:zvon",
        "",
    ]
    .join("\r\n")
}

async fn join_as(
    s: &zvon_signaling::RunningServer,
    room: &str,
    identity: &str,
    edit: impl FnOnce(&mut zvon_signaling::token::Claims),
    extra: Value,
) -> (Ws, Value) {
    let mut ws = connect(s).await;
    let mut msg = json!({"type":"join","protocol":1,"token":token(room, identity, edit)});
    if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    send(&mut ws, msg).await;
    let joined = expect_type(&mut ws, "joined").await;
    (ws, joined)
}

async fn teacher(s: &zvon_signaling::RunningServer, extra: Value) -> (Ws, Value) {
    join_as(s, ROOM, "teacher", |c| c.grants.room_admin = true, extra).await
}

fn pid(joined: &Value) -> String {
    joined["participant"]["id"]
        .as_str()
        .expect("participant id")
        .to_string()
}

/// Sends `msg` with request id `id` and returns the error that answers it.
async fn refused(ws: &mut Ws, mut msg: Value, id: &str) -> Value {
    msg["request_id"] = id.into();
    send(ws, msg).await;
    let e = expect_type(ws, "error").await;
    assert_eq!(e["request_id"], id, "the error answers {id}: {e}");
    e
}

async fn publish(ws: &mut Ws) -> Value {
    send(
        ws,
        json!({"type":"publish_offer","sdp":audio_offer(),"tracks":[{"mid":"0","kind":"audio","source":"microphone"}],"request_id":"pub"}),
    )
    .await;
    loop {
        let m = next(ws).await.expect("socket open while publishing");
        if m["request_id"] == "pub" {
            return m;
        }
    }
}

/// Everything `ws` receives before the pong to a ping sent now: what it was told so far.
async fn drain(ws: &mut Ws) -> Vec<Value> {
    send(ws, json!({"type":"ping","request_id":"drain"})).await;
    let mut seen = vec![];
    loop {
        let m = next(ws).await.expect("socket open");
        if m["type"] == "pong" && m["request_id"] == "drain" {
            return seen;
        }
        seen.push(m);
    }
}

#[tokio::test]
async fn students_cannot_use_admin_actions() {
    let s = server(|_| {}).await;
    let (mut t, tj) = teacher(&s, json!({})).await;
    let (mut st, sj) = join_as(&s, ROOM, "sam", |_| {}, json!({})).await;
    let (teacher_id, sam_id) = (pid(&tj), pid(&sj));
    let attempts = [
        json!({"type":"admin_mute","participant_id":teacher_id,"track_id":"TR_x","muted":true}),
        json!({"type":"remove_participant","participant_id":teacher_id,"ban":true}),
        json!({"type":"set_publish","participant_id":sam_id,"allowed":true}),
        json!({"type":"approve_hand","participant_id":sam_id}),
        json!({"type":"dismiss_hand","participant_id":sam_id}),
        json!({"type":"set_lecture_mode","enabled":true}),
    ];
    for (i, a) in attempts.into_iter().enumerate() {
        let e = refused(&mut st, a.clone(), &format!("a{i}")).await;
        assert_eq!(e["code"], "permission_denied", "{a} must be refused: {e}");
    }
    // Nothing happened: the teacher was told nothing, lecture mode is still off.
    let told = drain(&mut t).await;
    assert!(
        told.iter().all(|m| m["type"] == "participant_joined"),
        "teacher saw {told:?}"
    );
    let (_late, lj) = join_as(&s, ROOM, "lea", |_| {}, json!({})).await;
    assert_eq!(lj["classroom"]["lecture_mode"], false);
    assert!(
        lj["classroom"].get("hands").is_none(),
        "students do not see the hand queue"
    );
    // The teacher's own mistakes get their own codes.
    let e = refused(
        &mut t,
        json!({"type":"remove_participant","participant_id":"PA_nobody"}),
        "t1",
    )
    .await;
    assert_eq!(e["code"], "unknown_participant");
    s.shutdown().await;
}

#[tokio::test]
async fn publishing_is_granted_and_revoked_by_the_teacher() {
    let s = server(|_| {}).await;
    let (mut t, _) = teacher(&s, json!({})).await;
    let (mut st, sj) = join_as(&s, ROOM, "sam", |c| c.grants.can_publish = false, json!({})).await;
    let sam = pid(&sj);
    assert_eq!(sj["participant"]["grants"]["can_publish"], false);
    let e = publish(&mut st).await;
    assert_eq!(e["code"], "permission_denied", "{e}");

    send(
        &mut t,
        json!({"type":"set_publish","participant_id":sam,"allowed":true}),
    )
    .await;
    let changed = expect_type(&mut st, "permission_changed").await;
    assert_eq!(changed["grants"]["can_publish"], true);
    let answer = publish(&mut st).await;
    assert_eq!(answer["type"], "publish_answer", "{answer}");
    let track_id = answer["tracks"][0]["id"].as_str().expect("track id");
    let published = expect_type(&mut t, "track_published").await;
    assert_eq!(published["participant_id"], sam);

    // Revoking withdraws the track from everyone, the student included.
    send(
        &mut t,
        json!({"type":"set_publish","participant_id":sam,"allowed":false}),
    )
    .await;
    let gone = expect_type(&mut t, "track_unpublished").await;
    assert_eq!(gone["track_id"], track_id);
    let told = drain(&mut st).await;
    let types: Vec<&str> = told.iter().filter_map(|m| m["type"].as_str()).collect();
    assert!(
        types.contains(&"track_unpublished") && types.contains(&"permission_changed"),
        "student was told {told:?}"
    );
    let e = publish(&mut st).await;
    assert_eq!(e["code"], "permission_denied", "{e}");
    s.shutdown().await;
}

#[tokio::test]
async fn lecture_mode_admits_only_approved_students() {
    let s = server(|_| {}).await;
    // A student publishes before the lecture starts.
    let (mut early, ej) = join_as(&s, ROOM, "early", |_| {}, json!({})).await;
    assert_eq!(publish(&mut early).await["type"], "publish_answer");
    let (mut t, _) = teacher(&s, json!({"lecture_mode": true})).await;
    assert_eq!(
        expect_type(&mut t, "lecture_mode").await["enabled"],
        true,
        "the teacher's join switched lecture mode on"
    );
    // Switching it on unpublished the early student.
    let told = drain(&mut early).await;
    assert!(
        told.iter().any(|m| m["type"] == "track_unpublished"),
        "{told:?}"
    );
    let grants = told
        .iter()
        .find(|m| m["type"] == "permission_changed")
        .expect("early student told it lost publishing");
    assert_eq!(grants["grants"]["can_publish"], false);
    assert_eq!(
        publish(&mut early).await["code"],
        "permission_denied",
        "no republishing in lecture mode"
    );
    let _ = pid(&ej);

    let (mut st, sj) = join_as(&s, ROOM, "sam", |_| {}, json!({})).await;
    assert_eq!(sj["classroom"]["lecture_mode"], true);
    assert_eq!(sj["participant"]["grants"]["can_publish"], false);
    let e = publish(&mut st).await;
    assert_eq!(e["code"], "permission_denied", "{e}");

    send(&mut st, json!({"type":"raise_hand"})).await;
    let queue = expect_type(&mut t, "hand_queue").await;
    assert_eq!(queue["hands"][0]["participant_id"], pid(&sj));
    send(
        &mut t,
        json!({"type":"approve_hand","participant_id":pid(&sj)}),
    )
    .await;
    let hand = expect_type(&mut st, "hand").await;
    assert_eq!(
        (hand["raised"].as_bool(), hand["reason"].as_str()),
        (Some(true), Some("raised"))
    );
    let hand = expect_type(&mut st, "hand").await;
    assert_eq!(
        (hand["raised"].as_bool(), hand["reason"].as_str()),
        (Some(false), Some("approved"))
    );
    assert_eq!(
        expect_type(&mut st, "permission_changed").await["grants"]["can_publish"],
        true
    );
    assert_eq!(publish(&mut st).await["type"], "publish_answer");
    assert_eq!(
        expect_type(&mut t, "hand_queue").await["hands"],
        json!([]),
        "approval empties the queue"
    );

    // Lecture over: everyone may publish again.
    send(&mut t, json!({"type":"set_lecture_mode","enabled":false})).await;
    let told = drain(&mut early).await;
    assert!(told
        .iter()
        .any(|m| m["type"] == "permission_changed" && m["grants"]["can_publish"] == true));
    assert_eq!(publish(&mut early).await["type"], "publish_answer");
    s.shutdown().await;
}

#[tokio::test]
async fn hands_queue_in_order_and_late_admins_see_it() {
    let s = server(|_| {}).await;
    let (mut t, _) = teacher(&s, json!({})).await;
    let mut students = vec![];
    for name in ["s1", "s2", "s3"] {
        students.push(join_as(&s, ROOM, name, |_| {}, json!({})).await);
    }
    for i in [0, 2, 1] {
        send(&mut students[i].0, json!({"type":"raise_hand"})).await;
        expect_type(&mut students[i].0, "hand").await;
    }
    // Raising twice does not jump the queue.
    send(&mut students[0].0, json!({"type":"raise_hand"})).await;
    expect_type(&mut students[0].0, "hand").await;
    let order = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["identity"].as_str().map(str::to_string))
            .collect()
    };
    let mut last = vec![];
    for _ in 0..3 {
        last = order(&expect_type(&mut t, "hand_queue").await["hands"]);
    }
    assert_eq!(last, ["s1", "s3", "s2"]);

    let (mut t2, t2j) = join_as(
        &s,
        ROOM,
        "co-teacher",
        |c| c.grants.room_admin = true,
        json!({}),
    )
    .await;
    assert_eq!(order(&t2j["classroom"]["hands"]), ["s1", "s3", "s2"]);

    send(&mut students[2].0, json!({"type":"lower_hand"})).await;
    assert_eq!(
        order(&expect_type(&mut t2, "hand_queue").await["hands"]),
        ["s1", "s2"]
    );
    send(
        &mut t,
        json!({"type":"dismiss_hand","participant_id":pid(&students[0].1)}),
    )
    .await;
    let h = expect_type(&mut students[0].0, "hand").await;
    assert_eq!(
        (h["raised"].as_bool(), h["reason"].as_str()),
        (Some(false), Some("dismissed"))
    );
    assert_eq!(
        order(&expect_type(&mut t2, "hand_queue").await["hands"]),
        ["s2"]
    );
    // A student who leaves leaves the queue.
    send(&mut students[1].0, json!({"type":"leave"})).await;
    assert_eq!(
        order(&expect_type(&mut t2, "hand_queue").await["hands"]),
        Vec::<String>::new()
    );
    s.shutdown().await;
}

#[tokio::test]
async fn removed_and_banned_student_cannot_rejoin_but_other_rooms_work() {
    let s = server(|_| {}).await;
    let (mut t, _) = teacher(&s, json!({})).await;
    let sam_token = token(ROOM, "sam", |_| {});
    let mut st = connect(&s).await;
    send(
        &mut st,
        json!({"type":"join","protocol":1,"token":sam_token}),
    )
    .await;
    let sj = expect_type(&mut st, "joined").await;
    let (mut other, _) = join_as(&s, ROOM, "olga", |_| {}, json!({})).await;

    send(
        &mut t,
        json!({"type":"remove_participant","participant_id":pid(&sj),"ban":true}),
    )
    .await;
    let e = expect_type(&mut st, "error").await;
    assert_eq!(e["code"], "removed");
    assert_eq!(close_code(&mut st).await, Some(CloseCode::from(4410)));
    let left = expect_type(&mut other, "participant_left").await;
    assert_eq!(
        (left["participant_id"].as_str(), left["reason"].as_str()),
        (Some(pid(&sj).as_str()), Some("removed"))
    );

    let mut again = connect(&s).await;
    send(
        &mut again,
        json!({"type":"join","protocol":1,"token":sam_token}),
    )
    .await;
    assert_eq!(expect_type(&mut again, "error").await["code"], "banned");
    assert_eq!(close_code(&mut again).await, Some(CloseCode::from(4403)));

    // The ban is this room's: the same identity joins another room.
    let (_elsewhere, ej) = join_as(&s, "other-room", "sam", |_| {}, json!({})).await;
    assert_eq!(ej["room"]["name"], "other-room");

    // Removal without a ban lets the student come back.
    let (mut o2, oj) = (
        other,
        pid(&join_as(&s, ROOM, "kim", |_| {}, json!({})).await.1),
    );
    send(
        &mut t,
        json!({"type":"remove_participant","participant_id":oj}),
    )
    .await;
    expect_type(&mut o2, "participant_left").await;
    let (_kim, kj) = join_as(&s, ROOM, "kim", |_| {}, json!({})).await;
    assert_eq!(kj["type"], "joined");
    s.shutdown().await;
}

#[tokio::test]
async fn chat_reaches_the_room_or_one_person_and_late_joiners_get_history() {
    let s = server(|_| {}).await;
    let (mut t, tj) = teacher(&s, json!({})).await;
    let (mut a, aj) = join_as(&s, ROOM, "ann", |_| {}, json!({})).await;
    let (mut b, _) = join_as(&s, ROOM, "ben", |_| {}, json!({})).await;

    // The sender cannot pretend to be someone else: extra fields are ignored.
    send(
        &mut a,
        json!({"type":"chat","text":"hello class","identity":"teacher","from":tj["participant"]["id"]}),
    )
    .await;
    for ws in [&mut t, &mut a, &mut b] {
        let m = expect_type(ws, "chat").await;
        assert_eq!(
            (
                m["text"].as_str(),
                m["identity"].as_str(),
                m["from"].as_str()
            ),
            (Some("hello class"), Some("ann"), Some(pid(&aj).as_str()))
        );
        assert!(m.get("to").is_none());
    }

    send(
        &mut a,
        json!({"type":"chat","text":"psst, teacher","to":pid(&tj)}),
    )
    .await;
    let m = expect_type(&mut t, "chat").await;
    assert_eq!(
        (m["text"].as_str(), m["to"].as_str()),
        (Some("psst, teacher"), Some(pid(&tj).as_str()))
    );
    assert_eq!(
        expect_type(&mut a, "chat").await["text"],
        "psst, teacher",
        "sender gets a copy"
    );
    let ben_saw = drain(&mut b).await;
    assert!(
        ben_saw.iter().all(|m| m["type"] != "chat"),
        "ben must not see a private message: {ben_saw:?}"
    );

    let e = refused(
        &mut b,
        json!({"type":"chat","text":"x".repeat(2001)}),
        "long",
    )
    .await;
    assert_eq!(e["code"], "chat_too_long");
    send(&mut b, json!({"type":"chat","text":"é".repeat(1000)})).await;
    assert_eq!(
        expect_type(&mut b, "chat").await["text"]
            .as_str()
            .map(str::len),
        Some(2000),
        "exactly 2000 bytes pass"
    );

    let (mut late, lj) = join_as(&s, ROOM, "lou", |_| {}, json!({})).await;
    let history: Vec<&str> = lj["classroom"]["chat"]
        .as_array()
        .expect("chat history in joined")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(history.len(), 2, "room messages only, no private ones");
    assert_eq!(history[0], "hello class");

    // Flooding chat is refused without closing the socket.
    let mut limited = false;
    for i in 0..15 {
        send(
            &mut late,
            json!({"type":"chat","text":format!("spam {i}"),"request_id":format!("c{i}")}),
        )
        .await;
    }
    for m in drain(&mut late).await {
        if m["code"] == "chat_rate_limited" {
            limited = true;
        }
    }
    assert!(limited, "15 lines at once exceed the chat burst");

    // No data grant, no chat.
    let (mut mute_kid, _) = join_as(
        &s,
        ROOM,
        "quiet",
        |c| c.grants.can_publish_data = false,
        json!({}),
    )
    .await;
    let e = refused(&mut mute_kid, json!({"type":"chat","text":"hi"}), "nd").await;
    assert_eq!(e["code"], "permission_denied");
    s.shutdown().await;
}

#[tokio::test]
async fn teacher_mute_holds_until_the_teacher_releases_it() {
    let s = server(|_| {}).await;
    let (mut t, _) = teacher(&s, json!({})).await;
    let (mut st, sj) = join_as(&s, ROOM, "sam", |_| {}, json!({})).await;
    let answer = publish(&mut st).await;
    let track = answer["tracks"][0]["id"]
        .as_str()
        .expect("track")
        .to_string();
    expect_type(&mut t, "track_published").await;
    let sam = pid(&sj);

    send(
        &mut t,
        json!({"type":"admin_mute","participant_id":sam,"track_id":track,"muted":true}),
    )
    .await;
    let m = expect_type(&mut t, "track_muted").await;
    assert_eq!(
        (m["track_id"].as_str(), m["muted"].as_bool()),
        (Some(track.as_str()), Some(true))
    );
    let told = expect_type(&mut st, "admin_muted").await;
    assert_eq!(told["muted"], true);
    let e = refused(
        &mut st,
        json!({"type":"mute","track_id":track,"muted":false}),
        "unmute",
    )
    .await;
    assert_eq!(e["code"], "permission_denied");

    send(
        &mut t,
        json!({"type":"admin_mute","participant_id":sam,"track_id":track,"muted":false}),
    )
    .await;
    assert_eq!(expect_type(&mut t, "track_muted").await["muted"], false);
    assert_eq!(expect_type(&mut st, "admin_muted").await["muted"], false);

    // A student who muted itself while held stays muted when the teacher releases: the teacher
    // cannot switch a microphone on.
    let hold = json!({"type":"admin_mute","participant_id":sam,"track_id":track,"muted":true});
    send(&mut t, hold).await;
    assert_eq!(expect_type(&mut st, "admin_muted").await["muted"], true);
    send(
        &mut st,
        json!({"type":"mute","track_id":track,"muted":true}),
    )
    .await;
    let release = json!({"type":"admin_mute","participant_id":sam,"track_id":track,"muted":false});
    send(&mut t, release).await;
    assert_eq!(expect_type(&mut st, "admin_muted").await["muted"], false);
    let told = drain(&mut t).await;
    assert!(
        told.iter()
            .filter(|m| m["type"] == "track_muted")
            .all(|m| m["muted"] == true),
        "released but still muted by its owner: {told:?}"
    );
    send(
        &mut st,
        json!({"type":"mute","track_id":track,"muted":false}),
    )
    .await;
    assert_eq!(expect_type(&mut t, "track_muted").await["muted"], false);
    s.shutdown().await;
}

#[tokio::test]
async fn a_chatty_class_is_capped_but_the_teacher_gets_through() {
    let s = server(|_| {}).await;
    let (mut t, _) = teacher(&s, json!({})).await;
    let mut class = vec![];
    for i in 0..5 {
        class.push(
            join_as(&s, ROOM, &format!("kid{i}"), |_| {}, json!({}))
                .await
                .0,
        );
    }
    // 5 × 10 lines at once stay within each student's burst (10) but exceed the room's (40)
    // by 10; a few may pass on tokens refilled while they are sent.
    for ws in class.iter_mut() {
        for n in 0..10 {
            send(ws, json!({"type":"chat","text":format!("line {n}")})).await;
        }
    }
    let mut busy = 0;
    for ws in class.iter_mut() {
        busy += drain(ws)
            .await
            .iter()
            .filter(|m| m["code"] == "chat_rate_limited")
            .count();
    }
    assert!(busy >= 5, "the room budget refused only {busy} of 50 lines");
    send(&mut t, json!({"type":"chat","text":"Quiet please"})).await;
    let told = drain(&mut t).await;
    assert!(
        told.iter()
            .any(|m| m["type"] == "chat" && m["text"] == "Quiet please"),
        "the teacher's line went out"
    );
    s.shutdown().await;
}
