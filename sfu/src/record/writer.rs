//! The recording thread: takes packets from the workers' queues, turns them into frames and
//! writes the WebM files and manifests. Every file operation happens here, never on a worker.
//! An I/O error fails the whole recording it belongs to (its files are closed as they are,
//! `SfuEvent::RecordingFailed` goes out, `recording_errors` counts it); other recordings and
//! the rooms themselves go on.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::manifest::{Manifest, NewTrack};
use super::opus::opus_frame;
use super::vp8::Vp8Depacketizer;
use super::webm::{Codec, WebmWriter};
use super::{Control, PayloadKind, RecPacket, WorkerQueues};
use crate::api::{RecordedPerson, RoomId, SfuEvent, TrackKind};
use crate::stats::SfuStats;

/// How often a running recording's manifest is saved (track ends move on): what a player
/// of a killed recording sees as the tracks' last frames.
const MANIFEST_EVERY: Duration = Duration::from_secs(2);

struct RecordingState {
    room: RoomId,
    dir: PathBuf,
    manifest: Manifest,
    people: Vec<RecordedPerson>,
    failed: bool,
    dirty: bool,
    saved_at: Instant,
}

struct TrackFile {
    webm: WebmWriter<File>,
    /// Extended RTP timestamp of the file's first frame (moved when the clock is rebased).
    first_ts: i64,
    /// Wall clock (unix ms) of the file's first frame.
    start_wall: u64,
    /// The last frame's timecode (ms): timecodes only grow.
    last_tc: Option<u64>,
}

/// How far a frame's RTP time may stray from its arrival time before the file's clock is
/// rebased on arrival (a publisher whose RTP clock jumped; a change of simulcast layer is
/// rebased anyway). Jitter and clock drift are far below it.
const MAX_CLOCK_STRAY_MS: i64 = 2000;

impl TrackFile {
    /// The timecode of a frame with extended RTP timestamp `ext` that arrived at `wall`.
    /// `rebase`: the frame starts another stream (a simulcast layer), whose RTP clock says
    /// nothing about the old one's.
    fn timecode(&mut self, ext: i64, wall: u64, clock: i64, rebase: bool) -> u64 {
        let by_arrival = wall.saturating_sub(self.start_wall) as i64;
        let by_rtp = (ext - self.first_ts) / clock;
        if rebase || (by_rtp - by_arrival).abs() > MAX_CLOCK_STRAY_MS {
            self.first_ts = ext - by_arrival * clock;
        }
        let tc = ((ext - self.first_ts) / clock).max(0) as u64;
        // Strictly after the last frame (a rebase lands near, not exactly on, the old clock).
        let tc = self.last_tc.map_or(tc, |last| tc.max(last + 1));
        self.last_tc = Some(tc);
        tc
    }
}

struct Slot {
    recording: String,
    index: usize,
    kind: TrackKind,
    file_stem: String,
    payloads: Vec<(u8, PayloadKind)>,
    vp8: Vp8Depacketizer,
    file: Option<TrackFile>,
    /// Last RTP timestamp and its 64-bit extension (timestamps wrap every 13 h of video).
    last_ts: Option<(u32, i64)>,
    warned_unsupported: bool,
    /// When this track last asked for a keyframe (packet arrival time).
    keyframe_wanted_at: Option<Instant>,
    /// The simulcast layer of the last packet.
    layer: Option<u8>,
    /// The next frame comes from another layer: the file's clock follows its arrival.
    rebase_clock: bool,
}

/// How often a video track waiting for a keyframe asks for one: the PLI may be lost, or the
/// keyframe itself (the recorder drops a frame with a packet missing, see `vp8.rs`).
pub(super) const KEYFRAME_WANT_INTERVAL: Duration = Duration::from_secs(1);

/// What a packet asks of the worker that forwarded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PacketOutcome {
    Taken,
    /// Its video waits for a keyframe: the publisher should be asked for one.
    WantsKeyframe,
}

impl Slot {
    /// The VP8 depacketizer kept the packet (a frame in progress) or dropped it: while it
    /// waits for a keyframe, the publisher is asked for one now and then.
    fn frame_withheld(&mut self, arrival: Instant) -> PacketOutcome {
        let due = self
            .keyframe_wanted_at
            .is_none_or(|t| arrival.saturating_duration_since(t) >= KEYFRAME_WANT_INTERVAL);
        if !(self.vp8.waiting_for_keyframe() && due) {
            return PacketOutcome::Taken;
        }
        self.keyframe_wanted_at = Some(arrival);
        PacketOutcome::WantsKeyframe
    }

    fn extend_ts(&mut self, ts: u32) -> i64 {
        let ext = match self.last_ts {
            None => i64::from(ts),
            Some((prev, prev_ext)) => prev_ext + i64::from(ts.wrapping_sub(prev) as i32),
        };
        self.last_ts = Some((ts, ext));
        ext
    }
}

pub(super) struct Writer {
    dir: PathBuf,
    recordings: HashMap<String, RecordingState>,
    slots: HashMap<u32, Slot>,
    events: UnboundedSender<SfuEvent>,
    stats: Arc<SfuStats>,
    clock: (Instant, SystemTime),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Writer {
    pub(super) fn new(
        dir: PathBuf,
        events: UnboundedSender<SfuEvent>,
        stats: Arc<SfuStats>,
    ) -> Self {
        Writer {
            dir,
            recordings: HashMap::new(),
            slots: HashMap::new(),
            events,
            stats,
            clock: (Instant::now(), SystemTime::now()),
        }
    }

    pub(super) fn run(mut self, control: Receiver<Control>, queues: Vec<WorkerQueues>) {
        loop {
            // Idle without recordings; while recording, the queues are drained every 10 ms.
            let wait = if self.recordings.is_empty() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(10)
            };
            match control.recv_timeout(wait) {
                Ok(c) => self.handle(c),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(c) = control.try_recv() {
                self.handle(c);
            }
            for q in &queues {
                while let Some(p) = q.packets.pop() {
                    let slot = p.slot;
                    if self.packet(p) == PacketOutcome::WantsKeyframe {
                        // Full: the worker is behind; the next packet asks again.
                        let _ = q.keyframe_wants.push(slot);
                    }
                }
            }
            self.save_due_manifests();
        }
        let ids: Vec<String> = self.recordings.keys().cloned().collect();
        for id in ids {
            self.stop(&id, SystemTime::now());
        }
    }

    pub(super) fn handle(&mut self, control: Control) {
        match control {
            Control::Start { room, spec, at } => self.start(room, spec.id, spec.people, at),
            Control::Stop { recording, at } => self.stop(&recording, at),
            Control::StartTrack {
                slot,
                recording,
                participant,
                track,
                kind,
                source,
                muted,
                payloads,
            } => {
                let Some(r) = self.recordings.get_mut(&recording).filter(|r| !r.failed) else {
                    return;
                };
                let index = r.manifest.add_track(
                    NewTrack {
                        participant_id: participant.0.clone(),
                        track_id: track.0.clone(),
                        kind,
                        source,
                        muted,
                    },
                    &r.people,
                );
                r.dirty = true;
                self.slots.insert(
                    slot,
                    Slot {
                        recording,
                        index,
                        kind,
                        file_stem: format!("{}_{}", safe(&participant.0), safe(&track.0)),
                        payloads,
                        vp8: Vp8Depacketizer::default(),
                        file: None,
                        last_ts: None,
                        warned_unsupported: false,
                        keyframe_wanted_at: None,
                        layer: None,
                        rebase_clock: false,
                    },
                );
            }
            Control::Mute { slot, muted, at } => {
                let Some(s) = self.slots.get(&slot) else {
                    return;
                };
                if let Some(r) = self.recordings.get_mut(&s.recording) {
                    r.dirty |= r.manifest.mute(s.index, muted, unix_ms(at));
                }
            }
            Control::StopTrack { slot, at } => {
                if let Some(s) = self.slots.remove(&slot) {
                    self.close_slot(s, unix_ms(at));
                }
            }
        }
    }

    fn start(&mut self, room: RoomId, id: String, people: Vec<RecordedPerson>, at: SystemTime) {
        if let Some(r) = self.recordings.get_mut(&id) {
            r.manifest.set_people(&people);
            r.people = people;
            r.dirty = true;
            return;
        }
        let dir = self.dir.join(safe(&id));
        let manifest = Manifest::new(&id, &room.0, unix_ms(at));
        self.recordings.insert(
            id.clone(),
            RecordingState {
                room,
                dir: dir.clone(),
                manifest,
                people,
                failed: false,
                dirty: false,
                saved_at: Instant::now(),
            },
        );
        self.stats.recordings_active.fetch_add(1, Ordering::Relaxed);
        info!(recording = %id, dir = %dir.display(), "recording started");
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| self.save_manifest(&id)) {
            self.fail(&id, format!("cannot write to {}: {e}", dir.display()));
        }
    }

    fn stop(&mut self, id: &str, at: SystemTime) {
        let slots: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, s)| s.recording == id)
            .map(|(k, _)| *k)
            .collect();
        let at_ms = unix_ms(at);
        for k in slots {
            if let Some(s) = self.slots.remove(&k) {
                self.close_slot(s, at_ms);
            }
        }
        let Some(mut r) = self.recordings.remove(id) else {
            return;
        };
        r.manifest.finish(at_ms, None);
        if !r.failed {
            self.stats.recordings_active.fetch_sub(1, Ordering::Relaxed);
        }
        let saved = write_manifest(&r.dir, &r.manifest);
        let mut error = r.manifest.error.clone();
        if let (Err(e), false) = (saved, r.failed) {
            SfuStats::add(&self.stats.recording_errors, 1);
            error = Some(format!("cannot write the manifest: {e}"));
        }
        info!(recording = %id, files = r.manifest.files().len(), "recording finished");
        let _ = self.events.send(SfuEvent::RecordingFinished {
            room: r.room,
            recording: id.to_string(),
            files: r.manifest.files(),
            error,
        });
    }

    /// Closes a track's file (patching its header) and marks the track stopped.
    fn close_slot(&mut self, s: Slot, at: u64) {
        let Some(r) = self.recordings.get_mut(&s.recording) else {
            return;
        };
        r.manifest.stop_track(s.index, at);
        r.dirty = true;
        if let Some(f) = s.file {
            let tail = if s.kind == TrackKind::Audio { 20 } else { 33 };
            if let Err(e) = f.webm.finish(tail) {
                if !r.failed {
                    let id = s.recording.clone();
                    self.fail(&id, format!("cannot finish {}: {e}", s.file_stem));
                }
            }
        }
    }

    pub(super) fn packet(&mut self, p: RecPacket) -> PacketOutcome {
        let Some(slot) = self.slots.get_mut(&p.slot) else {
            return PacketOutcome::Taken;
        };
        let kind = slot
            .payloads
            .iter()
            .find(|(pt, _)| *pt == p.pt)
            .map_or(PayloadKind::Other, |(_, k)| *k);
        if slot.layer.replace(p.layer).is_some_and(|l| l != p.layer) {
            // Another simulcast layer: another stream, which goes on from its keyframe (the
            // file's clock follows by arrival time, see `TrackFile::timecode`).
            slot.vp8 = Vp8Depacketizer::default();
            slot.last_ts = None;
            slot.rebase_clock = true;
        }
        let ext = slot.extend_ts(p.ts);
        let (data, keyframe, size, codec, clock) = match kind {
            PayloadKind::Vp8 => match slot.vp8.push(p.seq, p.ts, p.marker, &p.payload) {
                Some(f) => (f.data, f.keyframe, f.size, "vp8", 90),
                None => return slot.frame_withheld(p.arrival),
            },
            PayloadKind::Opus | PayloadKind::OpusRed => {
                match opus_frame(&p.payload, kind == PayloadKind::OpusRed) {
                    Some(d) => (d, true, None, "opus", 48),
                    None => return PacketOutcome::Taken,
                }
            }
            PayloadKind::Other => {
                if !std::mem::replace(&mut slot.warned_unsupported, true) {
                    warn!(track = %slot.file_stem, pt = p.pt, "codec not recordable (VP8 and Opus are)");
                    let (rec, index) = (slot.recording.clone(), slot.index);
                    if let Some(r) = self.recordings.get_mut(&rec) {
                        r.manifest
                            .unsupported(index, &format!("payload type {}", p.pt));
                        r.dirty = true;
                    }
                }
                return PacketOutcome::Taken;
            }
        };
        // The frame's own timestamp: a VP8 frame's is that of its packets.
        let frame_ext = ext;
        let wall = wall_clock(self.clock, p.arrival);
        let Some(r) = self
            .recordings
            .get_mut(&slot.recording)
            .filter(|r| !r.failed)
        else {
            return PacketOutcome::Taken;
        };
        let result = (|| -> io::Result<()> {
            if slot.file.is_none() {
                let codec_info = match kind {
                    PayloadKind::Vp8 => {
                        let (width, height) = size.unwrap_or((0, 0));
                        Codec::Vp8 { width, height }
                    }
                    _ => Codec::Opus,
                };
                let name = format!("{}.webm", slot.file_stem);
                let file = File::create(r.dir.join(&name))?;
                slot.file = Some(TrackFile {
                    webm: WebmWriter::new(file, codec_info, wall)?,
                    first_ts: frame_ext,
                    start_wall: wall,
                    last_tc: None,
                });
                r.manifest
                    .file_started(slot.index, &name, codec, size, wall);
                r.dirty = true;
            }
            let Some(f) = slot.file.as_mut() else {
                return Ok(());
            };
            let tc = f.timecode(
                frame_ext,
                wall,
                clock,
                std::mem::take(&mut slot.rebase_clock),
            );
            f.webm.write_frame(tc, keyframe, data)?;
            if let Some(size) = size {
                r.dirty |= r.manifest.keyframe_size(slot.index, size);
            }
            r.manifest.frame(
                slot.index,
                r.manifest.tracks[slot.index].start.unwrap_or(wall) + tc,
            );
            Ok(())
        })();
        if let Err(e) = result {
            let id = slot.recording.clone();
            let stem = slot.file_stem.clone();
            self.fail(&id, format!("cannot write {stem}: {e}"));
        }
        PacketOutcome::Taken
    }

    /// Stops writing a recording after an I/O error: its files stay as written.
    fn fail(&mut self, id: &str, error: String) {
        let Some(r) = self.recordings.get_mut(id) else {
            return;
        };
        if std::mem::replace(&mut r.failed, true) {
            return;
        }
        warn!(recording = %id, "recording failed: {error}");
        SfuStats::add(&self.stats.recording_errors, 1);
        self.stats.recordings_active.fetch_sub(1, Ordering::Relaxed);
        r.manifest
            .finish(unix_ms(SystemTime::now()), Some(error.clone()));
        let room = r.room.clone();
        // Best effort: the disk may refuse this too.
        let _ = write_manifest(&r.dir, &r.manifest);
        for s in self.slots.values_mut().filter(|s| s.recording == id) {
            // Dropped without finishing: the clusters already written stay playable.
            s.file = None;
        }
        let _ = self.events.send(SfuEvent::RecordingFailed {
            room,
            recording: id.to_string(),
            error,
        });
    }

    fn save_manifest(&mut self, id: &str) -> io::Result<()> {
        let Some(r) = self.recordings.get_mut(id) else {
            return Ok(());
        };
        r.dirty = false;
        r.saved_at = Instant::now();
        write_manifest(&r.dir, &r.manifest)
    }

    fn save_due_manifests(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .recordings
            .iter()
            .filter(|(_, r)| r.dirty && !r.failed && now - r.saved_at >= MANIFEST_EVERY)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Err(e) = self.save_manifest(&id) {
                self.fail(&id, format!("cannot write the manifest: {e}"));
            }
        }
    }
}

/// Wall-clock Unix milliseconds of `at`, given one instant whose wall-clock time is known.
fn wall_clock((i0, s0): (Instant, SystemTime), at: Instant) -> u64 {
    let t = if at >= i0 {
        s0 + (at - i0)
    } else {
        s0.checked_sub(i0 - at).unwrap_or(s0)
    };
    unix_ms(t)
}

/// Saves the manifest atomically (a reader never sees half of it).
fn write_manifest(dir: &Path, manifest: &Manifest) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    let tmp = dir.join("manifest.json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, dir.join("manifest.json"))
}

/// Ids become file names: anything but letters, digits, `-` and `_` is replaced.
pub fn safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
