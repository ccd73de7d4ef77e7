//! Which of the host's addresses a datagram came to, and replying from it.
//!
//! A media socket bound to `0.0.0.0` (the default) receives on every address of the host, but
//! the kernel picks a reply's source address from the route to the client: on a host with
//! two interfaces (or two addresses on one), that can be another address than the candidate
//! the client checks against, and the client drops every answer and never connects. With
//! `IP_PKTINFO` / `IPV6_RECVPKTINFO` the kernel says, per datagram, which address it was sent
//! to (a control message beside it in `recvmmsg`), and the same control message on `sendmmsg`
//! makes it the reply's source. Both ride the existing batches; the buffers are fixed-size and
//! reused, so nothing is allocated per packet.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

/// Room for one packet-info control message of either family (`CMSG_SPACE` of
/// `in6_pktinfo`, the larger, is 40 bytes on 64-bit Linux), with margin.
pub const CONTROL_LEN: usize = 64;

/// A control-message buffer, aligned as `cmsghdr` requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Control(pub [u8; CONTROL_LEN]);

impl Default for Control {
    fn default() -> Self {
        Control([0; CONTROL_LEN])
    }
}

/// Asks the kernel to report each datagram's local address, if the socket is bound to the
/// unspecified address (bound to one address, replies leave from it anyway). Returns whether
/// it is on.
pub fn enable(socket: &std::net::UdpSocket) -> io::Result<bool> {
    let on: libc::c_int = 1;
    let set = |level, option| {
        // SAFETY: a valid open socket and a pointer to a c_int of the size passed.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                option,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let local = socket.local_addr()?;
    if !local.ip().is_unspecified() {
        return Ok(false);
    }
    match local.ip() {
        IpAddr::V4(_) => set(libc::IPPROTO_IP, libc::IP_PKTINFO)?,
        IpAddr::V6(_) => {
            set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
            // IPv4 clients of a dual-stack socket come with IP_PKTINFO.
            let _ = set(libc::IPPROTO_IP, libc::IP_PKTINFO);
        }
    }
    Ok(true)
}

/// The local address in a received message's control data, if the kernel put one there.
///
/// # Safety
/// `msg` must be a `msghdr` filled by `recvmsg`/`recvmmsg`, its control pointer and length
/// describing a live buffer.
pub unsafe fn read(msg: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: per the contract, the control buffer is live and its length is what the
    // kernel wrote; the CMSG_* macros stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let h = &*cmsg;
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// Writes a control message making `from` the source of the datagram `msg` sends, and points
/// `msg` at it.
pub fn write(msg: &mut libc::msghdr, control: &mut Control, from: IpAddr) {
    let (level, kind, len) = match from {
        IpAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            size_of::<libc::in_pktinfo>(),
        ),
        IpAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            size_of::<libc::in6_pktinfo>(),
        ),
    };
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; CONTROL_LEN holds the space of either
    // message (checked below), and CMSG_FIRSTHDR of a msghdr whose control buffer is at least
    // one cmsghdr long is that buffer's start.
    unsafe {
        let space = libc::CMSG_SPACE(len as u32) as usize;
        debug_assert!(space <= CONTROL_LEN);
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as _;
        let data = libc::CMSG_DATA(cmsg);
        match from {
            IpAddr::V4(ip) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(data.cast(), info);
            }
            IpAddr::V6(ip) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                std::ptr::write_unaligned(data.cast(), info);
            }
        }
    }
}

const _: () = assert!(size_of::<libc::cmsghdr>() + size_of::<libc::in6_pktinfo>() <= CONTROL_LEN);
