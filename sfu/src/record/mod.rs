//! Recording rooms to disk: each published track to a WebM file (VP8 or Opus, as forwarded),
//! with a manifest per recording (`manifest.rs`) that lines the files up in wall-clock time.
//!
//! The worker that holds a publisher hands each packet of a recorded track to the recording
//! thread through a bounded lock-free queue: the packet's shared payload (`Arc`, no copy) and
//! its header fields. A full queue drops the packet and counts it
//! (`recording_packets_dropped`): writing never slows forwarding down. A video file can only
//! go on from a keyframe after a lost packet, so the thread asks back through a second small
//! queue per worker (`RecorderTap::take_keyframe_want`) and the worker sends the PLI. The thread
//! (`writer.rs`) joins packets into frames (`vp8.rs`, `opus.rs`) and writes them
//! (`webm.rs`). Control messages (start, stop, tracks, mutes) go through a channel.

mod manifest;
mod opus;
mod vp8;
mod webm;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_queue::ArrayQueue;
use tokio::sync::mpsc::UnboundedSender;

pub use manifest::{Manifest, ManifestTrack, MuteMark};
pub use opus::opus_frame;
pub use vp8::{parse_descriptor, Vp8Depacketizer};
pub use webm::{Codec, WebmWriter};
pub use writer::safe as safe_file_name;

use crate::api::{ParticipantId, RecordingSpec, RoomId, SfuEvent, TrackId, TrackKind, TrackSource};
use crate::stats::SfuStats;

/// Packets a worker may have waiting for the recording thread: ~0.5 s of 40 recorded tracks.
const QUEUE_PACKETS: usize = 4096;
/// Keyframe requests the recording thread may have waiting for a worker (one per track and
/// second at most, see `writer::KEYFRAME_WANT_INTERVAL`).
const KEYFRAME_WANTS: usize = 256;

/// One worker's two queues with the recording thread.
pub(crate) struct WorkerQueues {
    pub packets: Arc<ArrayQueue<RecPacket>>,
    /// Recorded tracks (slots) whose video waits for a keyframe.
    pub keyframe_wants: Arc<ArrayQueue<u32>>,
}

/// What a payload type carries, for the recording thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Vp8,
    Opus,
    /// Opus wrapped in RED (RFC 2198).
    OpusRed,
    /// Not recordable (VP9, H.264, ...).
    Other,
}

/// One forwarded packet of a recorded track.
pub struct RecPacket {
    pub slot: u32,
    /// The simulcast layer it belongs to (0 without simulcast): another layer is another
    /// stream, with its own sequence numbers and RTP clock.
    pub layer: u8,
    pub seq: u16,
    pub ts: u32,
    pub pt: u8,
    pub marker: bool,
    pub arrival: Instant,
    pub payload: Arc<[u8]>,
}

/// The workers' and the node's instructions to the recording thread.
pub enum Control {
    Start {
        room: RoomId,
        spec: RecordingSpec,
        at: SystemTime,
    },
    Stop {
        recording: String,
        at: SystemTime,
    },
    StartTrack {
        slot: u32,
        recording: String,
        participant: ParticipantId,
        track: TrackId,
        kind: TrackKind,
        source: TrackSource,
        muted: bool,
        payloads: Vec<(u8, PayloadKind)>,
    },
    Mute {
        slot: u32,
        muted: bool,
        at: SystemTime,
    },
    StopTrack {
        slot: u32,
        at: SystemTime,
    },
}

/// A worker's end of the recorder.
#[derive(Clone)]
pub struct RecorderTap {
    queue: Arc<ArrayQueue<RecPacket>>,
    keyframe_wants: Arc<ArrayQueue<u32>>,
    control: mpsc::Sender<Control>,
    next_slot: Arc<AtomicU32>,
    stats: Arc<SfuStats>,
}

impl RecorderTap {
    /// The packet path: never blocks, never allocates.
    pub fn push(&self, packet: RecPacket) {
        if self.queue.push(packet).is_err() {
            SfuStats::add(&self.stats.recording_packets_dropped, 1);
        }
    }

    pub fn send(&self, control: Control) {
        let _ = self.control.send(control);
    }

    /// A recorded track of this worker whose video waits for a keyframe (one atomic load
    /// when there is none).
    pub fn take_keyframe_want(&self) -> Option<u32> {
        self.keyframe_wants.pop()
    }

    /// A node-wide unique id for a recorded track.
    pub fn new_slot(&self) -> u32 {
        self.next_slot.fetch_add(1, Ordering::Relaxed)
    }
}

/// The node's handle on the recording thread; the thread ends (closing every file) when the
/// handle and every tap are gone.
pub struct Recorder {
    control: mpsc::Sender<Control>,
}

impl Recorder {
    /// Starts the thread writing under `dir`, with one queue per worker (its tap).
    pub fn start(
        dir: PathBuf,
        workers: usize,
        events: UnboundedSender<SfuEvent>,
        stats: Arc<SfuStats>,
    ) -> std::io::Result<(Recorder, Vec<RecorderTap>)> {
        let (control, rx) = mpsc::channel();
        let next_slot = Arc::new(AtomicU32::new(1));
        let queues: Vec<_> = (0..workers)
            .map(|_| WorkerQueues {
                packets: Arc::new(ArrayQueue::new(QUEUE_PACKETS)),
                keyframe_wants: Arc::new(ArrayQueue::new(KEYFRAME_WANTS)),
            })
            .collect();
        let taps = queues
            .iter()
            .map(|q| RecorderTap {
                queue: q.packets.clone(),
                keyframe_wants: q.keyframe_wants.clone(),
                control: control.clone(),
                next_slot: next_slot.clone(),
                stats: stats.clone(),
            })
            .collect();
        let writer = writer::Writer::new(dir, events, stats);
        std::thread::Builder::new()
            .name("zvon-recorder".into())
            .spawn(move || writer.run(rx, queues))?;
        Ok((Recorder { control }, taps))
    }

    pub fn send(&self, control: Control) {
        let _ = self.control.send(control);
    }
}

#[cfg(test)]
mod tests;
