//! Device sockets and calls between users, on the hub's state: registering devices, carrying
//! call actions to the call book, and doing what the book decides (messages, room tokens,
//! webhooks, closing a finished call's room).

use tracing::{info, warn};

use super::{now, DeviceEntry, Hub, LeaveReason, Outbound, Outbox, Refusal, State};
use crate::calls::{CallError, Effect, Media};
use crate::protocol::{ErrorCode, PROTOCOL_VERSION};
use crate::token::Claims;

/// A registered device socket.
pub struct DeviceSession {
    pub user: String,
    pub device: String,
    pub session: u64,
}

/// A call action from a device.
pub enum CallAction {
    Invite {
        to: Vec<String>,
        media: Media,
        call_id: Option<String>,
    },
    Ack(String),
    Accept(String),
    Decline(String),
    Cancel(String),
    Hangup(String),
}

fn call_refusal(e: CallError) -> Refusal {
    let code = match e {
        CallError::UnknownCall => ErrorCode::UnknownCall,
        CallError::AlreadyAnswered => ErrorCode::CallAlreadyAnswered,
        CallError::CannotCallSelf => ErrorCode::CannotCallSelf,
        CallError::TooManyCalls => ErrorCode::TooManyCalls,
        CallError::Invalid(_) => ErrorCode::InvalidRequest,
    };
    (code, e.to_string())
}

impl Hub {
    /// Signs a device socket in. Calls ringing for its user ring it too.
    pub fn register(
        &self,
        claims: &Claims,
        outbox: Outbox,
        request_id: Option<String>,
    ) -> Result<DeviceSession, Refusal> {
        let device = claims
            .device
            .clone()
            .filter(|d| !d.is_empty() && d.len() <= 64)
            .ok_or((
                ErrorCode::Unauthorized,
                "a device token (with a `device` claim) is needed".to_string(),
            ))?;
        let user = claims.sub.clone();
        if user.is_empty() || user.len() > 128 {
            return Err((
                ErrorCode::Unauthorized,
                "identity must be 1-128 characters".into(),
            ));
        }
        let name = claims.name.clone().unwrap_or_else(|| user.clone());
        let mut state = self.lock();
        let entry = state
            .devices
            .entry((user.clone(), device.clone()))
            .or_insert(DeviceEntry {
                name: name.clone(),
                outbox: None,
                session: 0,
            });
        if let Some(old) = entry.outbox.take() {
            let _ = old.send(Outbound::Close);
        }
        entry.session += 1;
        entry.name = name.clone();
        let session = entry.session;
        let registered = serde_json::json!({
            "type": "registered", "protocol": PROTOCOL_VERSION, "identity": user, "device": device,
        });
        let _ = outbox.send(Outbound::Json(registered, request_id));
        entry.outbox = Some(outbox);
        state.calls.register(&user, &device, &name);
        let effects = state.calls.take_effects();
        self.apply_call_effects(&mut state, effects);
        info!(user = %user, device = %device, "device registered");
        Ok(DeviceSession {
            user,
            device,
            session,
        })
    }

    /// A device socket ended. Closed deliberately: gone now; dropped: gone unless it
    /// registers again within the reconnect grace.
    pub fn unregister_device(&self, s: &DeviceSession, immediately: bool) {
        let key = (s.user.clone(), s.device.clone());
        {
            let mut state = self.lock();
            let Some(entry) = state.devices.get_mut(&key) else {
                return;
            };
            if entry.session != s.session {
                return;
            }
            entry.outbox = None;
            if immediately {
                state.devices.remove(&key);
                state.calls.unregister(&s.user, &s.device, now());
                let effects = state.calls.take_effects();
                self.apply_call_effects(&mut state, effects);
                return;
            }
        }
        let Some(hub) = self.me.upgrade() else {
            return;
        };
        let (grace, session) = (self.limits.reconnect_grace, s.session);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let mut state = hub.lock();
            let expired = state
                .devices
                .get(&key)
                .is_some_and(|e| e.session == session && e.outbox.is_none());
            if expired {
                state.devices.remove(&key);
                state.calls.unregister(&key.0, &key.1, now());
                let effects = state.calls.take_effects();
                hub.apply_call_effects(&mut state, effects);
            }
        });
    }

    /// A call action from a registered device. The reply to an invite (`call_created`) is
    /// queued before the events the action causes, so the device sees its call id first.
    pub fn call_action(
        &self,
        s: &DeviceSession,
        action: CallAction,
        request_id: Option<String>,
    ) -> Result<(), Refusal> {
        let mut state = self.lock();
        let key = (s.user.clone(), s.device.clone());
        let name = state
            .devices
            .get(&key)
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let (user, device, t) = (s.user.as_str(), s.device.as_str(), now());
        let result = match action {
            CallAction::Invite { to, media, call_id } => state
                .calls
                .invite(user, device, &name, &to, media, call_id.as_deref(), t)
                .map(Some),
            CallAction::Ack(id) => state.calls.ack(user, &id).map(|_| None),
            CallAction::Accept(id) => state.calls.accept(user, device, &id, t).map(|_| None),
            CallAction::Decline(id) => state.calls.decline(user, device, &id, t).map(|_| None),
            CallAction::Cancel(id) => state.calls.cancel(user, &id, t).map(|_| None),
            CallAction::Hangup(id) => state.calls.hangup(user, &id, t).map(|_| None),
        };
        if let (Ok(Some(reply)), Some(outbox)) = (
            &result,
            state.devices.get(&key).and_then(|e| e.outbox.as_ref()),
        ) {
            let _ = outbox.send(Outbound::Json(reply.clone(), request_id));
        }
        let effects = state.calls.take_effects();
        self.apply_call_effects(&mut state, effects);
        result.map(|_| ()).map_err(call_refusal)
    }

    /// The server API rings users on behalf of `from`, from one of its online devices.
    pub fn server_invite(
        &self,
        from: &str,
        to: &[String],
        media: Media,
    ) -> Result<serde_json::Value, Refusal> {
        let mut state = self.lock();
        let device = state
            .devices
            .iter()
            .filter(|((u, _), e)| u == from && e.outbox.is_some())
            .map(|((_, d), e)| (d.clone(), e.name.clone()))
            .min();
        let Some((device, name)) = device else {
            return Err((
                ErrorCode::InvalidRequest,
                format!("{from:?} has no online device"),
            ));
        };
        let result = state
            .calls
            .invite(from, &device, &name, to, media, None, now());
        let effects = state.calls.take_effects();
        self.apply_call_effects(&mut state, effects);
        result.map_err(call_refusal)
    }

    pub fn server_end_call(&self, call_id: &str) -> Result<(), Refusal> {
        let mut state = self.lock();
        let result = state.calls.server_end(call_id, now());
        let effects = state.calls.take_effects();
        self.apply_call_effects(&mut state, effects);
        result.map_err(call_refusal)
    }

    pub fn call_report(&self, call_id: &str) -> Option<serde_json::Value> {
        self.lock().calls.call(call_id).map(|c| c.report())
    }

    /// Ring timeouts; called a few times a second.
    pub fn tick_calls(&self) {
        let mut state = self.lock();
        state.calls.tick(now());
        let effects = state.calls.take_effects();
        self.apply_call_effects(&mut state, effects);
    }

    pub(super) fn apply_call_effects(&self, state: &mut State, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::ToDevice {
                    user,
                    device,
                    message,
                } => {
                    if let Some(outbox) = state
                        .devices
                        .get(&(user, device))
                        .and_then(|e| e.outbox.as_ref())
                    {
                        let _ = outbox.send(Outbound::Json(message, None));
                    }
                }
                Effect::Admit {
                    user,
                    device,
                    call_id,
                    room,
                    accepted_by,
                } => {
                    let Some(entry) = state.devices.get(&(user.clone(), device.clone())) else {
                        continue;
                    };
                    let mut claims = Claims::new(
                        &self.call_key.key,
                        &room,
                        &user,
                        std::time::Duration::from_secs(3600),
                    );
                    claims.name = Some(entry.name.clone());
                    claims.device = Some(device.clone());
                    match crate::token::mint(&claims, &self.call_key.secret) {
                        Ok(token) => {
                            let msg = serde_json::json!({
                                "type": "call_accepted", "call_id": call_id, "identity": accepted_by,
                                "room": room, "token": token,
                            });
                            if let Some(outbox) = entry.outbox.as_ref() {
                                let _ = outbox.send(Outbound::Json(msg, None));
                            }
                        }
                        Err(e) => warn!("cannot mint call token: {e}"),
                    }
                }
                Effect::Webhook { event, payload } => self.webhooks.send(event, payload),
                Effect::CloseRoom { room } => {
                    let pids: Vec<String> = state.rooms.get(&room).cloned().unwrap_or_default();
                    if let Some(hub) = self.me.upgrade() {
                        tokio::spawn(async move {
                            for pid in pids {
                                hub.remove(&pid, LeaveReason::RoomClosed).await;
                            }
                        });
                    }
                }
            }
        }
    }
}
