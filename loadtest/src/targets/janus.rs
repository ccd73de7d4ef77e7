//! Janus VideoRoom (1.1.x, multistream) as a load-test target, so the same participants, media
//! and measurements compare Zvon with Janus.
//!
//! The mapping onto the participant's model (publisher connection offered by the client,
//! one subscriber connection offered by the server and renegotiated as publishers come):
//! - join → a `publisher` handle joins the room (even listeners: that is how Janus tells a
//!   participant about publishers); its feed id is the participant id.
//! - publish offer → `configure` with the offer; Janus's answer → `PublishAnswer`.
//! - publishers appearing (the `joined` list, later `publishers` events) → a `subscriber` handle
//!   joins with those feeds, or `subscribe`s to more; each offer Janus makes (`attached`,
//!   `updated`) → `SubscriberOffer`, the client's answer → `start`. One renegotiation at a time:
//!   feeds that appear meanwhile wait for the answer.
//! - mute → nothing (the client simply stops sending); leave → `leave`, handles detached.
//!
//! All participants share one Janus session: one long poll carries every handle's events, so
//! the client side does not add hundreds of idle HTTP requests to what Janus serves.

pub mod api;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{mpsc, Mutex, OnceCell};

use api::{JanusError, JanusSession, RoomSpec, VideoRoomHandle};

use super::{
    JoinRequest, Kind, PublishedTrack, RemoteTrack, SignalCommand, SignalEvent, SignalSession,
    Target, TargetError,
};

/// Janus refuses more publishers than the room allows; the scenarios stay far below this.
const MAX_PUBLISHERS: u32 = 1000;

pub struct JanusTarget {
    shared: Arc<Shared>,
}

struct Shared {
    base: String,
    session: OnceCell<Arc<JanusSession>>,
    /// Rooms this run created; creation is serialized so concurrent joins create a room once.
    rooms: Mutex<HashSet<u64>>,
}

impl JanusTarget {
    /// `base` is Janus's HTTP API root, e.g. `http://192.0.2.2:8088/janus`.
    pub fn new(base: &str) -> Self {
        JanusTarget {
            shared: Arc::new(Shared {
                base: base.to_string(),
                session: OnceCell::new(),
                rooms: Mutex::new(HashSet::new()),
            }),
        }
    }
}

/// Janus rooms are numbers: a stable hash of the scenario's room name, kept below 2^53 so it
/// survives JSON numbers anywhere.
pub fn room_number(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h & ((1 << 52) - 1)) + 1
}

impl Target for JanusTarget {
    fn name(&self) -> &str {
        "janus"
    }

    fn connect(&self, req: JoinRequest) -> BoxFuture<'static, Result<SignalSession, TargetError>> {
        let shared = self.shared.clone();
        Box::pin(async move { shared.connect(req).await })
    }
}

impl Shared {
    async fn session(&self) -> Result<Arc<JanusSession>, JanusError> {
        self.session
            .get_or_try_init(|| JanusSession::create(&self.base))
            .await
            .cloned()
    }

    async fn ensure_room(&self, session: &Arc<JanusSession>, room: u64) -> Result<(), JanusError> {
        let mut rooms = self.rooms.lock().await;
        if rooms.contains(&room) {
            return Ok(());
        }
        let mut admin = session.attach_videoroom().await?;
        let created = admin
            .create_room(&RoomSpec {
                room,
                bitrate: 0,
                publishers: MAX_PUBLISHERS,
            })
            .await;
        // Best effort: a leftover handle costs Janus nothing measurable.
        let _ = admin.detach().await;
        match created {
            Ok(()) | Err(JanusError::VideoRoom { code: 427, .. }) => {
                rooms.insert(room);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn connect(&self, req: JoinRequest) -> Result<SignalSession, TargetError> {
        let session = self
            .session()
            .await
            .map_err(|e| TargetError::new("janus_session", e))?;
        let room = room_number(&req.room);
        self.ensure_room(&session, room)
            .await
            .map_err(|e| TargetError::new("janus_room", e))?;
        let mut publisher = session
            .attach_videoroom()
            .await
            .map_err(|e| TargetError::new("janus_attach", e))?;
        let join_sent = Instant::now();
        let joined = publisher
            .join_publisher(room, &req.identity)
            .await
            .map_err(|e| TargetError::new("join_failed", e))?;
        let feed = joined
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| TargetError::new("join_failed", "no feed id in joined"))?;
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let _ = ev_tx.try_send(SignalEvent::Joined {
            participant_id: feed.to_string(),
            others: Vec::new(),
        });
        let mut state = Participant {
            session,
            room,
            feed,
            publisher,
            subscriber: None,
            known: HashSet::new(),
            waiting: Vec::new(),
            negotiating: false,
            events: ev_tx,
        };
        state.on_publishers(&joined);
        tokio::spawn(state.run(cmd_rx));
        Ok(SignalSession {
            events: ev_rx,
            commands: cmd_tx,
            join_sent,
        })
    }
}

struct Participant {
    session: Arc<JanusSession>,
    room: u64,
    feed: u64,
    publisher: VideoRoomHandle,
    subscriber: Option<VideoRoomHandle>,
    /// Feeds already subscribed or waiting.
    known: HashSet<u64>,
    /// Feeds to add at the next chance (no negotiation in flight).
    waiting: Vec<u64>,
    /// An offer went to the client and its answer has not come back yet.
    negotiating: bool,
    events: mpsc::Sender<SignalEvent>,
}

enum Step {
    Command(Option<SignalCommand>),
    Publisher(Option<Value>),
    Subscriber(Option<Value>),
}

impl Participant {
    async fn run(mut self, mut commands: mpsc::Receiver<SignalCommand>) {
        loop {
            if let Err(e) = self.subscribe_waiting().await {
                self.error("subscribe_failed", e).await;
            }
            let step = tokio::select! {
                c = commands.recv() => Step::Command(c),
                e = self.publisher.next_event() => Step::Publisher(e),
                e = next_opt(self.subscriber.as_mut()) => Step::Subscriber(e),
            };
            match step {
                Step::Command(Some(SignalCommand::PublishOffer { sdp, tracks })) => {
                    match self.publisher.configure_publisher(&sdp).await {
                        Ok(answer) => {
                            let tracks = tracks
                                .iter()
                                .map(|t| PublishedTrack {
                                    mid: t.mid.clone(),
                                    id: format!("{}/{}", self.feed, t.mid),
                                    kind: t.kind,
                                })
                                .collect();
                            self.send(SignalEvent::PublishAnswer {
                                sdp: answer,
                                tracks,
                            })
                            .await;
                        }
                        Err(e) => self.error("publish_failed", e).await,
                    }
                }
                Step::Command(Some(SignalCommand::SubscriberAnswer { sdp })) => {
                    self.negotiating = false;
                    if let Some(sub) = self.subscriber.as_mut() {
                        if let Err(e) = sub.start(&sdp).await {
                            self.error("start_failed", e).await;
                        }
                    }
                }
                Step::Command(Some(
                    SignalCommand::Mute { .. } | SignalCommand::TrackSettings { .. },
                )) => {}
                Step::Command(Some(SignalCommand::Leave) | None) => break,
                Step::Publisher(Some(ev)) => {
                    if let Some(data) = ev.get("plugindata").and_then(|p| p.get("data")) {
                        self.on_publishers(data);
                    }
                }
                Step::Subscriber(Some(ev)) => {
                    // Janus renegotiates on its own when a subscribed publisher goes away.
                    if ev.get("jsep").is_some() {
                        self.offer_to_client(&ev).await;
                    }
                }
                Step::Publisher(None) | Step::Subscriber(None) => {
                    self.send(SignalEvent::Closed {
                        reason: "janus_session_gone".into(),
                    })
                    .await;
                    break;
                }
            }
        }
        let _ = self.publisher.leave().await;
        if let Some(sub) = self.subscriber.take() {
            let _ = sub.detach().await;
        }
        let _ = self.publisher.detach().await;
        drop(self.session);
    }

    /// Publishers in a `joined` or `publishers` event that are sending something.
    fn on_publishers(&mut self, data: &Value) {
        let Some(list) = data.get("publishers").and_then(Value::as_array) else {
            return;
        };
        for p in list {
            let Some(id) = p.get("id").and_then(Value::as_u64) else {
                continue;
            };
            let sending = p
                .get("streams")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            if id != self.feed && sending && self.known.insert(id) {
                self.waiting.push(id);
            }
        }
    }

    async fn subscribe_waiting(&mut self) -> Result<(), JanusError> {
        if self.negotiating || self.waiting.is_empty() {
            return Ok(());
        }
        let feeds = std::mem::take(&mut self.waiting);
        let offer = match self.subscriber.as_mut() {
            Some(sub) => sub.subscribe_more(&feeds).await?,
            None => {
                let mut sub = self.session.attach_videoroom().await?;
                let attached = sub.join_subscriber(self.room, &feeds).await;
                self.subscriber = Some(sub);
                Some(attached?)
            }
        };
        if let Some(ev) = offer {
            self.offer_to_client(&ev).await;
        }
        Ok(())
    }

    async fn offer_to_client(&mut self, ev: &Value) {
        let Some(sdp) = ev
            .get("jsep")
            .filter(|j| j.get("type").and_then(Value::as_str) == Some("offer"))
            .and_then(|j| j.get("sdp"))
            .and_then(Value::as_str)
        else {
            return;
        };
        let tracks = ev
            .get("plugindata")
            .and_then(|p| p.get("data"))
            .and_then(|d| d.get("streams"))
            .and_then(Value::as_array)
            .map(|streams| streams.iter().filter_map(remote_track).collect())
            .unwrap_or_default();
        self.negotiating = true;
        self.send(SignalEvent::SubscriberOffer {
            sdp: sdp.to_string(),
            tracks,
        })
        .await;
    }

    async fn error(&self, code: &str, e: JanusError) {
        tracing::debug!("janus {code}: {e}");
        self.send(SignalEvent::Error {
            code: code.to_string(),
            message: e.to_string(),
        })
        .await;
    }

    async fn send(&self, ev: SignalEvent) {
        // The participant went away: nothing to tell.
        let _ = self.events.send(ev).await;
    }
}

/// One entry of a subscriber's `streams`: which m-line carries which publisher's track.
fn remote_track(s: &Value) -> Option<RemoteTrack> {
    let kind = match s.get("type").and_then(Value::as_str)? {
        "audio" => Kind::Audio,
        "video" => Kind::Video,
        _ => return None,
    };
    let mid = s.get("mid").and_then(Value::as_str)?;
    let feed = s.get("feed_id").and_then(Value::as_u64)?;
    let feed_mid = s.get("feed_mid").and_then(Value::as_str).unwrap_or("");
    Some(RemoteTrack {
        mid: mid.to_string(),
        track_id: format!("{feed}/{feed_mid}"),
        participant_id: feed.to_string(),
        kind,
    })
}

async fn next_opt(handle: Option<&mut VideoRoomHandle>) -> Option<Value> {
    match handle {
        Some(h) => h.next_event().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_numbers_are_stable_distinct_and_json_safe() {
        let a = room_number("meeting-0");
        assert_eq!(a, room_number("meeting-0"));
        assert_ne!(a, room_number("meeting-1"));
        assert!(a > 0 && a < (1 << 53));
    }

    #[test]
    fn subscriber_streams_map_to_tracks() {
        let s = serde_json::json!({"type": "video", "mid": "1", "feed_id": 77, "feed_mid": "v"});
        let t = remote_track(&s).expect("a video track");
        assert_eq!((t.mid.as_str(), t.participant_id.as_str()), ("1", "77"));
        assert_eq!(t.kind, Kind::Video);
        assert!(remote_track(&serde_json::json!({"type": "data", "mid": "2"})).is_none());
    }
}
