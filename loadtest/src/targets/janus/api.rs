//! A client for Janus VideoRoom over Janus's plain HTTP API (1.1.x).
//!
//! The flow, as Janus 1.1.2 answers it:
//! - `POST /janus {"janus":"create"}` → session id; `POST /janus/<s> {"janus":"attach",
//!   "plugin":"janus.plugin.videoroom"}` → handle id. Each participant connection is one handle.
//! - Plugin requests are `POST /janus/<s>/<h> {"janus":"message","body":{…},"jsep":{…}}`.
//!   `create` is answered synchronously (`success` + `plugindata`); `join`, `configure` and `start`
//!   are answered `ack` and their result arrives later as an `event` on the session's long poll
//!   (`GET /janus/<s>?maxev=N`), tagged with the handle (`sender`) and the request's transaction.
//! - Publisher: `join` (`ptype: publisher`) → `joined` with the feed `id`; `configure` with the
//!   client's JSEP offer → `configured: ok` + JSEP answer. Janus then does full ICE against the
//!   candidates in the offer and reports `webrtcup` on the handle. Subscribing to a feed before its
//!   `webrtcup` fails with "No such feed"; the other participants' publisher handles learn about
//!   the feed from a `publishers` event, which Janus sends only once the media is up.
//! - Subscriber: `join` (`ptype: subscriber`, `streams: [{feed}]`) → `attached` + JSEP offer
//!   (Janus's candidates inline, it does not trickle to us); `start` with the answer → `started`.
//!   More feeds on the same connection: `subscribe` (`streams`) → `updated` + a new offer,
//!   answered with `start` again.
//! - Trickle: our candidates are in our SDP, so the only trickle message is `{"completed": true}`.
//! - Keepalive: the long poll itself keeps the session alive (Janus answers it at least every
//!   30 s with a `keepalive` event).
//!
//! One [`JanusSession`] can carry many handles: the long poll demultiplexes events by `sender`,
//! so a load test with hundreds of participants needs one outstanding HTTP request, not hundreds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Janus answers a long poll after at most 30 s; anything much longer means it is gone.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(40);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an asynchronous plugin request (join, configure, start) may take to answer.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    #[error("HTTP request to Janus failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("Janus answered HTTP {0}")]
    Status(u16),
    #[error("Janus sent something that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("Janus error {code}: {reason}")]
    Janus { code: i64, reason: String },
    #[error("VideoRoom error {code}: {reason}")]
    VideoRoom { code: i64, reason: String },
    #[error("unexpected answer from Janus to {request}: {answer}")]
    Unexpected {
        request: &'static str,
        answer: String,
    },
    #[error("no answer from Janus to {0} in time")]
    Timeout(&'static str),
    #[error("the Janus session's event stream ended")]
    Closed,
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>;

/// One Janus session: the HTTP client, the session id and the long-poll task that routes events
/// to handles. Dropping it stops the long poll; Janus reaps the session after its timeout (or
/// call [`JanusSession::destroy`]).
pub struct JanusSession {
    http: reqwest::Client,
    base: String,
    id: u64,
    routes: Routes,
    next_tx: AtomicU64,
    poller: JoinHandle<()>,
}

impl JanusSession {
    /// `base` is the API root, e.g. `http://192.0.2.2:8088/janus`.
    pub async fn create(base: &str) -> Result<Arc<Self>, JanusError> {
        let http = reqwest::Client::builder()
            .timeout(LONG_POLL_TIMEOUT)
            .build()?;
        let base = base.trim_end_matches('/').to_string();
        let answer = post(&http, &base, json!({"janus": "create", "transaction": "c"})).await?;
        let id = data_id(&answer, "create")?;
        let routes: Routes = Arc::default();
        let poller = tokio::spawn(long_poll(
            http.clone(),
            format!("{base}/{id}?maxev=32"),
            routes.clone(),
        ));
        Ok(Arc::new(JanusSession {
            http,
            base,
            id,
            routes,
            next_tx: AtomicU64::new(1),
            poller,
        }))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Attaches a new VideoRoom handle (one per peer connection).
    pub async fn attach_videoroom(self: &Arc<Self>) -> Result<VideoRoomHandle, JanusError> {
        let tx = self.transaction();
        let answer = post(
            &self.http,
            &format!("{}/{}", self.base, self.id),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": tx}),
        )
        .await?;
        let id = data_id(&answer, "attach")?;
        let (sender, events) = mpsc::unbounded_channel();
        lock(&self.routes).insert(id, sender);
        Ok(VideoRoomHandle {
            session: self.clone(),
            id,
            events,
            stashed: VecDeque::new(),
        })
    }

    /// Ends the session on the server: Janus hangs up every handle's peer connection.
    pub async fn destroy(&self) -> Result<(), JanusError> {
        let tx = self.transaction();
        post(
            &self.http,
            &format!("{}/{}", self.base, self.id),
            json!({"janus": "destroy", "transaction": tx}),
        )
        .await?;
        self.poller.abort();
        Ok(())
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next_tx.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Room settings for [`VideoRoomHandle::create_room`].
#[derive(Debug, Clone)]
pub struct RoomSpec {
    pub room: u64,
    /// Upper bound Janus puts in REMB to publishers (bits/s); 0 = no limit.
    pub bitrate: u32,
    pub publishers: u32,
}

/// One attached `janus.plugin.videoroom` handle: a publisher or a subscriber connection.
pub struct VideoRoomHandle {
    session: Arc<JanusSession>,
    id: u64,
    events: mpsc::UnboundedReceiver<Value>,
    /// Events that arrived while a request waited for its own answer, for [`Self::next_event`].
    stashed: VecDeque<Value>,
}

impl VideoRoomHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Creates a temporary room. Joining/leaving notifications are off (`notify_joining`), so a
    /// large room's cost is media, not the N² chatter of participants arriving.
    pub async fn create_room(&mut self, spec: &RoomSpec) -> Result<(), JanusError> {
        let body = json!({
            "request": "create",
            "room": spec.room,
            "permanent": false,
            "is_private": true,
            "publishers": spec.publishers,
            "bitrate": spec.bitrate,
            "notify_joining": false,
            "audiocodec": "opus",
            "videocodec": "vp8",
            "fir_freq": 0,
        });
        let answer = self.message(body, None).await?;
        let data = plugin_data(&answer, "create")?;
        match data.get("videoroom").and_then(Value::as_str) {
            Some("created") => Ok(()),
            _ => Err(unexpected("create", &answer)),
        }
    }

    /// Joins `room` as a publisher without media yet. Returns the VideoRoom's `joined` data:
    /// `id` (this participant's feed id) and `publishers` (those already sending).
    pub async fn join_publisher(&mut self, room: u64, display: &str) -> Result<Value, JanusError> {
        let joined = self
            .request(
                "join",
                json!({"request": "join", "ptype": "publisher", "room": room, "display": display}),
                None,
            )
            .await?;
        Ok(plugin_data(&joined, "join")?.clone())
    }

    /// Negotiates the publisher connection: `offer_sdp` is the client's offer with its host
    /// candidates inline. Returns Janus's answer.
    pub async fn configure_publisher(&mut self, offer_sdp: &str) -> Result<String, JanusError> {
        let configured = self
            .request(
                "configure",
                json!({"request": "configure", "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": offer_sdp})),
            )
            .await?;
        let answer_sdp = jsep_sdp(&configured, "answer", "configure")?;
        self.trickle_completed().await?;
        Ok(answer_sdp)
    }

    /// Joins `room` as a subscriber to `feeds`. Returns the `attached` event: its `jsep` is
    /// Janus's offer (answer it with [`Self::start`]) and its `plugindata.data.streams` say which
    /// m-line carries which feed.
    pub async fn join_subscriber(&mut self, room: u64, feeds: &[u64]) -> Result<Value, JanusError> {
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        self.request(
            "join",
            json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}),
            None,
        )
        .await
    }

    /// Adds `feeds` to an existing subscription (multistream). Janus answers `updated` with a
    /// new offer for the whole connection, answered again with [`Self::start`]. `None` when
    /// Janus had nothing to add (no offer).
    pub async fn subscribe_more(&mut self, feeds: &[u64]) -> Result<Option<Value>, JanusError> {
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let updated = self
            .request(
                "subscribe",
                json!({"request": "subscribe", "streams": streams}),
                None,
            )
            .await?;
        Ok(updated.get("jsep").is_some().then_some(updated))
    }

    /// Leaves the room (the handle stays attached).
    pub async fn leave(&mut self) -> Result<(), JanusError> {
        let tx = self.session.transaction();
        self.message_tx(&tx, json!({"request": "leave"}), None)
            .await
            .map(|_| ())
    }

    /// The next event Janus sent this handle that no request consumed (`publishers`,
    /// `updated` offers, `hangup`, …). `None` when the session's event stream ended.
    pub async fn next_event(&mut self) -> Option<Value> {
        if let Some(ev) = self.stashed.pop_front() {
            return Some(ev);
        }
        self.events.recv().await
    }

    /// Completes a subscription (or a renegotiation) with the client's answer to Janus's offer.
    pub async fn start(&mut self, answer_sdp: &str) -> Result<(), JanusError> {
        self.request(
            "start",
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer_sdp})),
        )
        .await?;
        self.trickle_completed().await
    }

    /// Waits until Janus reports this handle's peer connection up (ICE + DTLS done).
    pub async fn wait_webrtcup(&mut self, timeout: Duration) -> Result<(), JanusError> {
        self.wait_for("webrtcup", timeout, |ev| {
            ev.get("janus").and_then(Value::as_str) == Some("webrtcup")
        })
        .await
        .map(|_| ())
    }

    /// Leaves the room and hangs up this handle's peer connection.
    pub async fn detach(self) -> Result<(), JanusError> {
        let tx = self.session.transaction();
        let result = post(
            &self.session.http,
            &self.url(),
            json!({"janus": "detach", "transaction": tx}),
        )
        .await;
        lock(&self.session.routes).remove(&self.id);
        result.map(|_| ())
    }

    async fn trickle_completed(&self) -> Result<(), JanusError> {
        let tx = self.session.transaction();
        post(
            &self.session.http,
            &self.url(),
            json!({"janus": "trickle", "candidate": {"completed": true}, "transaction": tx}),
        )
        .await
        .map(|_| ())
    }

    /// An asynchronous plugin request: `ack` now, the result as an event with our transaction.
    async fn request(
        &mut self,
        what: &'static str,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, JanusError> {
        let tx = self.session.transaction();
        let answer = self.message_tx(&tx, body, jsep).await?;
        // Janus may also answer synchronously (e.g. an error found before queueing).
        if answer.get("janus").and_then(Value::as_str) == Some("success") {
            plugin_data(&answer, what)?;
            return Ok(answer);
        }
        let event = self
            .wait_for(what, EVENT_TIMEOUT, |ev| {
                ev.get("janus").and_then(Value::as_str) == Some("event")
                    && ev.get("transaction").and_then(Value::as_str) == Some(tx.as_str())
            })
            .await?;
        plugin_data(&event, what)?;
        Ok(event)
    }

    async fn message(&mut self, body: Value, jsep: Option<Value>) -> Result<Value, JanusError> {
        let tx = self.session.transaction();
        self.message_tx(&tx, body, jsep).await
    }

    async fn message_tx(
        &self,
        tx: &str,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, JanusError> {
        let mut msg = json!({"janus": "message", "transaction": tx, "body": body});
        if let Some(jsep) = jsep {
            msg["jsep"] = jsep;
        }
        post(&self.session.http, &self.url(), msg).await
    }

    /// Takes events off this handle's queue until one matches. The others are kept for
    /// [`Self::next_event`]; a `hangup` ends the wait with an error.
    async fn wait_for(
        &mut self,
        what: &'static str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value, JanusError> {
        if let Some(i) = self.stashed.iter().position(&matches) {
            if let Some(ev) = self.stashed.remove(i) {
                return Ok(ev);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| JanusError::Timeout(what))?
                .ok_or(JanusError::Closed)?;
            if matches(&ev) {
                return Ok(ev);
            }
            if ev.get("janus").and_then(Value::as_str) == Some("hangup") {
                return Err(unexpected(what, &ev));
            }
            // `media`/`slowlink` notices are frequent and useless here: don't let them pile up.
            if matches!(
                ev.get("janus").and_then(Value::as_str),
                Some("event" | "webrtcup")
            ) {
                self.stashed.push_back(ev);
            }
        }
    }

    fn url(&self) -> String {
        format!("{}/{}/{}", self.session.base, self.session.id, self.id)
    }
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value, JanusError> {
    let res = http
        .post(url)
        .timeout(REQUEST_TIMEOUT)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(JanusError::Status(res.status().as_u16()));
    }
    let answer: Value = serde_json::from_slice(&res.bytes().await?)?;
    if answer.get("janus").and_then(Value::as_str) == Some("error") {
        let err = &answer["error"];
        return Err(JanusError::Janus {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            reason: err
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(answer)
}

/// The session's long poll: forwards each event to its handle's queue. Ends when the session is
/// dropped (aborted) or Janus refuses the session (it was destroyed or timed out).
async fn long_poll(http: reqwest::Client, url: String, routes: Routes) {
    let mut failures = 0u32;
    loop {
        let events = match poll_once(&http, &url).await {
            Ok(events) => {
                failures = 0;
                events
            }
            Err(JanusError::Janus { .. }) => break,
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    tracing::warn!("Janus long poll gave up: {e}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let routes = lock(&routes);
        for ev in events {
            if let Some(sender) = ev.get("sender").and_then(Value::as_u64) {
                if let Some(queue) = routes.get(&sender) {
                    // A handle that went away no longer reads its queue: nothing to do.
                    let _ = queue.send(ev);
                }
            }
        }
    }
    // Closing every queue tells waiting handles the stream ended.
    lock(&routes).clear();
}

async fn poll_once(http: &reqwest::Client, url: &str) -> Result<Vec<Value>, JanusError> {
    let res = http.get(url).send().await?;
    if !res.status().is_success() {
        return Err(JanusError::Status(res.status().as_u16()));
    }
    let answer: Value = serde_json::from_slice(&res.bytes().await?)?;
    match answer {
        Value::Array(events) => Ok(events),
        ev if ev.get("janus").and_then(Value::as_str) == Some("error") => Err(JanusError::Janus {
            code: ev["error"].get("code").and_then(Value::as_i64).unwrap_or(0),
            reason: ev["error"]
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }),
        ev => Ok(vec![ev]),
    }
}

fn data_id(answer: &Value, request: &'static str) -> Result<u64, JanusError> {
    answer
        .get("data")
        .and_then(|d| d.get("id"))
        .and_then(Value::as_u64)
        .ok_or_else(|| unexpected(request, answer))
}

/// The VideoRoom's own answer inside a Janus message; its errors become [`JanusError::VideoRoom`].
fn plugin_data<'a>(answer: &'a Value, request: &'static str) -> Result<&'a Value, JanusError> {
    let data = answer
        .get("plugindata")
        .and_then(|p| p.get("data"))
        .ok_or_else(|| unexpected(request, answer))?;
    if let Some(code) = data.get("error_code").and_then(Value::as_i64) {
        return Err(JanusError::VideoRoom {
            code,
            reason: data
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(data)
}

fn jsep_sdp(answer: &Value, kind: &str, request: &'static str) -> Result<String, JanusError> {
    let jsep = answer
        .get("jsep")
        .ok_or_else(|| unexpected(request, answer))?;
    if jsep.get("type").and_then(Value::as_str) != Some(kind) {
        return Err(unexpected(request, answer));
    }
    jsep.get("sdp")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| unexpected(request, answer))
}

fn unexpected(request: &'static str, answer: &Value) -> JanusError {
    let mut answer = answer.to_string();
    answer.truncate(400);
    JanusError::Unexpected { request, answer }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The routes map stays consistent even if a holder panicked: insert/remove/clear only.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
