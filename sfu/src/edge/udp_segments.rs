//! UDP generic segmentation offload (`UDP_SEGMENT`, Linux 4.18+): a run of datagrams to one
//! destination goes down the stack as one send whose payload the kernel (or the NIC) cuts
//! into datagrams of a fixed size, so the IP/UDP output path is walked once per run instead
//! of once per datagram.
//!
//! A subscriber's connection is polled once per receive batch and hands out what was written
//! to it in a row: a video frame's packets, which a packetizer cuts at its maximum size with
//! a smaller last one — exactly the shape segmentation needs (every segment the same size,
//! the last one no larger). Measured before building this: 29–41 % of the datagrams in the
//! load test's video scenarios could join such a run; audio almost none (BENCHMARKS.md).

use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use super::local_address::{Control, CONTROL_LEN};
use super::udp_batch::int_option;

/// `UDP_SEGMENT` from `linux/udp.h` (not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;
/// The kernel's `UDP_MAX_SEGMENTS`.
pub const MAX_SEGMENTS: usize = 64;
/// A send's payload must fit one IP datagram.
const MAX_RUN_BYTES: usize = 65_000;

/// `CMSG_SPACE` of `len` data bytes on Linux: header and data, each padded to 8 bytes.
const fn cmsg_space(len: usize) -> usize {
    size_of::<libc::cmsghdr>().div_ceil(8) * 8 + len.div_ceil(8) * 8
}
// The source address message and the segment size fit one control buffer together.
const _: () = assert!(
    cmsg_space(size_of::<libc::in6_pktinfo>()) + cmsg_space(size_of::<u16>()) <= CONTROL_LEN
);

/// Whether the kernel knows `UDP_SEGMENT` (Linux 4.18+). An older one would not refuse the
/// control message: it would ignore it and send a run as one large datagram.
pub fn supported(socket: &impl AsRawFd) -> bool {
    int_option(socket, libc::SOL_UDP, UDP_SEGMENT).is_some()
}

/// How many datagrams from the front of `queued` can leave as one segmented send: the same
/// destination and source, the first one's size, and a last one no larger; at most `room`.
pub fn run_length(queued: &[(SocketAddr, Option<IpAddr>, Vec<u8>)], room: usize) -> usize {
    let Some((to, from, first)) = queued.first().filter(|_| room > 0) else {
        return 0;
    };
    let size = first.len();
    if size == 0 {
        return 1;
    }
    let max = room
        .min(MAX_SEGMENTS)
        .min(MAX_RUN_BYTES / size)
        .min(queued.len());
    let mut n = 1;
    while n < max {
        let (t, f, d) = &queued[n];
        if t != to || f != from || d.len() > size {
            break;
        }
        n += 1;
        if d.len() < size {
            break;
        }
    }
    n
}

/// Adds a `UDP_SEGMENT` control message of `size` to `msg`, after any control message
/// already written into `control` (the source address, `local_address::write`).
pub fn write_segment_size(msg: &mut libc::msghdr, control: &mut Control, size: u16) {
    // size_t on glibc, socklen_t on musl.
    #[allow(clippy::unnecessary_cast)]
    let written = msg.msg_controllen as usize;
    let used = if msg.msg_control.is_null() {
        0
    } else {
        written
    };
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; `used` is the aligned space of the message
    // written before (CMSG_SPACE), and both fit CONTROL_LEN (checked above), so the header
    // and its two data bytes are written inside `control`, which is aligned for cmsghdr.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
        debug_assert!(used + space <= CONTROL_LEN);
        let cmsg = control.0.as_mut_ptr().add(used).cast::<libc::cmsghdr>();
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
        msg.msg_controllen = (used + space) as _;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(items: &[(u16, usize)]) -> Vec<(SocketAddr, Option<IpAddr>, Vec<u8>)> {
        items
            .iter()
            .map(|(port, len)| {
                let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
                (to, None, vec![0u8; *len])
            })
            .collect()
    }

    #[test]
    fn this_kernel_segments() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        assert!(supported(&socket), "Linux 4.18+ knows UDP_SEGMENT");
    }

    #[test]
    fn a_frames_packets_to_one_subscriber_form_one_run_ending_at_the_smaller_last() {
        let q = queued(&[(1, 1200), (1, 1200), (1, 700), (1, 1200), (2, 1200)]);
        assert_eq!(run_length(&q, 64), 3);
        assert_eq!(run_length(&q[3..], 64), 1);
    }

    #[test]
    fn a_larger_datagram_or_another_destination_ends_a_run() {
        let q = queued(&[(1, 700), (1, 1200), (1, 700)]);
        assert_eq!(run_length(&q, 64), 1);
        let q = queued(&[(1, 1200), (2, 1200)]);
        assert_eq!(run_length(&q, 64), 1);
    }

    #[test]
    fn a_run_is_bounded_by_the_room_left_the_kernels_segments_and_one_ip_datagram() {
        let q = queued(&[(1, 1200); 100]);
        assert_eq!(run_length(&q, 5), 5);
        assert_eq!(run_length(&q, 0), 0);
        assert_eq!(run_length(&q, 1000), 54);
        let q = queued(&[(1, 100); 100]);
        assert_eq!(run_length(&q, 1000), MAX_SEGMENTS);
    }
}
