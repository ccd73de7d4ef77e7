//! Muting a track: by its publisher, or by a room admin.
//!
//! A muted track is not forwarded by the media node. An admin's mute is a lock: the media node
//! stops forwarding the track and the publisher cannot unmute it until an admin releases it
//! (LiveKit lets the participant unmute; a classroom needs the teacher's mute to hold).
//! Releasing restores what the publisher itself last asked for, so an admin can never switch
//! on a microphone its owner turned off.

use zvon_sfu::api::{ParticipantId, SfuRequest, TrackId};

use super::moderation::{admin_over, denied, unknown};
use super::{Hub, Participant, Refusal};
use crate::protocol::{ErrorCode, ServerMessage};

/// A publisher's own `mute` of a track an admin holds: muting is remembered (and wins when the
/// admin releases), unmuting is refused. `None` when no admin holds the track.
pub(super) fn self_mute_held(
    p: &mut Participant,
    track_id: &str,
    muted: bool,
) -> Option<Result<(), Refusal>> {
    let held = p.seat.admin_muted.iter_mut().find(|(t, _)| t == track_id)?;
    if !muted {
        return Some(Err(denied(
            "an admin muted this track; only an admin can release it",
        )));
    }
    held.1 = true;
    Some(Ok(()))
}

impl Hub {
    /// A publisher mutes or unmutes its own track.
    pub async fn mute(&self, pid: &str, track_id: &str, muted: bool) -> Result<(), Refusal> {
        {
            let mut state = self.lock();
            let p = state
                .participants
                .get(pid)
                .ok_or((ErrorCode::NotJoined, "not in a room".to_string()))?;
            if !p.info.tracks.iter().any(|t| t.id == track_id) {
                let someone_elses = state
                    .participants
                    .values()
                    .any(|o| o.info.tracks.iter().any(|t| t.id == track_id));
                return Err(if someone_elses {
                    (
                        ErrorCode::PermissionDenied,
                        "only the publisher mutes its track in v1".into(),
                    )
                } else {
                    (
                        ErrorCode::InvalidRequest,
                        format!("unknown track {track_id:?}"),
                    )
                });
            }
            if let Some(held) = state
                .participants
                .get_mut(pid)
                .and_then(|p| self_mute_held(p, track_id, muted))
            {
                return held;
            }
        }
        self.media
            .request(SfuRequest::SetTrackMuted {
                participant: ParticipantId(pid.to_string()),
                track_id: TrackId(track_id.to_string()),
                muted,
            })
            .await
            .map_err(|e| self.media_refusal(pid, e))?;
        let mut state = self.lock();
        let Some(p) = state.participants.get_mut(pid) else {
            return Ok(());
        };
        let mut changed = false;
        for t in p.info.tracks.iter_mut().filter(|t| t.id == track_id) {
            changed = t.muted != muted;
            t.muted = muted;
        }
        let (room, hidden) = (p.room.clone(), p.grants.hidden);
        if changed && !hidden {
            let msg = ServerMessage::TrackMuted {
                participant_id: pid.to_string(),
                track_id: track_id.to_string(),
                muted,
            };
            state.broadcast(&room, pid, &msg);
        }
        Ok(())
    }

    /// An admin mutes (holds) or releases another participant's track.
    pub(super) async fn admin_mute(
        &self,
        admin: &str,
        target: &str,
        track_id: &str,
        muted: bool,
    ) -> Result<(), Refusal> {
        // Decide under the lock; the media node is told outside it.
        let forward_muted = {
            let mut state = self.lock();
            admin_over(&state, admin, target, false)?;
            let p = state
                .participants
                .get_mut(target)
                .ok_or_else(|| unknown(target))?;
            let current = p
                .info
                .tracks
                .iter()
                .find(|t| t.id == track_id)
                .map(|t| t.muted)
                .ok_or_else(|| {
                    (
                        ErrorCode::InvalidRequest,
                        format!("participant has no track {track_id:?}"),
                    )
                })?;
            let held = p.seat.admin_muted.iter().position(|(t, _)| t == track_id);
            match (muted, held) {
                (true, Some(_)) | (false, None) => return Ok(()),
                (true, None) => {
                    p.seat.admin_muted.push((track_id.to_string(), current));
                    true
                }
                (false, Some(i)) => p.seat.admin_muted.remove(i).1,
            }
        };
        self.media
            .request(SfuRequest::SetTrackMuted {
                participant: ParticipantId(target.to_string()),
                track_id: TrackId(track_id.to_string()),
                muted: forward_muted,
            })
            .await
            .map_err(|e| self.media_refusal(target, e))?;
        let mut state = self.lock();
        let Some(p) = state.participants.get_mut(target) else {
            return Ok(());
        };
        let mut changed = false;
        for t in p.info.tracks.iter_mut().filter(|t| t.id == track_id) {
            changed = t.muted != forward_muted;
            t.muted = forward_muted;
        }
        let room = p.room.clone();
        state.send(
            target,
            ServerMessage::AdminMuted {
                track_id: track_id.to_string(),
                muted,
            },
        );
        if changed {
            let msg = ServerMessage::TrackMuted {
                participant_id: target.to_string(),
                track_id: track_id.to_string(),
                muted: forward_muted,
            };
            state.broadcast(&room, target, &msg);
        }
        Ok(())
    }
}
