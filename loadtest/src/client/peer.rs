//! One str0m peer connection with its own UDP socket, driven by the participant task.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::format::{Codec, CodecConfig};
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcError};
use tokio::net::UdpSocket;

/// Datagrams read per wake-up before the task polls its other sources again.
const RECV_BATCH: usize = 32;
/// Kernel receive buffer per socket. With the default (~208 KiB) a subscriber whose task waits
/// for a core loses packets in its own socket: at 50 students on 2 shared cores ~85 % of the
/// measured loss was the tester's sockets overflowing (`/proc/net/udp` drops), not the server.
const RECV_BUFFER_BYTES: libc::c_int = 2 << 20;

/// Best effort (capped by `net.core.rmem_max`); a failure only leaves the default.
fn set_recv_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open socket and a pointer to a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("SO_RCVBUF: {}", std::io::Error::last_os_error());
    }
}

pub struct Peer {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub next_timeout: Instant,
    pub send_drops: u64,
}

impl Peer {
    /// An RTP-mode connection (we packetize and read raw RTP ourselves) on a fresh socket, Opus
    /// and VP8 only.
    /// `cert` is shared by all of the tester's connections: a key pair per connection would cost
    /// a key generation per join and memory per participant.
    /// A `light` receiver's connection leaves transport-wide congestion control and NACK out:
    /// it hands str0m only a sample of the packets, and feedback calling the rest lost would
    /// make the server's bandwidth estimate collapse and resend what did arrive.
    pub async fn new(
        bind_ip: IpAddr,
        publisher: bool,
        light: bool,
        cert: Option<&DtlsCert>,
    ) -> Result<Peer, String> {
        let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
            .await
            .map_err(|e| format!("udp bind: {e}"))?;
        let local = socket.local_addr().map_err(|e| format!("udp addr: {e}"))?;
        set_recv_buffer(&socket, RECV_BUFFER_BYTES);
        // Only what our publishers send: the server offers every codec it knows on each m-line,
        // and an answer listing them all costs ~2 KiB per m-line; a short answer keeps large
        // rooms' renegotiation cheap for the tester and the server alike.
        let mut cfg = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true);
        if let Some(cert) = cert {
            cfg = cfg.set_dtls_cert(cert.clone());
        }
        if light {
            // Nor NACKs: the packets str0m never sees would all be asked for again.
            let mut params = cfg.codec_config().params().to_vec();
            for p in &mut params {
                p.set_fb_nack(false);
                p.set_fb_transport_cc(false);
            }
            *cfg.codec_config() = CodecConfig::new_from_payload_params(params);
            let standard = ExtensionMap::standard();
            cfg = cfg.clear_extension_map();
            for (id, ext) in standard.iter() {
                if *ext != Extension::TransportSequenceNumber {
                    cfg = cfg.set_extension(id, ext.clone());
                }
            }
        }
        if publisher {
            // Enough history for NACKs within ~1 s of video; keeps thousands of peers small.
            cfg = cfg.set_send_buffer_video(150);
        } else {
            cfg = cfg.set_send_buffer_video(1).set_send_buffer_audio(1);
        }
        let now = Instant::now();
        let mut rtc = cfg.build(now);
        let cand = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
        rtc.add_local_candidate(cand);
        Ok(Peer {
            rtc,
            socket,
            local,
            next_timeout: now,
            send_drops: 0,
        })
    }

    /// Polls str0m until it wants to wait: sends what it transmits, hands events to `on_event`.
    pub fn drive(&mut self, mut on_event: impl FnMut(&mut Rtc, Event)) -> Result<(), RtcError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.send_drops += 1;
                    }
                }
                Output::Event(e) => on_event(&mut self.rtc, e),
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        if now >= self.next_timeout {
            self.rtc.handle_input(Input::Timeout(now))?;
        }
        Ok(())
    }

    /// Feeds `first` (already read) and whatever else is queued on the socket, without waiting,
    /// to str0m when `feed` says so (a light receiver accounts most media datagrams itself).
    /// Both callbacks get `state` (a receiver's accounting).
    pub fn handle_datagrams<S>(
        &mut self,
        buf: &mut [u8],
        first: (usize, SocketAddr),
        state: &mut S,
        mut feed: impl FnMut(&mut S, &[u8], Instant) -> bool,
        mut on_event: impl FnMut(&mut S, &mut Rtc, Event),
    ) -> Result<(), RtcError> {
        let mut next = Some(first);
        let mut n = 0;
        while let Some((len, source)) = next {
            let now = Instant::now();
            if !feed(state, &buf[..len], now) {
                // Accounted by the caller.
            } else if let Ok(contents) = buf[..len].try_into() {
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    },
                );
                if self.rtc.accepts(&input) {
                    self.rtc.handle_input(input)?;
                    self.drive(|rtc, ev| on_event(state, rtc, ev))?;
                }
            }
            n += 1;
            next = if n < RECV_BATCH {
                match self.socket.try_recv_from(buf) {
                    Ok(r) => Some(r),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                    Err(_) => None,
                }
            } else {
                None
            };
        }
        Ok(())
    }
}

/// The payload type the remote accepted for `codec` on `mid`.
pub fn negotiated_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let remote = media.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && (remote.is_empty() || remote.contains(&p.pt())))
        .map(|p| p.pt())
}

/// Audio or video, from the payload type of a received packet.
pub fn kind_of_pt(rtc: &Rtc, pt: Pt) -> Option<MediaKind> {
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.pt() == pt)
        .map(|p| p.spec().codec.kind())
}

/// One certificate for all connections of this process.
pub fn shared_cert() -> Option<DtlsCert> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
}

/// Sleeps for at most this long between checks even when str0m asks for nothing sooner.
pub const MAX_IDLE: Duration = Duration::from_millis(250);
