//! The call state machine, input by input: every race and ending the protocol promises.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::book::*;

struct World {
    book: CallBook,
    t0: Instant,
    secs: u64,
}

impl World {
    fn new() -> Self {
        let mut w = World {
            book: CallBook::new(CallSettings::default()),
            t0: Instant::now(),
            secs: 0,
        };
        for (user, device) in [
            ("alice", "a1"),
            ("bob", "b1"),
            ("bob", "b2"),
            ("carol", "c1"),
        ] {
            w.book.register(user, device, user);
        }
        w.book.take_effects();
        w
    }

    fn now(&self) -> Now {
        Now {
            instant: self.t0 + Duration::from_secs(self.secs),
            unix: 1_000_000 + self.secs,
        }
    }

    fn invite(&mut self, from: &str, device: &str, to: &[&str]) -> Result<Value, CallError> {
        let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
        let now = self.now();
        self.book
            .invite(from, device, from, &to, Media::Video, None, now)
    }

    /// Messages each device got since last asked, as "user/device:type[:reason]".
    fn messages(&mut self) -> Vec<String> {
        self.book
            .take_effects()
            .into_iter()
            .map(|e| match e {
                Effect::ToDevice {
                    user,
                    device,
                    message,
                } => {
                    let mut s = format!(
                        "{user}/{device}:{}",
                        message["type"].as_str().unwrap_or("?")
                    );
                    if let Some(r) = message["reason"].as_str() {
                        s.push(':');
                        s.push_str(r);
                    }
                    s
                }
                Effect::Admit { user, device, .. } => format!("{user}/{device}:call_accepted"),
                Effect::CloseRoom { .. } => "close_room".into(),
                Effect::Webhook { event, .. } => format!("hook:{event}"),
            })
            .collect()
    }
}

fn id(created: &Value) -> String {
    created["call_id"].as_str().expect("call id").to_string()
}

#[test]
fn one_to_one_rings_every_device_and_first_accept_wins() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob"]).unwrap());
    assert_eq!(
        w.messages(),
        [
            "hook:call.started",
            "bob/b1:call_incoming",
            "bob/b2:call_incoming"
        ]
    );
    w.book.ack("bob", &call).unwrap();
    w.book.ack("bob", &call).unwrap();
    assert_eq!(
        w.messages(),
        ["alice/a1:call_ringing", "hook:call.ringing"],
        "ringing told once"
    );
    let now = w.now();
    w.book.accept("bob", "b2", &call, now).unwrap();
    assert_eq!(
        w.messages(),
        [
            "alice/a1:call_accepted",
            "bob/b2:call_accepted",
            "bob/b1:call_stopped_ringing:answered_elsewhere",
            "hook:call.answered"
        ]
    );
    // The other device accepting a moment later loses.
    assert_eq!(
        w.book.accept("bob", "b1", &call, now),
        Err(CallError::AlreadyAnswered)
    );
    w.secs += 30;
    let now = w.now();
    w.book.hangup("alice", &call, now).unwrap();
    assert_eq!(
        w.messages(),
        [
            "alice/a1:call_ended:hangup",
            "bob/b2:call_ended:hangup",
            "close_room",
            "hook:call.ended"
        ]
    );
    assert_eq!(w.book.call(&call).unwrap().report()["duration_s"], 30);
}

#[test]
fn calling_each_other_at_once_makes_one_call() {
    let mut w = World::new();
    let first = id(&w.invite("alice", "a1", &["bob"]).unwrap());
    w.messages();
    let second = w.invite("bob", "b1", &["alice"]).unwrap();
    assert_eq!(id(&second), first, "bob's invite answered alice's call");
    assert_eq!(second["state"], "active");
    let msgs = w.messages();
    assert!(
        msgs.contains(&"alice/a1:call_accepted".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"bob/b1:call_accepted".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"bob/b2:call_stopped_ringing:answered_elsewhere".to_string()),
        "{msgs:?}"
    );
}

#[test]
fn decline_on_one_device_stops_the_others_and_ends_a_one_to_one_call() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob"]).unwrap());
    w.messages();
    let now = w.now();
    w.book.decline("bob", "b1", &call, now).unwrap();
    assert_eq!(
        w.messages(),
        [
            "alice/a1:call_declined",
            "bob/b2:call_stopped_ringing:declined_elsewhere",
            "hook:call.declined",
            "alice/a1:call_ended:declined",
            "hook:call.ended"
        ]
    );
}

#[test]
fn caller_gone_while_ringing_cancels() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob"]).unwrap());
    w.messages();
    let now = w.now();
    w.book.unregister("alice", "a1", now);
    let msgs = w.messages();
    assert!(
        msgs.contains(&"bob/b1:call_stopped_ringing:cancelled".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"bob/b2:call_stopped_ringing:cancelled".to_string()),
        "{msgs:?}"
    );
    assert_eq!(
        w.book.call(&call).unwrap().report()["end_reason"],
        "caller_gone"
    );
}

#[test]
fn timeout_is_missed_for_reached_users_and_unreachable_for_offline_ones() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob"]).unwrap());
    w.messages();
    w.secs += 44;
    w.book.tick(w.now());
    assert!(w.messages().is_empty(), "still ringing at 44 s");
    w.secs += 1;
    w.book.tick(w.now());
    assert_eq!(
        w.messages(),
        [
            "alice/a1:call_missed",
            "bob/b1:call_stopped_ringing:missed",
            "bob/b2:call_stopped_ringing:missed",
            "hook:call.missed",
            "alice/a1:call_ended:missed",
            "hook:call.ended"
        ]
    );
    assert_eq!(w.book.call(&call).unwrap().report()["end_reason"], "missed");

    let off = id(&w.invite("alice", "a1", &["dave"]).unwrap());
    assert_eq!(
        w.messages(),
        [
            "hook:call.started",
            "alice/a1:call_unreachable",
            "hook:call.unreachable"
        ]
    );
    // dave's phone wakes from a push and registers while the call still rings.
    w.secs += 5;
    w.book.register("dave", "d1", "Dave");
    assert_eq!(w.messages(), ["dave/d1:call_incoming"]);
    w.secs += 60;
    w.book.tick(w.now());
    assert_eq!(
        w.book.call(&off).unwrap().report()["end_reason"],
        "unreachable",
        "never acked"
    );
}

#[test]
fn busy_users_and_bad_invites_get_clear_answers() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob"]).unwrap());
    let now = w.now();
    w.book.accept("bob", "b1", &call, now).unwrap();
    w.messages();
    let created = w.invite("carol", "c1", &["bob"]).unwrap();
    assert_eq!(created["to"][0]["state"], "busy");
    let msgs = w.messages();
    assert!(msgs.contains(&"carol/c1:call_busy".to_string()), "{msgs:?}");
    assert!(
        msgs.contains(&"carol/c1:call_ended:busy".to_string()),
        "{msgs:?}"
    );
    assert!(
        !msgs.iter().any(|m| m.starts_with("bob/")),
        "bob's devices are not disturbed: {msgs:?}"
    );

    assert_eq!(
        w.invite("carol", "c1", &["carol"]),
        Err(CallError::CannotCallSelf)
    );
    let mut refused = 0;
    for _ in 0..20 {
        if w.invite("carol", "c1", &["dave"]) == Err(CallError::TooManyCalls) {
            refused += 1;
        }
    }
    assert!(
        refused >= 10,
        "an invite flood is cut off, refused {refused}"
    );
}

#[test]
fn group_call_ends_when_the_last_member_leaves() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob", "carol"]).unwrap());
    let now = w.now();
    w.book.accept("bob", "b1", &call, now).unwrap();
    w.book.decline("carol", "c1", &call, now).unwrap();
    w.messages();
    w.book
        .room_member_left(&format!("call-{call}"), "alice", now);
    assert_eq!(
        w.messages(),
        ["alice/a1:call_ended:member_left"],
        "bob stays"
    );
    w.book.hangup("bob", &call, now).unwrap();
    let msgs = w.messages();
    assert!(
        msgs.contains(&"bob/b1:call_ended:hangup".to_string()),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"close_room".to_string()), "{msgs:?}");
    assert_eq!(w.book.call(&call).unwrap().report()["end_reason"], "empty");
}

#[test]
fn adding_a_user_turns_a_running_call_into_a_group_call() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob"]).unwrap());
    let now = w.now();
    w.book.accept("bob", "b1", &call, now).unwrap();
    w.messages();
    let added = w
        .book
        .invite(
            "bob",
            "b1",
            "bob",
            &["carol".to_string()],
            Media::Video,
            Some(&call),
            now,
        )
        .unwrap();
    assert_eq!(id(&added), call);
    assert_eq!(w.messages(), ["carol/c1:call_incoming"]);
    w.book.accept("carol", "c1", &call, now).unwrap();
    assert_eq!(
        w.messages(),
        ["carol/c1:call_accepted", "hook:call.answered"],
        "only carol is admitted"
    );
    // Now a group call: alice leaving does not end it for the others.
    w.book.hangup("alice", &call, now).unwrap();
    assert_eq!(w.messages(), ["alice/a1:call_ended:hangup"]);
    assert_eq!(w.book.call(&call).unwrap().report()["state"], "active");
    // Someone outside the call cannot add people to it.
    let stranger = w.book.invite(
        "dave",
        "d1",
        "dave",
        &["carol".to_string()],
        Media::Video,
        Some(&call),
        now,
    );
    assert_eq!(stranger, Err(CallError::UnknownCall));
}

#[test]
fn an_answered_call_nobody_joins_ends_at_the_join_timeout() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob"]).unwrap());
    let room = format!("call-{call}");
    let now = w.now();
    w.book.accept("bob", "b1", &call, now).unwrap();
    w.book.room_member_joined(&room, "alice");
    w.messages();

    // Bob's app crashed between the answer and the join: the call must not stay active.
    w.secs += 29;
    let now = w.now();
    w.book.tick(now);
    assert_eq!(
        w.messages(),
        Vec::<String>::new(),
        "still within the timeout"
    );
    w.secs += 1;
    let now = w.now();
    w.book.tick(now);
    let msgs = w.messages();
    assert!(
        msgs.contains(&"alice/a1:call_ended:not_joined".to_string()),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"close_room".to_string()), "{msgs:?}");
    assert!(msgs.contains(&"hook:call.ended".to_string()), "{msgs:?}");
    let report = w.book.call(&call).unwrap().report();
    assert_eq!(report["state"], "ended");
    assert_eq!(report["end_reason"], "not_joined");
}

#[test]
fn members_who_joined_are_not_timed_out() {
    let mut w = World::new();
    let call = id(&w.invite("alice", "a1", &["bob", "carol"]).unwrap());
    let room = format!("call-{call}");
    let now = w.now();
    w.book.accept("bob", "b1", &call, now).unwrap();
    w.book.accept("carol", "c1", &call, now).unwrap();
    w.book.room_member_joined(&room, "alice");
    w.book.room_member_joined(&room, "bob");
    w.messages();
    w.secs += 120;
    let now = w.now();
    w.book.tick(now);
    // Carol never came: the group call goes on without her.
    assert_eq!(w.messages(), ["carol/c1:call_ended:not_joined"]);
    let report = w.book.call(&call).unwrap().report();
    assert_eq!(report["state"], "active");
    assert_eq!(report["members"], serde_json::json!(["alice", "bob"]));
}
