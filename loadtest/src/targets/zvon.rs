//! Zvon's documented protocol (docs/protocol.md, version 1): one WebSocket to `/rtc`, JSON
//! messages, an HS256 token minted here from the API key and secret or fetched from
//! `/api/dev-token` when the server runs `--dev`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use super::json_socket;
use super::{
    AnnouncedParticipant, AnnouncedTrack, JoinRequest, Kind, PublishedTrack, RemoteTrack,
    SignalCommand, SignalEvent, SignalSession, Target, TargetError,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub enum TokenSource {
    /// Mint HS256 tokens locally.
    Mint { api_key: String, api_secret: String },
    /// `GET /api/dev-token` (server in `--dev` mode).
    DevEndpoint,
}

pub struct ZvonTarget {
    addr: SocketAddr,
    host: String,
    tokens: TokenSource,
}

impl ZvonTarget {
    /// `addr` is the signaling listener (`--url`'s host and port).
    pub fn new(addr: SocketAddr, tokens: TokenSource) -> Self {
        ZvonTarget {
            addr,
            host: addr.to_string(),
            tokens,
        }
    }
}

#[derive(Serialize)]
struct Grants {
    can_publish: bool,
    can_subscribe: bool,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    name: &'a str,
    room: &'a str,
    exp: u64,
    iat: u64,
    grants: Grants,
}

pub fn mint_token(
    api_key: &str,
    api_secret: &str,
    req: &JoinRequest,
) -> Result<String, TargetError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        iss: api_key,
        sub: &req.identity,
        name: &req.name,
        room: &req.room,
        exp: now + 6 * 3600,
        iat: now,
        grants: Grants {
            can_publish: req.can_publish,
            can_subscribe: true,
        },
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(api_secret.as_bytes()),
    )
    .map_err(|e| TargetError::new("token", e))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn open_tcp(
    addr: SocketAddr,
    local_ip: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local_ip {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The dev endpoint with a plain HTTP/1.1 request: one small GET is not worth an HTTP client.
/// It asks for the plan's identity, as a minted token carries, because the classroom view tells
/// the teacher by it (the endpoint would otherwise make up `guest-<n>`).
async fn dev_token(addr: SocketAddr, host: &str, req: &JoinRequest) -> Result<String, TargetError> {
    #[derive(Deserialize)]
    struct DevToken {
        token: String,
    }
    let mut stream = open_tcp(addr, req.local_ip)
        .await
        .map_err(|e| TargetError::new("token_http", e))?;
    let request = format!(
        "GET /api/dev-token?room={}&name={}&identity={} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        url_encode(&req.room),
        url_encode(&req.name),
        url_encode(&req.identity)
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| TargetError::new("token_http", e))?;
    let mut body = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut body)
        .await
        .map_err(|e| TargetError::new("token_http", e))?;
    let text = String::from_utf8_lossy(&body);
    let (head, json) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| TargetError::new("token_http", "no HTTP body"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(TargetError::new(
            format!("token_http_{status}"),
            head.lines().next().unwrap_or(""),
        ));
    }
    serde_json::from_str::<DevToken>(json)
        .map(|t| t.token)
        .map_err(|e| TargetError::new("token_http", e))
}

#[derive(Serialize)]
struct TrackJson<'a> {
    mid: &'a str,
    kind: Kind,
    source: &'a str,
    muted: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMsg<'a> {
    Join {
        protocol: u32,
        token: &'a str,
        room: &'a str,
        request_id: &'a str,
        /// Left out in the default mode, so servers that predate the field see the join
        /// they always did.
        #[serde(skip_serializing_if = "Option::is_none")]
        video_subscription: Option<&'a str>,
    },
    PublishOffer {
        sdp: &'a str,
        tracks: Vec<TrackJson<'a>>,
    },
    SubscriberAnswer {
        sdp: &'a str,
    },
    Mute {
        track_id: &'a str,
        muted: bool,
    },
    TrackSettings {
        track_id: &'a str,
        width: u32,
        height: u32,
        enabled: bool,
    },
    Leave,
    Ping,
}

#[derive(Deserialize)]
struct TrackInfoJson {
    id: String,
    kind: Kind,
    #[serde(default)]
    source: String,
}

impl From<TrackInfoJson> for AnnouncedTrack {
    fn from(t: TrackInfoJson) -> Self {
        AnnouncedTrack {
            id: t.id,
            kind: t.kind,
            source: t.source,
        }
    }
}

#[derive(Deserialize)]
struct ParticipantJson {
    id: String,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    tracks: Vec<TrackInfoJson>,
}

impl From<ParticipantJson> for AnnouncedParticipant {
    fn from(p: ParticipantJson) -> Self {
        AnnouncedParticipant {
            id: p.id,
            identity: p.identity,
            tracks: p.tracks.into_iter().map(AnnouncedTrack::from).collect(),
        }
    }
}

/// A track of a `publish_answer` (the mediasoup bench app mirrors this shape).
#[derive(Deserialize)]
pub(super) struct AnswerTrackJson {
    mid: String,
    id: String,
    kind: Kind,
}

impl From<AnswerTrackJson> for PublishedTrack {
    fn from(t: AnswerTrackJson) -> Self {
        PublishedTrack {
            mid: t.mid,
            id: t.id,
            kind: t.kind,
        }
    }
}

/// A track of a `subscriber_offer` (the mediasoup bench app mirrors this shape).
#[derive(Deserialize)]
pub(super) struct OfferTrackJson {
    mid: String,
    track_id: String,
    participant_id: String,
    kind: Kind,
}

impl From<OfferTrackJson> for RemoteTrack {
    fn from(t: OfferTrackJson) -> Self {
        RemoteTrack {
            mid: t.mid,
            track_id: t.track_id,
            participant_id: t.participant_id,
            kind: t.kind,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMsg {
    Joined {
        participant: ParticipantJson,
        #[serde(default)]
        participants: Vec<ParticipantJson>,
    },
    ParticipantJoined {
        participant: ParticipantJson,
    },
    ParticipantLeft {
        participant_id: String,
    },
    TrackPublished {
        participant_id: String,
        track: TrackInfoJson,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
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
    Left,
    #[serde(other)]
    Other,
}

fn to_event(msg: ServerMsg) -> Option<SignalEvent> {
    Some(match msg {
        ServerMsg::Joined {
            participant,
            participants,
        } => SignalEvent::Joined {
            participant_id: participant.id,
            others: participants.into_iter().map(Into::into).collect(),
        },
        ServerMsg::ParticipantJoined { participant } => {
            SignalEvent::ParticipantJoined(participant.into())
        }
        ServerMsg::ParticipantLeft { participant_id } => {
            SignalEvent::ParticipantLeft { participant_id }
        }
        ServerMsg::TrackPublished {
            participant_id,
            track,
        } => SignalEvent::TrackPublished {
            participant_id,
            track: track.into(),
        },
        ServerMsg::TrackUnpublished {
            participant_id,
            track_id,
        } => SignalEvent::TrackUnpublished {
            participant_id,
            track_id,
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
        ServerMsg::Left => SignalEvent::Closed {
            reason: "left".into(),
        },
        ServerMsg::Other => return None,
    })
}

fn encode(cmd: &SignalCommand) -> String {
    let msg = match cmd {
        SignalCommand::PublishOffer { sdp, tracks } => ClientMsg::PublishOffer {
            sdp,
            tracks: tracks
                .iter()
                .map(|t| TrackJson {
                    mid: &t.mid,
                    kind: t.kind,
                    source: t.source,
                    muted: t.muted,
                })
                .collect(),
        },
        SignalCommand::SubscriberAnswer { sdp } => ClientMsg::SubscriberAnswer { sdp },
        SignalCommand::Mute { track_id, muted } => ClientMsg::Mute {
            track_id,
            muted: *muted,
        },
        SignalCommand::TrackSettings {
            track_id,
            width,
            height,
            enabled,
        } => ClientMsg::TrackSettings {
            track_id,
            width: *width,
            height: *height,
            enabled: *enabled,
        },
        SignalCommand::Leave => ClientMsg::Leave,
    };
    serde_json::to_string(&msg).unwrap_or_default()
}

impl ZvonTarget {
    async fn open(
        addr: SocketAddr,
        host: String,
        tokens: TokenSource,
        req: JoinRequest,
    ) -> Result<SignalSession, TargetError> {
        let token = match &tokens {
            TokenSource::Mint {
                api_key,
                api_secret,
            } => mint_token(api_key, api_secret, &req)?,
            TokenSource::DevEndpoint => dev_token(addr, &host, &req).await?,
        };
        let stream = open_tcp(addr, req.local_ip)
            .await
            .map_err(|e| TargetError::new("connect", e))?;
        let url = format!("ws://{host}/rtc");
        let (mut ws, _) = match tokio_tungstenite::client_async(url.as_str(), stream).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                return Err(TargetError::new(
                    format!("http_{}", resp.status().as_u16()),
                    "websocket upgrade refused",
                ))
            }
            Err(e) => return Err(TargetError::new("websocket", e)),
        };
        let join = serde_json::to_string(&ClientMsg::Join {
            protocol: 1,
            token: &token,
            room: &req.room,
            request_id: "join",
            video_subscription: req.on_demand_video.then_some("on_demand"),
        })
        .unwrap_or_default();
        let join_sent = Instant::now();
        ws.send(Message::text(join))
            .await
            .map_err(|e| TargetError::new("websocket", e))?;
        let (events, commands) = json_socket::spawn(
            ws,
            |cmd| Some(encode(cmd)),
            |text| serde_json::from_str::<ServerMsg>(text).map(to_event),
            Some(json_socket::KeepAlive {
                every: PING_EVERY,
                text: serde_json::to_string(&ClientMsg::Ping).unwrap_or_default(),
            }),
        );
        Ok(SignalSession {
            events,
            commands,
            join_sent,
        })
    }
}

impl Target for ZvonTarget {
    fn name(&self) -> &str {
        "zvon"
    }

    fn connect(&self, req: JoinRequest) -> BoxFuture<'static, Result<SignalSession, TargetError>> {
        let (addr, host, tokens) = (self.addr, self.host.clone(), self.tokens.clone());
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, Self::open(addr, host, tokens, req)).await {
                Ok(r) => r,
                Err(_) => Err(TargetError::new(
                    "connect_timeout",
                    "signaling did not open in 10 s",
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Option<SignalEvent> {
        to_event(serde_json::from_str(json).expect("server message parses"))
    }

    #[test]
    fn join_asks_for_on_demand_video_only_when_told() {
        let join = |v| {
            serde_json::to_string(&ClientMsg::Join {
                protocol: 1,
                token: "t",
                room: "r",
                request_id: "join",
                video_subscription: v,
            })
            .expect("encodes")
        };
        assert!(join(Some("on_demand")).contains(r#""video_subscription":"on_demand""#));
        assert!(!join(None).contains("video_subscription"));
    }

    #[test]
    fn announcements_become_events() {
        let joined = event(
            r#"{"type":"joined","participant":{"id":"PA_1","identity":"me","tracks":[]},
                "participants":[{"id":"PA_0","identity":"bob","name":"Bob","tracks":[
                  {"id":"TR_0","kind":"audio","source":"microphone","muted":true},
                  {"id":"TR_1","kind":"video","source":"camera","muted":false}]}]}"#,
        );
        let Some(SignalEvent::Joined {
            participant_id,
            others,
        }) = joined
        else {
            panic!("not joined: {joined:?}");
        };
        assert_eq!(participant_id, "PA_1");
        assert_eq!(others[0].identity, "bob");
        assert_eq!(
            others[0]
                .tracks
                .iter()
                .map(|t| t.is_camera())
                .collect::<Vec<_>>(),
            vec![false, true]
        );
        let published = event(
            r#"{"type":"track_published","participant_id":"PA_2",
                "track":{"id":"TR_5","kind":"video","source":"screen","muted":false}}"#,
        );
        assert!(
            matches!(&published, Some(SignalEvent::TrackPublished { participant_id, track })
                if participant_id == "PA_2" && track.id == "TR_5" && !track.is_camera()),
            "{published:?}"
        );
        assert!(matches!(
            event(r#"{"type":"track_unpublished","participant_id":"PA_2","track_id":"TR_5"}"#),
            Some(SignalEvent::TrackUnpublished { track_id, .. }) if track_id == "TR_5"
        ));
        assert!(matches!(
            event(r#"{"type":"participant_left","participant_id":"PA_2","reason":"left"}"#),
            Some(SignalEvent::ParticipantLeft { participant_id }) if participant_id == "PA_2"
        ));
        assert!(matches!(
            event(r#"{"type":"participant_joined","participant":{"id":"PA_3","identity":"c","name":"C","tracks":[]}}"#),
            Some(SignalEvent::ParticipantJoined(p)) if p.id == "PA_3" && p.tracks.is_empty()
        ));
    }
}
