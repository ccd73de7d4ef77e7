//! When str0m's pacer "immediate" step can wait for the next write.
//!
//! With send-side bandwidth estimation on, str0m's leaky-bucket pacer releases one packet
//! per `handle_timeout` and, after each release, asks for a timeout one microsecond later
//! (`PacerReason::Immediate`, `request_immediate_timeout` in str0m 0.25) so that time
//! advances before it releases the next. `edge::pacer_steps` hands that timeout over at once,
//! which is right while more is queued (a video frame's packets leave in one wake). But a
//! subscriber that was written one audio packet gets it sent after the first timeout, and the
//! second one finds nothing to release: a full `do_handle_timeout` (ICE, SCTP, every stream,
//! BWE) and one more `poll_output` walk per forwarded audio packet, for nothing. Measured on
//! `audio --speakers 2 --listeners 100`: 2.0 timeouts and 3.2 polls per forwarded packet.
//!
//! So when everything the poll sent was media we wrote, all of it has left, and none of it was
//! video, the "immediate" step waits [`DEFER`] instead: the next packet written to the
//! connection is handed a timeout anyway (`Worker::drain`), which does the step's work, and
//! any received datagram does too (str0m runs its timeout handling on every input). Only
//! str0m's own sends (RTCP reports, stats, padding, probes) can wait, by at most [`DEFER`].
//! A poll that sent anything else (RTCP is fine, padding or a retransmission is not: the pacer
//! may be probing or repairing) or still has written media queued steps as before.
//!
//! Never on a connection that has a video m-line (`Connection::sends_video`): str0m sends its
//! probes at pacer steps, and a viewer whose video waits for its estimate to grow (audio
//! only flowing until then) had them deferred behind every audio packet: in the load test's
//! 1 → 50 livestream of a single-layer camera, 32–35 viewers never got the video in 15 s.
//!
//! Sans-IO: the datagrams' plain RTP headers and instants in, a decision out.

use std::time::{Duration, Instant};

use str0m::{PacerReason, Reason};

/// How long an "immediate" pacer step with nothing left to release may wait for the next
/// write. Longer than an Opus frame (20 ms), so that a lone speaker's next packet takes the
/// step over; short next to str0m's own periodic work (reports every 500 ms, stats every
/// 250 ms).
pub const DEFER: Duration = Duration::from_millis(25);

/// Media written to one connection since its last poll, and what its poll sent of it.
#[derive(Debug, Default, Clone)]
pub struct WrittenMedia {
    /// Packets written and not yet seen leaving.
    pending: u32,
    /// Payload types written (bit `pt`; RTP payload types are 7 bits).
    pts: u128,
    /// A video packet was written: its frame's pacing is str0m's business, never deferred.
    video: bool,
    /// The poll sent an RTP packet we did not write (padding, a probe, a retransmission).
    foreign: bool,
}

impl WrittenMedia {
    /// A packet with payload type `pt` was written to one of the connection's streams.
    #[inline]
    pub fn wrote(&mut self, pt: u8, video: bool) {
        self.pending = self.pending.saturating_add(1);
        self.pts |= 1u128 << (pt & 0x7f);
        self.video |= video;
    }

    /// The connection's poll emitted `datagram` (SRTP keeps the RTP header in the clear).
    #[inline]
    pub fn transmitted(&mut self, datagram: &[u8]) {
        let (Some(&b0), Some(&b1)) = (datagram.first(), datagram.get(1)) else {
            return;
        };
        // RFC 7983: RTP and RTCP start with version 2; STUN and DTLS are neither.
        if b0 >> 6 != 2 {
            return;
        }
        // RFC 5761: RTCP packet types 192-223 where RTP has marker + payload type.
        if (192..=223).contains(&b1) {
            return;
        }
        let padded = b0 & 0x20 != 0;
        if !padded && self.pts & (1u128 << (b1 & 0x7f)) != 0 && self.pending > 0 {
            self.pending -= 1;
        } else {
            self.foreign = true;
        }
    }

    /// The poll ended in a timeout at `at` for `reason` during a wake at `now`: the instant
    /// to arm instead of taking the step, or `None` to go on as before. Either way the
    /// written media is accounted for and forgotten.
    pub fn defer(&mut self, reason: Reason, at: Instant, now: Instant) -> Option<Instant> {
        let wrote = self.pts != 0;
        let all_ours_left = wrote && self.pending == 0 && !self.foreign && !self.video;
        if reason != Reason::Pacer(PacerReason::Immediate) {
            // No pacer step asked for (str0m's null pacer without bandwidth estimation sends
            // everything at once; a paced queue waits for its budget): nothing to decide.
            // What is still queued is kept for the poll that ends in an immediate step.
            if self.pending == 0 {
                *self = WrittenMedia::default();
            }
            return None;
        }
        *self = WrittenMedia::default();
        all_ours_left.then(|| at.max(now + DEFER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPUS: u8 = 111;
    const VP8: u8 = 96;

    fn rtp(pt: u8, padded: bool) -> Vec<u8> {
        let mut d = vec![0u8; 40];
        d[0] = 0x80 | if padded { 0x20 } else { 0 };
        d[1] = pt | 0x80; // marker set: still the payload type
        d
    }

    fn immediate() -> Reason {
        Reason::Pacer(PacerReason::Immediate)
    }

    #[test]
    fn an_audio_packet_that_left_defers_the_empty_step() {
        let now = Instant::now();
        let mut w = WrittenMedia::default();
        w.wrote(OPUS, false);
        w.wrote(OPUS, false);
        w.transmitted(&rtp(OPUS, false));
        // One of two still queued: the step releases it.
        let at = now + Duration::from_micros(1);
        w.transmitted(&[0x80, 200, 0, 1]); // an RTCP sender report does not count
        let mut pending = w.clone();
        assert_eq!(pending.defer(immediate(), at, now), None);
        w.transmitted(&rtp(OPUS, false));
        assert_eq!(w.defer(immediate(), at, now), Some(now + DEFER));
        // Forgotten: the next poll (a timer, a received datagram) steps as before.
        assert_eq!(w.defer(immediate(), at, now), None);
    }

    #[test]
    fn padding_retransmissions_and_video_keep_the_step() {
        let now = Instant::now();
        let at = now + Duration::from_micros(1);
        // Padding (a probe) went out: the pacer is busy, step.
        let mut w = WrittenMedia::default();
        w.wrote(OPUS, false);
        w.transmitted(&rtp(OPUS, true));
        w.transmitted(&rtp(OPUS, false));
        assert_eq!(w.defer(immediate(), at, now), None);
        // A retransmission on the RTX payload type.
        let mut w = WrittenMedia::default();
        w.wrote(VP8, false);
        w.transmitted(&rtp(97, false));
        w.transmitted(&rtp(VP8, false));
        assert_eq!(w.defer(immediate(), at, now), None);
        // Video: str0m paces the frame.
        let mut w = WrittenMedia::default();
        w.wrote(OPUS, false);
        w.wrote(VP8, true);
        w.transmitted(&rtp(OPUS, false));
        w.transmitted(&rtp(VP8, false));
        assert_eq!(w.defer(immediate(), at, now), None);
    }

    #[test]
    fn nothing_written_nothing_deferred() {
        let now = Instant::now();
        let at = now + Duration::from_micros(1);
        let mut w = WrittenMedia::default();
        // A poll after a received datagram or a timer: str0m's own work steps as before.
        w.transmitted(&[0x80, 201, 0, 1]);
        assert_eq!(w.defer(immediate(), at, now), None);
    }

    #[test]
    fn other_timeouts_are_left_alone() {
        let now = Instant::now();
        let later = now + Duration::from_millis(3);
        // Queued media waiting for its budget: the record is kept for the step that sends it.
        let mut w = WrittenMedia::default();
        w.wrote(OPUS, false);
        assert_eq!(w.defer(Reason::Pacer(PacerReason::Paced), later, now), None);
        w.transmitted(&rtp(OPUS, false));
        assert_eq!(
            w.defer(immediate(), now + Duration::from_micros(1), now),
            Some(now + DEFER)
        );
        // Without bandwidth estimation str0m never asks for a step: forgotten once sent.
        let mut w = WrittenMedia::default();
        w.wrote(OPUS, false);
        w.transmitted(&rtp(OPUS, false));
        assert_eq!(w.defer(Reason::Feedback, later, now), None);
        assert_eq!(
            w.defer(immediate(), now, now),
            None,
            "nothing written since"
        );
    }

    #[test]
    fn stun_and_dtls_are_not_rtp() {
        let now = Instant::now();
        let mut w = WrittenMedia::default();
        w.wrote(OPUS, false);
        w.transmitted(&[0x00, 0x01, 0, 0]); // STUN binding request
        w.transmitted(&[22, 0xfe, 0xfd]); // DTLS handshake
        w.transmitted(&[0x80]); // too short to tell
        w.transmitted(&rtp(OPUS, false));
        assert_eq!(
            w.defer(immediate(), now, now),
            Some(now + DEFER),
            "only the audio counted"
        );
    }
}
