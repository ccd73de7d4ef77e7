//! Whom a WHEP viewer shows: the room's dominant speaker, or the participant or track it
//! asked for. Sans-IO: the room's messages (as the viewer's hidden participant receives them,
//! `docs/protocol.md`) go in, the target to point the viewer's m-lines at comes out when it
//! changes. The media node switches without renegotiation.

use serde_json::Value;

/// What the viewer asked to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The loudest speaker; while nobody speaks, whoever was shown last (or the first
    /// participant who publishes video).
    Speaker,
    /// A participant, by identity or participant id.
    Participant(String),
    /// One track, by id.
    Track(String),
}

/// Where the viewer's m-lines should point now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub publisher: Option<String>,
    pub track: Option<String>,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    identity: String,
    /// (track id, is video)
    tracks: Vec<(String, bool)>,
}

/// The room as the viewer knows it, and what it shows.
#[derive(Debug)]
pub struct Follow {
    choice: Choice,
    me: String,
    members: Vec<Member>,
    loudest: Option<String>,
    shown: Target,
    /// The tracks of the participant shown when last targeted: a new camera must be
    /// targeted again even though the participant did not change.
    shown_tracks: Vec<(String, bool)>,
}

impl Follow {
    /// `me` is the viewer's own participant id, never shown.
    pub fn new(choice: Choice, me: &str) -> Self {
        Follow {
            choice,
            me: me.to_string(),
            members: vec![],
            loudest: None,
            shown: Target::default(),
            shown_tracks: vec![],
        }
    }

    /// One message the viewer's participant received. Returns the new target when it changed
    /// (or its tracks did); `None` when nothing is to be done.
    pub fn on_message(&mut self, message: &Value) -> Option<Target> {
        match message.get("type")?.as_str()? {
            "joined" => {
                self.members = message
                    .get("participants")?
                    .as_array()?
                    .iter()
                    .filter_map(member)
                    .collect();
            }
            "participant_joined" => {
                let m = member(message.get("participant")?)?;
                self.members.retain(|x| x.id != m.id);
                self.members.push(m);
            }
            "participant_left" => {
                let id = message.get("participant_id")?.as_str()?;
                self.members.retain(|m| m.id != id);
                if self.loudest.as_deref() == Some(id) {
                    self.loudest = None;
                }
            }
            "track_published" => {
                let id = message.get("participant_id")?.as_str()?;
                let track = track(message.get("track")?)?;
                let m = self.members.iter_mut().find(|m| m.id == id)?;
                m.tracks.retain(|t| t.0 != track.0);
                m.tracks.push(track);
            }
            "track_unpublished" => {
                let id = message.get("participant_id")?.as_str()?;
                let track = message.get("track_id")?.as_str()?;
                let m = self.members.iter_mut().find(|m| m.id == id)?;
                m.tracks.retain(|t| t.0 != track);
            }
            "active_speakers" => {
                // Only a speaker who is someone else: a loudest entry that is gone is ignored.
                self.loudest = message
                    .get("speakers")?
                    .as_array()?
                    .iter()
                    .filter_map(|s| s.get("participant_id")?.as_str())
                    .find(|id| *id != self.me && self.members.iter().any(|m| m.id == *id))
                    .map(str::to_string)
                    .or(self.loudest.take());
            }
            _ => return None,
        }
        self.decide()
    }

    fn decide(&mut self) -> Option<Target> {
        let target = match &self.choice {
            Choice::Track(id) => {
                let owner = self
                    .members
                    .iter()
                    .find(|m| m.tracks.iter().any(|t| t.0 == *id));
                Target {
                    publisher: owner.map(|m| m.id.clone()),
                    track: owner.map(|_| id.clone()),
                }
            }
            Choice::Participant(who) => Target {
                publisher: self
                    .members
                    .iter()
                    .find(|m| m.identity == *who || m.id == *who)
                    .map(|m| m.id.clone()),
                track: None,
            },
            Choice::Speaker => {
                let present = |id: &str| self.members.iter().any(|m| m.id == id && m.id != self.me);
                let publisher = self
                    .loudest
                    .clone()
                    .filter(|id| present(id))
                    .or_else(|| self.shown.publisher.clone().filter(|id| present(id)))
                    .or_else(|| {
                        let others = || self.members.iter().filter(|m| m.id != self.me);
                        others()
                            .find(|m| m.tracks.iter().any(|t| t.1))
                            .or_else(|| others().find(|m| !m.tracks.is_empty()))
                            .map(|m| m.id.clone())
                    });
                Target {
                    publisher,
                    track: None,
                }
            }
        };
        let tracks = target
            .publisher
            .as_ref()
            .and_then(|id| self.members.iter().find(|m| m.id == *id))
            .map(|m| m.tracks.clone())
            .unwrap_or_default();
        if target == self.shown && tracks == self.shown_tracks {
            return None;
        }
        self.shown = target.clone();
        self.shown_tracks = tracks;
        Some(target)
    }
}

fn member(p: &Value) -> Option<Member> {
    Some(Member {
        id: p.get("id")?.as_str()?.to_string(),
        identity: p.get("identity")?.as_str()?.to_string(),
        tracks: p
            .get("tracks")?
            .as_array()?
            .iter()
            .filter_map(track)
            .collect(),
    })
}

fn track(t: &Value) -> Option<(String, bool)> {
    Some((
        t.get("id")?.as_str()?.to_string(),
        t.get("kind")?.as_str()? == "video",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn joined(members: &[(&str, &[(&str, &str)])]) -> Value {
        let participants: Vec<Value> = members
            .iter()
            .map(|(id, tracks)| {
                json!({"id": id, "identity": format!("u-{id}"), "name": id,
                    "tracks": tracks.iter().map(|(t, k)| json!({"id": t, "kind": k, "source": "camera", "muted": false})).collect::<Vec<_>>()})
            })
            .collect();
        json!({"type": "joined", "participants": participants})
    }

    fn speakers(ids: &[&str]) -> Value {
        json!({"type": "active_speakers", "speakers": ids.iter().map(|i| json!({"participant_id": i, "level": 0.5})).collect::<Vec<_>>()})
    }

    fn shows(publisher: &str) -> Option<Target> {
        Some(Target {
            publisher: Some(publisher.into()),
            track: None,
        })
    }

    #[test]
    fn follows_the_loudest_and_keeps_them_through_silence() {
        let mut f = Follow::new(Choice::Speaker, "V");
        // Nobody speaks yet: the first participant with video.
        let room = joined(&[
            ("A", &[("a1", "audio")]),
            ("B", &[("b1", "audio"), ("b2", "video")]),
        ]);
        assert_eq!(f.on_message(&room), shows("B"));
        assert_eq!(f.on_message(&speakers(&["A", "B"])), shows("A"));
        // Silence keeps A; the same ranking again changes nothing.
        assert_eq!(f.on_message(&speakers(&[])), None);
        assert_eq!(f.on_message(&speakers(&["A"])), None);
        assert_eq!(f.on_message(&speakers(&["B", "A"])), shows("B"));
    }

    #[test]
    fn never_shows_itself_or_someone_gone() {
        let mut f = Follow::new(Choice::Speaker, "V");
        f.on_message(&joined(&[
            ("A", &[("a1", "video")]),
            ("B", &[("b1", "video")]),
        ]));
        assert_eq!(f.on_message(&speakers(&["V"])), None, "still A");
        assert_eq!(f.on_message(&speakers(&["B"])), shows("B"));
        let left = json!({"type": "participant_left", "participant_id": "B", "reason": "left"});
        assert_eq!(f.on_message(&left), shows("A"));
        let left = json!({"type": "participant_left", "participant_id": "A", "reason": "left"});
        assert_eq!(f.on_message(&left), Some(Target::default()));
    }

    #[test]
    fn a_new_camera_of_the_shown_participant_is_targeted_again() {
        let mut f = Follow::new(Choice::Participant("u-A".into()), "V");
        assert_eq!(
            f.on_message(&joined(&[("A", &[("a1", "audio")])])),
            shows("A")
        );
        let published = json!({"type": "track_published", "participant_id": "A",
            "track": {"id": "a2", "kind": "video", "source": "camera", "muted": false}});
        assert_eq!(f.on_message(&published), shows("A"));
        // Someone else's speech does not move a viewer who chose A.
        let joined_b = json!({"type": "participant_joined", "participant": {"id": "B", "identity": "u-B", "name": "B", "tracks": []}});
        assert_eq!(f.on_message(&joined_b), None);
        assert_eq!(f.on_message(&speakers(&["B"])), None);
    }

    #[test]
    fn a_chosen_track_waits_for_its_publisher() {
        let mut f = Follow::new(Choice::Track("b2".into()), "V");
        assert_eq!(f.on_message(&joined(&[("A", &[("a1", "video")])])), None);
        let published = json!({"type": "track_published", "participant_id": "A",
            "track": {"id": "b2", "kind": "video", "source": "screen", "muted": false}});
        assert_eq!(
            f.on_message(&published),
            Some(Target {
                publisher: Some("A".into()),
                track: Some("b2".into())
            })
        );
        let gone = json!({"type": "track_unpublished", "participant_id": "A", "track_id": "b2"});
        assert_eq!(f.on_message(&gone), Some(Target::default()));
    }
}
