//! Webhook delivery: call events POSTed as signed JSON to the app backend
//! (`docs/protocol.md`, "Webhooks").
//!
//! [`Webhooks::send`] queues an event and returns at once; one background task delivers the
//! queue strictly in order, one request in flight. A non-2xx answer, a connection error or a
//! timeout is retried after `first_retry`, doubling, capped at `max_retry_interval`, for up to
//! `max_attempts` attempts; later events wait behind a failing one so order holds. An event
//! still undelivered after its last attempt is logged (`warn`) and dropped.
//!
//! Only `http://` URLs are supported: the HTTP client is built without TLS. Put a TLS-terminating
//! proxy in front of the backend, or keep the backend on a private network.
//!
//! Each request carries:
//! - `Content-Type: application/json`
//! - `Zvon-Key: <api key>`
//! - `Idempotency-Key: <event id>`, identical on every retry of one event
//! - `Zvon-Signature: t=<unix>,v1=<hex>` with `v1 = hex(HMAC-SHA256(secret, "<t>.<body>"))`,
//!   re-signed with a fresh timestamp at each attempt (the body itself never changes).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the API key the events are signed for.
pub const KEY_HEADER: &str = "Zvon-Key";
/// Header carrying the event id; the same on every retry of one event.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Header carrying `t=<unix>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "Zvon-Signature";
/// How old (or how far in the future) a signature receivers should accept, per the protocol.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Events waiting for delivery at most; past that, new events are logged and dropped so that a
/// backend that stays down cannot grow the server's memory without bound.
pub const QUEUE_CAPACITY: usize = 10_000;

/// Where and how to deliver webhooks.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host[:port]/path`. Only plain HTTP is supported (no TLS client).
    pub url: String,
    /// Sent as `Zvon-Key`.
    pub api_key: String,
    /// HMAC key of `Zvon-Signature`.
    pub secret: String,
    /// Wait before the second attempt; doubles after each failure.
    pub first_retry: Duration,
    /// Cap on the wait between two attempts.
    pub max_retry_interval: Duration,
    /// Attempts per event (the first one included) before it is dropped. 0 counts as 1.
    pub max_attempts: u32,
    /// Timeout of one attempt, from connecting until the response arrives.
    pub request_timeout: Duration,
}

impl WebhookConfig {
    /// The protocol's defaults: retries after 0.5 s, 1 s, 2 s, … up to 30 s, 24 attempts,
    /// 5 s per request.
    pub fn new(url: String, api_key: String, secret: String) -> Self {
        WebhookConfig {
            url,
            api_key,
            secret,
            first_retry: Duration::from_millis(500),
            max_retry_interval: Duration::from_secs(30),
            max_attempts: 24,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a webhook URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("webhook URL {0:?} is not a valid URL: {1}")]
    Invalid(String, String),
    #[error("webhook URL {0:?} must use http:// (this build has no TLS client)")]
    UnsupportedScheme(String),
}

/// Checks that `url` is an absolute `http://` URL with a host. Call it when parsing the server
/// configuration to refuse a bad `--webhook-url` at startup; [`Webhooks::start`] with a bad URL
/// only logs an error and delivers nothing.
pub fn check_url(url: &str) -> Result<(), WebhookUrlError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| WebhookUrlError::Invalid(url.to_string(), e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(WebhookUrlError::UnsupportedScheme(url.to_string()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(WebhookUrlError::Invalid(
            url.to_string(),
            "no host".to_string(),
        ));
    }
    Ok(())
}

/// One queued event: its id and its serialized body, fixed at `send` time.
#[derive(Debug)]
struct Event {
    id: String,
    name: String,
    body: Vec<u8>,
}

/// Handle to the delivery task. Cheap to clone; the task stops once every handle is dropped
/// and the queue is drained.
#[derive(Debug, Clone)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<Event>>,
}

impl Webhooks {
    /// A handle that drops every event (no `--webhook-url`).
    pub fn disabled() -> Self {
        Webhooks { tx: None }
    }

    /// Whether events are delivered anywhere.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Spawns the delivery task on the current tokio runtime (panics outside one, like
    /// `tokio::spawn`). A URL that [`check_url`] refuses, or an HTTP client that cannot be
    /// built, is logged as an error and gives a disabled handle.
    pub fn start(config: WebhookConfig) -> Self {
        if let Err(e) = check_url(&config.url) {
            error!("webhooks disabled: {e}");
            return Webhooks::disabled();
        }
        let client = match reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            // A redirected POST would turn into a GET: treat 3xx as a failure instead.
            .redirect(reqwest::redirect::Policy::none())
            // The backend is addressed directly; do not pick up HTTP_PROXY from the environment.
            .no_proxy()
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                error!("webhooks disabled: cannot build HTTP client: {e}");
                return Webhooks::disabled();
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(deliver_all(config, client, rx));
        Webhooks { tx: Some(tx) }
    }

    /// Queues one event. The body is
    /// `{"id": "wh_<random>", "event": event, "created_at": <unix secs>, ...payload}` where the
    /// fields of `payload` (a JSON object; anything else is ignored with a warning) are merged
    /// in without overriding `id`, `event` or `created_at`. Never blocks, never fails: with
    /// the queue full (see [`QUEUE_CAPACITY`]) or the task gone, the event is logged and dropped.
    pub fn send(&self, event: &str, payload: Value) {
        let Some(tx) = &self.tx else {
            return;
        };
        let ev = build_event(event, payload, unix_now());
        if let Err(e) = tx.try_send(ev) {
            let (kind, ev) = match e {
                mpsc::error::TrySendError::Full(ev) => ("queue full", ev),
                mpsc::error::TrySendError::Closed(ev) => ("delivery task gone", ev),
            };
            warn!(id = %ev.id, event = %ev.name, "webhook dropped: {kind}");
        }
    }
}

/// Builds the event's id and body. The body's bytes are what gets signed and sent, identical
/// on every attempt.
fn build_event(event: &str, payload: Value, created_at: u64) -> Event {
    let id = format!("wh_{}", hex::encode(rand::random::<[u8; 16]>()));
    let mut body = Map::new();
    body.insert("id".into(), Value::String(id.clone()));
    body.insert("event".into(), Value::String(event.to_string()));
    body.insert("created_at".into(), Value::from(created_at));
    match payload {
        Value::Object(fields) => {
            for (k, v) in fields {
                body.entry(k).or_insert(v);
            }
        }
        Value::Null => {}
        other => warn!(
            event,
            "webhook payload is not a JSON object, ignored: {other}"
        ),
    }
    let body = Value::Object(body).to_string().into_bytes();
    Event {
        id,
        name: event.to_string(),
        body,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("backend answered {0}")]
    Status(reqwest::StatusCode),
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
}

/// The delivery task: one event at a time, in queue order.
async fn deliver_all(
    config: WebhookConfig,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<Event>,
) {
    while let Some(ev) = rx.recv().await {
        deliver(&config, &client, &ev).await;
    }
    debug!("webhook delivery task stopped");
}

/// Delivers one event, retrying with capped exponential backoff; gives up after
/// `max_attempts` attempts.
async fn deliver(config: &WebhookConfig, client: &reqwest::Client, ev: &Event) {
    let max_attempts = config.max_attempts.max(1);
    let mut wait = config.first_retry;
    for attempt in 1..=max_attempts {
        match attempt_once(config, client, ev).await {
            Ok(()) => {
                debug!(id = %ev.id, event = %ev.name, attempt, "webhook delivered");
                return;
            }
            Err(e) if attempt == max_attempts => {
                warn!(
                    id = %ev.id, event = %ev.name, attempts = attempt,
                    "webhook dropped after its last attempt: {e}"
                );
                return;
            }
            Err(e) => {
                debug!(
                    id = %ev.id, event = %ev.name, attempt,
                    "webhook attempt failed, retrying in {wait:?}: {e}"
                );
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2).min(config.max_retry_interval);
            }
        }
    }
}

async fn attempt_once(
    config: &WebhookConfig,
    client: &reqwest::Client,
    ev: &Event,
) -> Result<(), AttemptError> {
    let t = unix_now();
    let signature = format!("t={t},v1={}", sign(&config.secret, t, &ev.body));
    let response = client
        .post(&config.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(KEY_HEADER, &config.api_key)
        .header(IDEMPOTENCY_HEADER, &ev.id)
        .header(SIGNATURE_HEADER, signature)
        .body(ev.body.clone())
        .send()
        .await?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(AttemptError::Status(status))
    }
}

fn mac_for(secret: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`, lowercase.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    hex::encode(mac_for(secret, timestamp, body).finalize().into_bytes())
}

/// Checks a `Zvon-Signature: t=<unix>,v1=<hex>` header against `body`.
///
/// False if the header is malformed (no `t`, a non-numeric or repeated `t`, no `v1`, a `v1`
/// that is not hex), if no `v1` matches, or if `t` is more than `tolerance` away from `now`
/// (unix seconds) in either direction. Fields may come in any order; unknown fields are
/// ignored and several `v1` are allowed (any match passes), for secret rotation. The MAC
/// comparison is constant-time.
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64, tolerance: Duration) -> bool {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return false;
        };
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return false;
                }
                let value = value.trim();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return false;
                }
                let Ok(t) = value.parse::<u64>() else {
                    return false;
                };
                timestamp = Some(t);
            }
            "v1" => match hex::decode(value.trim()) {
                Ok(bytes) => candidates.push(bytes),
                Err(_) => return false,
            },
            _ => {}
        }
    }
    let Some(t) = timestamp else {
        return false;
    };
    if candidates.is_empty() || t.abs_diff(now) > tolerance.as_secs() {
        return false;
    }
    let expected = mac_for(secret, t, body);
    // Check every candidate so the time taken does not depend on which one matched.
    candidates
        .iter()
        .fold(false, |ok, c| expected.clone().verify_slice(c).is_ok() | ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret";
    const TOL: Duration = DEFAULT_TOLERANCE;

    fn header(t: u64, body: &[u8]) -> String {
        format!("t={t},v1={}", sign(SECRET, t, body))
    }

    #[test]
    fn sign_matches_known_vector() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            sign(SECRET, 1_700_000_000, br#"{"a":1}"#),
            "1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn sign_is_lowercase_hex_of_32_bytes() {
        let s = sign(SECRET, 1, b"");
        assert_eq!(s.len(), 64);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn verify_accepts_fresh_signature() {
        let body = br#"{"id":"wh_1"}"#;
        assert!(verify(SECRET, &header(1000, body), body, 1000, TOL));
        assert!(verify(SECRET, &header(1000, body), body, 1000 + 300, TOL));
        assert!(verify(SECRET, &header(1000, body), body, 1000 - 300, TOL));
        // Spaces, field order, unknown fields, and an uppercase hex digest are tolerated.
        let sig = sign(SECRET, 1000, body);
        let h = format!("v0=abc, v1={} , t=1000", sig.to_uppercase());
        assert!(verify(SECRET, &h, body, 1000, TOL));
        // Several v1: any one matching passes.
        let h = format!("t=1000,v1={},v1={sig}", "00".repeat(32));
        assert!(verify(SECRET, &h, body, 1000, TOL));
    }

    #[test]
    fn verify_rejects_old_and_future_timestamps() {
        let body = b"{}";
        assert!(!verify(SECRET, &header(1000, body), body, 1000 + 301, TOL));
        assert!(!verify(SECRET, &header(1000, body), body, 1000 - 301, TOL));
        assert!(!verify(SECRET, &header(0, body), body, u64::MAX, TOL));
        assert!(!verify(
            SECRET,
            &header(1000, body),
            body,
            1001,
            Duration::ZERO
        ));
    }

    #[test]
    fn verify_rejects_wrong_secret_or_body() {
        let body = b"{\"a\":1}";
        let h = header(1000, body);
        assert!(!verify("other", &h, body, 1000, TOL));
        assert!(!verify(SECRET, &h, b"{\"a\":2}", 1000, TOL));
        assert!(!verify(SECRET, &h, b"", 1000, TOL));
        // The timestamp is signed too: moving it breaks the signature.
        let sig = sign(SECRET, 1000, body);
        assert!(!verify(
            SECRET,
            &format!("t=1001,v1={sig}"),
            body,
            1000,
            TOL
        ));
    }

    #[test]
    fn verify_rejects_malformed_headers() {
        let body = b"{}";
        let sig = sign(SECRET, 1000, body);
        for h in [
            String::new(),
            "garbage".to_string(),
            format!("v1={sig}"),
            "t=1000".to_string(),
            "t=1000,v1=".to_string(),
            format!("t=,v1={sig}"),
            format!("t=-1000,v1={sig}"),
            format!("t=+1000,v1={sig}"),
            format!("t=1e3,v1={sig}"),
            format!("t=1000,t=1000,v1={sig}"),
            format!("t=1000,v1={}", &sig[..63]),
            format!("t=1000,v1={}", &sig[..62]),
            format!("t=1000,v1={sig}00"),
            format!("t=1000,v1=zz{}", &sig[2..]),
            format!("t=1000;v1={sig}"),
            format!("t=1000,v1={sig},junk"),
            format!("t=99999999999999999999999,v1={sig}"),
        ] {
            assert!(!verify(SECRET, &h, body, 1000, TOL), "accepted {h:?}");
        }
    }

    #[test]
    fn body_has_id_event_created_at_and_payload() {
        let ev = build_event(
            "call.answered",
            serde_json::json!({"identity": "bob", "id": "nope", "call": {"call_id": "CA_1"}}),
            1234,
        );
        let v: Value = serde_json::from_slice(&ev.body).unwrap();
        assert_eq!(v["id"], Value::String(ev.id.clone()));
        assert!(
            ev.id.starts_with("wh_") && ev.id.len() == 3 + 32,
            "{}",
            ev.id
        );
        assert_eq!(v["event"], "call.answered");
        assert_eq!(v["created_at"], 1234);
        assert_eq!(v["identity"], "bob");
        assert_eq!(v["call"]["call_id"], "CA_1");
        assert_eq!(v.as_object().unwrap().len(), 5);

        let other = build_event("call.ended", Value::Null, 1);
        assert_ne!(other.id, ev.id);
        let v: Value = serde_json::from_slice(&other.body).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 3);
        let v: Value =
            serde_json::from_slice(&build_event("x", serde_json::json!([1]), 1).body).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn check_url_wants_plain_http() {
        assert!(check_url("http://127.0.0.1:8080/hooks").is_ok());
        assert!(check_url("http://backend/zvon-hooks").is_ok());
        assert!(matches!(
            check_url("https://backend/hooks"),
            Err(WebhookUrlError::UnsupportedScheme(_))
        ));
        assert!(check_url("backend/hooks").is_err());
        assert!(check_url("").is_err());
    }

    #[test]
    fn disabled_send_is_a_no_op() {
        let w = Webhooks::disabled();
        assert!(!w.is_enabled());
        w.send("call.started", serde_json::json!({}));
    }
}
