//! One QUIC connection between two media nodes: relayed RTP in DATAGRAMs (see
//! [`super::datagram`]), and one bidirectional control stream of [`RelayControl`] messages
//! naming nodes by id.
//!
//! Authentication is the cluster link's (`crate::link::auth`): the shared secret bound to the
//! TLS session, both ways. The dialing side opens the control stream right after.
//!
//! Sending never blocks the caller and never takes a lock: [`CascadeLink::send`] pushes onto a
//! bounded lock-free staging queue and wakes the link's sender task, which moves datagrams
//! into the audio-first [`SendQueue`] and hands quinn one at a time, only when quinn's own
//! (small) datagram buffer has room, so quinn's drop-the-oldest never decides what is lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use tokio::sync::{mpsc, Notify};
use tracing::warn;

use super::send_queue::{Priority, SendQueue};
use crate::link::{auth, frame, tls, LinkError, PROTOCOL_ERROR_CODE};
use crate::relay::RelayControl;

/// ALPN of the cascade; a media node's link port tells it from the signaling link by this.
pub const CASCADE_ALPN: &[u8] = b"zvon-cascade/1";

/// A control message between nodes; peers are node ids.
pub type NodeControl = RelayControl<String>;

/// First byte of the control stream.
const CONTROL_VERSION: u8 = 1;

/// Datagrams staged between [`CascadeLink::send`] and the sender task.
const STAGING: usize = 8192;

/// The congestion controller of the cascade links (quinn has both; BENCHMARKS.md compares
/// them on a lossy, rate-limited link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// Loss-based (quinn's default).
    #[default]
    Cubic,
    /// Model-based: reacts to delivery rate and delay, not to random loss.
    Bbr,
}

impl std::str::FromStr for Congestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cubic" => Ok(Congestion::Cubic),
            "bbr" => Ok(Congestion::Bbr),
            other => Err(format!("congestion controller {other:?}: cubic or bbr")),
        }
    }
}

/// Settings of a cascade link; both ends should use the same.
#[derive(Debug, Clone)]
pub struct CascadeConfig {
    pub cluster_secret: String,
    /// Ping interval on an idle link (≤ 1 s: a dead peer is noticed in `idle_timeout`).
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    /// UDP payload size the connection starts with and never goes below: a full RTP packet
    /// (~1200 bytes from browsers) plus the datagram header must fit from the first packet.
    /// Above the IPv6 minimum (1280), so the path must carry it (a private network does).
    pub mtu: u16,
    /// quinn's datagram send buffer: what may wait inside quinn, where it cannot be
    /// prioritised (~50 ms of a 20 Mbit/s link).
    pub quinn_send_buffer: usize,
    /// The audio-first queue in front of it.
    pub queue_budget: usize,
    pub congestion: Congestion,
    /// Where links made with this configuration count (shared: a node's links sum up).
    pub stats: Arc<CascadeStats>,
}

impl CascadeConfig {
    pub fn new(cluster_secret: impl Into<String>) -> Self {
        CascadeConfig {
            cluster_secret: cluster_secret.into(),
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            mtu: 1400,
            quinn_send_buffer: 128 << 10,
            queue_budget: 128 << 10,
            congestion: Congestion::default(),
            stats: Arc::default(),
        }
    }

    /// quinn tuned for media: MTU floor, small datagram buffer, fast keep-alive, and stream
    /// limits that fit the protocol (the dialer opens the auth and control streams).
    pub fn transport(&self, server: bool) -> Result<Arc<quinn::TransportConfig>, LinkError> {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| LinkError::Tls(format!("idle timeout: {e}")))?;
        t.max_idle_timeout(Some(idle));
        self.tune(&mut t);
        t.max_concurrent_bidi_streams(if server { 2u32 } else { 0 }.into());
        t.max_concurrent_uni_streams(0u32.into());
        Ok(Arc::new(t))
    }

    /// The media settings alone, for a transport shared with the signaling link (a media
    /// node's link port accepts both).
    pub fn tune(&self, t: &mut quinn::TransportConfig) {
        t.initial_mtu(self.mtu);
        t.min_mtu(self.mtu);
        t.datagram_send_buffer_size(self.quinn_send_buffer);
        t.datagram_receive_buffer_size(Some(1 << 20));
        match self.congestion {
            Congestion::Cubic => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
            }
            Congestion::Bbr => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
            }
        };
    }
}

/// Counters of the links made with one [`CascadeConfig`] (relaxed atomics; read for metrics).
#[derive(Debug, Default)]
pub struct CascadeStats {
    /// Links open now.
    pub links: AtomicU64,
    /// Datagrams from peers that the gateway took (decoded, of a known flow or not).
    pub datagrams_received: AtomicU64,
    /// Datagrams from peers that were not a relayed RTP packet.
    pub datagrams_malformed: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Larger than the path's datagram size (`SendDatagramError::TooLarge`): never sent.
    pub too_large: AtomicU64,
    /// Refused because the staging queue was full (the sender task is starved).
    pub staging_dropped: AtomicU64,
    pub dropped_audio: AtomicU64,
    pub dropped_video: AtomicU64,
    pub control_sent: AtomicU64,
    pub control_received: AtomicU64,
    /// Loss repair (see [`super::repair::RepairCounts`]; the gateway's totals).
    pub repair_nacks_sent: AtomicU64,
    pub repair_requested: AtomicU64,
    pub repair_resent: AtomicU64,
    pub repair_cache_misses: AtomicU64,
    pub repair_repaired: AtomicU64,
    pub repair_unrepaired: AtomicU64,
    pub repair_duplicates: AtomicU64,
}

/// One node-to-node link. Cloning shares it.
#[derive(Clone)]
pub struct CascadeLink {
    connection: quinn::Connection,
    staging: Arc<ArrayQueue<(Priority, Bytes)>>,
    wake: Arc<Notify>,
    control: mpsc::UnboundedSender<NodeControl>,
    stats: Arc<CascadeStats>,
}

/// A server endpoint for cascade links (its own port; see the module docs of
/// [`crate::cascade`] for sharing the media node's link port).
pub fn server_endpoint(
    bind: SocketAddr,
    config: &CascadeConfig,
) -> Result<quinn::Endpoint, LinkError> {
    let server = tls::server_config_with(&[CASCADE_ALPN], config.transport(true)?)?;
    quinn::Endpoint::server(server, bind).map_err(|e| LinkError::Bind(format!("{bind}: {e}")))
}

impl CascadeLink {
    /// Dials `addr` from `endpoint` as node `me`, authenticates and opens the control stream.
    /// Returns the link and the peer's control messages.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        config: &CascadeConfig,
        me: &str,
    ) -> Result<(Self, mpsc::UnboundedReceiver<NodeControl>), LinkError> {
        let client = tls::client_config_with(CASCADE_ALPN, config.transport(false)?)?;
        let connection = endpoint
            .connect_with(client, addr, tls::SERVER_NAME)
            .map_err(|e| LinkError::Connect(format!("{addr}: {e}")))?
            .await
            .map_err(|e| LinkError::Connect(format!("{addr}: {e}")))?;
        auth::authenticate_client(&connection, &config.cluster_secret).await?;
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| LinkError::from_connection(&e))?;
        // A QUIC stream reaches the peer with its first byte: the version says hello.
        send.write_all(&[CONTROL_VERSION])
            .await
            .map_err(|e| LinkError::Closed(e.to_string()))?;
        frame::write_frame(&mut send, &me).await?;
        Ok(Self::start(connection, send, recv, config))
    }

    /// Accepts one incoming connection: authenticates it and waits for its control stream.
    /// Returns the link, the peer's control messages and the peer's node id.
    pub async fn accept(
        incoming: quinn::Incoming,
        config: &CascadeConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<NodeControl>, String), LinkError> {
        let connection = incoming
            .await
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        Self::accept_connection(connection, config).await
    }

    /// [`CascadeLink::accept`] for a connection another acceptor already took (the media
    /// node's link port serves both ALPNs).
    pub async fn accept_connection(
        connection: quinn::Connection,
        config: &CascadeConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<NodeControl>, String), LinkError> {
        auth::authenticate_server(&connection, &config.cluster_secret).await?;
        let opened = async {
            let (send, mut recv) = connection
                .accept_bi()
                .await
                .map_err(|e| LinkError::from_connection(&e))?;
            let mut version = [0u8];
            recv.read_exact(&mut version)
                .await
                .map_err(|e| LinkError::Protocol(format!("control stream: {e}")))?;
            if version[0] != CONTROL_VERSION {
                return Err(LinkError::Protocol(format!(
                    "control stream version {}",
                    version[0]
                )));
            }
            let peer: String = frame::read_frame(&mut recv)
                .await?
                .ok_or_else(|| LinkError::Protocol("no node id".into()))?;
            Ok((send, recv, peer))
        };
        let (send, recv, peer) = match tokio::time::timeout(auth::AUTH_TIMEOUT, opened).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => {
                connection.close(PROTOCOL_ERROR_CODE.into(), b"control");
                return Err(e);
            }
            Err(_) => {
                connection.close(PROTOCOL_ERROR_CODE.into(), b"control");
                return Err(LinkError::Protocol("no control stream in time".into()));
            }
        };
        let (link, rx) = Self::start(connection, send, recv, config);
        Ok((link, rx, peer))
    }

    fn start(
        connection: quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        config: &CascadeConfig,
    ) -> (Self, mpsc::UnboundedReceiver<NodeControl>) {
        let stats = config.stats.clone();
        let staging = Arc::new(ArrayQueue::new(STAGING));
        let wake = Arc::new(Notify::new());
        let (control_tx, mut control_out) = mpsc::unbounded_channel::<NodeControl>();
        let (control_in, control_rx) = mpsc::unbounded_channel();

        let conn = connection.clone();
        let s = stats.clone();
        tokio::spawn(async move {
            while let Some(msg) = control_out.recv().await {
                if let Err(e) = frame::write_frame(&mut send, &msg).await {
                    warn!("cascade control stream: {e}");
                    conn.close(PROTOCOL_ERROR_CODE.into(), b"control");
                    return;
                }
                s.control_sent.fetch_add(1, Ordering::Relaxed);
            }
            let _ = send.finish();
        });
        let conn = connection.clone();
        let s = stats.clone();
        tokio::spawn(async move {
            loop {
                match frame::read_frame::<_, NodeControl>(&mut recv).await {
                    Ok(Some(msg)) => {
                        s.control_received.fetch_add(1, Ordering::Relaxed);
                        if control_in.send(msg).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(LinkError::Closed(_)) => return,
                    Err(e) => {
                        warn!("cascade control stream: {e}");
                        conn.close(PROTOCOL_ERROR_CODE.into(), b"control");
                        return;
                    }
                }
            }
        });
        tokio::spawn(send_datagrams(
            connection.clone(),
            staging.clone(),
            wake.clone(),
            SendQueue::new(config.queue_budget),
            stats.clone(),
        ));
        let link = CascadeLink {
            connection,
            staging,
            wake,
            control: control_tx,
            stats,
        };
        (link, control_rx)
    }

    /// Queues one datagram (see [`super::datagram::encode`]). Packet path: lock-free, no
    /// allocation but the `Bytes` itself; the wake-up is a no-op while the sender is awake.
    pub fn send(&self, priority: Priority, datagram: Bytes) {
        if self.staging.push((priority, datagram)).is_err() {
            self.stats.staging_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.wake.notify_one();
    }

    /// Sends a control message (in order with the others).
    pub fn send_control(&self, msg: NodeControl) {
        let _ = self.control.send(msg);
    }

    /// The next datagram from the peer.
    pub async fn read_datagram(&self) -> Result<Bytes, LinkError> {
        self.connection
            .read_datagram()
            .await
            .map_err(|e| LinkError::from_connection(&e))
    }

    /// The largest datagram the path takes now.
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.connection.max_datagram_size()
    }

    pub fn stats(&self) -> &Arc<CascadeStats> {
        &self.stats
    }

    /// quinn's view of the connection (congestion window, losses, round trip).
    pub fn connection_stats(&self) -> quinn::ConnectionStats {
        self.connection.stats()
    }

    pub fn rtt(&self) -> Duration {
        self.connection.rtt()
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Resolves when the link is gone (closed, or silent for the idle timeout).
    pub async fn closed(&self) -> LinkError {
        LinkError::from_connection(&self.connection.closed().await)
    }

    pub fn close(&self) {
        self.connection.close(0u32.into(), b"bye");
    }
}

/// What happened to one datagram handed to quinn.
enum Sent {
    Ok,
    TooLarge,
    Gone,
}

fn outcome(r: Result<(), quinn::SendDatagramError>, stats: &CascadeStats, len: usize) -> Sent {
    match r {
        Ok(()) => {
            stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
            stats.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
            Sent::Ok
        }
        Err(quinn::SendDatagramError::TooLarge) => {
            stats.too_large.fetch_add(1, Ordering::Relaxed);
            Sent::TooLarge
        }
        Err(_) => Sent::Gone,
    }
}

fn drain(
    staging: &ArrayQueue<(Priority, Bytes)>,
    queue: &mut SendQueue<Bytes>,
    stats: &CascadeStats,
) {
    let before = queue.counts;
    while let Some((priority, d)) = staging.pop() {
        queue.push(priority, d);
    }
    let after = queue.counts;
    // Deltas: the counters may be shared by several links.
    for (counter, delta) in [
        (
            &stats.dropped_audio,
            after.dropped_audio - before.dropped_audio,
        ),
        (
            &stats.dropped_video,
            after.dropped_video - before.dropped_video,
        ),
    ] {
        if delta > 0 {
            counter.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

/// The sender task: staging → audio-first queue → quinn, only as fast as quinn takes them.
async fn send_datagrams(
    connection: quinn::Connection,
    staging: Arc<ArrayQueue<(Priority, Bytes)>>,
    wake: Arc<Notify>,
    mut queue: SendQueue<Bytes>,
    stats: Arc<CascadeStats>,
) {
    loop {
        drain(&staging, &mut queue, &stats);
        // Fast path: quinn has room, so `send_datagram` cannot make it drop anything.
        while let Some(d) = queue.pop() {
            let len = d.len();
            if connection.datagram_send_buffer_space() < len {
                // Full: wait for room for this one while the queue keeps sorting new ones.
                let mut pending = std::pin::pin!(connection.send_datagram_wait(d));
                let result = loop {
                    tokio::select! {
                        biased;
                        r = &mut pending => break r,
                        _ = wake.notified() => drain(&staging, &mut queue, &stats),
                    }
                };
                if let Sent::Gone = outcome(result, &stats, len) {
                    return;
                }
                continue;
            }
            if let Sent::Gone = outcome(connection.send_datagram(d), &stats, len) {
                return;
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = connection.closed() => return,
        }
    }
}
