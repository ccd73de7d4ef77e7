//! mediasoup as a load-test target: the benchmark's small mediasoup app
//! (`scripts/bench/mediasoup/server.mjs`) over one WebSocket per participant, JSON messages.
//! mediasoup itself speaks ORTC parameters; the app turns the participant's SDP into
//! transports, producers and consumers and answers/offers SDP, so the WebRTC side here is the
//! same str0m participant as for every other target.
//!
//! The app's model is the participant's: the publisher connection is offered by the client,
//! one subscriber connection is offered by the server and renegotiated as publishers come, one
//! offer at a time. It announces no tracks or participants, like the Janus target.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use super::json_socket;
use super::zvon::{open_tcp, AnswerTrackJson, OfferTrackJson};
use super::{JoinRequest, SignalCommand, SignalEvent, SignalSession, Target, TargetError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct MediasoupTarget {
    addr: SocketAddr,
}

impl MediasoupTarget {
    /// `addr` is the app's WebSocket listener.
    pub fn new(addr: SocketAddr) -> Self {
        MediasoupTarget { addr }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMsg<'a> {
    Join { room: &'a str, identity: &'a str },
    Publish { sdp: &'a str },
    SubscriberAnswer { sdp: &'a str },
    Leave,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMsg {
    Joined {
        participant_id: String,
    },
    PublishAnswer {
        sdp: String,
        tracks: Vec<AnswerTrackJson>,
    },
    SubscriberOffer {
        sdp: String,
        tracks: Vec<OfferTrackJson>,
    },
    Error {
        code: String,
        #[serde(default)]
        message: String,
    },
    #[serde(other)]
    Other,
}

fn to_event(msg: ServerMsg) -> Option<SignalEvent> {
    Some(match msg {
        ServerMsg::Joined { participant_id } => SignalEvent::Joined {
            participant_id,
            others: Vec::new(),
        },
        ServerMsg::PublishAnswer { sdp, tracks } => SignalEvent::PublishAnswer {
            sdp,
            tracks: tracks.into_iter().map(Into::into).collect(),
        },
        ServerMsg::SubscriberOffer { sdp, tracks } => SignalEvent::SubscriberOffer {
            sdp,
            tracks: tracks.into_iter().map(Into::into).collect(),
        },
        ServerMsg::Error { code, message } => SignalEvent::Error { code, message },
        ServerMsg::Other => return None,
    })
}

/// `None`: a command the app has no use for (mute, adaptive stream).
fn encode(cmd: &SignalCommand) -> Option<String> {
    let msg = match cmd {
        SignalCommand::PublishOffer { sdp, .. } => ClientMsg::Publish { sdp },
        SignalCommand::SubscriberAnswer { sdp } => ClientMsg::SubscriberAnswer { sdp },
        SignalCommand::Leave => ClientMsg::Leave,
        SignalCommand::Mute { .. } | SignalCommand::TrackSettings { .. } => return None,
    };
    serde_json::to_string(&msg).ok()
}

async fn open(addr: SocketAddr, req: JoinRequest) -> Result<SignalSession, TargetError> {
    let stream = open_tcp(addr, req.local_ip)
        .await
        .map_err(|e| TargetError::new("connect", e))?;
    let url = format!("ws://{addr}/");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .map_err(|e| TargetError::new("websocket", e))?;
    let join = serde_json::to_string(&ClientMsg::Join {
        room: &req.room,
        identity: &req.identity,
    })
    .map_err(|e| TargetError::new("join", e))?;
    let join_sent = Instant::now();
    ws.send(Message::text(join))
        .await
        .map_err(|e| TargetError::new("websocket", e))?;
    let (events, commands) = json_socket::spawn(
        ws,
        encode,
        |text| serde_json::from_str::<ServerMsg>(text).map(to_event),
        None,
    );
    Ok(SignalSession {
        events,
        commands,
        join_sent,
    })
}

impl Target for MediasoupTarget {
    fn name(&self) -> &str {
        "mediasoup"
    }

    fn connect(&self, req: JoinRequest) -> BoxFuture<'static, Result<SignalSession, TargetError>> {
        let addr = self.addr;
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, open(addr, req)).await {
                Ok(r) => r,
                Err(_) => Err(TargetError::new("connect_timeout", "no WebSocket in 10 s")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::Kind;

    #[test]
    fn offers_map_mids_to_publishers_tracks() {
        let msg: ServerMsg = serde_json::from_str(
            r#"{"type":"subscriber_offer","sdp":"v=0","tracks":[{"mid":"0","track_id":"t1","participant_id":"p1","kind":"video"}]}"#,
        )
        .expect("a subscriber offer");
        let Some(SignalEvent::SubscriberOffer { tracks, .. }) = to_event(msg) else {
            panic!("not an offer event");
        };
        assert_eq!(tracks[0].mid, "0");
        assert_eq!(tracks[0].participant_id, "p1");
        assert_eq!(tracks[0].kind, Kind::Video);
    }

    #[test]
    fn mute_and_track_settings_are_not_sent() {
        assert!(encode(&SignalCommand::Mute {
            track_id: "t".into(),
            muted: true
        })
        .is_none());
        let leave = encode(&SignalCommand::Leave).expect("leave is sent");
        assert_eq!(leave, r#"{"type":"leave"}"#);
    }
}
