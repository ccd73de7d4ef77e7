//! Recording a room: started and stopped by a room admin (`set_recording`) or the server API
//! (`POST /api/rooms/{room}/recording`), shown to everyone in the room (`recording`, also to
//! late joiners: people must know they are recorded), announced by the webhooks
//! `recording.started` and `recording.finished`. The media nodes write the files
//! (`zvon_sfu::record`); a recording they give up on (disk full) stops here too.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};
use zvon_sfu::api::{ParticipantId, RecordedPerson, RecordingSpec, RoomId, SfuRequest};

use super::{random_id, Hub, Outbound, Outbox, Refusal, State};
use crate::protocol::{ErrorCode, ServerMessage};

/// A room's recording as signaling holds it.
#[derive(Debug, Clone)]
pub(super) struct ActiveRecording {
    pub id: String,
    pub started_at: u64,
    /// The media node accepted it: only then is it shown.
    pub confirmed: bool,
}

/// What the server API answers about a room's recording.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordingStatus {
    pub room: String,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn message(r: &ActiveRecording, active: bool, error: Option<String>) -> ServerMessage {
    ServerMessage::Recording {
        active,
        recording_id: r.id.clone(),
        started_at: r.started_at,
        error,
    }
}

/// Who is who in `room`, for the recording's manifest.
fn people(state: &State, room: &str) -> Vec<RecordedPerson> {
    state
        .rooms
        .get(room)
        .into_iter()
        .flatten()
        .filter_map(|pid| state.participants.get(pid))
        .map(|p| RecordedPerson {
            participant: ParticipantId(p.info.id.clone()),
            identity: p.info.identity.clone(),
            name: p.info.name.clone(),
        })
        .collect()
}

/// The `recording` message for someone entering `room` while it is recorded.
pub(super) fn current(state: &State, room: &str) -> Option<ServerMessage> {
    let r = state.recordings.get(room).filter(|r| r.confirmed)?;
    Some(message(r, true, None))
}

/// Tells a participant entering `room` that it is being recorded.
pub(super) fn on_enter(state: &State, room: &str, outbox: &Outbox) {
    if let Some(m) = current(state, room) {
        let _ = outbox.send(Outbound::Message(m, None));
    }
}

impl Hub {
    /// Where recordings are written (`--record-dir`); set once at start.
    pub fn set_record_dir(&self, dir: PathBuf) {
        let _ = self.record_dir.set(dir);
    }

    pub fn record_dir(&self) -> Option<&Path> {
        self.record_dir.get().map(PathBuf::as_path)
    }

    /// `set_recording` from participant `pid`: room admins only.
    pub(super) async fn set_recording_by_admin(
        &self,
        pid: &str,
        enabled: bool,
    ) -> Result<(), Refusal> {
        let room = {
            let state = self.lock();
            let p = state
                .participants
                .get(pid)
                .ok_or_else(|| super::moderation::denied("not in a room"))?;
            if !p.grants.room_admin {
                return Err(super::moderation::denied(
                    "only a room admin may start or stop recording",
                ));
            }
            p.room.clone()
        };
        self.set_room_recording(&room, enabled).await.map(|_| ())
    }

    pub fn recording_status(&self, room: &str) -> RecordingStatus {
        let state = self.lock();
        let r = state.recordings.get(room).filter(|r| r.confirmed);
        RecordingStatus {
            room: room.to_string(),
            active: r.is_some(),
            recording_id: r.map(|r| r.id.clone()),
            started_at: r.map(|r| r.started_at),
        }
    }

    /// Starts or stops recording an open room; starting a recorded room (or stopping one
    /// that is not) changes nothing.
    pub async fn set_room_recording(
        &self,
        room: &str,
        enabled: bool,
    ) -> Result<RecordingStatus, Refusal> {
        if self.record_dir().is_none() {
            return Err((
                ErrorCode::RecordingUnavailable,
                "this server records nothing (start it with --record-dir)".into(),
            ));
        }
        if !enabled {
            self.stop_recording(room, None).await;
            return Ok(self.recording_status(room));
        }
        let spec = {
            let mut state = self.lock();
            if state.rooms.get(room).is_none_or(|m| m.is_empty()) {
                return Err((ErrorCode::UnknownRoom, format!("no open room {room:?}")));
            }
            if state.recordings.contains_key(room) {
                drop(state);
                return Ok(self.recording_status(room));
            }
            let r = ActiveRecording {
                id: format!("REC_{}_{}", unix_ms(), random_id(6)),
                started_at: unix_ms(),
                confirmed: false,
            };
            let spec = RecordingSpec {
                id: r.id.clone(),
                people: people(&state, room),
            };
            state.recordings.insert(room.to_string(), r);
            spec
        };
        let id = spec.id.clone();
        let answer = self
            .media
            .request(SfuRequest::Record {
                room: RoomId(room.to_string()),
                recording: Some(spec),
            })
            .await;
        let mut state = self.lock();
        if let Err(e) = answer {
            warn!(room, "media node refused to record: {e}");
            if state.recordings.get(room).is_some_and(|r| r.id == id) {
                state.recordings.remove(room);
            }
            return Err((ErrorCode::RecordingUnavailable, e.to_string()));
        }
        let Some(r) = state.recordings.get_mut(room).filter(|r| r.id == id) else {
            // Stopped (or the room closed) meanwhile.
            return Ok(RecordingStatus {
                room: room.to_string(),
                active: false,
                recording_id: None,
                started_at: None,
            });
        };
        r.confirmed = true;
        let r = r.clone();
        state.broadcast(room, "", &message(&r, true, None));
        info!(room, recording = %r.id, "recording");
        self.webhooks.send(
            "recording.started",
            json!({"room": room, "recording_id": r.id, "started_at": r.started_at}),
        );
        drop(state);
        Ok(self.recording_status(room))
    }

    /// Ends the room's recording (if it is `only`, when given): everyone is told, the media
    /// node closes the files and reports them (`recording.finished`).
    pub(super) async fn stop_recording(&self, room: &str, only: Option<(&str, String)>) {
        let stopped = {
            let mut state = self.lock();
            let current = state.recordings.get(room).map(|r| r.id.clone());
            if current.is_none()
                || only
                    .as_ref()
                    .is_some_and(|(id, _)| Some(*id) != current.as_deref())
            {
                return;
            }
            let r = state.recordings.remove(room);
            let error = only.as_ref().map(|(_, e)| e.clone());
            // A failure may come before the start was confirmed: it is shown all the same.
            if let Some(r) = r.as_ref().filter(|r| r.confirmed || error.is_some()) {
                state.broadcast(room, "", &message(r, false, error));
            }
            r
        };
        if let Some(r) = stopped {
            info!(room, recording = %r.id, "recording stopped");
            if let Err(e) = self
                .media
                .request(SfuRequest::Record {
                    room: RoomId(room.to_string()),
                    recording: None,
                })
                .await
            {
                warn!(room, "media node did not stop recording: {e}");
            }
        }
    }

    /// Someone joined a recorded room: the manifest learns their name.
    pub(super) async fn recording_people_changed(&self, room: &str) {
        let spec = {
            let state = self.lock();
            let Some(r) = state.recordings.get(room).filter(|r| r.confirmed) else {
                return;
            };
            RecordingSpec {
                id: r.id.clone(),
                people: people(&state, room),
            }
        };
        let _ = self
            .media
            .request(SfuRequest::Record {
                room: RoomId(room.to_string()),
                recording: Some(spec),
            })
            .await;
    }

    /// A media node could not write the recording (see `SfuEvent::RecordingFailed`).
    pub(super) async fn recording_failed(&self, room: &str, recording: &str, error: String) {
        warn!(room, recording, "recording failed: {error}");
        self.stop_recording(room, Some((recording, error))).await;
    }

    /// A media node closed the recording's files.
    pub(super) fn recording_finished(
        &self,
        room: &str,
        recording: &str,
        files: Vec<String>,
        error: Option<String>,
    ) {
        self.webhooks.send(
            "recording.finished",
            json!({
                "room": room,
                "recording_id": recording,
                "ended_at": unix_ms(),
                "files": files,
                "error": error,
            }),
        );
    }
}
