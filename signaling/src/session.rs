//! One WebSocket: reads client frames, enforces limits, talks to the hub, writes replies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{Sink, SinkExt, StreamExt};
use tracing::debug;

use crate::config::{ApiKey, Limits};
use crate::fleet::{lease_for_room, proxy, Fleet, Route, CALLS_LEASE};
use crate::metrics::Metrics;
use crate::protocol::{
    parse_client_message, ClientMessage, ErrorCode, LeaveReason, ServerMessage,
    MAX_TRACK_SETTINGS_BATCH, PROTOCOL_VERSION,
};
use crate::rate_limit::TokenBucket;
use crate::rooms::{
    outbox, CallAction, DeviceSession, Hub, Joined, Outbound, Outbox, OverflowSignal, Queued,
    Refusal,
};
use crate::token::{self, Claims, TokenError};

const PING_INTERVAL: Duration = Duration::from_secs(15);
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);
/// How long a session cut for not reading tries to deliver its `slow_consumer` and close.
const SLOW_GOODBYE: Duration = Duration::from_secs(1);

pub struct SessionContext {
    pub hub: Arc<Hub>,
    pub keys: Arc<Vec<ApiKey>>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// Cluster mode: rooms owned by other nodes are served there.
    pub fleet: Option<Arc<Fleet>>,
}

/// How long a join waits for a room whose owner just died to be taken over (its lease).
const TAKEOVER_WAIT: Duration = Duration::from_secs(6);

enum Flow {
    Continue,
    /// Send this error, close with its code, end the session.
    Fatal(ErrorCode, String),
}

struct Session {
    ctx: Arc<SessionContext>,
    outbox: Outbox,
    joined: Option<Joined>,
    /// Set when this is a device socket (calls) instead of a room socket.
    device: Option<DeviceSession>,
    left: bool,
    closed_by_client: bool,
}

/// Serves one WebSocket. In cluster mode a room socket whose room another node owns is piped
/// to that node (`proxied_by` names the node that piped this one here: it is never re-piped).
pub async fn run(mut socket: WebSocket, ctx: Arc<SessionContext>, proxied_by: Option<String>) {
    let Some(fleet) = ctx.fleet.clone() else {
        return serve(socket, ctx, None, None).await;
    };
    let first = match tokio::time::timeout(ctx.limits.join_timeout, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        Ok(Some(Ok(other))) => return serve(socket, ctx, Some(other), None).await,
        Ok(_) => return,
        Err(_) => {
            let late = (
                ErrorCode::JoinTimeout,
                format!("no join within {:?}", ctx.limits.join_timeout),
            );
            return serve(socket, ctx, None, Some(late)).await;
        }
    };
    // Only a join or register with a good token is routed; anything else (bad tokens,
    // garbage) gets the usual local answer. Device sockets and call rooms follow the calls
    // lease, other rooms their own.
    let lease = match parse_client_message(&first).message {
        Ok(ClientMessage::Join { token, .. }) => token::verify(&token, &ctx.keys)
            .ok()
            .map(|claims| lease_for_room(&claims.room).to_string()),
        Ok(ClientMessage::Register { token, .. }) => token::verify(&token, &ctx.keys)
            .ok()
            .map(|_| CALLS_LEASE.to_string()),
        _ => None,
    }
    .filter(|lease| !lease.is_empty());
    let Some(room) = lease else {
        return serve(socket, ctx, Some(Message::Text(first.into())), None).await;
    };
    let Some(leases) = &fleet.rooms else {
        return serve(socket, ctx, Some(Message::Text(first.into())), None).await;
    };
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    let refusal = loop {
        let retry = match leases.route(&room).await {
            Ok(Route::Local) => {
                return serve(socket, ctx, Some(Message::Text(first.into())), None).await;
            }
            Ok(Route::Owner { node, .. }) if proxied_by.is_some() => (
                ErrorCode::RoomMoved,
                format!("room is served by {node}; join again"),
            ),
            Ok(Route::Owner { node, url }) => {
                let header = proxy::sign(&fleet.config.secret, fleet.registry.node_id());
                match proxy::connect(&url, &header).await {
                    Ok(upstream) => {
                        let _open = fleet.stats.proxied_session();
                        debug!(room, owner = %node, "socket proxied to the room's owner");
                        return proxy::pipe(socket, upstream, first).await;
                    }
                    Err(e) => (
                        ErrorCode::ClusterUnavailable,
                        format!("room owner {node} unreachable: {e}"),
                    ),
                }
            }
            Err(refusal) => refusal,
        };
        // An owner that just died holds its rooms until its lease runs out; then we claim.
        if tokio::time::Instant::now() >= deadline || retry.0 == ErrorCode::RoomMoved {
            break retry;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    serve(socket, ctx, None, Some(refusal)).await
}

/// The session itself. `first` is a frame the router already read; `refused` ends the
/// session at once with that error.
async fn serve(
    socket: WebSocket,
    ctx: Arc<SessionContext>,
    first: Option<Message>,
    refused: Option<Refusal>,
) {
    let (mut sink, stream) = socket.split();
    let mut stream = futures_util::stream::iter(first.map(Ok)).chain(stream);
    let mut refused = refused;
    let limits = ctx.limits.clone();
    let metrics = ctx.metrics.clone();
    let (outbox, mut outgoing) = outbox(
        limits.max_queued_messages,
        limits.max_queued_bytes,
        metrics.queued_bytes(),
    );
    let overflow = outgoing.overflow_signal();
    let _open = metrics.connection_opened();
    let mut session = Session {
        ctx,
        outbox,
        joined: None,
        device: None,
        left: false,
        closed_by_client: false,
    };
    let join_deadline = tokio::time::sleep(limits.join_timeout);
    tokio::pin!(join_deadline);
    let burst = limits.messages_per_second.saturating_mul(2);
    let mut bucket = TokenBucket::new(limits.messages_per_second, burst, Instant::now());
    let mut ping = tokio::time::interval(PING_INTERVAL);
    let mut last_heard = Instant::now();
    let mut we_closed = false;
    // The WebSocket layer refused a frame: the rest of it cannot be read any more.
    let mut unreadable = false;
    let writer = Writer {
        deadline: limits.write_timeout,
        overflow: &overflow,
    };

    let fatal: Option<(ErrorCode, String)> = loop {
        if let Some(refusal) = refused.take() {
            break Some(refusal);
        }
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) if is_too_large(&e) => {
                        unreadable = true;
                        break Some(too_large(&limits));
                    }
                    _ => break None,
                };
                last_heard = Instant::now();
                let flow = match frame {
                    Message::Text(text) => {
                        if text.len() > limits.max_message_bytes {
                            let (code, message) = too_large(&limits);
                            Flow::Fatal(code, message)
                        } else if !bucket.try_take(Instant::now()) {
                            Flow::Fatal(ErrorCode::RateLimited, format!("more than {} messages per second (bursts of {burst})", limits.messages_per_second))
                        } else {
                            session.handle_text(text.as_str()).await
                        }
                    }
                    Message::Binary(_) => {
                        metrics.received_invalid();
                        session.reply_error(ErrorCode::InvalidMessage, "binary frames are not part of the protocol", None);
                        Flow::Continue
                    }
                    Message::Close(_) => {
                        // A closing handshake is a deliberate goodbye (a closed tab sends one);
                        // only a socket that just drops gets the reconnect grace period.
                        session.closed_by_client = true;
                        break None;
                    }
                    Message::Ping(_) | Message::Pong(_) => Flow::Continue,
                };
                if let Flow::Fatal(code, message) = flow {
                    break Some((code, message));
                }
            }
            out = outgoing.recv() => {
                let Some(out) = out else { break None };
                match out {
                    Queued::Text(text) => {
                        metrics.sent(text.as_str());
                        if let Err(failed) = writer.write(&mut sink, Message::Text(text)).await {
                            break failed.into_fatal();
                        }
                    }
                    Queued::Fatal(code, message) => {
                        // The hub already removed us; nothing to detach.
                        session.left = true;
                        break Some((code, message));
                    }
                    Queued::Close => {
                        session.left = true;
                        let close = Message::Close(Some(CloseFrame { code: 1000, reason: "bye".into() }));
                        let _ = writer.write(&mut sink, close).await;
                        we_closed = true;
                        break None;
                    }
                    Queued::GoingAway => {
                        // Handed over, not left: another node adopts the session.
                        session.left = true;
                        let close = Message::Close(Some(CloseFrame { code: 1001, reason: "draining".into() }));
                        let _ = writer.write(&mut sink, close).await;
                        we_closed = true;
                        break None;
                    }
                }
            }
            // Even while nothing is being written: the hub could not queue for this client.
            () = overflow.wait() => break WriteFailed::Overflow.into_fatal(),
            // A registered device socket is signed in too: it never sends `join`.
            _ = &mut join_deadline, if session.joined.is_none() && session.device.is_none() => {
                break Some((ErrorCode::JoinTimeout, format!("no join within {:?}", limits.join_timeout)));
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    debug!("socket silent for {SILENCE_LIMIT:?}; dropping");
                    break None;
                }
                if let Err(failed) = writer.write(&mut sink, Message::Ping(Vec::new().into())).await {
                    break failed.into_fatal();
                }
            }
        }
    };

    let slow = matches!(fatal, Some((ErrorCode::SlowConsumer, _)));
    if let Some((code, message)) = fatal {
        // Flush what was queued (e.g. a reply) before the error, then close with the code.
        // Not for a client that does not read: that queue is what it could not take.
        while let Some(out) = outgoing.try_recv().filter(|_| !slow) {
            let Queued::Text(text) = out else { continue };
            metrics.sent(text.as_str());
            if writer.write(&mut sink, Message::Text(text)).await.is_err() {
                break;
            }
        }
        if slow {
            debug!("client does not read what it is sent: {message}");
        }
        let error = ServerMessage::error(code, message).to_json(None);
        metrics.sent(&error);
        let close_code = match code {
            ErrorCode::UnknownCall => 4404,
            _ => code.close_code().unwrap_or(1011),
        };
        let close = Message::Close(Some(CloseFrame {
            code: close_code,
            reason: code_name(code).into(),
        }));
        // A slow client most likely cannot take the goodbye either: try briefly, then cut.
        let goodbye = if slow {
            SLOW_GOODBYE
        } else {
            limits.write_timeout
        };
        let _ = tokio::time::timeout(goodbye, async {
            sink.send(Message::Text(error.into())).await?;
            sink.send(close).await
        })
        .await;
        we_closed = true;
    }
    if unreadable {
        // The client may still be sending the refused frame, which can no longer be read:
        // closing now would reset the connection, and a reset can discard the error we just
        // sent before the client reads it.
        tokio::time::sleep(CLOSE_HANDSHAKE).await;
    } else if we_closed && !session.closed_by_client && !slow {
        // Finish the closing handshake: dropping a socket with unread input makes the kernel
        // reset it, and the client could lose the error we just sent.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::Close(_) = frame {
                    break;
                }
            }
        })
        .await;
    }
    if let Some(device) = &session.device {
        session
            .ctx
            .hub
            .unregister_device(device, session.closed_by_client || session.left);
    }
    // A slow consumer is treated as a dropped socket: it may resume within the grace period
    // (its `joined` snapshot replaces the events it could not take).
    if let (Some(j), false) = (&session.joined, session.left) {
        if session.closed_by_client {
            session
                .ctx
                .hub
                .remove_session(&j.participant_id, j.session)
                .await;
        } else {
            session.ctx.hub.detach(&j.participant_id, j.session);
        }
    }
}

fn too_large(limits: &Limits) -> Refusal {
    (
        ErrorCode::MessageTooLarge,
        format!("messages are limited to {} bytes", limits.max_message_bytes),
    )
}

/// Whether the WebSocket layer refused a frame for its size (the transport limit).
fn is_too_large(e: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        e.source()
            .and_then(|e| e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

/// Why a frame could not be written.
enum WriteFailed {
    /// The socket is gone.
    Closed,
    /// The client did not take the frame within the write deadline.
    Stuck(Duration),
    /// The hub could not queue for this client any more.
    Overflow,
}

impl WriteFailed {
    fn into_fatal(self) -> Option<Refusal> {
        match self {
            WriteFailed::Closed => None,
            WriteFailed::Stuck(deadline) => Some((
                ErrorCode::SlowConsumer,
                format!("a message waited more than {deadline:?} to be written"),
            )),
            WriteFailed::Overflow => Some((
                ErrorCode::SlowConsumer,
                "too many messages waiting for this client".into(),
            )),
        }
    }
}

/// Writes frames with a deadline, and gives up as soon as the hub flags the client as too far
/// behind: a write stuck on a client that does not read would otherwise hold the session (and
/// everything queued for it) forever.
struct Writer<'a> {
    deadline: Duration,
    overflow: &'a OverflowSignal,
}

impl Writer<'_> {
    async fn write<S>(&self, sink: &mut S, frame: Message) -> Result<(), WriteFailed>
    where
        S: Sink<Message> + Unpin,
    {
        tokio::select! {
            sent = tokio::time::timeout(self.deadline, sink.send(frame)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(WriteFailed::Closed),
                Err(_) => Err(WriteFailed::Stuck(self.deadline)),
            },
            () = self.overflow.wait() => Err(WriteFailed::Overflow),
        }
    }
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Session {
    /// Queues a reply. If the queue refuses it, the client is too far behind and the session
    /// is already being cut.
    fn reply(&self, message: ServerMessage, request_id: Option<String>) {
        let _ = self.outbox.send(Outbound::Message(message, request_id));
    }

    fn reply_error(&self, code: ErrorCode, message: impl Into<String>, request_id: Option<String>) {
        self.reply(ServerMessage::error(code, message), request_id);
    }

    /// Non-fatal refusals are answered and the session goes on; fatal ones end it.
    fn refuse(&self, (code, message): Refusal, request_id: Option<String>) -> Flow {
        if code.close_code().is_some() {
            return Flow::Fatal(code, message);
        }
        self.reply_error(code, message, request_id);
        Flow::Continue
    }

    /// Checks the protocol version and the token of a `join` or `register`.
    fn sign_in(&self, protocol: u32, token: &str) -> Result<Claims, Flow> {
        if protocol != PROTOCOL_VERSION {
            let message = format!("this server speaks protocol {PROTOCOL_VERSION}");
            return Err(Flow::Fatal(ErrorCode::UnsupportedProtocol, message));
        }
        token::verify(token, &self.ctx.keys).map_err(|e| match e {
            TokenError::Expired => Flow::Fatal(ErrorCode::TokenExpired, "token has expired".into()),
            e => Flow::Fatal(ErrorCode::Unauthorized, e.to_string()),
        })
    }

    async fn handle_text(&mut self, text: &str) -> Flow {
        let received_at = Instant::now();
        let parsed = parse_client_message(text);
        self.ctx.metrics.received(text, parsed.message.is_ok());
        let request_id = parsed.request_id;
        let message = match parsed.message {
            Ok(m) => m,
            Err(refusal) => return self.refuse(refusal, request_id),
        };
        let signed_in = self.joined.is_some() || self.device.is_some();
        let pid = match &message {
            ClientMessage::Ping => {
                self.reply(ServerMessage::Pong, request_id);
                return Flow::Continue;
            }
            ClientMessage::Join { .. } | ClientMessage::Register { .. } if signed_in => {
                let refusal = (
                    ErrorCode::AlreadyJoined,
                    "this socket already joined or registered".into(),
                );
                return self.refuse(refusal, request_id);
            }
            ClientMessage::Join { .. } | ClientMessage::Register { .. } => String::new(),
            ClientMessage::CallInvite { .. }
            | ClientMessage::CallAck { .. }
            | ClientMessage::CallAccept { .. }
            | ClientMessage::CallDecline { .. }
            | ClientMessage::CallCancel { .. }
            | ClientMessage::CallHangup { .. } => {
                let Some(device) = &self.device else {
                    let refusal = (ErrorCode::NotRegistered, "send register first".into());
                    return self.refuse(refusal, request_id);
                };
                let action = match message {
                    ClientMessage::CallInvite { to, media, call_id } => {
                        CallAction::Invite { to, media, call_id }
                    }
                    ClientMessage::CallAck { call_id } => CallAction::Ack(call_id),
                    ClientMessage::CallAccept { call_id } => CallAction::Accept(call_id),
                    ClientMessage::CallDecline { call_id } => CallAction::Decline(call_id),
                    ClientMessage::CallCancel { call_id } => CallAction::Cancel(call_id),
                    ClientMessage::CallHangup { call_id } => CallAction::Hangup(call_id),
                    _ => return Flow::Continue,
                };
                return match self.ctx.hub.call_action(device, action, request_id.clone()) {
                    Ok(()) => Flow::Continue,
                    Err(refusal) => self.refuse(refusal, request_id),
                };
            }
            _ => match &self.joined {
                Some(j) => j.participant_id.clone(),
                None => {
                    return self
                        .refuse((ErrorCode::NotJoined, "send join first".into()), request_id)
                }
            },
        };
        let hub = self.ctx.hub.clone();
        match message {
            ClientMessage::Join {
                protocol,
                token,
                room,
                resume,
                lecture_mode,
                video_subscription,
            } => {
                let claims = match self.sign_in(protocol, &token) {
                    Ok(c) => c,
                    Err(fatal) => return fatal,
                };
                let joined = match resume {
                    Some(resume_token) => {
                        if room.as_deref().is_some_and(|r| r != claims.room) {
                            return Flow::Fatal(
                                ErrorCode::WrongRoom,
                                "token is for another room".into(),
                            );
                        }
                        hub.resume(
                            &claims,
                            &resume_token,
                            self.outbox.clone(),
                            request_id.clone(),
                        )
                        .await
                    }
                    None => {
                        hub.join(
                            &claims,
                            room.as_deref(),
                            video_subscription,
                            self.outbox.clone(),
                            request_id.clone(),
                        )
                        .await
                    }
                };
                match joined {
                    Ok(j) => {
                        self.ctx.metrics.joined(received_at.elapsed());
                        let pid = j.participant_id.clone();
                        self.joined = Some(j);
                        if let Some(enabled) = lecture_mode {
                            let set = hub.set_lecture_mode(&pid, enabled).await;
                            if let Err(refusal) = set {
                                return self.refuse(refusal, request_id);
                            }
                        }
                        Flow::Continue
                    }
                    // A room socket that cannot join has no use: close it.
                    Err((ErrorCode::UnknownCall, message)) => {
                        Flow::Fatal(ErrorCode::UnknownCall, message)
                    }
                    Err(refusal) => self.refuse(refusal, request_id),
                }
            }
            ClientMessage::PublishOffer { sdp, tracks } => {
                match hub.publish(&pid, sdp, tracks).await {
                    Ok(answer) => {
                        self.reply(answer, request_id);
                        Flow::Continue
                    }
                    Err(refusal) => self.refuse(refusal, request_id),
                }
            }
            ClientMessage::SubscriberAnswer { sdp } => match hub.subscriber_answer(&pid, sdp).await
            {
                Ok(()) => Flow::Continue,
                Err(refusal) => self.refuse(refusal, request_id),
            },
            ClientMessage::SubscriberIceRestart => match hub.subscriber_ice_restart(&pid).await {
                Ok(()) => Flow::Continue,
                Err(refusal) => self.refuse(refusal, request_id),
            },
            ClientMessage::Mute { track_id, muted } => match hub.mute(&pid, &track_id, muted).await
            {
                Ok(()) => Flow::Continue,
                Err(refusal) => self.refuse(refusal, request_id),
            },
            ClientMessage::TrackSettings {
                track_id,
                width,
                height,
                enabled,
            } => match hub
                .track_settings(&pid, &track_id, width, height, enabled)
                .await
            {
                Ok(()) => Flow::Continue,
                Err(refusal) => self.refuse(refusal, request_id),
            },
            ClientMessage::TrackSettingsBatch { tracks } => {
                if tracks.is_empty() || tracks.len() > MAX_TRACK_SETTINGS_BATCH {
                    let refusal = (
                        ErrorCode::InvalidRequest,
                        format!("tracks must hold 1 to {MAX_TRACK_SETTINGS_BATCH} entries"),
                    );
                    return self.refuse(refusal, request_id);
                }
                for t in tracks {
                    let applied = hub
                        .track_settings(&pid, &t.track_id, t.width, t.height, t.enabled)
                        .await;
                    if let Err(refusal) = applied {
                        return self.refuse(refusal, request_id);
                    }
                }
                Flow::Continue
            }
            m if m.is_classroom() => match hub.classroom(&pid, m).await {
                Ok(()) => Flow::Continue,
                Err(refusal) => self.refuse(refusal, request_id),
            },
            ClientMessage::Leave => {
                hub.remove(&pid, LeaveReason::Left).await;
                Flow::Continue
            }
            ClientMessage::Register { protocol, token } => {
                let claims = match self.sign_in(protocol, &token) {
                    Ok(c) => c,
                    Err(fatal) => return fatal,
                };
                match hub.register(&claims, self.outbox.clone(), request_id.clone()) {
                    Ok(device) => {
                        self.device = Some(device);
                        Flow::Continue
                    }
                    Err(refusal) => self.refuse(refusal, request_id),
                }
            }
            _ => Flow::Continue,
        }
    }
}
