//! ICE-TCP (RFC 6544) passive host candidates, for clients whose network blocks UDP and
//! that have no TURN server to fall back on.
//!
//! Each media worker also listens on TCP on its media port. A client connects (it is the
//! active side) and sends RFC 4571 frames: a 2-byte big-endian length, then one STUN, DTLS,
//! RTP or RTCP packet. A small task per stream on the worker's runtime de-frames what it
//! reads and hands each packet to the worker loop over a bounded channel; the loop routes it
//! like a UDP datagram (`Demux`: the first one must be a binding request naming one of our
//! ufrags, else the stream is closed). What str0m sends with `Protocol::Tcp` goes to that
//! stream's bounded queue; a stream that cannot keep up loses packets, the worker never
//! waits for it. The UDP path does not see any of this.
//!
//! Hostile clients: at most [`MAX_STREAMS`] streams per worker (more are refused at accept),
//! a stream that delivers no complete frame for [`IDLE_TIMEOUT`] is closed (before the first
//! binding request as after: browsers send consent checks every few seconds), a frame
//! longer than [`MAX_FRAME`] or a first frame that is not our STUN closes the stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::stats::SfuStats;

/// Concurrent TCP streams per worker; more are closed at accept.
pub const MAX_STREAMS: usize = 1024;
/// A stream that delivers no complete frame for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest frame accepted: media packets are datagram-sized (~1.2 KiB), STUN and DTLS
/// flights too; anything much longer is not a WebRTC peer.
pub const MAX_FRAME: usize = 16 * 1024;
/// A write that cannot finish for this long (the client stopped reading) closes the stream:
/// while it waits the stream neither reads nor notices that its connection is gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames from every stream of a worker waiting for its loop; beyond, frames are dropped.
const INBOUND_QUEUE: usize = 4096;
/// Packets waiting to be written to one stream; beyond, packets are dropped.
const OUTBOUND_QUEUE: usize = 512;

/// A frame's length prefix said more than [`MAX_FRAME`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("RFC 4571 frame of {0} bytes is over the limit")]
pub struct Oversize(pub usize);

/// RFC 4571 de-framing of a byte stream, sans-IO: bytes in, whole packets out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// Where the next read goes (the stream task reads straight into it).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete packet, if one is buffered. Empty frames are skipped.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, Oversize> {
        loop {
            if self.buf.len() < 2 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
            if len > MAX_FRAME {
                return Err(Oversize(len));
            }
            if self.buf.len() < 2 + len {
                // Room for the rest, so that the next read does not split it again.
                self.buf.reserve(2 + len - self.buf.len());
                return Ok(None);
            }
            self.buf.advance(2);
            let frame = self.buf.split_to(len);
            if !frame.is_empty() {
                return Ok(Some(frame.to_vec()));
            }
        }
    }
}

/// What the stream tasks tell the worker loop.
#[derive(Debug)]
pub enum TcpEvent {
    Opened {
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        peer: SocketAddr,
    },
}

/// Why a stream was closed or a packet dropped (`zvon_ice_tcp_*` metrics).
#[derive(Debug, Default)]
pub struct IceTcpStats {
    /// Streams open now, every worker.
    pub connections: AtomicU64,
    pub refused_limit: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_oversize: AtomicU64,
    /// A write did not finish within [`WRITE_TIMEOUT`].
    pub closed_stalled: AtomicU64,
    /// The first frame was not a binding request for one of our connections (or a later one
    /// came after its connection was gone).
    pub closed_rejected: AtomicU64,
    /// Frames dropped because the worker's inbound queue was full.
    pub dropped_inbound: AtomicU64,
    /// Packets dropped because a stream's write queue was full.
    pub dropped_outbound: AtomicU64,
}

/// The worker's side: the writers of its open streams.
pub struct IceTcp {
    listener: Option<std::net::TcpListener>,
    writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    stats: Arc<SfuStats>,
    limits: Limits,
}

/// [`MAX_STREAMS`] and [`IDLE_TIMEOUT`]; tests make them small.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_streams: u64,
    idle: Duration,
}

impl IceTcp {
    pub fn new(listener: std::net::TcpListener, stats: Arc<SfuStats>) -> Self {
        IceTcp {
            listener: Some(listener),
            writers: HashMap::new(),
            stats,
            limits: Limits {
                max_streams: MAX_STREAMS as u64,
                idle: IDLE_TIMEOUT,
            },
        }
    }

    /// Starts accepting on the current (the worker's) runtime; the receiver is the loop's.
    pub fn start(&mut self) -> Option<mpsc::Receiver<TcpEvent>> {
        let listener = self.listener.take()?;
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|_| TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("ICE-TCP listener unusable: {e}");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        tokio::spawn(accept(listener, tx, self.stats.clone(), self.limits));
        Some(rx)
    }

    pub fn opened(&mut self, peer: SocketAddr, writer: mpsc::Sender<Vec<u8>>) {
        self.writers.insert(peer, writer);
    }

    pub fn closed(&mut self, peer: SocketAddr) {
        self.writers.remove(&peer);
    }

    /// Closes the stream from `peer`: its task sees its queue end.
    pub fn reject(&mut self, peer: SocketAddr) {
        if self.writers.remove(&peer).is_some() {
            SfuStats::add(&self.stats.ice_tcp.closed_rejected, 1);
        }
    }

    /// Queues one packet for `to`'s stream, never waiting.
    pub fn send(&mut self, to: SocketAddr, packet: Vec<u8>) {
        let Some(w) = self.writers.get(&to) else {
            SfuStats::add(&self.stats.ice_tcp.dropped_outbound, 1);
            return;
        };
        match w.try_send(packet) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                SfuStats::add(&self.stats.ice_tcp.dropped_outbound, 1)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.writers.remove(&to);
                SfuStats::add(&self.stats.ice_tcp.dropped_outbound, 1);
            }
        }
    }
}

async fn accept(
    listener: TcpListener,
    to_worker: mpsc::Sender<TcpEvent>,
    stats: Arc<SfuStats>,
    limits: Limits,
) {
    let open = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: wait a little instead of spinning.
                debug!("ICE-TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= limits.max_streams {
            SfuStats::add(&stats.ice_tcp.refused_limit, 1);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (writer, outgoing) = mpsc::channel(OUTBOUND_QUEUE);
        if to_worker
            .send(TcpEvent::Opened { peer, writer })
            .await
            .is_err()
        {
            return;
        }
        open.fetch_add(1, Ordering::Relaxed);
        stats.ice_tcp.connections.fetch_add(1, Ordering::Relaxed);
        let (open, stats, to_worker) = (open.clone(), stats.clone(), to_worker.clone());
        tokio::spawn(async move {
            serve(stream, peer, outgoing, &to_worker, &stats, limits.idle).await;
            open.fetch_sub(1, Ordering::Relaxed);
            stats.ice_tcp.connections.fetch_sub(1, Ordering::Relaxed);
            let _ = to_worker.send(TcpEvent::Closed { peer }).await;
        });
    }
}

/// Reads and writes one stream until it ends, idles, misbehaves or the worker drops it.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    to_worker: &mpsc::Sender<TcpEvent>,
    stats: &SfuStats,
    idle_timeout: Duration,
) {
    let mut decoder = FrameDecoder::default();
    let mut write_buf: Vec<u8> = Vec::with_capacity(4096);
    let mut idle = Box::pin(tokio::time::sleep(idle_timeout));
    loop {
        tokio::select! {
            read = stream.read_buf(decoder.buffer()) => {
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                loop {
                    match decoder.next_frame() {
                        Ok(Some(data)) => {
                            idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                            match to_worker.try_send(TcpEvent::Frame { peer, data }) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    SfuStats::add(&stats.ice_tcp.dropped_inbound, 1)
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!("ICE-TCP stream from {peer}: {e}");
                            SfuStats::add(&stats.ice_tcp.closed_oversize, 1);
                            return;
                        }
                    }
                }
            }
            packet = outgoing.recv() => {
                let Some(packet) = packet else { return };
                // Everything queued goes out in one write.
                write_buf.clear();
                let mut next = Some(packet);
                while let Some(p) = next {
                    // str0m's packets are datagram-sized; a longer one cannot be framed.
                    if let Ok(len) = u16::try_from(p.len()) {
                        write_buf.extend_from_slice(&len.to_be_bytes());
                        write_buf.extend_from_slice(&p);
                    }
                    next = if write_buf.len() < 64 * 1024 { outgoing.try_recv().ok() } else { None };
                }
                match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&write_buf)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        SfuStats::add(&stats.ice_tcp.closed_stalled, 1);
                        return;
                    }
                }
            }
            _ = &mut idle => {
                SfuStats::add(&stats.ice_tcp.closed_idle, 1);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream tasks on a real listener, with the worker's side played by the test.
    mod streams {
        use super::super::*;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        async fn started(
            max_streams: u64,
            idle: Duration,
        ) -> (IceTcp, mpsc::Receiver<TcpEvent>, SocketAddr) {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut tcp = IceTcp::new(listener, Arc::new(SfuStats::default()));
            tcp.limits = Limits { max_streams, idle };
            let rx = tcp.start().unwrap();
            (tcp, rx, addr)
        }

        async fn next(rx: &mut mpsc::Receiver<TcpEvent>) -> TcpEvent {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an event in time")
                .expect("open channel")
        }

        async fn assert_closed(s: &mut TcpStream) {
            let mut buf = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("closed in time");
            assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        }

        #[tokio::test]
        async fn frames_in_and_packets_out_are_framed_and_a_silent_stream_is_closed() {
            let (mut tcp, mut rx, addr) = started(8, Duration::from_secs(1)).await;
            let mut client = TcpStream::connect(addr).await.unwrap();
            let TcpEvent::Opened { peer, writer } = next(&mut rx).await else {
                panic!("no Opened first");
            };
            tcp.opened(peer, writer);
            // Two frames in one write, the second split over two writes.
            client
                .write_all(&[0, 2, b'h', b'i', 0, 3, b'y'])
                .await
                .unwrap();
            client.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b"ou").await.unwrap();
            for want in [&b"hi"[..], b"you"] {
                match next(&mut rx).await {
                    TcpEvent::Frame { peer: p, data } => {
                        assert_eq!((p, data.as_slice()), (peer, want))
                    }
                    e => panic!("{e:?}"),
                }
            }
            tcp.send(peer, b"abc".to_vec());
            tcp.send(peer, b"de".to_vec());
            let mut got = [0u8; 9];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, &[0, 3, b'a', b'b', b'c', 0, 2, b'd', b'e']);
            // Then nothing from the client: closed after the idle timeout, and counted.
            assert_closed(&mut client).await;
            assert!(matches!(next(&mut rx).await, TcpEvent::Closed { peer: p } if p == peer));
            assert_eq!(tcp.stats.ice_tcp.closed_idle.load(Ordering::Relaxed), 1);
            assert_eq!(tcp.stats.ice_tcp.connections.load(Ordering::Relaxed), 0);
        }

        #[tokio::test]
        async fn streams_over_the_limit_are_refused_and_a_rejected_one_is_closed() {
            let (mut tcp, mut rx, addr) = started(2, Duration::from_secs(30)).await;
            let mut a = TcpStream::connect(addr).await.unwrap();
            let _b = TcpStream::connect(addr).await.unwrap();
            let mut peers = vec![];
            for _ in 0..2 {
                let TcpEvent::Opened { peer, writer } = next(&mut rx).await else {
                    panic!("no Opened");
                };
                tcp.opened(peer, writer);
                peers.push(peer);
            }
            let mut c = TcpStream::connect(addr).await.unwrap();
            assert_closed(&mut c).await;
            assert_eq!(tcp.stats.ice_tcp.refused_limit.load(Ordering::Relaxed), 1);
            // The worker turns `a` away (its first frame named no connection): `a` is closed
            // and its place is free again.
            let a_peer = a.local_addr().unwrap();
            tcp.reject(a_peer);
            assert_closed(&mut a).await;
            assert!(matches!(next(&mut rx).await, TcpEvent::Closed { peer } if peer == a_peer));
            assert_eq!(tcp.stats.ice_tcp.closed_rejected.load(Ordering::Relaxed), 1);
            let _d = TcpStream::connect(addr).await.unwrap();
            assert!(matches!(next(&mut rx).await, TcpEvent::Opened { .. }));
        }
    }

    fn framed(packets: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![];
        for p in packets {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn a_frame_split_across_reads_comes_out_whole_once() {
        let bytes = framed(&[b"hello world"]);
        let mut d = FrameDecoder::default();
        // Split inside the length prefix, then inside the payload.
        d.push(&bytes[..1]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&bytes[1..6]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&bytes[6..]);
        assert_eq!(d.next_frame(), Ok(Some(b"hello world".to_vec())));
        assert_eq!(d.next_frame(), Ok(None));
    }

    #[test]
    fn two_frames_in_one_read_come_out_in_order() {
        let mut bytes = framed(&[b"first", b"second"]);
        // And the start of a third.
        bytes.extend_from_slice(&[0, 5, b't']);
        let mut d = FrameDecoder::default();
        d.push(&bytes);
        assert_eq!(d.next_frame(), Ok(Some(b"first".to_vec())));
        assert_eq!(d.next_frame(), Ok(Some(b"second".to_vec())));
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"hird");
        assert_eq!(d.next_frame(), Ok(Some(b"third".to_vec())));
    }

    #[test]
    fn empty_frames_are_skipped() {
        let mut d = FrameDecoder::default();
        d.push(&framed(&[b"", b"x"]));
        assert_eq!(d.next_frame(), Ok(Some(b"x".to_vec())));
    }

    #[test]
    fn an_oversize_length_is_refused_before_its_bytes_arrive() {
        let mut d = FrameDecoder::default();
        d.push(&framed(&[b"ok"]));
        d.push(&((MAX_FRAME + 1) as u16).to_be_bytes());
        assert_eq!(d.next_frame(), Ok(Some(b"ok".to_vec())));
        assert_eq!(d.next_frame(), Err(Oversize(MAX_FRAME + 1)));
        // The largest allowed frame still passes.
        let mut d = FrameDecoder::default();
        let big = vec![7u8; MAX_FRAME];
        d.push(&framed(&[&big]));
        assert_eq!(d.next_frame(), Ok(Some(big)));
    }

    #[test]
    fn bytes_that_are_not_framing_read_as_a_length_and_fail_or_wait() {
        // A TLS ClientHello (0x16 0x03 ...) reads as a 5635-byte frame: it waits for bytes
        // that never come and the idle timeout closes it; an HTTP request reads as oversize.
        let mut d = FrameDecoder::default();
        d.push(b"GET / HTTP/1.1\r\n");
        assert_eq!(d.next_frame(), Err(Oversize(0x4745)));
    }
}
