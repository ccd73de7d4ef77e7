//! Broadcast in and out over plain HTTP: WHIP publishers (RFC 9725, e.g. OBS) and WHEP
//! viewers. Each session is an ordinary participant of the room without a WebSocket: it
//! joins through the hub with its token's identity and grants, publishes or views through
//! the same media API, and reads the room's messages from its own outbox instead of a socket
//! (a WHIP publisher drops them; a WHEP viewer follows the room's speaker with them, see
//! [`follow`]). The room sees a WHIP publisher like anyone else (shown, muted by an admin,
//! simulcast); a WHEP viewer is hidden.

pub mod follow;
mod http;
pub mod offer;

pub use http::routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing::{info, warn};
use zvon_sfu::api::{
    ParticipantId, SfuRequest, SfuResponse, TrackId, TrackKind, TrackSource, VideoSubscription,
};

use crate::protocol::{ErrorCode, LeaveReason, ServerMessage, TrackDeclaration};
use crate::rooms::{outbox, random_id, OutboxReceiver, Queued, Refusal};
use crate::session::SessionContext;
use crate::token::Claims;
use follow::{Choice, Follow};
use offer::{inspect, OfferError};

/// Which of the two protocols a session speaks; also its URL prefix and webhook prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Whip,
    Whep,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

/// Why a request was refused; the HTTP layer maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadOffer(String),
    #[error("{0}")]
    UnsupportedCodec(String),
    #[error("no such session")]
    NotFound,
    #[error("{1}")]
    Refused(ErrorCode, String),
}

impl From<Refusal> for BroadcastError {
    fn from((code, message): Refusal) -> Self {
        match code {
            ErrorCode::InvalidSdp => BroadcastError::BadOffer(message),
            ErrorCode::PermissionDenied | ErrorCode::Banned | ErrorCode::WrongRoom => {
                BroadcastError::Forbidden(message)
            }
            _ => BroadcastError::Refused(code, message),
        }
    }
}

impl From<OfferError> for BroadcastError {
    fn from(e: OfferError) -> Self {
        match e {
            OfferError::Malformed(_) => BroadcastError::BadOffer(e.to_string()),
            OfferError::UnsupportedCodec(_) => BroadcastError::UnsupportedCodec(e.to_string()),
        }
    }
}

struct Session {
    kind: Kind,
    room: String,
    identity: String,
    participant: String,
}

/// The open WHIP and WHEP sessions of this server, by their secret resource id.
pub struct Broadcasts {
    ctx: Arc<SessionContext>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// A session that was set up: its resource id and the SDP answer.
pub struct Started {
    pub id: String,
    pub answer: String,
}

impl Broadcasts {
    pub fn new(ctx: Arc<SessionContext>) -> Arc<Self> {
        Arc::new(Broadcasts {
            ctx,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.sessions().values().filter(|s| s.kind == kind).count()
    }

    /// A WHIP publisher enters `room` as its token's identity and publishes the offer.
    pub async fn publish(
        self: &Arc<Self>,
        claims: &Claims,
        sdp: &str,
    ) -> Result<Started, BroadcastError> {
        if !claims.grants.can_publish {
            return Err(BroadcastError::Forbidden(
                "the token lacks the can_publish grant".into(),
            ));
        }
        let media = inspect(sdp)?;
        let declarations: Vec<TrackDeclaration> = media
            .iter()
            .filter(|m| m.sends)
            .map(|m| TrackDeclaration {
                mid: m.mid.clone(),
                kind: m.kind,
                source: match m.kind {
                    TrackKind::Audio => TrackSource::Microphone,
                    TrackKind::Video => TrackSource::Camera,
                },
                muted: false,
            })
            .collect();
        if declarations.is_empty() {
            return Err(BroadcastError::BadOffer(
                "a WHIP offer sends audio or video".into(),
            ));
        }
        // It publishes only: no subscriber connection is ever offered to it.
        let mut claims = claims.clone();
        claims.grants.can_subscribe = false;
        let (participant, receiver) = self.join(&claims).await?;
        let hub = &self.ctx.hub;
        let answer = match hub
            .publish(&participant, sdp.to_string(), declarations)
            .await
        {
            Ok(ServerMessage::PublishAnswer { sdp, .. }) => sdp,
            Ok(_) => unreachable!("publish answers with publish_answer"),
            Err(refusal) => {
                hub.remove(&participant, LeaveReason::Left).await;
                return Err(refusal.into());
            }
        };
        Ok(self.started(Kind::Whip, &claims, participant, receiver, None, answer))
    }

    /// A WHEP viewer enters `room` hidden and receives whom `choice` names.
    pub async fn view(
        self: &Arc<Self>,
        claims: &Claims,
        sdp: &str,
        choice: Choice,
    ) -> Result<Started, BroadcastError> {
        if !claims.grants.can_subscribe {
            return Err(BroadcastError::Forbidden(
                "the token lacks the can_subscribe grant".into(),
            ));
        }
        let media = inspect(sdp)?;
        if !media.iter().any(|m| m.receives) {
            return Err(BroadcastError::BadOffer(
                "a WHEP offer receives audio or video".into(),
            ));
        }
        // Hidden, and under an identity of its own: a viewer neither shows in the room nor
        // replaces its user's own session there.
        let mut claims = claims.clone();
        claims.sub = format!("{}~whep-{}", claims.sub, random_id(6));
        claims.grants.hidden = true;
        claims.grants.can_publish = false;
        claims.grants.can_subscribe = false;
        let (participant, receiver) = self.join(&claims).await?;
        let hub = &self.ctx.hub;
        let request = SfuRequest::ViewerOffer {
            participant: ParticipantId(participant.clone()),
            sdp: sdp.to_string(),
        };
        let answer = match hub.media().request(request).await {
            Ok(SfuResponse::PublishAnswer { sdp }) => sdp,
            Ok(other) => {
                hub.remove(&participant, LeaveReason::Left).await;
                return Err(BroadcastError::Refused(
                    ErrorCode::Internal,
                    format!("unexpected media answer {other:?}"),
                ));
            }
            Err(e) => {
                hub.remove(&participant, LeaveReason::Left).await;
                let refusal: BroadcastError = match e {
                    zvon_sfu::SfuError::InvalidSdp(m) | zvon_sfu::SfuError::InvalidRequest(m) => {
                        BroadcastError::BadOffer(m)
                    }
                    other => {
                        BroadcastError::Refused(ErrorCode::MediaUnavailable, other.to_string())
                    }
                };
                return Err(refusal);
            }
        };
        let follow = Follow::new(choice, &participant);
        Ok(self.started(
            Kind::Whep,
            &claims,
            participant,
            receiver,
            Some(follow),
            answer,
        ))
    }

    async fn join(&self, claims: &Claims) -> Result<(String, OutboxReceiver), BroadcastError> {
        let limits = &self.ctx.limits;
        let (outbox, receiver) = outbox(
            limits.max_queued_messages,
            limits.max_queued_bytes,
            self.ctx.metrics.queued_bytes(),
        );
        let joined = self
            .ctx
            .hub
            .join(
                claims,
                Some(&claims.room),
                VideoSubscription::OnDemand,
                outbox,
                None,
            )
            .await?;
        Ok((joined.participant_id, receiver))
    }

    /// Records the session and starts the task that reads its participant's messages.
    fn started(
        self: &Arc<Self>,
        kind: Kind,
        claims: &Claims,
        participant: String,
        receiver: OutboxReceiver,
        follow: Option<Follow>,
        answer: String,
    ) -> Started {
        let id = random_id(22);
        let session = Session {
            kind,
            room: claims.room.clone(),
            identity: claims.sub.clone(),
            participant: participant.clone(),
        };
        self.ctx.hub.webhooks().send(
            &format!("{}.started", kind.name()),
            json!({"session_id": id, "room": session.room, "identity": session.identity,
                "participant_id": participant}),
        );
        info!(session = %id, room = %session.room, participant = %participant, "{} session started", kind.name());
        self.sessions().insert(id.clone(), session);
        tokio::spawn(self.clone().read_room(id.clone(), receiver, follow));
        Started { id, answer }
    }

    /// Reads what the hub sends the session's participant, as a socket writer would, until it
    /// leaves (DELETE, removed by an admin, replaced, media lost); then the session ends.
    async fn read_room(
        self: Arc<Self>,
        id: String,
        mut receiver: OutboxReceiver,
        mut follow: Option<Follow>,
    ) {
        let reason = loop {
            match receiver.recv().await {
                Some(Queued::Text(text)) => {
                    let Some(follow) = follow.as_mut() else {
                        continue;
                    };
                    let Ok(message) = serde_json::from_str(text.as_str()) else {
                        continue;
                    };
                    if let Some(target) = follow.on_message(&message) {
                        self.retarget(&id, target).await;
                    }
                }
                Some(Queued::Fatal(code, _)) => {
                    break serde_json::to_value(code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_else(|| "error".into())
                }
                Some(Queued::Close) | Some(Queued::GoingAway) | None => break "left".into(),
            }
        };
        let Some(session) = self.sessions().remove(&id) else {
            return;
        };
        self.ended(&id, &session, &reason);
    }

    async fn retarget(&self, id: &str, target: follow::Target) {
        let Some(participant) = self.sessions().get(id).map(|s| s.participant.clone()) else {
            return;
        };
        let request = SfuRequest::ViewerTarget {
            participant: ParticipantId(participant),
            publisher: target.publisher.map(ParticipantId),
            track: target.track.map(TrackId),
        };
        if let Err(e) = self.ctx.hub.media().request(request).await {
            warn!(session = %id, "viewer not switched: {e}");
        }
    }

    fn ended(&self, id: &str, session: &Session, reason: &str) {
        info!(session = %id, reason, "{} session ended", session.kind.name());
        self.ctx.hub.webhooks().send(
            &format!("{}.ended", session.kind.name()),
            json!({"session_id": id, "room": session.room, "identity": session.identity,
                "participant_id": session.participant, "reason": reason}),
        );
    }

    /// `DELETE` on a session's resource: only its own identity (or an admin of its room) may
    /// end it.
    pub async fn end(
        &self,
        kind: Kind,
        room: &str,
        id: &str,
        claims: &Claims,
    ) -> Result<(), BroadcastError> {
        let session = {
            let mut sessions = self.sessions();
            let Some(s) = sessions
                .get(id)
                .filter(|s| s.kind == kind && s.room == room)
            else {
                return Err(BroadcastError::NotFound);
            };
            let own = claims.room == s.room
                && (s.identity == claims.sub
                    || s.identity.starts_with(&format!("{}~whep-", claims.sub))
                    || claims.grants.room_admin);
            if !own {
                return Err(BroadcastError::Forbidden(
                    "this session belongs to someone else".into(),
                ));
            }
            sessions.remove(id).ok_or(BroadcastError::NotFound)?
        };
        self.ctx
            .hub
            .remove(&session.participant, LeaveReason::Left)
            .await;
        self.ended(id, &session, "deleted");
        Ok(())
    }
}
