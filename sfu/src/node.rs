//! A media node: its worker threads and the placement of rooms onto them.
//!
//! Every participant of a room lives on the room's worker, so forwarding never crosses a
//! thread. Placement is the only shared state, behind a lock that the packet path never takes.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::api::{ParticipantId, RoomId, SfuError, SfuEvent, SfuRequest, SfuResponse};
use crate::config::SfuConfig;
use crate::edge::udp_batch::set_receive_buffer;

/// What a media socket asks the kernel for: ~1 s of a 200-student class's ingress.
const MEDIA_RECEIVE_BUFFER: usize = 4 << 20;
use crate::edge::worker::{Command, Worker};
use crate::stats::SfuStats;

struct WorkerHandle {
    commands: mpsc::UnboundedSender<Command>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Placement {
    /// Room → (worker index, participants on this node).
    rooms: HashMap<RoomId, (usize, usize)>,
    participants: HashMap<ParticipantId, (usize, RoomId)>,
}

pub struct SfuNode {
    workers: Vec<WorkerHandle>,
    placement: Mutex<Placement>,
    events: Mutex<Option<mpsc::UnboundedReceiver<SfuEvent>>>,
    stats: Arc<SfuStats>,
}

impl SfuNode {
    /// Binds one socket per worker and starts the worker threads.
    pub fn start(config: &SfuConfig) -> Result<Self, SfuError> {
        let count = if config.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            config.workers
        };
        // One crypto provider for every connection instead of one per `Rtc`.
        str0m::crypto::from_feature_flags().install_process_default();
        let stats = Arc::new(SfuStats::new(count));
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let mut workers = vec![];
        for i in 0..count {
            let port = if config.port_base == 0 {
                0
            } else {
                config.port_base + i as u16
            };
            let socket = UdpSocket::bind(SocketAddr::new(config.bind_ip, port)).map_err(|e| {
                SfuError::Unavailable(format!("bind {}:{port}: {e}", config.bind_ip))
            })?;
            // One socket carries every peer of the worker: with the kernel's default buffer
            // (~208 KiB) a 50-student class already lost ingress packets whenever the worker
            // was busy for a few ms (`/proc/net/udp` drops), each lost for every subscriber.
            let granted = set_receive_buffer(&socket, MEDIA_RECEIVE_BUFFER);
            if granted < MEDIA_RECEIVE_BUFFER {
                tracing::warn!(
                    "media socket receive buffer is {granted} bytes, not {MEDIA_RECEIVE_BUFFER}: \
                     run as root or raise net.core.rmem_max, or big rooms drop packets"
                );
            }
            let bound = socket
                .local_addr()
                .map_err(|e| SfuError::Unavailable(e.to_string()))?;
            let candidate = SocketAddr::new(config.advertised_ip, bound.port());
            let (tx, rx) = mpsc::unbounded_channel();
            let worker = Worker::new(
                candidate,
                config.keyframe_request_interval,
                event_tx.clone(),
                stats.clone(),
                i,
            )
            .with_bandwidth_allocation(config.bandwidth_allocation);
            let thread = std::thread::Builder::new()
                .name(format!("zvon-media-{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(rt) => rt.block_on(worker.run(socket, rx)),
                        Err(e) => tracing::error!("media worker runtime: {e}"),
                    }
                })
                .map_err(|e| SfuError::Unavailable(e.to_string()))?;
            workers.push(WorkerHandle {
                commands: tx,
                addr: bound,
                thread: Some(thread),
            });
        }
        Ok(SfuNode {
            workers,
            placement: Mutex::new(Placement::default()),
            events: Mutex::new(Some(event_rx)),
            stats,
        })
    }

    /// The bound media sockets, one per worker.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.addr).collect()
    }

    pub fn stats(&self) -> Arc<SfuStats> {
        self.stats.clone()
    }

    /// The node's event stream; can be taken once.
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<SfuEvent>> {
        self.events.lock().ok()?.take()
    }

    fn place(&self, request: &SfuRequest) -> Result<usize, SfuError> {
        let mut placement = self
            .placement
            .lock()
            .map_err(|_| SfuError::Unavailable("placement lock poisoned".into()))?;
        match request {
            SfuRequest::AddParticipant {
                room, participant, ..
            } => {
                if placement.participants.contains_key(participant) {
                    return Err(SfuError::ParticipantExists);
                }
                // A new room goes to the worker with the fewest participants.
                let worker = match placement.rooms.get(room) {
                    Some((w, _)) => *w,
                    None => {
                        let mut load = vec![0usize; self.workers.len()];
                        for (w, n) in placement.rooms.values() {
                            load[*w] += n;
                        }
                        (0..self.workers.len())
                            .min_by_key(|w| load[*w])
                            .unwrap_or(0)
                    }
                };
                placement.rooms.entry(room.clone()).or_insert((worker, 0)).1 += 1;
                placement
                    .participants
                    .insert(participant.clone(), (worker, room.clone()));
                Ok(worker)
            }
            SfuRequest::RemoveParticipant { participant } => {
                let (worker, room) = placement
                    .participants
                    .remove(participant)
                    .ok_or(SfuError::UnknownParticipant)?;
                if let Some(entry) = placement.rooms.get_mut(&room) {
                    entry.1 = entry.1.saturating_sub(1);
                    if entry.1 == 0 {
                        placement.rooms.remove(&room);
                    }
                }
                Ok(worker)
            }
            other => placement
                .participants
                .get(other.participant())
                .map(|(w, _)| *w)
                .ok_or(SfuError::UnknownParticipant),
        }
    }

    pub async fn request(&self, request: SfuRequest) -> Result<SfuResponse, SfuError> {
        let worker = self.place(&request)?;
        let (reply, answer) = oneshot::channel();
        self.workers[worker]
            .commands
            .send(Command { request, reply })
            .map_err(|_| SfuError::Unavailable("media worker stopped".into()))?;
        answer
            .await
            .map_err(|_| SfuError::Unavailable("media worker stopped".into()))?
    }

    /// Stops the workers and waits for their threads.
    pub fn shutdown(&mut self) {
        for w in &mut self.workers {
            let (dead, _) = mpsc::unbounded_channel();
            w.commands = dead;
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for SfuNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}
