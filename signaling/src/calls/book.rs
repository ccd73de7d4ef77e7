//! The call state machine: who is ringing whom, who answered, when a call ends.
//!
//! Sans-IO: methods take what happened and `now`, and queue [`Effect`]s (messages to devices,
//! webhooks, rooms to close) that the driver carries out. Every race the protocol promises to
//! resolve (glare, two accepts, a caller vanishing while ringing) is decided here, one input
//! at a time, and tested without sockets or sleeps.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::rate_limit::TokenBucket;

/// A moment, both as a monotonic instant (deadlines) and wall-clock seconds (reports).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub unix: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    Audio,
    Video,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CalleeState {
    Calling,
    Ringing,
    Accepted,
    Declined,
    Busy,
    Missed,
    Unreachable,
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Ringing,
    Active,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Hangup,
    Declined,
    Busy,
    Missed,
    Unreachable,
    Cancelled,
    CallerGone,
    MemberLeft,
    Empty,
    EndedByServer,
    /// An accepted member never joined the call's room within the join timeout (a 1:1
    /// call ends; a group call goes on without that member).
    NotJoined,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send `message` to one device.
    ToDevice {
        user: String,
        device: String,
        message: Value,
    },
    /// Tell a device it may join the call's room: the driver mints the token.
    Admit {
        user: String,
        device: String,
        call_id: String,
        room: String,
        accepted_by: String,
    },
    Webhook {
        event: &'static str,
        payload: Value,
    },
    /// The call is over: remove everyone from its room.
    CloseRoom {
        room: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("no such call, or not yours")]
    UnknownCall,
    #[error("the call was already answered")]
    AlreadyAnswered,
    #[error("you cannot call yourself")]
    CannotCallSelf,
    #[error("too many calls; wait a minute")]
    TooManyCalls,
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
struct Callee {
    state: CalleeState,
    device: Option<String>,
    /// A device of this user ever rang for this call (else the timeout means unreachable).
    reached: bool,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub room: String,
    from: String,
    from_device: String,
    from_name: String,
    media: Media,
    group: bool,
    pub state: CallState,
    callees: BTreeMap<String, Callee>,
    /// Users in the call now (the caller and callees that accepted and have not left).
    members: BTreeSet<String>,
    created_unix: u64,
    answered_unix: Option<u64>,
    ended_unix: Option<u64>,
    end_reason: Option<EndReason>,
    ring_deadline: Instant,
    /// Members admitted to the room who have not joined it yet, and by when they must.
    join_deadlines: BTreeMap<String, Instant>,
    /// Members who joined the room at least once.
    joined: BTreeSet<String>,
}

impl Call {
    pub fn report(&self) -> Value {
        let duration = match (self.answered_unix, self.ended_unix) {
            (Some(a), Some(e)) => e.saturating_sub(a),
            _ => 0,
        };
        json!({
            "call_id": self.id,
            "from": self.from,
            "to": self.callees.keys().collect::<Vec<_>>(),
            "callees": self.callees.iter().map(|(u, c)| (u.clone(), c.state)).collect::<BTreeMap<_, _>>(),
            "media": self.media,
            "state": self.state,
            "members": self.members,
            "started_at": self.created_unix,
            "answered_at": self.answered_unix,
            "ended_at": self.ended_unix,
            "duration_s": duration,
            "end_reason": self.end_reason,
        })
    }

    fn member_devices(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        if self.members.contains(&self.from) {
            out.push((self.from.clone(), self.from_device.clone()));
        }
        for (user, c) in &self.callees {
            if let (CalleeState::Accepted, Some(d)) = (c.state, &c.device) {
                out.push((user.clone(), d.clone()));
            }
        }
        out
    }

    fn pending(&self) -> impl Iterator<Item = (&String, &Callee)> {
        self.callees
            .iter()
            .filter(|(_, c)| matches!(c.state, CalleeState::Calling | CalleeState::Ringing))
    }
}

/// Policy when a callee is already in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyPolicy {
    Busy,
    CallWaiting,
}

#[derive(Debug, Clone)]
pub struct CallSettings {
    pub ring_timeout: Duration,
    /// How long a member who accepted (or the caller, at the first answer) has to join the
    /// call's room; then it counts as gone (`EndReason::NotJoined`).
    pub join_timeout: Duration,
    pub busy_policy: BusyPolicy,
    pub invites_per_minute: u32,
    pub max_callees: usize,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            ring_timeout: Duration::from_secs(45),
            join_timeout: Duration::from_secs(30),
            busy_policy: BusyPolicy::Busy,
            invites_per_minute: 10,
            max_callees: 16,
        }
    }
}

const KEEP_ENDED: usize = 1000;

pub struct CallBook {
    settings: CallSettings,
    /// Online devices: user → device → display name.
    devices: HashMap<String, BTreeMap<String, String>>,
    calls: HashMap<String, Call>,
    ended: VecDeque<String>,
    invite_buckets: HashMap<String, TokenBucket>,
    effects: Vec<Effect>,
}

fn new_call_id() -> String {
    let id: String = rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("CA_{id}")
}

impl CallBook {
    pub fn new(settings: CallSettings) -> Self {
        CallBook {
            settings,
            devices: HashMap::new(),
            calls: HashMap::new(),
            ended: VecDeque::new(),
            invite_buckets: HashMap::new(),
            effects: vec![],
        }
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    /// Calls ringing or in progress (ended ones are kept a while for reports).
    pub fn active_count(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state != CallState::Ended)
            .count()
    }

    pub fn call_of_room(&self, room: &str) -> Option<&Call> {
        let id = room.strip_prefix("call-")?;
        self.calls.get(id)
    }

    fn send(&mut self, user: &str, device: &str, message: Value) {
        self.effects.push(Effect::ToDevice {
            user: user.into(),
            device: device.into(),
            message,
        });
    }

    fn send_all_devices(&mut self, user: &str, message: Value) {
        let devices: Vec<String> = self
            .devices
            .get(user)
            .into_iter()
            .flatten()
            .map(|(d, _)| d.clone())
            .collect();
        for d in devices {
            self.send(user, &d, message.clone());
        }
    }

    fn webhook(&mut self, event: &'static str, call_id: &str, identity: Option<&str>) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let mut payload = json!({ "call": call.report() });
        if let Some(who) = identity {
            payload["identity"] = json!(who);
        }
        self.effects.push(Effect::Webhook { event, payload });
    }

    /// Users in a call that is not over, as caller or accepted callee.
    fn busy(&self, user: &str) -> bool {
        self.calls
            .values()
            .any(|c| c.state != CallState::Ended && c.members.contains(user))
    }

    fn incoming_message(call: &Call, waiting: bool) -> Value {
        json!({
            "type": "call_incoming",
            "call_id": call.id,
            "from": {"identity": call.from, "name": call.from_name},
            "media": call.media,
            "group": call.group,
            "members": call.members,
            "waiting": waiting,
        })
    }

    /// A device came online. Calls ringing for its user ring it too.
    pub fn register(&mut self, user: &str, device: &str, name: &str) {
        self.devices
            .entry(user.to_string())
            .or_default()
            .insert(device.to_string(), name.to_string());
        let ringing: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.state != CallState::Ended)
            .filter(|c| {
                c.callees
                    .get(user)
                    .is_some_and(|x| matches!(x.state, CalleeState::Calling | CalleeState::Ringing))
            })
            .map(|c| c.id.clone())
            .collect();
        for id in ringing {
            let waiting = self.busy(user);
            if let Some(call) = self.calls.get(&id) {
                let msg = Self::incoming_message(call, waiting);
                self.send(user, device, msg);
            }
        }
    }

    /// A device went away for good. A caller gone while ringing cancels its call.
    pub fn unregister(&mut self, user: &str, device: &str, now: Now) {
        if let Some(devices) = self.devices.get_mut(user) {
            devices.remove(device);
            if devices.is_empty() {
                self.devices.remove(user);
            }
        }
        let gone: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.state == CallState::Ringing && c.from == user && c.from_device == device)
            .map(|c| c.id.clone())
            .collect();
        for id in gone {
            self.end(&id, EndReason::CallerGone, now);
        }
    }

    fn take_invite_token(&mut self, user: &str, now: Now) -> bool {
        let per_minute = self.settings.invites_per_minute.max(1);
        let bucket = self
            .invite_buckets
            .entry(user.to_string())
            .or_insert_with(|| {
                // Refill per second, burst of a minute's worth.
                TokenBucket::new_fractional(f64::from(per_minute) / 60.0, per_minute, now.instant)
            });
        bucket.try_take(now.instant)
    }

    /// Starts a call, or adds users to `existing`. Returns the `call_created` reply.
    #[allow(clippy::too_many_arguments)]
    pub fn invite(
        &mut self,
        from: &str,
        from_device: &str,
        from_name: &str,
        to: &[String],
        media: Media,
        existing: Option<&str>,
        now: Now,
    ) -> Result<Value, CallError> {
        let mut to: Vec<String> = to.to_vec();
        to.sort();
        to.dedup();
        if to.is_empty() || to.len() > self.settings.max_callees {
            return Err(CallError::Invalid(format!(
                "call 1 to {} users",
                self.settings.max_callees
            )));
        }
        if to.iter().any(|u| u.is_empty() || u.len() > 128) {
            return Err(CallError::Invalid("identities are 1-128 characters".into()));
        }
        if to.iter().any(|u| u == from) {
            return Err(CallError::CannotCallSelf);
        }
        if !self.take_invite_token(from, now) {
            return Err(CallError::TooManyCalls);
        }

        let call_id = match existing {
            Some(id) => {
                let call = self.calls.get_mut(id).ok_or(CallError::UnknownCall)?;
                if call.state == CallState::Ended || !call.members.contains(from) {
                    return Err(CallError::UnknownCall);
                }
                call.group = true;
                call.ring_deadline = now.instant + self.settings.ring_timeout;
                id.to_string()
            }
            None => {
                // Glare: the one we call is calling us right now, alone. Answer that call
                // instead of starting a second one.
                if let [callee] = to.as_slice() {
                    let glare = self
                        .calls
                        .values()
                        .find(|c| {
                            c.state == CallState::Ringing
                                && c.from == *callee
                                && c.callees.len() == 1
                                && c.callees.get(from).is_some_and(|x| {
                                    matches!(x.state, CalleeState::Calling | CalleeState::Ringing)
                                })
                        })
                        .map(|c| c.id.clone());
                    if let Some(id) = glare {
                        self.accept(from, from_device, &id, now)?;
                        return Ok(self.created_message(&id));
                    }
                }
                let id = new_call_id();
                let call = Call {
                    id: id.clone(),
                    room: format!("call-{id}"),
                    from: from.to_string(),
                    from_device: from_device.to_string(),
                    from_name: from_name.to_string(),
                    media,
                    group: to.len() > 1,
                    state: CallState::Ringing,
                    callees: BTreeMap::new(),
                    members: BTreeSet::from([from.to_string()]),
                    created_unix: now.unix,
                    answered_unix: None,
                    ended_unix: None,
                    end_reason: None,
                    ring_deadline: now.instant + self.settings.ring_timeout,
                    join_deadlines: BTreeMap::new(),
                    joined: BTreeSet::new(),
                };
                self.calls.insert(id.clone(), call);
                self.webhook("call.started", &id, None);
                id
            }
        };

        for user in to {
            let already = self.calls.get(&call_id).is_some_and(|c| {
                c.callees.get(&user).is_some_and(|x| {
                    matches!(
                        x.state,
                        CalleeState::Calling | CalleeState::Ringing | CalleeState::Accepted
                    )
                })
            });
            if already {
                continue;
            }
            let busy = self.busy(&user);
            let online = self.devices.get(&user).is_some_and(|d| !d.is_empty());
            let state = if busy && self.settings.busy_policy == BusyPolicy::Busy {
                CalleeState::Busy
            } else {
                CalleeState::Calling
            };
            if let Some(call) = self.calls.get_mut(&call_id) {
                call.callees.insert(
                    user.clone(),
                    Callee {
                        state,
                        device: None,
                        reached: online,
                    },
                );
            }
            if state == CalleeState::Busy {
                self.send(
                    from,
                    from_device,
                    json!({"type": "call_busy", "call_id": call_id, "identity": user}),
                );
                self.webhook("call.busy", &call_id, Some(&user));
                continue;
            }
            if online {
                if let Some(call) = self.calls.get(&call_id) {
                    let msg = Self::incoming_message(call, busy);
                    self.send_all_devices(&user, msg);
                }
            } else {
                self.send(
                    from,
                    from_device,
                    json!({"type": "call_unreachable", "call_id": call_id, "identity": user}),
                );
                self.webhook("call.unreachable", &call_id, Some(&user));
            }
        }
        self.end_if_nobody_left(&call_id, now);
        Ok(self.created_message(&call_id))
    }

    fn created_message(&self, call_id: &str) -> Value {
        let Some(call) = self.calls.get(call_id) else {
            return json!({"type": "call_created", "call_id": call_id});
        };
        json!({
            "type": "call_created",
            "call_id": call.id,
            "media": call.media,
            "state": call.state,
            "to": call.callees.iter().map(|(u, c)| json!({"identity": u, "state": c.state})).collect::<Vec<_>>(),
        })
    }

    fn callee_mut(&mut self, call_id: &str, user: &str) -> Result<&mut Call, CallError> {
        let call = self.calls.get_mut(call_id).ok_or(CallError::UnknownCall)?;
        if call.state == CallState::Ended || !call.callees.contains_key(user) {
            return Err(CallError::UnknownCall);
        }
        Ok(call)
    }

    /// A callee's device is ringing.
    pub fn ack(&mut self, user: &str, call_id: &str) -> Result<(), CallError> {
        let call = self.callee_mut(call_id, user)?;
        let Some(c) = call.callees.get_mut(user) else {
            return Err(CallError::UnknownCall);
        };
        c.reached = true;
        if c.state != CalleeState::Calling {
            return Ok(());
        }
        c.state = CalleeState::Ringing;
        let (from, from_device) = (call.from.clone(), call.from_device.clone());
        self.send(
            &from,
            &from_device,
            json!({"type": "call_ringing", "call_id": call_id, "identity": user}),
        );
        self.webhook("call.ringing", call_id, Some(user));
        Ok(())
    }

    pub fn accept(
        &mut self,
        user: &str,
        device: &str,
        call_id: &str,
        now: Now,
    ) -> Result<(), CallError> {
        let join_deadline = now.instant + self.settings.join_timeout;
        let call = self.callee_mut(call_id, user)?;
        let Some(c) = call.callees.get_mut(user) else {
            return Err(CallError::UnknownCall);
        };
        match c.state {
            CalleeState::Calling | CalleeState::Ringing => {}
            CalleeState::Accepted => return Err(CallError::AlreadyAnswered),
            _ => return Err(CallError::UnknownCall),
        }
        c.state = CalleeState::Accepted;
        c.device = Some(device.to_string());
        call.members.insert(user.to_string());
        // The first answer opens the room for the caller too; later ones (a group call, a user
        // added to a running call) admit only the one who answered: the others are inside.
        let first_answer = call.state == CallState::Ringing;
        if first_answer {
            call.state = CallState::Active;
            call.answered_unix = Some(now.unix);
        }
        let room = call.room.clone();
        let members: Vec<(String, String)> = if first_answer {
            call.member_devices()
        } else {
            vec![(user.to_string(), device.to_string())]
        };
        for (u, _) in &members {
            if !call.joined.contains(u) {
                call.join_deadlines.insert(u.clone(), join_deadline);
            }
        }
        for (u, d) in members {
            self.effects.push(Effect::Admit {
                user: u,
                device: d,
                call_id: call_id.to_string(),
                room: room.clone(),
                accepted_by: user.to_string(),
            });
        }
        self.stop_other_devices(user, Some(device), call_id, "answered_elsewhere");
        self.webhook("call.answered", call_id, Some(user));
        Ok(())
    }

    fn stop_other_devices(
        &mut self,
        user: &str,
        except: Option<&str>,
        call_id: &str,
        reason: &str,
    ) {
        let devices: Vec<String> = self
            .devices
            .get(user)
            .into_iter()
            .flatten()
            .map(|(d, _)| d.clone())
            .filter(|d| Some(d.as_str()) != except)
            .collect();
        for d in devices {
            self.send(
                user,
                &d,
                json!({"type": "call_stopped_ringing", "call_id": call_id, "reason": reason}),
            );
        }
    }

    pub fn decline(
        &mut self,
        user: &str,
        device: &str,
        call_id: &str,
        now: Now,
    ) -> Result<(), CallError> {
        let call = self.callee_mut(call_id, user)?;
        let Some(c) = call.callees.get_mut(user) else {
            return Err(CallError::UnknownCall);
        };
        if !matches!(c.state, CalleeState::Calling | CalleeState::Ringing) {
            return Err(CallError::AlreadyAnswered);
        }
        c.state = CalleeState::Declined;
        let (from, from_device) = (call.from.clone(), call.from_device.clone());
        self.send(
            &from,
            &from_device,
            json!({"type": "call_declined", "call_id": call_id, "identity": user}),
        );
        self.stop_other_devices(user, Some(device), call_id, "declined_elsewhere");
        self.webhook("call.declined", call_id, Some(user));
        self.end_if_nobody_left(call_id, now);
        Ok(())
    }

    pub fn cancel(&mut self, user: &str, call_id: &str, now: Now) -> Result<(), CallError> {
        let call = self.calls.get(call_id).ok_or(CallError::UnknownCall)?;
        if call.from != user || call.state == CallState::Ended {
            return Err(CallError::UnknownCall);
        }
        if call.state != CallState::Ringing {
            return Err(CallError::AlreadyAnswered);
        }
        self.end(call_id, EndReason::Cancelled, now);
        Ok(())
    }

    /// A member leaves; a 1:1 call ends, a group call when nobody is left.
    pub fn hangup(&mut self, user: &str, call_id: &str, now: Now) -> Result<(), CallError> {
        let call = self.calls.get(call_id).ok_or(CallError::UnknownCall)?;
        if call.state == CallState::Ended || !call.members.contains(user) {
            return Err(CallError::UnknownCall);
        }
        if call.state == CallState::Ringing {
            self.end(call_id, EndReason::Cancelled, now);
        } else {
            self.member_left(call_id, user, EndReason::Hangup, now);
        }
        Ok(())
    }

    /// The user's participant entered the call's room: it is in the call for real.
    pub fn room_member_joined(&mut self, room: &str, user: &str) {
        let Some(call) = room
            .strip_prefix("call-")
            .and_then(|id| self.calls.get_mut(id))
        else {
            return;
        };
        call.join_deadlines.remove(user);
        call.joined.insert(user.to_string());
    }

    /// The user's media participant left the call's room for good.
    pub fn room_member_left(&mut self, room: &str, user: &str, now: Now) {
        let Some(id) = room.strip_prefix("call-").map(str::to_string) else {
            return;
        };
        if self
            .calls
            .get(&id)
            .is_some_and(|c| c.state == CallState::Active && c.members.contains(user))
        {
            self.member_left(&id, user, EndReason::MemberLeft, now);
        }
    }

    fn member_left(&mut self, call_id: &str, user: &str, reason: EndReason, now: Now) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if !call.group {
            self.end(call_id, reason, now);
            return;
        }
        let device = if user == call.from {
            Some(call.from_device.clone())
        } else {
            call.callees.get(user).and_then(|c| c.device.clone())
        };
        call.members.remove(user);
        if let Some(c) = call.callees.get_mut(user) {
            c.state = CalleeState::Left;
        }
        let empty = call.members.is_empty();
        let duration = call
            .answered_unix
            .map(|a| now.unix.saturating_sub(a))
            .unwrap_or(0);
        if let Some(d) = device {
            let msg = json!({"type": "call_ended", "call_id": call_id, "reason": reason, "duration_s": duration});
            self.send(user, &d, msg);
        }
        if empty {
            self.end(call_id, EndReason::Empty, now);
        }
    }

    pub fn server_end(&mut self, call_id: &str, now: Now) -> Result<(), CallError> {
        match self.calls.get(call_id) {
            Some(c) if c.state != CallState::Ended => {
                self.end(call_id, EndReason::EndedByServer, now);
                Ok(())
            }
            _ => Err(CallError::UnknownCall),
        }
    }

    /// Ring timeouts, and members who never joined the room.
    pub fn tick(&mut self, now: Now) {
        self.expire_joins(now);
        let due: Vec<String> = self
            .calls
            .values()
            .filter(|c| {
                c.state != CallState::Ended
                    && c.ring_deadline <= now.instant
                    && c.pending().next().is_some()
            })
            .map(|c| c.id.clone())
            .collect();
        for id in due {
            let pending: Vec<(String, bool)> = self
                .calls
                .get(&id)
                .map(|c| c.pending().map(|(u, x)| (u.clone(), x.reached)).collect())
                .unwrap_or_default();
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            let (from, from_device) = (call.from.clone(), call.from_device.clone());
            for (user, reached) in &pending {
                if let Some(c) = call.callees.get_mut(user) {
                    c.state = if *reached {
                        CalleeState::Missed
                    } else {
                        CalleeState::Unreachable
                    };
                }
            }
            for (user, reached) in pending {
                let kind = if reached {
                    "call_missed"
                } else {
                    "call_unreachable"
                };
                self.send(
                    &from,
                    &from_device,
                    json!({"type": kind, "call_id": id, "identity": user}),
                );
                self.stop_other_devices(&user, None, &id, "missed");
                self.webhook("call.missed", &id, Some(&user));
            }
            self.end_if_nobody_left(&id, now);
        }
    }

    /// Members admitted to an active call's room who did not join it in time leave the call
    /// (`not_joined`): a 1:1 call ends instead of staying active for ever.
    fn expire_joins(&mut self, now: Now) {
        let due: Vec<(String, String)> = self
            .calls
            .values()
            .filter(|c| c.state == CallState::Active)
            .flat_map(|c| {
                c.join_deadlines
                    .iter()
                    .filter(|(_, d)| **d <= now.instant)
                    .map(|(u, _)| (c.id.clone(), u.clone()))
            })
            .collect();
        for (id, user) in due {
            if let Some(call) = self.calls.get_mut(&id) {
                call.join_deadlines.remove(&user);
            }
            self.member_left(&id, &user, EndReason::NotJoined, now);
        }
    }

    /// Ends a ringing call once nobody rings and nobody accepted.
    fn end_if_nobody_left(&mut self, call_id: &str, now: Now) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if call.state != CallState::Ringing || call.pending().next().is_some() {
            return;
        }
        let reason = [
            (CalleeState::Declined, EndReason::Declined),
            (CalleeState::Missed, EndReason::Missed),
            (CalleeState::Busy, EndReason::Busy),
            (CalleeState::Unreachable, EndReason::Unreachable),
        ]
        .into_iter()
        .find(|(s, _)| call.callees.values().any(|c| c.state == *s))
        .map(|(_, r)| r)
        .unwrap_or(EndReason::Cancelled);
        self.end(call_id, reason, now);
    }

    fn end(&mut self, call_id: &str, reason: EndReason, now: Now) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.state == CallState::Ended {
            return;
        }
        let was_active = call.state == CallState::Active;
        call.state = CallState::Ended;
        call.end_reason = Some(reason);
        call.ended_unix = Some(now.unix);
        let duration = call
            .answered_unix
            .map(|a| now.unix.saturating_sub(a))
            .unwrap_or(0);
        let members = call.member_devices();
        let ringing: Vec<String> = call.pending().map(|(u, _)| u.clone()).collect();
        let room = call.room.clone();
        let ended = json!({"type": "call_ended", "call_id": call_id, "reason": reason, "duration_s": duration});
        for (u, d) in members {
            self.send(&u, &d, ended.clone());
        }
        let stop_reason = match reason {
            EndReason::Cancelled | EndReason::CallerGone => "cancelled",
            EndReason::Missed => "missed",
            _ => "ended",
        };
        for user in ringing {
            self.stop_other_devices(&user, None, call_id, stop_reason);
        }
        if was_active {
            self.effects.push(Effect::CloseRoom { room });
        }
        self.webhook("call.ended", call_id, None);
        self.ended.push_back(call_id.to_string());
        while self.ended.len() > KEEP_ENDED {
            if let Some(old) = self.ended.pop_front() {
                self.calls.remove(&old);
            }
        }
    }
}
