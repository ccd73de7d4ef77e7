//! Which of str0m's due timeouts a connection is handed inside one poll.
//!
//! With send-side bandwidth estimation on (every subscriber connection while bandwidth
//! allocation is on) str0m paces through its leaky-bucket pacer, which releases **one
//! packet per `handle_timeout`** and then asks for a timeout a microsecond after the last one
//! (`LeakyBucketPacer::poll_queue`, `request_immediate_timeout` in str0m 0.25). Unpaced
//! audio waits for those steps too, and written media sits unstamped in str0m's send queue
//! until a timeout. A driver that takes such a timeout like any other — in its next timer
//! pass, after the next receive batch — sends one packet per connection per loop iteration:
//! fine while the loop spins freely, but a saturated worker iterates a few hundred times a
//! second, so every subscriber's packets (audio included) queued inside str0m for seconds
//! and its memory grew (measured: BENCHMARKS.md, classroom section, "The spiral on one
//! saturated worker"). Without BWE str0m's null pacer sends everything queued in one poll,
//! which is why the same worker kept up with allocation off.
//!
//! So a timeout already due by the clock is handed over at once and polling goes on, up to
//! [`MAX_STEPS`] per poll. It is handed the clock, not the wake's `now`: str0m ignores a
//! time older than one it already had, and its pacer's "last + 1 µs" is past `now` after the
//! first step. Pacing is kept: a video queue that has used its burst asks for a timeout tens
//! of milliseconds ahead, padding a few milliseconds ahead, and both end the poll.

use std::time::{Duration, Instant};

/// Only a timeout this close past the wake's `now` is checked against the clock (reading
/// the clock for every far timeout would cost a syscall-free but needless read per poll).
pub const HORIZON: Duration = Duration::from_micros(200);

/// Steps handed to one connection in one poll: a keyframe's packets to one subscriber fit;
/// the rest waits for the timer queue, so a timeout str0m keeps asking for cannot spin and
/// one connection cannot hold the worker.
pub const MAX_STEPS: usize = 64;

/// Counts the inline steps of one poll of one connection.
#[derive(Debug, Default)]
pub struct PacerSteps {
    taken: usize,
}

impl PacerSteps {
    /// str0m asked for a timeout at `at` during a wake at `now`: the instant to hand it right
    /// away and keep polling (read from `clock`), or `None` to arm the timer and end the poll.
    pub fn next(
        &mut self,
        at: Instant,
        now: Instant,
        clock: impl FnOnce() -> Instant,
    ) -> Option<Instant> {
        if self.taken >= MAX_STEPS || at > now + HORIZON {
            return None;
        }
        let clock = clock();
        if at > clock {
            return None;
        }
        self.taken += 1;
        Some(clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacers_next_microsecond_is_run_at_the_clock() {
        let now = Instant::now();
        let mut s = PacerSteps::default();
        // After the first step the pacer asks for "last + 1 µs", past the wake's `now`; the
        // clock has moved on, and str0m is handed the clock (never older than its last time).
        let clock = now + Duration::from_micros(30);
        let at = now + Duration::from_micros(1);
        assert_eq!(s.next(at, now, || clock), Some(clock));
        let later = clock + Duration::from_micros(20);
        assert_eq!(
            s.next(clock + Duration::from_micros(1), now, || later),
            Some(later)
        );
        // Long overdue: handed the clock too.
        assert_eq!(
            s.next(now - Duration::from_millis(3), now, || later),
            Some(later)
        );
    }

    #[test]
    fn a_timeout_not_yet_due_by_the_clock_waits() {
        let now = Instant::now();
        let mut s = PacerSteps::default();
        assert_eq!(
            s.next(now + Duration::from_micros(100), now, || now
                + Duration::from_micros(50)),
            None
        );
    }

    #[test]
    fn pacing_and_padding_waits_end_the_poll_without_reading_the_clock() {
        let now = Instant::now();
        let mut s = PacerSteps::default();
        // A video burst used up (tens of ms) and padding (a few ms) wait for the timer.
        let clock = || -> Instant { panic!("clock read for a far timeout") };
        assert_eq!(s.next(now + Duration::from_millis(40), now, clock), None);
        assert_eq!(s.next(now + Duration::from_millis(5), now, clock), None);
    }

    #[test]
    fn one_poll_runs_a_bounded_number_of_steps() {
        let now = Instant::now();
        let mut s = PacerSteps::default();
        let ran = (0..1000)
            .filter(|_| s.next(now, now, || now).is_some())
            .count();
        assert_eq!(ran, MAX_STEPS);
    }
}
