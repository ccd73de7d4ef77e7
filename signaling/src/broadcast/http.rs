//! The WHIP and WHEP endpoints (RFC 9725 and the WHEP draft): `POST /whip/{room}` and
//! `POST /whep/{room}` with `Authorization: Bearer <access token>` and an `application/sdp`
//! offer answer `201 Created` with the SDP answer and the session's `Location`; `DELETE` on
//! that location ends the session. Trickle ICE and ICE restarts (`PATCH`) are not supported
//! (`405`): the server is ICE-lite and its answer carries its only candidate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use super::follow::Choice;
use super::{BroadcastError, Broadcasts, Kind, Started};
use crate::http::AppState;
use crate::protocol::ErrorCode;
use crate::token::{self, Claims};

#[derive(Clone)]
struct Endpoints {
    app: AppState,
    broadcasts: Arc<Broadcasts>,
}

/// The WHIP and WHEP routes, to merge into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>(app: AppState) -> Router<S> {
    let broadcasts = Broadcasts::new(app.session.clone());
    let state = Endpoints { app, broadcasts };
    Router::new()
        .route("/whip/{room}", post(whip).options(options))
        .route("/whep/{room}", post(whep).options(options))
        .route(
            "/whip/{room}/{session}",
            axum::routing::delete(end_whip).patch(no_patch),
        )
        .route(
            "/whep/{room}/{session}",
            axum::routing::delete(end_whep).patch(no_patch),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            room_owner,
        ))
        .with_state(state)
}

/// Cluster mode: a room's sessions live on the node that owns the room (as its WebSocket
/// participants do), so a request that lands elsewhere is forwarded there, its `Location`
/// kept. A forwarded request was rate-limited by the node it reached first.
async fn room_owner(
    State(state): State<Endpoints>,
    Path(params): Path<Vec<(String, String)>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(fleet) = state.app.session.fleet.clone() else {
        return next.run(request).await;
    };
    let proxied = request
        .headers()
        .get(crate::fleet::proxy::PROXY_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| crate::fleet::proxy::verify(&fleet.config.secret, v).is_some());
    if proxied {
        request.extensions_mut().insert(Forwarded);
    }
    let room = params
        .iter()
        .find(|(k, _)| k == "room")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let Some(leases) = fleet.rooms.as_ref().filter(|_| !proxied) else {
        return next.run(request).await;
    };
    match leases.route(crate::fleet::lease_for_room(&room)).await {
        Ok(crate::fleet::Route::Local) => next.run(request).await,
        Ok(crate::fleet::Route::Owner { url, .. }) => {
            let header = crate::fleet::proxy::sign(&fleet.config.secret, fleet.registry.node_id());
            match crate::fleet::proxy::forward_http(request, &url, &header).await {
                Ok(response) => response,
                Err(e) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the node serving this room is unreachable: {e}"),
                ),
            }
        }
        Err((_, message)) => plain(StatusCode::SERVICE_UNAVAILABLE, message),
    }
}

/// Marks a request another node of the fleet forwarded here.
#[derive(Clone, Copy)]
struct Forwarded;

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

fn unauthorized(message: impl Into<String>) -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, message);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

impl IntoResponse for BroadcastError {
    fn into_response(self) -> Response {
        let status = match &self {
            BroadcastError::Forbidden(_) => StatusCode::FORBIDDEN,
            BroadcastError::BadOffer(_) => StatusCode::BAD_REQUEST,
            BroadcastError::UnsupportedCodec(_) => StatusCode::NOT_ACCEPTABLE,
            BroadcastError::NotFound => StatusCode::NOT_FOUND,
            BroadcastError::Refused(code, _) => match code {
                ErrorCode::RoomFull | ErrorCode::ServerDraining | ErrorCode::MediaUnavailable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
                ErrorCode::UnknownCall => StatusCode::NOT_FOUND,
                ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        plain(status, self.to_string())
    }
}

/// The bearer token's claims, checked against the room in the URL.
fn authorize(state: &Endpoints, headers: &HeaderMap, room: &str) -> Result<Claims, Box<Response>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Box::new(unauthorized("Authorization: Bearer <access token> needed")))?;
    let claims = token::verify(bearer, &state.app.session.keys)
        .map_err(|e| Box::new(unauthorized(e.to_string())))?;
    if claims.room != room {
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            format!("token is for room {:?}, not {room:?}", claims.room),
        )));
    }
    Ok(claims)
}

/// What every POST checks first: the per-IP limit shared with WebSocket upgrades, the token,
/// and that the body is an SDP offer.
fn admit(
    state: &Endpoints,
    remote: SocketAddr,
    forwarded: bool,
    headers: &HeaderMap,
    room: &str,
    body: &Bytes,
) -> Result<(Claims, String), Box<Response>> {
    let client = state.app.trusted_proxies.client_ip(remote.ip(), headers);
    if !forwarded && !state.app.upgrades.allow(client, Instant::now()) {
        return Err(Box::new(plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests",
        )));
    }
    let claims = authorize(state, headers, room)?;
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
    if !sdp_type {
        return Err(Box::new(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an application/sdp offer",
        )));
    }
    if body.len() > state.app.session.limits.max_message_bytes {
        return Err(Box::new(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "offer too large",
        )));
    }
    let sdp = std::str::from_utf8(body)
        .map_err(|_| Box::new(plain(StatusCode::BAD_REQUEST, "the offer is not UTF-8")))?;
    Ok((claims, sdp.to_string()))
}

fn created(kind: Kind, room: &str, started: Started) -> Response {
    let location = format!("/{}/{}/{}", kind.name(), urlencode(room), started.id);
    let mut r = (StatusCode::CREATED, started.answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    r
}

/// Percent-encodes what is not safe in a path segment.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn whip(
    State(state): State<Endpoints>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    forwarded: Option<axum::Extension<Forwarded>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (claims, sdp) = match admit(&state, remote, forwarded.is_some(), &headers, &room, &body) {
        Ok(admitted) => admitted,
        Err(r) => return *r,
    };
    match state.broadcasts.publish(&claims, &sdp).await {
        Ok(started) => created(Kind::Whip, &room, started),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct ViewQuery {
    participant: Option<String>,
    track: Option<String>,
}

async fn whep(
    State(state): State<Endpoints>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    forwarded: Option<axum::Extension<Forwarded>>,
    Path(room): Path<String>,
    Query(query): Query<ViewQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (claims, sdp) = match admit(&state, remote, forwarded.is_some(), &headers, &room, &body) {
        Ok(admitted) => admitted,
        Err(r) => return *r,
    };
    let choice = match (query.track, query.participant) {
        (Some(t), _) => Choice::Track(t),
        (None, Some(p)) => Choice::Participant(p),
        (None, None) => Choice::Speaker,
    };
    match state.broadcasts.view(&claims, &sdp, choice).await {
        Ok(started) => created(Kind::Whep, &room, started),
        Err(e) => e.into_response(),
    }
}

async fn end(
    state: Endpoints,
    kind: Kind,
    room: String,
    id: String,
    headers: HeaderMap,
) -> Response {
    let claims = match authorize(&state, &headers, &room) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match state.broadcasts.end(kind, &room, &id, &claims).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn end_whip(
    State(state): State<Endpoints>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    end(state, Kind::Whip, room, id, headers).await
}

async fn end_whep(
    State(state): State<Endpoints>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    end(state, Kind::Whep, room, id, headers).await
}

/// Trickle ICE and ICE restarts are not supported (RFC 9725 allows that answer).
async fn no_patch() -> Response {
    let mut r = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE and ICE restart are not supported; POST a new offer instead",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    r
}

async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    h.insert("Accept-Post", HeaderValue::from_static("application/sdp"));
    r
}
