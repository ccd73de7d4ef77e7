//! What a participant's UI would render, and so which videos it asks the server for with
//! `track_settings`. A class of 200 where everyone receives everyone's camera measures a UI
//! nobody ships: a classroom page shows the teacher large and a page of thumbnails, and never
//! receives the rest. So a classroom participant joins with on-demand video subscription and
//! requests only the cameras it shows, choosing them from the tracks the room announces
//! (`joined`, `participant_joined`, `track_published`), not from subscriber offers: the server
//! offers a camera only once it is asked for. Cameras it never asked for are not expected to
//! flow and do not count as loss or as missing streams.

use std::collections::{HashMap, HashSet};

use crate::targets::{AnnouncedParticipant, AnnouncedTrack, Kind};

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
    /// On-demand subscription: the teacher's camera large, the first `visible` other cameras
    /// announced as thumbnails, nothing requested for the rest.
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
    /// Announced, not shown, never requested.
    Waiting,
}

#[derive(Debug, Clone)]
struct Camera {
    track_id: String,
    publisher: String,
    slot: Slot,
    /// Unpublished, or its publisher left. Kept so that the report still knows whether this
    /// subscriber asked for it: a waiting camera whose publisher left at the end of the run
    /// must not turn into an expected stream.
    gone: bool,
}

/// Per subscriber: who is who and which announced cameras it shows.
#[derive(Debug)]
pub struct View {
    policy: ViewPolicy,
    me: Option<String>,
    identities: HashMap<String, String>,
    /// Every camera announced, in announcement order, so that a freed thumbnail goes to the
    /// one waiting longest.
    cameras: Vec<Camera>,
}

impl View {
    pub fn new(policy: ViewPolicy) -> Self {
        View {
            policy,
            me: None,
            identities: HashMap::new(),
            cameras: Vec::new(),
        }
    }

    /// Whether this participant joins with `video_subscription: on_demand`.
    pub fn on_demand(&self) -> bool {
        matches!(self.policy, ViewPolicy::Classroom { .. })
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

    /// `joined`: who I am and who is already in the room, with their tracks.
    pub fn on_joined(&mut self, me: &str, others: &[AnnouncedParticipant]) -> Vec<TrackSetting> {
        self.me = Some(me.to_string());
        let mut out = Vec::new();
        for p in others {
            out.extend(self.on_participant_joined(p));
        }
        out
    }

    pub fn on_participant_joined(&mut self, p: &AnnouncedParticipant) -> Vec<TrackSetting> {
        self.identities.insert(p.id.clone(), p.identity.clone());
        p.tracks
            .iter()
            .filter_map(|t| self.on_track_published(&p.id, t))
            .collect()
    }

    /// A newly announced track: the teacher's camera is shown large, another camera takes a
    /// free thumbnail or waits. Audio and screen shares come without asking.
    pub fn on_track_published(
        &mut self,
        publisher: &str,
        track: &AnnouncedTrack,
    ) -> Option<TrackSetting> {
        let ViewPolicy::Classroom { visible } = self.policy else {
            return None;
        };
        if !track.is_camera()
            || self.me.as_deref() == Some(publisher)
            || self.cameras.iter().any(|c| c.track_id == track.id)
        {
            return None;
        }
        let slot = if self.is_teacher(publisher) {
            Slot::Large
        } else if self.thumbs() < visible {
            Slot::Thumb
        } else {
            Slot::Waiting
        };
        self.cameras.push(Camera {
            track_id: track.id.clone(),
            publisher: publisher.to_string(),
            slot,
            gone: false,
        });
        request(&track.id, slot)
    }

    pub fn on_track_unpublished(&mut self, track_id: &str) -> Vec<TrackSetting> {
        self.remove(|c| c.track_id == track_id)
    }

    pub fn on_participant_left(&mut self, participant_id: &str) -> Vec<TrackSetting> {
        self.remove(|c| c.publisher == participant_id)
    }

    /// Marks cameras gone and gives freed thumbnails to the longest-waiting cameras, as a
    /// gallery page refills.
    fn remove(&mut self, gone: impl Fn(&Camera) -> bool) -> Vec<TrackSetting> {
        let ViewPolicy::Classroom { visible } = self.policy else {
            return Vec::new();
        };
        for c in self.cameras.iter_mut().filter(|c| !c.gone && gone(c)) {
            c.gone = true;
        }
        let mut free = visible.saturating_sub(self.thumbs());
        let mut out = Vec::new();
        for c in self.cameras.iter_mut() {
            if free == 0 {
                break;
            }
            if !c.gone && c.slot == Slot::Waiting {
                c.slot = Slot::Thumb;
                free -= 1;
                out.extend(request(&c.track_id, Slot::Thumb));
            }
        }
        out
    }

    fn thumbs(&self) -> usize {
        self.cameras
            .iter()
            .filter(|c| !c.gone && c.slot == Slot::Thumb)
            .count()
    }

    /// Whether this subscriber asked for the track (or it comes unasked: audio, screen shares,
    /// anything a target never announced). A camera stays wanted after it goes away: what it
    /// delivered until then counts.
    pub fn wants(&self, track_id: &str, kind: Kind) -> bool {
        if kind == Kind::Audio || self.policy == ViewPolicy::All {
            return true;
        }
        self.cameras
            .iter()
            .find(|c| c.track_id == track_id)
            .is_none_or(|c| c.slot != Slot::Waiting)
    }

    /// Publishers whose video the report should not expect this subscriber to receive: none
    /// of their cameras was requested, or none of the requests is `settled` (it got an m-line,
    /// or went out long enough before the end for the server to have answered it).
    pub fn unexpected_publishers(&self, settled: impl Fn(&str) -> bool) -> Vec<String> {
        let expected: HashSet<&str> = self
            .cameras
            .iter()
            .filter(|c| c.slot != Slot::Waiting && settled(&c.track_id))
            .map(|c| c.publisher.as_str())
            .collect();
        let mut seen = HashSet::new();
        self.cameras
            .iter()
            .map(|c| c.publisher.as_str())
            .filter(|p| !expected.contains(p) && seen.insert(*p))
            .map(str::to_string)
            .collect()
    }
}

/// The request for a shown camera; nothing for a waiting one (on demand, not asking is enough).
fn request(track_id: &str, slot: Slot) -> Option<TrackSetting> {
    let (width, height) = match slot {
        Slot::Large => LARGE,
        Slot::Thumb => THUMB,
        Slot::Waiting => return None,
    };
    Some(TrackSetting {
        track_id: track_id.to_string(),
        width,
        height,
        enabled: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(pid: &str) -> AnnouncedTrack {
        AnnouncedTrack {
            id: format!("TR_{pid}"),
            kind: Kind::Video,
            source: "camera".into(),
        }
    }

    fn mic(pid: &str) -> AnnouncedTrack {
        AnnouncedTrack {
            id: format!("TA_{pid}"),
            kind: Kind::Audio,
            source: "microphone".into(),
        }
    }

    fn person(pid: &str, identity: &str, tracks: Vec<AnnouncedTrack>) -> AnnouncedParticipant {
        AnnouncedParticipant {
            id: pid.into(),
            identity: identity.into(),
            tracks,
        }
    }

    fn student(i: usize) -> AnnouncedParticipant {
        person(
            &format!("S{i}"),
            &format!("lt-classroom-x-0-s{i}"),
            vec![mic(&format!("S{i}")), cam(&format!("S{i}"))],
        )
    }

    fn ids(s: &[TrackSetting]) -> Vec<&str> {
        s.iter().map(|t| t.track_id.as_str()).collect()
    }

    #[test]
    fn classroom_requests_teacher_large_and_first_k_students_only() {
        let mut v = View::new(ViewPolicy::Classroom { visible: 2 });
        assert!(v.on_demand());
        // Already in the room: S0, the teacher, S1, S2 (in the server's order).
        let teacher = person("T", "lt-classroom-x-0-teacher", vec![mic("T"), cam("T")]);
        let s = v.on_joined("ME", &[student(0), teacher, student(1), student(2)]);
        assert_eq!(
            s,
            vec![
                TrackSetting {
                    track_id: "TR_S0".into(),
                    width: 320,
                    height: 180,
                    enabled: true
                },
                TrackSetting {
                    track_id: "TR_T".into(),
                    width: 1280,
                    height: 720,
                    enabled: true
                },
                TrackSetting {
                    track_id: "TR_S1".into(),
                    width: 320,
                    height: 180,
                    enabled: true
                },
            ],
            "no request for audio nor for the third student"
        );
        assert!(v.wants("TR_S1", Kind::Video) && !v.wants("TR_S2", Kind::Video));
        assert!(v.wants("TA_S2", Kind::Audio), "audio comes unasked");
        assert_eq!(v.role_of("T"), "teacher");
        assert_eq!(v.role_of("S2"), "student");

        // Later arrivals: a student joining, then publishing, waits; a screen share and a
        // repeated announcement ask for nothing; my own camera is not shown to me.
        assert!(v
            .on_participant_joined(&person("S3", "lt-classroom-x-0-s3", vec![]))
            .is_empty());
        assert_eq!(v.on_track_published("S3", &cam("S3")), None);
        let screen = AnnouncedTrack {
            id: "TS_S0".into(),
            kind: Kind::Video,
            source: "screen".into(),
        };
        assert_eq!(v.on_track_published("S0", &screen), None);
        assert!(v.wants("TS_S0", Kind::Video), "screen shares come unasked");
        assert_eq!(v.on_track_published("S0", &cam("S0")), None);
        assert_eq!(v.on_track_published("ME", &cam("ME")), None);

        // S0 leaves: its thumbnail goes to the longest-waiting camera, S2, not S3.
        let s = v.on_participant_left("S0");
        assert_eq!(ids(&s), vec!["TR_S2"]);
        assert_eq!((s[0].width, s[0].height, s[0].enabled), (320, 180, true));
        assert!(v.wants("TR_S2", Kind::Video));
        assert!(
            v.wants("TR_S0", Kind::Video),
            "what a shown camera delivered before it left still counts"
        );

        // S1 unpublishes its camera: S3 moves up. The teacher leaving frees no thumbnail.
        assert_eq!(ids(&v.on_track_unpublished("TR_S1")), vec!["TR_S3"]);
        assert!(v.on_participant_left("T").is_empty());
        assert!(v.on_track_unpublished("TR_unknown").is_empty());
    }

    #[test]
    fn report_expects_only_requested_cameras_that_settled() {
        let mut v = View::new(ViewPolicy::Classroom { visible: 1 });
        v.on_joined("ME", &[student(0), student(1), student(2)]);
        let sorted = |mut p: Vec<String>| {
            p.sort();
            p
        };
        // A waiting camera whose publisher leaves (as everyone does at the end) stays
        // unexpected.
        assert!(v.on_participant_left("S2").is_empty());
        assert_eq!(sorted(v.unexpected_publishers(|_| true)), vec!["S1", "S2"]);
        // S0 leaves: S1 is requested. S0 was shown, so what it sent is still expected.
        assert_eq!(ids(&v.on_participant_left("S0")), vec!["TR_S1"]);
        assert_eq!(v.unexpected_publishers(|_| true), vec!["S2"]);
        // ... unless S1's request never settled (no m-line, too close to the end).
        assert_eq!(
            sorted(v.unexpected_publishers(|id| id == "TR_S0")),
            vec!["S1", "S2"]
        );
    }

    #[test]
    fn render_everything_requests_nothing_and_wants_everything() {
        let mut v = View::new(ViewPolicy::All);
        assert!(!v.on_demand());
        assert!(v.on_joined("ME", &[student(0), student(1)]).is_empty());
        assert_eq!(v.on_track_published("S2", &cam("S2")), None);
        assert!(v.wants("TR_S1", Kind::Video));
        assert!(v.unexpected_publishers(|_| false).is_empty());
        assert_eq!(v.role_of("S0"), "peer");
    }
}
