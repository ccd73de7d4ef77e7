//! The HTTP surface: browser client, WebSocket upgrade, dev tokens, server info.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::Path;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::client_ip::TrustedProxies;
use crate::origin::AllowedOrigins;
use crate::protocol::PROTOCOL_VERSION;
use crate::rate_limit::PerIpLimiter;
use crate::session::{self, SessionContext};
use crate::token::{self, Claims};

#[derive(Clone)]
pub struct AppState {
    pub session: Arc<SessionContext>,
    pub dev_mode: bool,
    pub upgrades: Arc<PerIpLimiter>,
    pub trusted_proxies: Arc<TrustedProxies>,
    pub allowed_origins: Arc<AllowedOrigins>,
}

/// The browser client, compiled into the binary: path, content type, contents.
const WEB_ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
    ("/app.js", JS, include_str!("../web/app.js")),
    ("/calls_mode.js", JS, include_str!("../web/calls_mode.js")),
    ("/client.js", JS, include_str!("../web/client.js")),
    ("/publisher.js", JS, include_str!("../web/publisher.js")),
    ("/reconnect.js", JS, include_str!("../web/reconnect.js")),
    ("/ice_restart.js", JS, include_str!("../web/ice_restart.js")),
    ("/device.js", JS, include_str!("../web/device.js")),
    ("/adaptive.js", JS, include_str!("../web/adaptive.js")),
    ("/classroom.js", JS, include_str!("../web/classroom.js")),
    ("/recording.js", JS, include_str!("../web/recording.js")),
    ("/ui.js", JS, include_str!("../web/ui.js")),
    (
        "/replay.html",
        "text/html; charset=utf-8",
        include_str!("../web/replay.html"),
    ),
    ("/replay.js", JS, include_str!("../web/replay.js")),
];
const JS: &str = "text/javascript; charset=utf-8";

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for &(path, content_type, body) in WEB_ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router
        .route("/rtc", get(upgrade))
        .route("/api/dev-token", get(dev_token))
        .route("/api/info", get(info))
        .merge(crate::broadcast::routes(state.clone()))
        .merge(crate::recordings_api::routes())
        .merge(
            Router::new()
                .route("/api/calls", post(server_call))
                .route("/api/calls/{call_id}", get(server_call_report))
                .route("/api/calls/{call_id}/end", post(server_end_call))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    calls_owner,
                )),
        )
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
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // A socket another node of the fleet carries here for its room owner: signed with the
    // cluster secret, never proxied again, and not one client's upgrade to rate-limit.
    let proxied_by = state.session.fleet.as_ref().and_then(|fleet| {
        let value = headers
            .get(crate::fleet::proxy::PROXY_HEADER)?
            .to_str()
            .ok()?;
        crate::fleet::proxy::verify(&fleet.config.secret, value)
    });
    // Checked before the upgrade limit: a refused page must not use up its visitor's upgrades.
    // A socket piped by another node was checked there and carries no Origin.
    if proxied_by.is_none() {
        if let Err(refusal) = state.allowed_origins.check(&headers) {
            tracing::info!(%remote, "WebSocket upgrade refused: {refusal}");
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "origin_not_allowed"})),
            )
                .into_response();
        }
    }
    let client = state.trusted_proxies.client_ip(remote.ip(), &headers);
    if proxied_by.is_none() && !state.upgrades.allow(client, Instant::now()) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "rate_limited"})),
        )
            .into_response();
    }
    let ctx = state.session.clone();
    // The WebSocket layer refuses a frame over the protocol limit as soon as its header says
    // so (the session answers `message_too_large`): such a message is never held in memory.
    let limit = ctx.limits.max_message_bytes;
    // Small buffers: the WebSocket layer keeps its read buffer resident per socket (the default
    // 128 KiB made an idle participant cost more than its media connection). Messages larger
    // than the buffer still arrive; the buffer grows for them and is freed afterwards.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| session::run(socket, ctx, proxied_by))
}

#[derive(Deserialize)]
struct DevTokenQuery {
    #[serde(default)]
    room: String,
    #[serde(default)]
    name: Option<String>,
    /// With `device`: a device token for calls, for this identity.
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    device: Option<String>,
    /// `admin=1`: a `room_admin` token (a teacher), to try the classroom controls.
    #[serde(default)]
    admin: Option<String>,
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
    let device = q.device.filter(|d| !d.is_empty());
    let room_ok = (1..=64).contains(&q.room.len()) || (q.room.is_empty() && device.is_some());
    let ids_ok = [&q.identity, &device]
        .iter()
        .all(|v| v.as_ref().is_none_or(|s| s.len() <= 64));
    if !room_ok || name.len() > 64 || !ids_ok {
        let msg =
            "give room (1-64 characters) or identity and device (each at most 64); name at most 64";
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response();
    }
    let Some(key) = state.session.keys.first() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "no API key configured"})),
        )
            .into_response();
    };
    let identity = q
        .identity
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| format!("guest-{}", rand::random::<u32>()));
    let mut claims = Claims::new(&key.key, &q.room, &identity, Duration::from_secs(6 * 3600));
    claims.name = Some(if name.is_empty() {
        identity.clone()
    } else {
        name
    });
    claims.device = device;
    claims.grants.room_admin = matches!(q.admin.as_deref(), Some("1" | "true"));
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

pub(crate) fn api_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// The backend's bearer token must carry the `server_api` grant.
/// A server-API request's authorization and JSON body, or the documented error response.
pub(crate) fn server_api_body<T>(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Json<T>, JsonRejection>,
) -> Result<T, Box<Response>> {
    check_server_api(state, headers)?;
    // axum's own rejection is text/plain (422 for a wrong field); the API answers every error
    // with the documented JSON schema.
    body.map(|Json(body)| body).map_err(|rejection| {
        let message = crate::protocol::quote_message(rejection.body_text());
        Box::new(api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            message,
        ))
    })
}

pub(crate) fn check_server_api(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Box::new(api_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authorization: Bearer <token> needed",
            ))
        })?;
    match token::verify(bearer, &state.session.keys) {
        Ok(claims) if claims.grants.server_api => Ok(()),
        Ok(_) => Err(Box::new(api_error(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "token lacks the server_api grant",
        ))),
        Err(e) => Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            e.to_string(),
        ))),
    }
}

/// Server API requests about calls are answered by the node holding the calls lease (cluster
/// mode): any other node forwards them there, so a backend may call any node.
async fn calls_owner(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(fleet) = state.session.fleet.clone() else {
        return next.run(request).await;
    };
    let proxied = request
        .headers()
        .get(crate::fleet::proxy::PROXY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::fleet::proxy::verify(&fleet.config.secret, v));
    let Some(leases) = fleet.rooms.as_ref().filter(|_| proxied.is_none()) else {
        return next.run(request).await;
    };
    match leases.route(crate::fleet::CALLS_LEASE).await {
        Ok(crate::fleet::Route::Local) => next.run(request).await,
        Ok(crate::fleet::Route::Owner { url, .. }) => {
            let header = crate::fleet::proxy::sign(&fleet.config.secret, fleet.registry.node_id());
            match crate::fleet::proxy::forward_http(request, &url, &header).await {
                Ok(response) => response,
                Err(e) => api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    format!("the node serving calls is unreachable: {e}"),
                ),
            }
        }
        Err((code, message)) => {
            let code = serde_json::to_value(code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            api_error(StatusCode::SERVICE_UNAVAILABLE, &code, message)
        }
    }
}

#[derive(Deserialize)]
struct ServerCallRequest {
    from: String,
    to: Vec<String>,
    media: crate::calls::Media,
}

fn refusal_response((code, message): crate::rooms::Refusal) -> Response {
    let code = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let status = if code == "unknown_call" {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    };
    api_error(status, &code, message)
}

async fn server_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ServerCallRequest>, JsonRejection>,
) -> Response {
    let body = match server_api_body(&state, &headers, body) {
        Ok(body) => body,
        Err(r) => return *r,
    };
    match state
        .session
        .hub
        .server_invite(&body.from, &body.to, body.media)
    {
        Ok(created) => Json(created).into_response(),
        Err(refusal) => refusal_response(refusal),
    }
}

async fn server_end_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    if let Err(r) = check_server_api(&state, &headers) {
        return *r;
    }
    match state.session.hub.server_end_call(&call_id) {
        Ok(()) => Json(json!({"call_id": call_id, "ended": true})).into_response(),
        Err(refusal) => refusal_response(refusal),
    }
}

async fn server_call_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    if let Err(r) = check_server_api(&state, &headers) {
        return *r;
    }
    match state.session.hub.call_report(&call_id) {
        Some(report) => Json(report).into_response(),
        None => api_error(StatusCode::NOT_FOUND, "unknown_call", "no such call"),
    }
}
