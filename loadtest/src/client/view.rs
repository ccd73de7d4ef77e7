//! What a participant's UI would render, and so which videos it asks the server for with
//! `track_settings`. A class of 200 where everyone receives everyone's camera measures a UI
//! nobody ships: a classroom page shows the teacher large and a page of thumbnails, and pauses
//! the rest. Streams a subscriber paused are not expected to flow and do not count as loss.

use std::collections::{HashMap, HashSet};

use crate::targets::{Kind, RemoteTrack};

/// Suffix of the teacher's identity in the classroom scenario (`scenario::plan`).
pub const TEACHER_SUFFIX: &str = "-teacher";
/// The teacher's video as the students' main view.
pub const LARGE: (u32, u32) = (1280, 720);
/// A gallery thumbnail.
pub const THUMB: (u32, u32) = (320, 180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewPolicy {
    /// Render every video offered (calls, meetings, streams): no `track_settings` sent.
    All,
    /// The teacher's video large, at most `visible` other videos as thumbnails, the rest paused.
    Classroom { visible: usize },
}

/// One `track_settings` message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSetting {
    pub track_id: String,
    pub width: u32,
    pub height: u32,
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Large,
    Thumb,
    Paused,
}

#[derive(Debug, Clone)]
struct Shown {
    publisher: String,
    slot: Slot,
}

/// Per subscriber: who is who (from `joined` / `participant_joined`) and what it renders.
#[derive(Debug)]
pub struct View {
    policy: ViewPolicy,
    identities: HashMap<String, String>,
    /// Video track id → where it is shown, for the tracks of the latest offer.
    videos: HashMap<String, Shown>,
    /// Offer order of the video tracks, so that freed thumbnails go to the longest-waiting.
    order: Vec<String>,
}

impl View {
    pub fn new(policy: ViewPolicy) -> Self {
        View {
            policy,
            identities: HashMap::new(),
            videos: HashMap::new(),
            order: Vec::new(),
        }
    }

    pub fn learn(&mut self, participant_id: &str, identity: &str) {
        self.identities
            .insert(participant_id.to_string(), identity.to_string());
    }

    pub fn is_teacher(&self, participant_id: &str) -> bool {
        self.identities
            .get(participant_id)
            .is_some_and(|i| i.ends_with(TEACHER_SUFFIX))
    }

    /// The publisher's role as the report groups streams: `teacher` / `student` in a classroom,
    /// `peer` elsewhere.
    pub fn role_of(&self, participant_id: &str) -> &'static str {
        match self.policy {
            ViewPolicy::All => "peer",
            ViewPolicy::Classroom { .. } if self.is_teacher(participant_id) => "teacher",
            ViewPolicy::Classroom { .. } => "student",
        }
    }

    /// A subscriber offer lists every track the subscriber now receives: place the new videos,
    /// drop the gone ones and give their thumbnails to paused ones. Returns the settings that
    /// changed.
    pub fn on_offer(&mut self, tracks: &[RemoteTrack]) -> Vec<TrackSetting> {
        let ViewPolicy::Classroom { visible } = self.policy else {
            return Vec::new();
        };
        let current: HashSet<&str> = tracks
            .iter()
            .filter(|t| t.kind == Kind::Video)
            .map(|t| t.track_id.as_str())
            .collect();
        self.videos.retain(|id, _| current.contains(id.as_str()));
        self.order.retain(|id| current.contains(id.as_str()));
        let mut out = Vec::new();
        for t in tracks.iter().filter(|t| t.kind == Kind::Video) {
            if self.videos.contains_key(&t.track_id) {
                continue;
            }
            let slot = if self.is_teacher(&t.participant_id) {
                Slot::Large
            } else if self.thumbs() < visible {
                Slot::Thumb
            } else {
                Slot::Paused
            };
            out.push(setting(&t.track_id, slot));
            self.videos.insert(
                t.track_id.clone(),
                Shown {
                    publisher: t.participant_id.clone(),
                    slot,
                },
            );
            self.order.push(t.track_id.clone());
        }
        // A thumbnail freed by someone who left goes to the first paused video, as a gallery
        // page refills.
        let mut free = visible.saturating_sub(self.thumbs());
        for id in &self.order {
            if free == 0 {
                break;
            }
            if let Some(s) = self.videos.get_mut(id) {
                if s.slot == Slot::Paused {
                    s.slot = Slot::Thumb;
                    free -= 1;
                    out.retain(|o| &o.track_id != id);
                    out.push(setting(id, Slot::Thumb));
                }
            }
        }
        out
    }

    fn thumbs(&self) -> usize {
        self.videos
            .values()
            .filter(|s| s.slot == Slot::Thumb)
            .count()
    }

    /// Whether this subscriber asked for `kind` from `participant_id` (audio always).
    pub fn wants(&self, participant_id: &str, kind: Kind) -> bool {
        if kind == Kind::Audio || self.policy == ViewPolicy::All {
            return true;
        }
        !self
            .videos
            .values()
            .any(|s| s.publisher == participant_id && s.slot == Slot::Paused)
    }

    /// Publishers whose video this subscriber paused (the report expects nothing from them).
    pub fn paused_publishers(&self) -> Vec<String> {
        self.videos
            .values()
            .filter(|s| s.slot == Slot::Paused)
            .map(|s| s.publisher.clone())
            .collect()
    }
}

fn setting(track_id: &str, slot: Slot) -> TrackSetting {
    let (width, height) = match slot {
        Slot::Large => LARGE,
        Slot::Thumb => THUMB,
        Slot::Paused => (0, 0),
    };
    TrackSetting {
        track_id: track_id.to_string(),
        width,
        height,
        enabled: slot != Slot::Paused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(pid: &str) -> RemoteTrack {
        RemoteTrack {
            mid: format!("m-{pid}"),
            track_id: format!("TR_{pid}"),
            participant_id: pid.to_string(),
            kind: Kind::Video,
        }
    }

    fn audio(pid: &str) -> RemoteTrack {
        RemoteTrack {
            kind: Kind::Audio,
            track_id: format!("TA_{pid}"),
            ..video(pid)
        }
    }

    #[test]
    fn classroom_shows_teacher_large_k_thumbnails_and_pauses_the_rest() {
        let mut v = View::new(ViewPolicy::Classroom { visible: 2 });
        v.learn("T", "lt-classroom-x-0-teacher");
        for i in 0..5 {
            v.learn(&format!("S{i}"), &format!("lt-classroom-x-0-s{i}"));
        }
        let mut offer = vec![
            video("S0"),
            audio("T"),
            video("S1"),
            video("T"),
            video("S2"),
        ];
        let s = v.on_offer(&offer);
        assert_eq!(s.len(), 4, "one setting per video, none for audio: {s:?}");
        let of = |id: &str| s.iter().find(|x| x.track_id == id).cloned().expect(id);
        assert_eq!((of("TR_T").width, of("TR_T").enabled), (1280, true));
        assert_eq!((of("TR_S0").width, of("TR_S0").enabled), (320, true));
        assert!(of("TR_S1").enabled);
        assert!(!of("TR_S2").enabled, "third student is past the page");
        assert!(v.wants("S1", Kind::Video) && !v.wants("S2", Kind::Video));
        assert!(v.wants("S2", Kind::Audio), "audio is never paused");
        assert_eq!(v.role_of("T"), "teacher");
        assert_eq!(v.role_of("S2"), "student");

        // A renegotiation with the same tracks plus one more changes only the new one.
        offer.push(video("S3"));
        let s = v.on_offer(&offer);
        assert_eq!(s.len(), 1);
        assert!(!s[0].enabled && s[0].track_id == "TR_S3");

        // S0 leaves: its thumbnail goes to the longest-paused video, S2.
        offer.retain(|t| t.participant_id != "S0");
        let s = v.on_offer(&offer);
        assert_eq!(
            s,
            vec![TrackSetting {
                track_id: "TR_S2".into(),
                width: 320,
                height: 180,
                enabled: true
            }]
        );
        assert!(v.wants("S2", Kind::Video));
        assert_eq!(v.paused_publishers(), vec!["S3".to_string()]);
    }

    #[test]
    fn render_everything_sends_no_settings() {
        let mut v = View::new(ViewPolicy::All);
        assert!(v.on_offer(&[video("A"), video("B")]).is_empty());
        assert!(v.wants("B", Kind::Video));
        assert_eq!(v.role_of("A"), "peer");
    }
}
