//! What a recording holds, as a player needs it to line the files up: for each track, who
//! published it, which file holds it, the wall-clock time of the file's first and last frame,
//! and when it was muted. Sans-IO: the writer thread feeds it and saves it as JSON.

use serde::Serialize;

use crate::api::{RecordedPerson, TrackKind, TrackSource};

/// A mute or unmute, in Unix milliseconds. Muted media is not recorded: the file has a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MuteMark {
    pub at: u64,
    pub muted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestTrack {
    /// The WebM file, relative to the manifest; `None` until the first frame was written.
    pub file: Option<String>,
    pub participant_id: String,
    pub identity: Option<String>,
    pub name: Option<String>,
    pub track_id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    /// `vp8`, `opus`, or the codec that could not be recorded.
    pub codec: Option<String>,
    /// The largest picture in the file (a recorded simulcast camera can change layers).
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// Unix milliseconds of the file's first frame: where the file's time 0 sits.
    pub start: Option<u64>,
    /// Unix milliseconds of the last frame written.
    pub end: Option<u64>,
    pub frames: u64,
    /// Muted when the recording of this track began.
    pub muted_at_start: bool,
    pub mutes: Vec<MuteMark>,
    /// The publisher stopped sending it (left, unpublished) before the recording ended.
    pub stopped_at: Option<u64>,
}

impl ManifestTrack {
    fn muted(&self) -> bool {
        self.mutes.last().map_or(self.muted_at_start, |m| m.muted)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    pub version: u32,
    pub recording_id: String,
    pub room: String,
    pub started_at: u64,
    /// `None` while recording (or when the server died mid-recording).
    pub ended_at: Option<u64>,
    /// Why the recording stopped early (disk full, unwritable directory).
    pub error: Option<String>,
    pub tracks: Vec<ManifestTrack>,
}

/// A track as the worker announces it.
#[derive(Debug, Clone)]
pub struct NewTrack {
    pub participant_id: String,
    pub track_id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
}

impl Manifest {
    pub fn new(recording_id: &str, room: &str, started_at: u64) -> Self {
        Manifest {
            version: 1,
            recording_id: recording_id.to_string(),
            room: room.to_string(),
            started_at,
            ended_at: None,
            error: None,
            tracks: vec![],
        }
    }

    /// Returns the track's index.
    pub fn add_track(&mut self, t: NewTrack, people: &[RecordedPerson]) -> usize {
        let person = people.iter().find(|p| p.participant.0 == t.participant_id);
        self.tracks.push(ManifestTrack {
            file: None,
            identity: person.map(|p| p.identity.clone()),
            name: person.map(|p| p.name.clone()),
            participant_id: t.participant_id,
            track_id: t.track_id,
            kind: t.kind,
            source: t.source,
            codec: None,
            width: None,
            height: None,
            start: None,
            end: None,
            frames: 0,
            muted_at_start: t.muted,
            mutes: vec![],
            stopped_at: None,
        });
        self.tracks.len() - 1
    }

    /// Names the people of tracks added before their names were known.
    pub fn set_people(&mut self, people: &[RecordedPerson]) {
        for t in &mut self.tracks {
            if let Some(p) = people.iter().find(|p| p.participant.0 == t.participant_id) {
                t.identity = Some(p.identity.clone());
                t.name = Some(p.name.clone());
            }
        }
    }

    pub fn file_started(
        &mut self,
        track: usize,
        file: &str,
        codec: &str,
        size: Option<(u16, u16)>,
        at: u64,
    ) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.file = Some(file.to_string());
            t.codec = Some(codec.to_string());
            t.width = size.map(|s| s.0);
            t.height = size.map(|s| s.1);
            t.start = Some(at);
            t.end = Some(at);
        }
    }

    /// A keyframe of `size`: the track's size grows to it if larger. Returns whether it did.
    pub fn keyframe_size(&mut self, track: usize, (w, h): (u16, u16)) -> bool {
        let Some(t) = self.tracks.get_mut(track) else {
            return false;
        };
        let area =
            |w: Option<u16>, h: Option<u16>| u32::from(w.unwrap_or(0)) * u32::from(h.unwrap_or(0));
        if area(Some(w), Some(h)) <= area(t.width, t.height) {
            return false;
        }
        (t.width, t.height) = (Some(w), Some(h));
        true
    }

    pub fn unsupported(&mut self, track: usize, codec: &str) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.codec
                .get_or_insert_with(|| format!("{codec} (not recorded)"));
        }
    }

    /// A frame at `at` was written.
    pub fn frame(&mut self, track: usize, at: u64) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.frames += 1;
            t.end = Some(t.end.map_or(at, |e| e.max(at)));
        }
    }

    /// Returns whether it changed anything (a repeated state is not a mark).
    pub fn mute(&mut self, track: usize, muted: bool, at: u64) -> bool {
        let Some(t) = self.tracks.get_mut(track) else {
            return false;
        };
        if t.muted() == muted || t.stopped_at.is_some() {
            return false;
        }
        t.mutes.push(MuteMark { at, muted });
        true
    }

    pub fn stop_track(&mut self, track: usize, at: u64) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.stopped_at.get_or_insert(at);
        }
    }

    pub fn finish(&mut self, at: u64, error: Option<String>) {
        if self.ended_at.is_none() {
            self.ended_at = Some(at);
        }
        if self.error.is_none() {
            self.error = error;
        }
    }

    /// The files written, in the order their tracks began.
    pub fn files(&self) -> Vec<String> {
        self.tracks.iter().filter_map(|t| t.file.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ParticipantId;

    fn mic(pid: &str, muted: bool) -> NewTrack {
        NewTrack {
            participant_id: pid.into(),
            track_id: format!("TR_{pid}"),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            muted,
        }
    }

    fn ann() -> Vec<RecordedPerson> {
        vec![RecordedPerson {
            participant: ParticipantId("PA_a".into()),
            identity: "ann".into(),
            name: "Ann".into(),
        }]
    }

    #[test]
    fn mutes_are_marked_once_per_change_and_not_after_the_track_stopped() {
        let mut m = Manifest::new("REC_1", "class", 1000);
        let t = m.add_track(mic("PA_a", false), &ann());
        m.file_started(t, "PA_a_TR_PA_a.webm", "opus", None, 1100);
        assert!(!m.mute(t, false, 1200), "already unmuted");
        assert!(m.mute(t, true, 1300));
        assert!(!m.mute(t, true, 1350));
        assert!(m.mute(t, false, 1400));
        m.frame(t, 1500);
        m.stop_track(t, 1600);
        assert!(!m.mute(t, true, 1700));
        let tr = &m.tracks[t];
        assert_eq!(
            tr.mutes,
            vec![
                MuteMark {
                    at: 1300,
                    muted: true
                },
                MuteMark {
                    at: 1400,
                    muted: false
                }
            ]
        );
        assert_eq!((tr.start, tr.end, tr.frames), (Some(1100), Some(1500), 1));
        assert_eq!(tr.stopped_at, Some(1600));
        assert_eq!(tr.name.as_deref(), Some("Ann"));
    }

    #[test]
    fn a_track_published_muted_starts_muted_and_names_arrive_later() {
        let mut m = Manifest::new("REC_1", "class", 0);
        let t = m.add_track(mic("PA_b", true), &ann());
        assert_eq!(m.tracks[t].name, None);
        assert!(!m.mute(t, true, 10));
        assert!(m.mute(t, false, 20));
        m.set_people(&[RecordedPerson {
            participant: ParticipantId("PA_b".into()),
            identity: "bob".into(),
            name: "Bob".into(),
        }]);
        assert_eq!(m.tracks[t].identity.as_deref(), Some("bob"));
    }

    #[test]
    fn finish_keeps_the_first_end_and_error_and_lists_written_files_only() {
        let mut m = Manifest::new("REC_1", "class", 0);
        let a = m.add_track(mic("PA_a", false), &[]);
        let _never = m.add_track(mic("PA_c", false), &[]);
        m.file_started(a, "a.webm", "opus", None, 5);
        m.finish(100, Some("disk full".into()));
        m.finish(200, None);
        assert_eq!(
            (m.ended_at, m.error.as_deref()),
            (Some(100), Some("disk full"))
        );
        assert_eq!(m.files(), vec!["a.webm".to_string()]);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["tracks"][0]["kind"], "audio");
        assert_eq!(json["tracks"][0]["source"], "microphone");
    }
}
