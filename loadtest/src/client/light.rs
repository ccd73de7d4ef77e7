//! Light receivers: subscribers that complete ICE, DTLS and SRTP through str0m like any other
//! but hand it only what they must. SRTP leaves the RTP header in the clear, so every media
//! datagram is accounted from its header alone (SSRC, sequence number, RTP timestamp: loss,
//! jitter, stalls, bytes), and only a sample of them, plus every STUN, DTLS and RTCP datagram,
//! goes through str0m to be decrypted, which reads the publisher's send stamp (latency).
//!
//! What it costs: str0m sees a gap of `sample - 1` packets between samples, so this peer's RTCP
//! (receiver reports, transport-wide feedback) tells the server most packets were lost. The
//! server's own loss figures for light receivers mean nothing; the tester's do.

/// The plain fields of an SRTP packet's RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHead {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
}

/// The RTP header of `datagram`, or `None` for STUN, DTLS, RTCP (RFC 5761 demultiplexing:
/// RTCP packet types 192–223 sit where RTP's marker bit and payload type do) and anything
/// too short to be RTP.
pub fn rtp_head(datagram: &[u8]) -> Option<RtpHead> {
    if datagram.len() < 12 || datagram[0] & 0xC0 != 0x80 || (192..=223).contains(&datagram[1]) {
        return None;
    }
    let u32_at = |i: usize| {
        u32::from_be_bytes([
            datagram[i],
            datagram[i + 1],
            datagram[i + 2],
            datagram[i + 3],
        ])
    };
    Some(RtpHead {
        ssrc: u32_at(8),
        seq: u16::from_be_bytes([datagram[2], datagram[3]]),
        timestamp: u32_at(4),
        payload_type: datagram[1] & 0x7F,
    })
}

/// The extended sequence number of `seq`, the one nearest to the last extended one (so a
/// packet reordered across a wrap still lands before it).
pub fn extend_seq(last: u64, seq: u16) -> u64 {
    let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
    (last as i64 + delta).max(0) as u64
}

/// Whether this packet is one of the decrypted sample: one sequence number in `every`, so that
/// every receiver of a stream samples the same packets and a run's latency figures cover the
/// whole run evenly.
pub fn sampled(seq: u16, every: u16) -> bool {
    every <= 1 || seq % every == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rtp_headers_and_leaves_the_rest_to_str0m() {
        let mut rtp = [0u8; 40];
        rtp[0] = 0x90; // v2, extension bit
        rtp[1] = 0x80 | 111; // marker, Opus
        rtp[2..4].copy_from_slice(&0xFFFEu16.to_be_bytes());
        rtp[4..8].copy_from_slice(&960u32.to_be_bytes());
        rtp[8..12].copy_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
        assert_eq!(
            rtp_head(&rtp),
            Some(RtpHead {
                ssrc: 0xDEAD_BEEF,
                seq: 0xFFFE,
                timestamp: 960,
                payload_type: 111
            })
        );
        let mut rtcp = rtp;
        rtcp[1] = 201; // receiver report
        assert_eq!(rtp_head(&rtcp), None);
        let mut stun = rtp;
        stun[0] = 0x00;
        assert_eq!(rtp_head(&stun), None);
        let mut dtls = rtp;
        dtls[0] = 22;
        assert_eq!(rtp_head(&dtls), None);
        assert_eq!(rtp_head(&rtp[..11]), None);
    }

    #[test]
    fn sequence_numbers_extend_across_the_wrap_and_reordering() {
        assert_eq!(extend_seq(65_535, 0), 65_536);
        assert_eq!(
            extend_seq(65_536, 65_535),
            65_535,
            "late packet from before the wrap"
        );
        assert_eq!(extend_seq(70_000, 70_010u64 as u16), 70_010);
        assert_eq!(extend_seq(3, 65_534), 0, "never below zero");
        assert!(sampled(20, 10) && !sampled(21, 10) && sampled(21, 1));
    }
}
