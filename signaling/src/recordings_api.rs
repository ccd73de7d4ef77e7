//! The server API for recordings: start and stop recording a room, list the recordings on
//! this node's disk, read a manifest, fetch a file (with Range requests, so a player can
//! seek). Errors use the server API's JSON schema (`{"error": code, "message": ...}`).
//!
//! Starting and stopping need a `server_api` token. Reading also accepts a `room_admin` token
//! of the recording's room (a teacher replays their own lesson), as `Authorization: Bearer`
//! or `?token=` (a `<video src>` cannot send headers).

use std::path::{Path, PathBuf};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::http::{api_error, check_server_api, server_api_body, AppState};
use crate::protocol::ErrorCode;
use crate::token;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/rooms/{room}/recording",
            get(room_recording).post(set_room_recording),
        )
        .route("/api/recordings", get(list))
        .route("/api/recordings/{id}", get(manifest))
        .route("/api/recordings/{id}/{file}", get(file))
}

fn code_str(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn refusal((code, message): crate::rooms::Refusal) -> Response {
    let status = match code {
        ErrorCode::UnknownRoom => StatusCode::NOT_FOUND,
        ErrorCode::RecordingUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    api_error(status, &code_str(code), message)
}

#[derive(Deserialize)]
struct SetRecording {
    enabled: bool,
}

async fn set_room_recording(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(room): UrlPath<String>,
    body: Result<Json<SetRecording>, JsonRejection>,
) -> Response {
    let body = match server_api_body(&state, &headers, body) {
        Ok(body) => body,
        Err(r) => return *r,
    };
    match state
        .session
        .hub
        .set_room_recording(&room, body.enabled)
        .await
    {
        Ok(status) => Json(status).into_response(),
        Err(r) => refusal(r),
    }
}

async fn room_recording(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(room): UrlPath<String>,
) -> Response {
    if let Err(r) = check_server_api(&state, &headers) {
        return *r;
    }
    Json(state.session.hub.recording_status(&room)).into_response()
}

/// An error answer, boxed: a `Response` is large to carry in every `Result`.
type Refused = Box<Response>;

/// Who may read: the backend, or an admin of one room.
enum Reader {
    Server,
    RoomAdmin(String),
}

#[derive(Deserialize, Default)]
struct ReadQuery {
    token: Option<String>,
    room: Option<String>,
}

fn reader(state: &AppState, headers: &HeaderMap, query: &ReadQuery) -> Result<Reader, Refused> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query.token.as_deref())
        .ok_or_else(|| {
            Box::new(api_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authorization: Bearer <token> (or ?token=) needed",
            ))
        })?;
    match token::verify(bearer, &state.session.keys) {
        Ok(c) if c.grants.server_api => Ok(Reader::Server),
        Ok(c) if c.grants.room_admin && !c.room.is_empty() => Ok(Reader::RoomAdmin(c.room)),
        Ok(_) => Err(Box::new(api_error(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "needs a server_api token or a room_admin token of the recording's room",
        ))),
        Err(e) => Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            e.to_string(),
        ))),
    }
}

fn record_dir(state: &AppState) -> Result<PathBuf, Refused> {
    state
        .session
        .hub
        .record_dir()
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            Box::new(api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "recording_unavailable",
                "this server records nothing (start it with --record-dir)",
            ))
        })
}

/// A recording id or file name as it can appear on disk: no path tricks.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn read_manifest(dir: &Path, id: &str) -> Option<Value> {
    if !plain_name(id) {
        return None;
    }
    let bytes = std::fs::read(dir.join(id).join("manifest.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn not_found() -> Refused {
    Box::new(api_error(
        StatusCode::NOT_FOUND,
        "unknown_recording",
        "no such recording on this server",
    ))
}

/// The manifest if `reader` may read it.
fn readable(state: &AppState, reader: &Reader, id: &str) -> Result<(PathBuf, Value), Refused> {
    let dir = record_dir(state)?;
    let manifest = read_manifest(&dir, id).ok_or_else(not_found)?;
    if let Reader::RoomAdmin(room) = reader {
        if manifest["room"].as_str() != Some(room.as_str()) {
            return Err(not_found());
        }
    }
    Ok((dir.join(id), manifest))
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ReadQuery>,
) -> Response {
    let reader = match reader(&state, &headers, &query) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let dir = match record_dir(&state) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let only_room = match &reader {
        Reader::RoomAdmin(room) => Some(room.clone()),
        Reader::Server => query.room.clone(),
    };
    let listed = tokio::task::spawn_blocking(move || {
        let mut out = vec![];
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            let Some(m) = read_manifest(&dir, &id) else {
                continue;
            };
            if only_room
                .as_deref()
                .is_some_and(|r| m["room"].as_str() != Some(r))
            {
                continue;
            }
            let files: Vec<Value> = m["tracks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["file"].as_str().map(Value::from))
                .collect();
            out.push(json!({
                "recording_id": m["recording_id"],
                "room": m["room"],
                "started_at": m["started_at"],
                "ended_at": m["ended_at"],
                "error": m["error"],
                "files": files,
            }));
        }
        out.sort_by_key(|r| r["started_at"].as_u64().unwrap_or(0));
        out
    })
    .await
    .unwrap_or_default();
    Json(json!({ "recordings": listed })).into_response()
}

async fn manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ReadQuery>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match reader(&state, &headers, &query).and_then(|r| readable(&state, &r, &id)) {
        Ok((_, m)) => Json(m).into_response(),
        Err(r) => *r,
    }
}

async fn file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ReadQuery>,
    UrlPath((id, name)): UrlPath<(String, String)>,
    request: Request,
) -> Response {
    let (dir, m) = match reader(&state, &headers, &query).and_then(|r| readable(&state, &r, &id)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let listed = m["tracks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["file"].as_str() == Some(name.as_str()));
    if !listed || !plain_name(&name) {
        return api_error(
            StatusCode::NOT_FOUND,
            "unknown_file",
            "no such file in this recording",
        );
    }
    // `.webm` is served as video/webm.
    let serve = tower_http::services::ServeFile::new(dir.join(&name));
    match serve.oneshot(request).await {
        Ok(r) => r.into_response(),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
