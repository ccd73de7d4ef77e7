//! Webhook delivery against a real local HTTP receiver (axum on 127.0.0.1).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::timeout;

use zvon_signaling::calls::webhooks::{verify, WebhookConfig, Webhooks};

const KEY: &str = "APIkey1";
const SECRET: &str = "webhook-secret-0123456789";
const TOLERANCE: Duration = Duration::from_secs(300);
const PATH: &str = "/zvon-hooks";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    content_type: String,
    key: String,
    idempotency_key: String,
    signature: String,
    body: Bytes,
    json: Value,
    accepted: bool,
}

impl Received {
    fn seq(&self) -> u64 {
        self.json["seq"].as_u64().expect("seq in body")
    }
}

/// Decides the status of each request from the ones seen before it (not yet including it).
type Policy = Arc<dyn Fn(&[Received], &Value) -> StatusCode + Send + Sync>;

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    notify: Arc<Notify>,
    policy: Policy,
}

impl Receiver {
    fn new(policy: Policy) -> Self {
        Receiver {
            seen: Arc::new(Mutex::new(Vec::new())),
            notify: Arc::new(Notify::new()),
            policy,
        }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    fn accepted_seqs(&self) -> Vec<u64> {
        self.seen()
            .iter()
            .filter(|r| r.accepted)
            .map(Received::seq)
            .collect()
    }

    /// Waits (bounded) until `n` requests have been accepted.
    async fn wait_accepted(&self, n: usize, within: Duration) {
        let done = timeout(within, async {
            loop {
                let notified = self.notify.notified();
                if self.seen().iter().filter(|r| r.accepted).count() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
        assert!(
            done.is_ok(),
            "timed out waiting for {n} accepted webhooks; got {:?}",
            self.seen()
                .iter()
                .map(|r| (r.seq(), r.accepted))
                .collect::<Vec<_>>()
        );
    }

    /// Serves on `listener` until the test ends.
    fn serve(&self, listener: TcpListener) {
        let app = Router::new()
            .route(PATH, post(handle))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
}

async fn handle(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = {
        let mut seen = rx.seen.lock().unwrap();
        let status = (rx.policy)(&seen, &json);
        seen.push(Received {
            at: Instant::now(),
            content_type: header("content-type"),
            key: header("zvon-key"),
            idempotency_key: header("idempotency-key"),
            signature: header("zvon-signature"),
            body: body.clone(),
            json,
            accepted: status.is_success(),
        });
        status
    };
    rx.notify.notify_waiters();
    status
}

fn always_ok() -> Policy {
    Arc::new(|_, _| StatusCode::OK)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fast_config(addr: SocketAddr) -> WebhookConfig {
    let mut config = WebhookConfig::new(format!("http://{addr}{PATH}"), KEY.into(), SECRET.into());
    config.first_retry = Duration::from_millis(100);
    config.max_retry_interval = Duration::from_millis(400);
    config.request_timeout = Duration::from_secs(2);
    config
}

/// Every request is well-formed: headers, body shape, and a valid signature.
fn check_requests(seen: &[Received]) {
    let now = unix_now();
    for r in seen {
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.key, KEY);
        assert!(
            r.idempotency_key.starts_with("wh_"),
            "{}",
            r.idempotency_key
        );
        assert_eq!(r.json["id"], r.idempotency_key.as_str());
        assert!(r.json["event"].is_string());
        let created_at = r.json["created_at"].as_u64().expect("created_at");
        assert!(created_at.abs_diff(now) < 60);
        assert!(
            verify(SECRET, &r.signature, &r.body, now, TOLERANCE),
            "signature {:?} does not verify",
            r.signature
        );
    }
}

async fn local_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn requests_are_signed_and_verifiable() {
    let listener = local_listener().await;
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::new(always_ok());
    receiver.serve(listener);

    let hooks = Webhooks::start(fast_config(addr));
    assert!(hooks.is_enabled());
    hooks.send(
        "call.answered",
        json!({"seq": 1, "identity": "bob", "call": {"call_id": "CA_1", "members": ["alice", "bob"]}}),
    );
    hooks.send("call.ended", json!({"seq": 2, "call": {"call_id": "CA_1"}}));
    receiver.wait_accepted(2, Duration::from_secs(10)).await;

    let seen = receiver.seen();
    assert_eq!(seen.len(), 2);
    check_requests(&seen);
    assert_eq!(seen[0].json["event"], "call.answered");
    assert_eq!(seen[0].json["identity"], "bob");
    assert_eq!(seen[0].json["call"]["members"], json!(["alice", "bob"]));
    assert_eq!(seen[1].json["event"], "call.ended");
    assert_ne!(seen[0].idempotency_key, seen[1].idempotency_key);

    let r = &seen[0];
    let now = unix_now();
    // Tampered body.
    let mut tampered = r.body.to_vec();
    let pos = tampered
        .windows(3)
        .position(|w| w == b"bob")
        .expect("bob in body");
    tampered[pos] = b'r';
    assert!(!verify(SECRET, &r.signature, &tampered, now, TOLERANCE));
    // Wrong secret.
    assert!(!verify(
        "not-the-secret",
        &r.signature,
        &r.body,
        now,
        TOLERANCE
    ));
    // Too old by the time it is checked.
    assert!(!verify(
        SECRET,
        &r.signature,
        &r.body,
        now + 3600,
        TOLERANCE
    ));
    // Still valid as received.
    assert!(verify(SECRET, &r.signature, &r.body, now, TOLERANCE));
}

#[tokio::test]
async fn delivers_in_order_and_retries_with_the_same_idempotency_key() {
    let listener = local_listener().await;
    let addr = listener.local_addr().unwrap();
    // The first 2 attempts of event 2 get a 500; everything else a 200.
    let receiver = Receiver::new(Arc::new(|seen, body| {
        let earlier_tries_of_2 = seen.iter().filter(|r| r.seq() == 2).count();
        if body["seq"] == 2 && earlier_tries_of_2 < 2 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }));
    receiver.serve(listener);
    let hooks = Webhooks::start(fast_config(addr));

    let started = Instant::now();
    for seq in 1..=5u64 {
        hooks.send("call.started", json!({ "seq": seq }));
    }
    let queued_in = started.elapsed();
    // `send` only queues: the 5 calls return long before the 2 retries of event 2 (>= 300 ms).
    assert!(
        queued_in < Duration::from_millis(50),
        "send took {queued_in:?}"
    );

    receiver.wait_accepted(5, Duration::from_secs(20)).await;
    let delivered_in = started.elapsed();
    assert!(
        delivered_in >= Duration::from_millis(300),
        "delivered in {delivered_in:?}"
    );
    assert!(queued_in < delivered_in);

    let seen = receiver.seen();
    check_requests(&seen);
    assert_eq!(receiver.accepted_seqs(), vec![1, 2, 3, 4, 5]);
    // Attempts in arrival order: 1, 2 (500), 2 (500), 2, 3, 4, 5: nothing overtook event 2.
    let order: Vec<u64> = seen.iter().map(Received::seq).collect();
    assert_eq!(order, vec![1, 2, 2, 2, 3, 4, 5]);
    let tries_of_2: Vec<&Received> = seen.iter().filter(|r| r.seq() == 2).collect();
    assert_eq!(tries_of_2.len(), 3);
    assert_eq!(
        tries_of_2.iter().map(|r| r.accepted).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    for r in &tries_of_2 {
        assert_eq!(r.idempotency_key, tries_of_2[0].idempotency_key);
        assert_eq!(r.body, tries_of_2[0].body, "the body never changes");
    }
    // Backoff: about 100 ms, then about 200 ms between the tries.
    let gap1 = tries_of_2[1].at - tries_of_2[0].at;
    let gap2 = tries_of_2[2].at - tries_of_2[1].at;
    assert!(gap1 >= Duration::from_millis(90), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(190), "{gap2:?}");
    // Every event has its own key.
    let mut keys: Vec<&str> = seen
        .iter()
        .filter(|r| r.accepted)
        .map(|r| r.idempotency_key.as_str())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 5);
}

#[tokio::test]
async fn waits_for_an_endpoint_that_comes_up_late() {
    // A port where nothing listens (for now).
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let hooks = Webhooks::start(fast_config(addr));
    for seq in 1..=3u64 {
        hooks.send("call.ringing", json!({ "seq": seq }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listener = timeout(Duration::from_secs(5), async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("could not bind the receiver's port again");
    let receiver = Receiver::new(always_ok());
    receiver.serve(listener);

    // Retries are at most 400 ms apart.
    receiver.wait_accepted(3, Duration::from_secs(10)).await;
    check_requests(&receiver.seen());
    assert_eq!(receiver.accepted_seqs(), vec![1, 2, 3]);
    assert_eq!(receiver.seen().len(), 3, "each event delivered once");
}

#[tokio::test]
async fn drops_an_event_after_its_last_attempt_and_goes_on() {
    let listener = local_listener().await;
    let addr = listener.local_addr().unwrap();
    // Event 1 always fails.
    let receiver = Receiver::new(Arc::new(|_, body| {
        if body["seq"] == 1 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::NO_CONTENT
        }
    }));
    receiver.serve(listener);
    let mut config = fast_config(addr);
    config.max_attempts = 3;
    let hooks = Webhooks::start(config);
    for seq in 1..=2u64 {
        hooks.send("call.missed", json!({ "seq": seq }));
    }

    receiver.wait_accepted(1, Duration::from_secs(10)).await;
    let seen = receiver.seen();
    check_requests(&seen);
    let order: Vec<(u64, bool)> = seen.iter().map(|r| (r.seq(), r.accepted)).collect();
    assert_eq!(
        order,
        vec![(1, false), (1, false), (1, false), (2, true)],
        "3 attempts at event 1, then event 2 (any 2xx counts as delivered)"
    );
}

#[tokio::test]
async fn disabled_and_bad_urls_deliver_nothing() {
    let disabled = Webhooks::disabled();
    assert!(!disabled.is_enabled());
    disabled.send("call.started", json!({}));

    let https = Webhooks::start(WebhookConfig::new(
        "https://127.0.0.1:1/hooks".into(),
        KEY.into(),
        SECRET.into(),
    ));
    assert!(!https.is_enabled(), "no TLS client: https:// is refused");
    https.send("call.started", json!({}));
}
