//! A media node: its worker threads and the placement of rooms onto them.
//!
//! A room lives on its home worker until that worker gets busy; then its new participants
//! go to other workers and the relay (`edge::relay_pipe`, `relay`) carries between them the
//! tracks each worker's subscribers want. Placement is the only shared state, behind a lock
//! that the packet path never takes.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

mod placement;
mod supervision;

use crate::api::{ParticipantId, RoomId, SfuError, SfuEvent, SfuRequest, SfuResponse};
use crate::cascade::{spawn_gateway, CascadeConfig, CascadeHandle, GatewayCommand};
use crate::config::SfuConfig;
use crate::edge::relay_pipe::{relay_pipes, RelayControlSenders, RelayPipe};
use crate::edge::udp_batch::set_receive_buffer;
use crate::relay::RelayControl;

/// What a media socket asks the kernel for: ~1 s of a 200-student class's ingress.
const MEDIA_RECEIVE_BUFFER: usize = 4 << 20;
use crate::edge::worker::{Command, Worker};
use crate::record::{Control, Recorder};
use crate::stats::SfuStats;
use placement::{Placed, Placement, RoomSpan, Spread};
use supervision::Supervisor;

struct WorkerHandle {
    commands: mpsc::UnboundedSender<Command>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Set by [`SfuNode::panic_worker`]: the worker panics on its next loop iteration.
    #[cfg(feature = "fault-injection")]
    fault: Arc<std::sync::atomic::AtomicBool>,
}

pub struct SfuNode {
    workers: Vec<WorkerHandle>,
    /// Shared with the worker threads' supervisors, which take a dead worker out of it.
    placement: Arc<Mutex<Placement>>,
    events: Mutex<Option<mpsc::UnboundedReceiver<SfuEvent>>>,
    stats: Arc<SfuStats>,
    relay: RelayControlSenders,
    spread: Spread,
    /// The cascade gateway's relay pipe until the gateway starts (cluster media nodes only),
    /// and its handle after. It is relay peer `workers.len()`.
    gateway_pipe: Mutex<Option<RelayPipe>>,
    cascade: Mutex<Option<CascadeHandle>>,
    /// Rooms that span other nodes: their workers relay to and from the gateway too.
    cascaded: Arc<Mutex<HashSet<RoomId>>>,
    /// The recording thread (a node with a record directory) and the recording of each
    /// recorded room.
    recorder: Option<Recorder>,
    recordings: Mutex<std::collections::HashMap<RoomId, String>>,
}

/// Tells every worker concerned which workers host a room now (and the gateway, for a room
/// that spans nodes: it is one more peer then).
fn announce_span(relay: &RelayControlSenders, mut span: RoomSpan, gateway: Option<usize>) {
    tracing::info!(room = %span.room, home = span.home, workers = ?span.workers, cascade = gateway.is_some(), "room spans media workers");
    if let Some(g) = gateway {
        if !span.workers.is_empty() {
            span.workers.push(g);
        }
        span.notify.push(g);
    }
    for &w in &span.notify {
        relay.send(
            w,
            RelayControl::RoomPeers {
                room: span.room.clone(),
                home: span.home,
                peers: span.workers.clone(),
            },
        );
    }
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
        let placement = Arc::new(Mutex::new(Placement::default()));
        // One relay peer more than workers: the cascade gateway.
        let (mut pipes, relay) = relay_pipes(count + 1);
        let gateway_pipe = pipes.pop();
        let cascaded: Arc<Mutex<HashSet<RoomId>>> = Arc::default();
        let mut pipes = pipes.into_iter();
        let (recorder, mut taps) = match &config.record_dir {
            Some(dir) => {
                let (r, taps) =
                    Recorder::start(dir.clone(), count, event_tx.clone(), stats.clone())
                        .map_err(|e| SfuError::Unavailable(format!("recording thread: {e}")))?;
                (Some(r), taps.into_iter().map(Some).collect())
            }
            None => (None, vec![]),
        };
        let mut workers = vec![];
        for i in 0..count {
            let Some(pipe) = pipes.next() else {
                break;
            };
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
            // ICE-TCP listens on the UDP socket's port: one number per worker to open.
            let tcp = if config.ice_tcp {
                let listener =
                    std::net::TcpListener::bind(SocketAddr::new(config.bind_ip, bound.port()))
                        .map_err(|e| {
                            SfuError::Unavailable(format!(
                                "ICE-TCP bind {}:{}: {e}",
                                config.bind_ip,
                                bound.port()
                            ))
                        })?;
                Some(crate::edge::ice_tcp::IceTcp::new(listener, stats.clone()))
            } else {
                None
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let worker = Worker::new(
                candidate,
                config.keyframe_request_interval,
                event_tx.clone(),
                stats.clone(),
                i,
                pipe,
            )
            .with_bandwidth_allocation(config.bandwidth_allocation)
            .with_media_setup_timeout(config.media_setup_timeout)
            .with_max_stopped_mlines(config.max_stopped_mlines)
            .with_recorder(taps.get_mut(i).and_then(Option::take))
            .with_ice_tcp(tcp);
            #[cfg(feature = "fault-injection")]
            let fault = Arc::new(std::sync::atomic::AtomicBool::new(false));
            #[cfg(feature = "fault-injection")]
            let worker = worker.with_fault(fault.clone());
            let supervisor = Supervisor {
                index: i,
                placement: placement.clone(),
                events: event_tx.clone(),
                stats: stats.clone(),
                relay: relay.clone(),
                cascaded: cascaded.clone(),
                gateway: count,
            };
            let thread = std::thread::Builder::new()
                .name(format!("zvon-media-{i}"))
                .spawn(move || {
                    supervisor.run(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build();
                        match runtime {
                            Ok(rt) => rt.block_on(worker.run(socket, rx)),
                            Err(e) => tracing::error!("media worker runtime: {e}"),
                        }
                    })
                })
                .map_err(|e| SfuError::Unavailable(e.to_string()))?;
            workers.push(WorkerHandle {
                commands: tx,
                addr: bound,
                thread: Some(thread),
                #[cfg(feature = "fault-injection")]
                fault,
            });
        }
        Ok(SfuNode {
            workers,
            placement,
            events: Mutex::new(Some(event_rx)),
            stats,
            relay,
            spread: Spread {
                busy: config.spread_busy,
                after: config.spread_after,
            },
            gateway_pipe: Mutex::new(gateway_pipe),
            cascade: Mutex::new(None),
            cascaded,
            recorder,
            recordings: Mutex::default(),
        })
    }

    /// Starts the cascade gateway (a media node of a fleet): rooms may then span this node
    /// and others ([`SfuRequest::Cascade`]). Once; later calls do nothing.
    pub fn start_cascade(&self, mut config: CascadeConfig) -> Result<(), SfuError> {
        // The node's links count where the metrics read.
        config.stats = self.stats.cascade.clone();
        let Some(pipe) = self.gateway_pipe.lock().ok().and_then(|mut p| p.take()) else {
            return Ok(());
        };
        let handle =
            spawn_gateway(pipe, config).map_err(|e| SfuError::Unavailable(e.to_string()))?;
        if let Ok(mut c) = self.cascade.lock() {
            *c = Some(handle);
        }
        Ok(())
    }

    /// A cascade link another node opened on the link port.
    pub fn cascade_incoming(&self, connection: quinn::Connection) {
        match self.cascade.lock().ok().and_then(|c| c.clone()) {
            Some(c) => c.send(GatewayCommand::Incoming(connection)),
            None => connection.close(0u32.into(), b"no cascade here"),
        }
    }

    fn gateway_index(&self) -> usize {
        self.workers.len()
    }

    fn is_cascaded(&self, room: &RoomId) -> bool {
        self.cascaded.lock().is_ok_and(|c| c.contains(room))
    }

    /// The room's other nodes changed: the gateway links to them, and the room's workers
    /// take the gateway as a peer (or drop it).
    fn cascade(
        &self,
        room: RoomId,
        node: String,
        peers: Vec<crate::api::CascadePeer>,
    ) -> Result<SfuResponse, SfuError> {
        let Some(handle) = self.cascade.lock().ok().and_then(|c| c.clone()) else {
            return Err(SfuError::Unavailable(
                "this node has no cascade gateway".into(),
            ));
        };
        let spans = !peers.is_empty();
        let changed = match self.cascaded.lock() {
            Ok(mut c) if spans => c.insert(room.clone()),
            Ok(mut c) => c.remove(&room),
            Err(_) => false,
        };
        tracing::info!(room = %room, peers = ?peers.iter().map(|p| &p.node).collect::<Vec<_>>(), "room spans media nodes");
        handle.send(GatewayCommand::Room {
            room: room.clone(),
            me: node,
            peers,
        });
        if changed {
            self.tell_room_peers(&room, spans)?;
        }
        Ok(SfuResponse::Done)
    }

    /// Tells the room's workers and the gateway who hosts it, with the gateway among them
    /// when `cascaded`.
    fn tell_room_peers(&self, room: &RoomId, cascaded: bool) -> Result<(), SfuError> {
        let span = self
            .placement
            .lock()
            .map_err(|_| SfuError::Unavailable("placement lock poisoned".into()))?
            .span_of(room);
        let g = self.gateway_index();
        let (home, mut workers) = span.unwrap_or((0, vec![]));
        let notify: Vec<usize> = workers.iter().copied().chain([g]).collect();
        if cascaded && !workers.is_empty() {
            workers.push(g);
        } else if !cascaded && workers.len() <= 1 {
            // Back on one worker of one node: no relay peers at all.
            workers.clear();
        }
        for w in notify {
            self.relay.send(
                w,
                RelayControl::RoomPeers {
                    room: room.clone(),
                    home,
                    peers: workers.clone(),
                },
            );
        }
        Ok(())
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

    fn place(&self, request: &SfuRequest) -> Result<Placed, SfuError> {
        let busy: Vec<f64> = self
            .stats
            .workers
            .iter()
            .map(|w| {
                w.busy_recent_permille
                    .load(std::sync::atomic::Ordering::Relaxed) as f64
                    / 1000.0
            })
            .collect();
        let (placed, span) = self
            .placement
            .lock()
            .map_err(|_| SfuError::Unavailable("placement lock poisoned".into()))?
            .place(request, self.workers.len(), &busy, self.spread)?;
        if let Some(span) = span {
            let gateway = self.is_cascaded(&span.room).then(|| self.gateway_index());
            announce_span(&self.relay, span, gateway);
        } else if let SfuRequest::AddParticipant { room, .. } = request {
            // A cascaded room's first participant here on a worker: the worker must know the
            // gateway (no span change is reported for a room on one worker).
            if self.is_cascaded(room) {
                self.tell_room_peers(room, true)?;
            }
        }
        Ok(placed)
    }

    /// The worker hosting `participant` (an index into [`SfuNode::media_addrs`]); `None` when
    /// it is unknown or its worker died.
    pub fn worker_of(&self, participant: &ParticipantId) -> Option<usize> {
        self.placement.lock().ok()?.worker_of(participant)
    }

    /// Test-only fault injection: worker `index` panics on its next loop iteration (within
    /// ~100 ms, its idle tick), as a bug in it would.
    #[cfg(feature = "fault-injection")]
    pub fn panic_worker(&self, index: usize) {
        if let Some(w) = self.workers.get(index) {
            w.fault.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub async fn request(&self, request: SfuRequest) -> Result<SfuResponse, SfuError> {
        if let SfuRequest::Cascade { room, node, peers } = request {
            return self.cascade(room, node, peers);
        }
        if let SfuRequest::Record { room, recording } = request {
            return self.record(room, recording).await;
        }
        let worker = match self.place(&request)? {
            Placed::Worker(w) => w,
            Placed::AlreadyGone => return Ok(SfuResponse::Done),
        };
        let (reply, answer) = oneshot::channel();
        self.workers[worker]
            .commands
            .send(Command { request, reply })
            .map_err(|_| SfuError::Unavailable("media worker stopped".into()))?;
        answer
            .await
            .map_err(|_| SfuError::Unavailable("media worker stopped".into()))?
    }

    /// Starts or stops recording a room: the recording thread first hears of a start (so it
    /// knows the recording before a worker's first track), and of a stop only after every
    /// worker stopped feeding it (so no track is left open).
    async fn record(
        &self,
        room: RoomId,
        recording: Option<crate::api::RecordingSpec>,
    ) -> Result<SfuResponse, SfuError> {
        let Some(recorder) = &self.recorder else {
            return Err(SfuError::Unavailable(
                "recording is off on this media node (no record directory)".into(),
            ));
        };
        let now = std::time::SystemTime::now();
        let stopping = {
            let mut recordings = self
                .recordings
                .lock()
                .map_err(|_| SfuError::Unavailable("recordings lock poisoned".into()))?;
            match &recording {
                Some(spec) => {
                    let previous = recordings.insert(room.clone(), spec.id.clone());
                    previous.filter(|p| *p != spec.id)
                }
                None => recordings.remove(&room),
            }
        };
        if let Some(spec) = &recording {
            recorder.send(Control::Start {
                room: room.clone(),
                spec: spec.clone(),
                at: now,
            });
        }
        let mut answers = vec![];
        for w in &self.workers {
            let (reply, answer) = oneshot::channel();
            let request = SfuRequest::Record {
                room: room.clone(),
                recording: recording.clone(),
            };
            // A dead worker has nothing to record.
            if w.commands.send(Command { request, reply }).is_ok() {
                answers.push(answer);
            }
        }
        for a in answers {
            let _ = a.await;
        }
        if let Some(id) = stopping {
            recorder.send(Control::Stop {
                recording: id,
                at: std::time::SystemTime::now(),
            });
        }
        Ok(SfuResponse::Done)
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
