//! Running str0m's pacer steps within one poll of a connection.
//!
//! With send-side bandwidth estimation on (every subscriber connection while bandwidth
//! allocation is on) str0m paces through its leaky-bucket pacer, which releases **one
//! packet per `handle_timeout`** and then asks for a timeout a microsecond later
//! (`LeakyBucketPacer::poll_queue`, `request_immediate_timeout` in str0m 0.25). Unpaced
//! audio waits for those steps too. A driver that takes that timeout like any other — in its
//! next timer pass, after the next receive batch — sends one packet per connection per loop
//! iteration: fine while the loop spins freely, but a saturated worker iterates a few
//! hundred times a second, so every subscriber's packets (audio included) queue inside
//! str0m for seconds and its memory grows (measured: BENCHMARKS.md, classroom section,
//! "The spiral on one saturated worker"). Without BWE str0m's null pacer sends everything
//! queued in one poll, which is why the same worker kept up with allocation off.
//!
//! So a timeout that is only the pacer's next step (due within [`STEP`] of now) is fed back
//! at once and polling goes on, up to [`MAX_STEPS`] per poll. Pacing is kept: a video
//! queue that has used its burst asks for a timeout tens of milliseconds ahead, and padding
//! for a few milliseconds ahead, and both end the poll.

use std::time::{Duration, Instant};

/// A timeout this close is the pacer's next step, run now. str0m's own step is 1 µs; the
/// margin covers a connection whose clock is a little ahead of the driver's `now`.
pub const STEP: Duration = Duration::from_micros(500);

/// Steps run in one poll of one connection: a keyframe's packets and a few audio frames;
/// the rest waits for the next pass, so one connection cannot hold the worker.
pub const MAX_STEPS: u32 = 128;

/// Counts the steps of one poll.
#[derive(Debug, Default)]
pub struct PacerSteps {
    taken: u32,
}

impl PacerSteps {
    /// str0m asked for a timeout at `at` during a poll at `now`: the instant to feed it
    /// right away and keep polling, or `None` to end the poll.
    pub fn next(&mut self, at: Instant, now: Instant) -> Option<Instant> {
        if self.taken >= MAX_STEPS || at > now + STEP {
            return None;
        }
        self.taken += 1;
        Some(at.max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacers_next_microsecond_is_run_now() {
        let now = Instant::now();
        let mut s = PacerSteps::default();
        let at = now + Duration::from_micros(1);
        assert_eq!(s.next(at, now), Some(at));
        // Already due: fed at the driver's time.
        assert_eq!(s.next(now - Duration::from_millis(3), now), Some(now));
    }

    #[test]
    fn pacing_and_padding_waits_end_the_poll() {
        let now = Instant::now();
        let mut s = PacerSteps::default();
        // A video burst used up (tens of ms) and padding (a few ms) wait for the timer.
        assert_eq!(s.next(now + Duration::from_millis(40), now), None);
        assert_eq!(s.next(now + Duration::from_millis(5), now), None);
    }

    #[test]
    fn one_poll_runs_a_bounded_number_of_steps() {
        let now = Instant::now();
        let mut s = PacerSteps::default();
        let ran = (0..1000).filter(|_| s.next(now, now).is_some()).count();
        assert_eq!(ran, MAX_STEPS as usize);
    }
}
