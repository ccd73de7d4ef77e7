//! Prometheus metrics (`docs/metrics.md`) and the private listener that serves them with
//! `/healthz` and `/readyz`.
//!
//! Signaling's own counters live in a [`prometheus::Registry`]; the media node's numbers and
//! the hub's census are read at scrape time by [`collector::NodeCollector`]. Every label value
//! known in advance is created at start, so an idle server already exposes every series.

mod cluster_collector;
mod collector;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use serde::Deserialize;
use zvon_sfu::SfuStats;

use crate::protocol::{ErrorCode, KNOWN_TYPES};
use crate::rooms::Hub;

/// `type` label of client messages that do not parse.
const INVALID: &str = "invalid";

/// Server → client message types, created at start so dashboards see zeros, not gaps. A
/// type missing here still counts; it just appears on first use.
const SERVER_TYPES: &[&str] = &[
    "joined",
    "media_reset",
    "publish_answer",
    "subscriber_offer",
    "participant_joined",
    "participant_left",
    "track_published",
    "track_unpublished",
    "track_muted",
    "active_speakers",
    "publish_layers",
    "video_paused",
    "admin_muted",
    "permission_changed",
    "hand_queue",
    "hand",
    "lecture_mode",
    "chat",
    "left",
    "pong",
    "error",
    "registered",
    "call_created",
    "call_incoming",
    "call_ringing",
    "call_accepted",
    "call_declined",
    "call_busy",
    "call_missed",
    "call_unreachable",
    "call_stopped_ringing",
    "call_ended",
];

/// Every [`ErrorCode`], for the `code` label. A test checks it against the enum's names.
const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode::InvalidMessage,
    ErrorCode::ClusterUnavailable,
    ErrorCode::RoomMoved,
    ErrorCode::UnknownType,
    ErrorCode::MessageTooLarge,
    ErrorCode::UnsupportedProtocol,
    ErrorCode::NotJoined,
    ErrorCode::AlreadyJoined,
    ErrorCode::JoinTimeout,
    ErrorCode::Unauthorized,
    ErrorCode::TokenExpired,
    ErrorCode::WrongRoom,
    ErrorCode::RoomFull,
    ErrorCode::ResumeFailed,
    ErrorCode::PermissionDenied,
    ErrorCode::InvalidSdp,
    ErrorCode::InvalidRequest,
    ErrorCode::RateLimited,
    ErrorCode::MediaUnavailable,
    ErrorCode::Internal,
    ErrorCode::NotRegistered,
    ErrorCode::UnknownCall,
    ErrorCode::CallAlreadyAnswered,
    ErrorCode::CannotCallSelf,
    ErrorCode::TooManyCalls,
    ErrorCode::UnknownParticipant,
    ErrorCode::Removed,
    ErrorCode::Banned,
    ErrorCode::ChatTooLong,
    ErrorCode::ChatRateLimited,
    ErrorCode::SlowConsumer,
    ErrorCode::MediaTimeout,
    ErrorCode::ServerDraining,
    ErrorCode::RecordingUnavailable,
    ErrorCode::MediaMoving,
];

/// Join latency buckets, seconds: a join waits for the media node to admit the participant.
const JOIN_LATENCY_BOUNDS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metrics: {0}")]
    Register(#[from] prometheus::Error),
}

/// Signaling's counters plus the scrape-time view of the media node and the hub.
pub struct Metrics {
    registry: Registry,
    connections: IntGauge,
    queued_bytes: IntGauge,
    messages: IntCounterVec,
    errors: IntCounterVec,
    join_latency: Histogram,
    sfu: Arc<SfuStats>,
    shutting_down: AtomicBool,
}

/// Holds one open WebSocket in the connections gauge until dropped.
pub struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new(
        sfu: Arc<SfuStats>,
        hub: Arc<Hub>,
        fleet: Option<Arc<crate::fleet::Fleet>>,
    ) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let connections = IntGauge::new("zvon_signaling_connections", "Open WebSocket sessions.")?;
        let queued_bytes = IntGauge::new(
            "zvon_signaling_queued_bytes",
            "Bytes of server messages waiting to be written to sockets, all sessions together.",
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "zvon_signaling_messages_total",
                "Protocol messages by direction and type; client messages that do not parse count as type \"invalid\".",
            ),
            &["direction", "type"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "zvon_signaling_errors_total",
                "Error messages sent, by error code.",
            ),
            &["code"],
        )?;
        let join_latency = Histogram::with_opts(
            HistogramOpts::new(
                "zvon_join_latency_seconds",
                "`join` received to `joined` queued for sending.",
            )
            .buckets(JOIN_LATENCY_BOUNDS.to_vec()),
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(queued_bytes.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(join_latency.clone()))?;
        registry.register(Box::new(collector::NodeCollector::new(sfu.clone(), hub)?))?;
        if let Some(fleet) = fleet {
            registry.register(Box::new(cluster_collector::ClusterCollector::new(fleet)?))?;
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        for t in KNOWN_TYPES.iter().copied().chain([INVALID]) {
            messages.with_label_values(&["in", t]);
        }
        for t in SERVER_TYPES {
            messages.with_label_values(&["out", t]);
        }
        for code in ERROR_CODES {
            errors.with_label_values(&[&code_name(*code)]);
        }
        Ok(Metrics {
            registry,
            connections,
            queued_bytes,
            messages,
            errors,
            join_latency,
            sfu,
            shutting_down: AtomicBool::new(false),
        })
    }

    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    /// The gauge every session's outgoing queue adds its waiting bytes to.
    pub fn queued_bytes(&self) -> IntGauge {
        self.queued_bytes.clone()
    }

    /// A client text frame; `parsed` is false when it earned an error instead of a message.
    pub fn received(&self, text: &str, parsed: bool) {
        // Client-chosen strings never become label values: only the names this version knows.
        let t = message_type(text)
            .filter(|_| parsed)
            .and_then(|t| KNOWN_TYPES.iter().find(|k| **k == t).copied())
            .unwrap_or(INVALID);
        self.messages.with_label_values(&["in", t]).inc();
    }

    /// A client frame that is not text at all.
    pub fn received_invalid(&self) {
        self.messages.with_label_values(&["in", INVALID]).inc();
    }

    /// A server message about to be written to a socket, as JSON text.
    pub fn sent(&self, text: &str) {
        // Server messages are ours: their types are a bounded set by construction.
        let t = message_type(text).unwrap_or(Cow::Borrowed("unknown"));
        self.messages.with_label_values(&["out", &t]).inc();
        if t == "error" {
            #[derive(Deserialize)]
            struct Code<'a> {
                #[serde(borrow)]
                code: Option<Cow<'a, str>>,
            }
            let code = serde_json::from_str::<Code>(text)
                .ok()
                .and_then(|c| c.code)
                .unwrap_or_default();
            self.errors.with_label_values(&[&code]).inc();
        }
    }

    pub fn joined(&self, latency: Duration) {
        self.join_latency.observe(latency.as_secs_f64());
    }

    /// From now on `/readyz` answers 503.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        // A signaling-only node of a fleet has no media workers to wait for.
        let media_ready = self.sfu.workers.is_empty() || self.sfu.all_workers_running();
        !self.shutting_down.load(Ordering::Relaxed) && media_ready
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("encoding metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The `type` of a JSON message. Server messages put it first (serde writes an internally
/// tagged enum's tag first), so the common case is a prefix check; anything else is parsed.
fn message_type(text: &str) -> Option<Cow<'_, str>> {
    if let Some(rest) = text.strip_prefix(r#"{"type":""#) {
        return rest.split('"').next().map(Cow::Borrowed);
    }
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        t: Cow<'a, str>,
    }
    serde_json::from_str::<Typed>(text).ok().map(|v| v.t)
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The private listener: `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.is_ready() {
                    (StatusCode::OK, "ready\n").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
                }
            }),
        )
        .with_state(metrics)
}

/// Serves [`router`] on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router(metrics))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!("metrics listener {addr:?} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_is_read_from_server_and_client_json() {
        assert_eq!(message_type(r#"{"type":"pong"}"#).as_deref(), Some("pong"));
        assert_eq!(
            message_type(r#"{"request_id":"r","type":"join","token":"t"}"#).as_deref(),
            Some("join")
        );
        assert_eq!(message_type("not json"), None);
        assert_eq!(message_type(r#"{"type":7}"#), None);
    }

    #[test]
    fn every_error_code_has_a_distinct_label() {
        let names: std::collections::HashSet<String> =
            ERROR_CODES.iter().map(|c| code_name(*c)).collect();
        assert_eq!(names.len(), ERROR_CODES.len());
        assert!(names.iter().all(|n| !n.is_empty()));
        // Exhaustive: a new ErrorCode variant fails to compile here until it is listed above.
        let listed = |c: ErrorCode| match c {
            ErrorCode::InvalidMessage
            | ErrorCode::UnknownType
            | ErrorCode::MessageTooLarge
            | ErrorCode::UnsupportedProtocol
            | ErrorCode::NotJoined
            | ErrorCode::AlreadyJoined
            | ErrorCode::JoinTimeout
            | ErrorCode::Unauthorized
            | ErrorCode::TokenExpired
            | ErrorCode::WrongRoom
            | ErrorCode::RoomFull
            | ErrorCode::ResumeFailed
            | ErrorCode::PermissionDenied
            | ErrorCode::InvalidSdp
            | ErrorCode::InvalidRequest
            | ErrorCode::RateLimited
            | ErrorCode::MediaUnavailable
            | ErrorCode::Internal
            | ErrorCode::NotRegistered
            | ErrorCode::UnknownCall
            | ErrorCode::CallAlreadyAnswered
            | ErrorCode::CannotCallSelf
            | ErrorCode::TooManyCalls
            | ErrorCode::UnknownParticipant
            | ErrorCode::Removed
            | ErrorCode::Banned
            | ErrorCode::ChatTooLong
            | ErrorCode::ChatRateLimited
            | ErrorCode::ClusterUnavailable
            | ErrorCode::RoomMoved
            | ErrorCode::SlowConsumer
            | ErrorCode::MediaTimeout
            | ErrorCode::ServerDraining
            | ErrorCode::RecordingUnavailable
            | ErrorCode::MediaMoving => ERROR_CODES.contains(&c),
            // Only the server API answers it, never a socket.
            ErrorCode::UnknownRoom => true,
        };
        assert!(ERROR_CODES.iter().all(|c| listed(*c)));
    }
}
