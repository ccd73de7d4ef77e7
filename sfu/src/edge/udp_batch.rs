//! Batched UDP I/O: `recvmmsg`/`sendmmsg` on a non-blocking socket.
//!
//! One syscall moves up to [`BATCH`] datagrams each way. Buffers and the kernel's message
//! headers are allocated once per worker and reused. Each datagram carries the local address
//! it came to, and a reply the address to leave from (see [`super::local_address`]).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use super::local_address::{self, Control};

/// Datagrams per syscall.
pub const BATCH: usize = 32;
/// Larger than any datagram WebRTC sends over a normal path MTU.
pub const MAX_DATAGRAM: usize = 2048;

/// Receive buffers for one `recvmmsg` call.
pub struct RecvBatch {
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    lens: [usize; BATCH],
    addrs: [Option<SocketAddr>; BATCH],
    /// The local address each datagram was sent to, where the socket reports it.
    locals: [Option<IpAddr>; BATCH],
    controls: [Control; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH],
            lens: [0; BATCH],
            addrs: [None; BATCH],
            locals: [None; BATCH],
            controls: [Control::default(); BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last receive: source address, the local address it came to (if
    /// the socket reports it) and contents.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, Option<IpAddr>, &[u8])> {
        (0..self.count).filter_map(|i| {
            self.addrs[i].map(|a| (a, self.locals[i], &self.bufs[i][..self.lens[i]]))
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Datagrams waiting to be sent, flushed by [`send_batch`].
#[derive(Default)]
pub struct SendQueue {
    /// Destination, the local address to send from (`None`: the kernel's choice), contents.
    packets: Vec<(SocketAddr, Option<IpAddr>, Vec<u8>)>,
    /// Datagrams refused because the queue was full, not yet reported.
    dropped: u64,
}

/// Most datagrams a worker holds for a socket whose send buffer is full (about 10 MB of
/// video): past it the newest are dropped (and counted) rather than the worker waiting or
/// its memory growing; receivers repair the loss with NACKs and keyframe requests.
pub const MAX_QUEUED_DATAGRAMS: usize = 8192;

impl SendQueue {
    pub fn push(&mut self, to: SocketAddr, from: Option<IpAddr>, datagram: Vec<u8>) {
        if self.packets.len() >= MAX_QUEUED_DATAGRAMS {
            self.dropped += 1;
            return;
        }
        self.packets.push((to, from, datagram));
    }

    /// Datagrams dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }
}

/// Asks for a receive buffer of `bytes`, best effort. A media socket's buffer is what absorbs
/// a worker's stall; a datagram dropped there is lost for every subscriber of its track.
/// `SO_RCVBUFFORCE` (root or CAP_NET_ADMIN) gets the size past `net.core.rmem_max`, whose
/// default (~208 KiB) is a few milliseconds of a big room's ingress; otherwise `SO_RCVBUF` is
/// capped by it. Returns the size the kernel granted (it reports double the usable bytes).
pub fn set_receive_buffer(socket: &impl AsRawFd, bytes: usize) -> usize {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |option| {
        // SAFETY: a valid open socket and a pointer to a c_int of the size passed.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &bytes as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 {
        set(libc::SO_RCVBUF);
    }
    let mut granted: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above, with `len` holding the size of `granted`.
    let ok = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut granted as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if ok == 0 {
        usize::try_from(granted).unwrap_or(0)
    } else {
        0
    }
}

/// `SO_MEMINFO` (asm-generic value, as on x86_64 and aarch64; not every libc target exports it).
const SO_MEMINFO: libc::c_int = 55;
/// Entries of the `SO_MEMINFO` array (`SK_MEMINFO_VARS`).
const MEMINFO_VARS: usize = libc::SK_MEMINFO_DROPS as usize + 1;

/// The receive queue of `socket` as the kernel accounts it: what the overload guard watches.
/// `None` where `SO_MEMINFO` is unsupported.
pub fn socket_backlog(socket: &impl AsRawFd) -> Option<crate::forward::overload::Backlog> {
    let mut info = [0u32; MEMINFO_VARS];
    let mut len = size_of::<[u32; MEMINFO_VARS]>() as libc::socklen_t;
    // SAFETY: a valid open socket and a buffer of `len` bytes.
    let ok = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if ok != 0 {
        return None;
    }
    let at = |i: libc::c_int| info[i as usize];
    Some(crate::forward::overload::Backlog {
        queued: at(libc::SK_MEMINFO_RMEM_ALLOC) as usize,
        capacity: at(libc::SK_MEMINFO_RCVBUF) as usize,
        drops: u64::from(at(libc::SK_MEMINFO_DROPS)),
    })
}

/// Reads up to [`BATCH`] datagrams. `WouldBlock` when none is waiting.
pub fn recv_batch(socket: &impl AsRawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    // SAFETY: all-zero is a valid bit pattern for these plain C structs.
    let mut storages: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..BATCH {
        iovecs[i] = libc::iovec {
            iov_base: batch.bufs[i].as_mut_ptr().cast(),
            iov_len: MAX_DATAGRAM,
        };
        msgs[i].msg_hdr.msg_name = (&mut storages[i] as *mut libc::sockaddr_storage).cast();
        msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msgs[i].msg_hdr.msg_iov = &mut iovecs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = batch.controls[i].0.as_mut_ptr().cast();
        msgs[i].msg_hdr.msg_controllen = local_address::CONTROL_LEN as _;
    }
    // SAFETY: every pointer refers to a live local or to `batch`'s buffers, sized as declared.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        batch.count = 0;
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for i in 0..n {
        batch.lens[i] = msgs[i].msg_len as usize;
        batch.addrs[i] = from_storage(&storages[i]);
        // SAFETY: the kernel filled this header; its control buffer is `batch.controls[i]`.
        batch.locals[i] = unsafe { local_address::read(&msgs[i].msg_hdr) };
    }
    batch.count = n;
    Ok(n)
}

/// Sends everything queued, [`BATCH`] datagrams per syscall. Returns how many left the
/// socket; on `WouldBlock` the rest stay queued for the next call.
pub fn send_batch(socket: &impl AsRawFd, queue: &mut SendQueue) -> io::Result<usize> {
    // Sent (or refused) datagrams leave the queue once at the end: draining the front after
    // every chunk shifted the rest each time, quadratic in a big room's flush.
    let mut done = 0;
    let mut sent_total = 0;
    let result = loop {
        let pending = &queue.packets[done..];
        if pending.is_empty() {
            break Ok(sent_total);
        }
        let chunk = pending.len().min(BATCH);
        // SAFETY: as above, zeroed C structs.
        let mut storages: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut controls = [Control::default(); BATCH];
        for (i, (addr, from, data)) in pending[..chunk].iter().enumerate() {
            let len = to_storage(addr, &mut storages[i]);
            iovecs[i] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            msgs[i].msg_hdr.msg_name = (&mut storages[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = len;
            msgs[i].msg_hdr.msg_iov = &mut iovecs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            if let Some(from) = from {
                local_address::write(&mut msgs[i].msg_hdr, &mut controls[i], *from);
            }
        }
        // SAFETY: pointers refer to locals and to the queued buffers, which outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                chunk as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                break if sent_total > 0 {
                    Ok(sent_total)
                } else {
                    Err(err)
                };
            }
            // A datagram the kernel refuses (e.g. unreachable destination) must not wedge the
            // queue: drop it and go on.
            done += 1;
            continue;
        }
        done += n as usize;
        sent_total += n as usize;
    };
    queue.packets.drain(..done);
    result
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: &SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let out: &mut libc::sockaddr_in =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let out: &mut libc::sockaddr_in6 =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_full_send_queue_drops_and_counts_instead_of_growing() {
        let mut q = SendQueue::default();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..MAX_QUEUED_DATAGRAMS + 10 {
            q.push(to, None, vec![0; 100]);
        }
        assert_eq!(q.len(), MAX_QUEUED_DATAGRAMS);
        assert_eq!(q.take_dropped(), 10);
        assert_eq!(q.take_dropped(), 0, "reported once");
    }

    #[test]
    fn backlog_shows_unread_bytes_and_overflow_drops() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let idle = socket_backlog(&b).expect("SO_MEMINFO on Linux");
        assert_eq!((idle.queued, idle.drops), (0, 0));
        assert!(idle.capacity > 0);
        // Far more than the default buffer holds, never read.
        let datagram = [7u8; 1200];
        for _ in 0..4000 {
            let _ = a.send_to(&datagram, b.local_addr().unwrap());
        }
        let full = socket_backlog(&b).unwrap();
        assert!(full.queued > full.capacity / 2, "{full:?}");
        assert!(full.drops > 0, "the overflow is counted: {full:?}");
    }

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let mut q = SendQueue::default();
        for i in 0..40u8 {
            q.push(b.local_addr().unwrap(), None, vec![i; usize::from(i) + 1]);
        }
        assert_eq!(send_batch(&a, &mut q).unwrap(), 40);
        assert!(q.is_empty());
        let mut got = vec![];
        let mut batch = RecvBatch::default();
        for _ in 0..1000 {
            match recv_batch(&b, &mut batch) {
                Ok(_) => got.extend(batch.iter().map(|(from, _, d)| (from, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got.len() == 40 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 40);
        assert!(got.iter().all(|(from, _)| *from == a.local_addr().unwrap()));
        assert_eq!(got[39].1, vec![39u8; 40]);
    }

    type Received = (SocketAddr, Option<IpAddr>, Vec<u8>);

    /// Reads `n` datagrams from a non-blocking socket, waiting up to a second.
    fn recv_n(socket: &UdpSocket, batch: &mut RecvBatch, n: usize) -> Vec<Received> {
        let mut got = vec![];
        for _ in 0..1000 {
            match recv_batch(socket, batch) {
                Ok(_) => {
                    got.extend(batch.iter().map(|(f, l, d)| (f, l, d.to_vec())));
                    if got.len() >= n {
                        return got;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("nothing received");
    }

    /// A socket on 0.0.0.0 asked on 127.0.0.2 answers from 127.0.0.2: without the packet-info
    /// control message the kernel picks 127.0.0.1 (the route to the client's 127.0.0.1), the
    /// two-interface host's bug in miniature.
    #[test]
    fn replies_leave_from_the_address_the_request_came_to() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        assert!(local_address::enable(&server).unwrap());
        server.set_nonblocking(true).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_nonblocking(true).unwrap();
        let mut batch = RecvBatch::default();
        for second in ["127.0.0.2", "127.0.0.3"] {
            let second: IpAddr = second.parse().unwrap();
            client.send_to(b"check", (second, port)).unwrap();
            let (from, local, data) = recv_n(&server, &mut batch, 1).remove(0);
            assert_eq!(
                (from, local, &data[..]),
                (client.local_addr().unwrap(), Some(second), &b"check"[..])
            );
            let mut q = SendQueue::default();
            q.push(from, local, b"answer".to_vec());
            q.push(from, None, b"kernel's choice".to_vec());
            assert_eq!(send_batch(&server, &mut q).unwrap(), 2);
            let replies = recv_n(&client, &mut batch, 2);
            let (answered_from, _, data) = &replies[0];
            assert_eq!(
                (*answered_from, &data[..]),
                ((second, port).into(), &b"answer"[..])
            );
            let (default_from, _, _) = &replies[1];
            assert_ne!(
                default_from.ip(),
                second,
                "without it the reply leaves from elsewhere"
            );
        }
        let bound = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(
            !local_address::enable(&bound).unwrap(),
            "one address: nothing to pick"
        );
    }
}
