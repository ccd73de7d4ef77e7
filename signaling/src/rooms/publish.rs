//! Publishing: a participant's `publish_offer`, first or again on the same connection
//! (renegotiation adds and withdraws tracks, e.g. a screen share), carried to the media node
//! and announced to the room.

use super::*;

impl Hub {
    /// Answers a `publish_offer`. A mid declared again keeps its track id; tracks no longer
    /// declared are withdrawn (`track_unpublished`), new ones announced (`track_published`).
    pub async fn publish(
        &self,
        pid: &str,
        sdp: String,
        declarations: Vec<TrackDeclaration>,
    ) -> Result<ServerMessage, Refusal> {
        let fingerprint = dtls_fingerprint(&sdp);
        let (tracks, again): (Vec<TrackInfo>, bool) = {
            let mut state = self.lock();
            let may = |p: &Participant| moderation::may_publish(&state, p);
            let allowed = state.participants.get(pid).is_some_and(may);
            let p = state
                .participants
                .get_mut(pid)
                .ok_or((ErrorCode::NotJoined, "not in a room".to_string()))?;
            if !allowed {
                return Err((
                    ErrorCode::PermissionDenied,
                    "not allowed to publish (token grant, an admin, or lecture mode)".into(),
                ));
            }
            if fingerprint.is_some() && fingerprint == p.replaced_fingerprint {
                return Err((
                    ErrorCode::MediaMoving,
                    "an offer of the publisher connection media_reset replaced".into(),
                ));
            }
            // Again on the same connection: renegotiation (a screen share starts or stops).
            let again = p.publishing;
            let fewest = if again { 0 } else { 1 };
            if declarations.len() < fewest || declarations.len() > 8 {
                // A first offer must publish something; a renegotiation may withdraw all.
                let message = format!("declare {fewest} to 8 tracks");
                return Err((ErrorCode::InvalidRequest, message));
            }
            let mut mids: Vec<&str> = declarations.iter().map(|d| d.mid.as_str()).collect();
            mids.sort_unstable();
            mids.dedup();
            if mids.len() != declarations.len() || mids.iter().any(|m| m.is_empty() || m.len() > 32)
            {
                return Err((
                    ErrorCode::InvalidRequest,
                    "track mids must be unique, 1-32 characters".into(),
                ));
            }
            p.publishing = true;
            let tracks = declarations
                .iter()
                .map(|d| {
                    let kept = p
                        .track_mids
                        .iter()
                        .filter(|_| again)
                        .find(|(mid, _)| *mid == d.mid)
                        .and_then(|(_, id)| {
                            p.info
                                .tracks
                                .iter()
                                .find(|t| t.id == *id && t.kind == d.kind)
                        });
                    kept.cloned().unwrap_or_else(|| TrackInfo {
                        id: format!("TR_{}", random_id(10)),
                        kind: d.kind,
                        source: d.source,
                        muted: d.muted,
                    })
                })
                .collect();
            (tracks, again)
        };
        let request = SfuRequest::PublishOffer {
            participant: ParticipantId(pid.to_string()),
            sdp,
            tracks: declarations
                .iter()
                .zip(&tracks)
                .map(|(d, t)| PublishedTrack {
                    mid: d.mid.clone(),
                    track_id: TrackId(t.id.clone()),
                    kind: t.kind,
                    source: t.source,
                    muted: t.muted,
                })
                .collect(),
        };
        let answer = match self.media.request(request).await {
            Ok(SfuResponse::PublishAnswer { sdp }) => sdp,
            Ok(other) => {
                return Err((
                    ErrorCode::Internal,
                    format!("unexpected media answer {other:?}"),
                ))
            }
            Err(e) => {
                // A refused renegotiation leaves the first connection publishing.
                if let Some(p) = self.lock().participants.get_mut(pid).filter(|_| !again) {
                    p.publishing = false;
                }
                return Err(self.media_refusal(pid, e));
            }
        };
        if self.revoked_while_publishing(pid).await {
            return Err((ErrorCode::PermissionDenied, "publishing was revoked".into()));
        }
        let mut state = self.lock();
        let Some(p) = state.participants.get_mut(pid) else {
            return Err((ErrorCode::NotJoined, "left while publishing".into()));
        };
        let is_now = |t: &TrackInfo| tracks.iter().any(|n| n.id == t.id);
        let withdrawn: Vec<TrackInfo> = p
            .info
            .tracks
            .iter()
            .filter(|t| !is_now(t))
            .cloned()
            .collect();
        let added: Vec<TrackInfo> = tracks
            .iter()
            .filter(|n| !p.info.tracks.iter().any(|t| t.id == n.id))
            .cloned()
            .collect();
        p.info.tracks.retain(is_now);
        p.info.tracks.extend(added.iter().cloned());
        p.seat
            .admin_muted
            .retain(|(id, _)| tracks.iter().any(|t| t.id == *id));
        p.publisher_fingerprint = fingerprint;
        p.track_mids = declarations
            .iter()
            .zip(&tracks)
            .map(|(d, t)| (d.mid.clone(), t.id.clone()))
            .collect();
        let room = p.room.clone();
        let hidden = p.grants.hidden;
        if !hidden {
            for t in withdrawn {
                state.broadcast(
                    &room,
                    pid,
                    &ServerMessage::TrackUnpublished {
                        participant_id: pid.to_string(),
                        track_id: t.id,
                    },
                );
            }
            for t in &added {
                state.broadcast(
                    &room,
                    pid,
                    &ServerMessage::TrackPublished {
                        participant_id: pid.to_string(),
                        track: t.clone(),
                    },
                );
            }
        }
        Ok(ServerMessage::PublishAnswer {
            sdp: answer,
            tracks: declarations
                .iter()
                .zip(tracks)
                .map(|(d, track)| PublishedTrackInfo {
                    mid: d.mid.clone(),
                    track,
                })
                .collect(),
        })
    }
}

/// The value of an SDP's first `a=fingerprint` line (hash function and digest): one per
/// connection, the same in every m-section and in every offer of that connection.
fn dtls_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
        .map(|f| f.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::dtls_fingerprint;

    #[test]
    fn fingerprint_is_read_from_the_first_fingerprint_line() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:sha-256 AB:CD:01\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=fingerprint:sha-256 AB:CD:01\r\n";
        assert_eq!(dtls_fingerprint(sdp).as_deref(), Some("sha-256 ab:cd:01"));
        assert_eq!(dtls_fingerprint("v=0\r\nm=audio 9 RTP/AVP 0\r\n"), None);
    }
}
