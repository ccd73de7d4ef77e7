//! The HTTP surface: browser client, WebSocket upgrade, dev tokens, server info.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::protocol::PROTOCOL_VERSION;
use crate::rate_limit::PerIpLimiter;
use crate::session::{self, SessionContext};
use crate::token::{self, Claims};

/// Frames beyond this are cut off by the WebSocket layer itself; between the protocol limit
/// and this one the session answers `message_too_large` first.
const TRANSPORT_MESSAGE_LIMIT: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub session: Arc<SessionContext>,
    pub dev_mode: bool,
    pub upgrades: Arc<PerIpLimiter>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                asset(
                    "text/html; charset=utf-8",
                    include_str!("../web/index.html"),
                )
            }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("../web/style.css")) }),
        )
        .route(
            "/app.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../web/app.js"),
                )
            }),
        )
        .route(
            "/client.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../web/client.js"),
                )
            }),
        )
        .route(
            "/ui.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../web/ui.js"),
                )
            }),
        )
        .route("/rtc", get(upgrade))
        .route("/api/dev-token", get(dev_token))
        .route("/api/info", get(info))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    if !state.upgrades.allow(remote.ip(), Instant::now()) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "rate_limited"})),
        )
            .into_response();
    }
    let ctx = state.session.clone();
    // Small buffers: the WebSocket layer keeps its read buffer resident per socket (the default
    // 128 KiB made an idle participant cost more than its media connection). Messages larger
    // than the buffer still arrive; the buffer grows for them and is freed afterwards.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(TRANSPORT_MESSAGE_LIMIT)
        .max_frame_size(TRANSPORT_MESSAGE_LIMIT)
        .on_upgrade(move |socket| session::run(socket, ctx))
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: String,
    #[serde(default)]
    name: Option<String>,
}

async fn dev_token(State(state): State<AppState>, Query(q): Query<DevTokenQuery>) -> Response {
    if !state.dev_mode {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "dev_mode_disabled"})),
        )
            .into_response();
    }
    let name = q.name.unwrap_or_default();
    if q.room.is_empty() || q.room.len() > 64 || name.len() > 64 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "room must be 1-64 and name at most 64 characters"})),
        )
            .into_response();
    }
    let Some(key) = state.session.keys.first() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "no API key configured"})),
        )
            .into_response();
    };
    let identity = format!("guest-{}", rand::random::<u32>());
    let mut claims = Claims::new(&key.key, &q.room, &identity, Duration::from_secs(6 * 3600));
    claims.name = Some(if name.is_empty() {
        identity.clone()
    } else {
        name
    });
    match token::mint(&claims, &key.secret) {
        Ok(token) => Json(json!({"token": token, "identity": identity})).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn info(State(state): State<AppState>) -> Response {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "protocol": PROTOCOL_VERSION, "dev": state.dev_mode})).into_response()
}
