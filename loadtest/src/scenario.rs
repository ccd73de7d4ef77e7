//! Scenarios: who joins which room, what each publishes. Publishers join their room first, so
//! that the subscribers' join latency measures joining, not waiting for someone to publish.

use std::time::Duration;

use crate::client::view::ViewPolicy;
use crate::media::video_source::VideoConfig;

#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    /// `pairs` 1:1 calls, each in its own room, both sides sending audio + video.
    Call { pairs: usize },
    /// `size` participants per room, everyone sending audio + video to everyone.
    Meeting { size: usize },
    /// One teacher (audio + video) and `students` (small video, audio muted except `unmuted`).
    /// Everyone renders the teacher and at most `visible` students, subscribing to cameras on
    /// demand: the other videos are never requested.
    Classroom {
        students: usize,
        unmuted: usize,
        visible: usize,
    },
    /// One publisher (audio + video), `viewers` receive only.
    Livestream { viewers: usize },
    /// `speakers` send audio only, `listeners` receive only.
    Audio { speakers: usize, listeners: usize },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Call { .. } => "call",
            Scenario::Meeting { .. } => "meeting",
            Scenario::Classroom { .. } => "classroom",
            Scenario::Livestream { .. } => "livestream",
            Scenario::Audio { .. } => "audio",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioPlan {
    pub muted: bool,
}

#[derive(Debug, Clone)]
pub struct ParticipantPlan {
    pub room: String,
    pub identity: String,
    pub role: &'static str,
    pub audio: Option<AudioPlan>,
    pub video: Option<VideoConfig>,
    /// Which received videos it renders (and so asks the server for).
    pub view: ViewPolicy,
}

/// Video settings: `main` for cameras in calls, meetings, the teacher and streams; `small` for
/// students' thumbnails.
#[derive(Debug, Clone, Copy)]
pub struct VideoProfiles {
    pub main: VideoConfig,
    pub small: VideoConfig,
}

impl Default for VideoProfiles {
    fn default() -> Self {
        VideoProfiles {
            main: VideoConfig {
                bitrate_bps: 800_000,
                fps: 30,
                keyframe_interval: Duration::from_secs(3),
                width: 640,
                height: 360,
            },
            small: VideoConfig {
                bitrate_bps: 150_000,
                fps: 15,
                keyframe_interval: Duration::from_secs(3),
                width: 320,
                height: 180,
            },
        }
    }
}

/// Every participant of `rooms` copies of the scenario (for `call`, one room per pair).
pub fn plan(
    s: &Scenario,
    rooms: usize,
    run_id: &str,
    video: &VideoProfiles,
) -> Vec<ParticipantPlan> {
    let av = |room: &str, id: String, role, v: VideoConfig| ParticipantPlan {
        room: room.to_string(),
        identity: id,
        role,
        audio: Some(AudioPlan { muted: false }),
        video: Some(v),
        view: ViewPolicy::All,
    };
    let listener = |room: &str, id: String, role| ParticipantPlan {
        room: room.to_string(),
        identity: id,
        role,
        audio: None,
        video: None,
        view: ViewPolicy::All,
    };
    let mut out = Vec::new();
    let room_count = match s {
        Scenario::Call { pairs } => *pairs,
        _ => rooms.max(1),
    };
    for r in 0..room_count {
        let room = format!("lt-{}-{run_id}-{r}", s.name());
        match *s {
            Scenario::Call { .. } => {
                out.push(av(&room, format!("{room}-a"), "caller", video.main));
                out.push(av(&room, format!("{room}-b"), "callee", video.main));
            }
            Scenario::Meeting { size } => {
                for i in 0..size {
                    out.push(av(&room, format!("{room}-m{i}"), "member", video.main));
                }
            }
            Scenario::Classroom {
                students,
                unmuted,
                visible,
            } => {
                let view = ViewPolicy::Classroom { visible };
                out.push(ParticipantPlan {
                    view,
                    ..av(&room, format!("{room}-teacher"), "teacher", video.main)
                });
                for i in 0..students {
                    out.push(ParticipantPlan {
                        room: room.clone(),
                        identity: format!("{room}-s{i}"),
                        role: "student",
                        audio: Some(AudioPlan {
                            muted: i >= unmuted,
                        }),
                        video: Some(video.small),
                        view,
                    });
                }
            }
            Scenario::Livestream { viewers } => {
                out.push(av(&room, format!("{room}-host"), "publisher", video.main));
                for i in 0..viewers {
                    out.push(listener(&room, format!("{room}-v{i}"), "viewer"));
                }
            }
            Scenario::Audio {
                speakers,
                listeners,
            } => {
                for i in 0..speakers {
                    out.push(ParticipantPlan {
                        room: room.clone(),
                        identity: format!("{room}-sp{i}"),
                        role: "speaker",
                        audio: Some(AudioPlan { muted: false }),
                        video: None,
                        view: ViewPolicy::All,
                    });
                }
                for i in 0..listeners {
                    out.push(listener(&room, format!("{room}-l{i}"), "listener"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_publishers_first() {
        let v = VideoProfiles::default();
        let p = plan(
            &Scenario::Classroom {
                students: 5,
                unmuted: 1,
                visible: 8,
            },
            2,
            "x",
            &v,
        );
        assert_eq!(p.len(), 12);
        assert_eq!(p[0].role, "teacher");
        assert!(p[0].identity.ends_with(crate::client::view::TEACHER_SUFFIX));
        assert!(p
            .iter()
            .all(|p| p.view == ViewPolicy::Classroom { visible: 8 }));
        assert_eq!(
            p.iter()
                .filter(|p| p.audio == Some(AudioPlan { muted: false }))
                .count(),
            4
        );
        let calls = plan(&Scenario::Call { pairs: 3 }, 9, "x", &v);
        assert_eq!(calls.len(), 6);
        let rooms: std::collections::HashSet<_> = calls.iter().map(|p| &p.room).collect();
        assert_eq!(rooms.len(), 3);
        let a = plan(
            &Scenario::Audio {
                speakers: 2,
                listeners: 3,
            },
            1,
            "x",
            &v,
        );
        assert!(a[..2]
            .iter()
            .all(|p| p.audio.is_some() && p.video.is_none()));
        assert!(a[2..].iter().all(|p| p.audio.is_none()));
    }
}
