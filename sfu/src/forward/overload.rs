//! Load shedding. A worker thread that cannot keep up lets ingress queue in its socket until
//! the kernel drops datagrams, and a dropped datagram is lost for every subscriber of its
//! track, the teacher's audio included. Before that happens the worker stops forwarding the
//! video that costs the most copies for the least value: thumbnails first, then every camera.
//! Audio and screen shares are never shed.
//!
//! The signal is the socket's own backlog, sampled twice a second: bytes waiting to be read
//! and the kernel's drop counter. A busy thread that still empties its socket is keeping up
//! (on loopback half its time is the receivers' side of `sendmmsg`); a growing queue is not.
//! The guard sees only those samples and `now`; the router applies the level it returns.

use std::time::{Duration, Instant};

use super::layer_selector::Want;

/// How often the backlog is judged.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Queued bytes above this share of the receive buffer (1/4: ~0.2 s of a 200-student class's
/// ingress with the 4 MiB buffer) mean the worker is falling behind.
const BEHIND_DIVISOR: usize = 4;
/// Below this share (1/32) the socket is being emptied.
const CALM_DIVISOR: usize = 32;
/// After a raise the worker first works off the backlog: give the new level this long to
/// show its effect before raising again.
const HOLD: Duration = Duration::from_secs(2);
/// Calm windows needed to lower the level (3 s), doubled each time the load comes straight
/// back, so a worker just at its limit does not flap thumbnails on and off every few seconds.
const CALM_WINDOWS: u32 = 6;
const MAX_CALM_WINDOWS: u32 = 120;
/// A raise this soon after a lowering means the lowering was premature.
const RELAPSE: Duration = Duration::from_secs(10);

/// The media socket's receive queue, as the kernel reports it (`SO_MEMINFO`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Bytes (with kernel overhead) waiting to be read.
    pub queued: usize,
    /// The receive buffer those bytes count against.
    pub capacity: usize,
    /// Datagrams dropped because the buffer was full, since the socket opened.
    pub drops: u64,
}

/// Which video the worker stops forwarding, in the order it gives them up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shedding {
    #[default]
    None,
    /// Cameras rendered smaller than [`THUMBNAIL_AREA`] (gallery tiles).
    Thumbnails,
    /// Every camera: audio and screen shares only.
    Cameras,
}

impl Shedding {
    /// The value of the `zvon_worker_shedding_level` gauge.
    pub fn level(self) -> u64 {
        self as u64
    }

    /// Whether a subscriber's copy of a camera with this `want` is shed at this level.
    pub fn sheds(self, want: Want) -> bool {
        match self {
            Shedding::None => false,
            Shedding::Thumbnails => is_thumbnail(want),
            Shedding::Cameras => true,
        }
    }
}

/// Rendered below 640x360: a tile, not the main view.
pub const THUMBNAIL_AREA: u32 = 640 * 360;

fn is_thumbnail(want: Want) -> bool {
    match want {
        Want::Size { width, height } => u32::from(width) * u32::from(height) < THUMBNAIL_AREA,
        Want::Paused | Want::Highest => false,
    }
}

#[derive(Debug)]
pub struct OverloadGuard {
    level: Shedding,
    next_sample: Option<Instant>,
    drops: Option<u64>,
    calm: u32,
    calm_needed: u32,
    last_raise: Option<Instant>,
    last_lower: Option<Instant>,
}

impl Default for OverloadGuard {
    fn default() -> Self {
        OverloadGuard {
            level: Shedding::None,
            next_sample: None,
            drops: None,
            calm: 0,
            calm_needed: CALM_WINDOWS,
            last_raise: None,
            last_lower: None,
        }
    }
}

impl OverloadGuard {
    pub fn level(&self) -> Shedding {
        self.level
    }

    /// Whether [`OverloadGuard::judge`] wants a backlog sample at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next_sample.is_none_or(|t| now >= t)
    }

    /// A backlog sample taken at `now`. Returns the new level when it changes.
    pub fn judge(&mut self, backlog: Backlog, now: Instant) -> Option<Shedding> {
        self.next_sample = Some(now + WINDOW);
        let dropped = self.drops.is_some_and(|d| backlog.drops > d);
        self.drops = Some(backlog.drops);
        let capacity = backlog.capacity.max(1);
        if dropped || backlog.queued > capacity / BEHIND_DIVISOR {
            self.calm = 0;
            return self.raise(now);
        }
        if backlog.queued > capacity / CALM_DIVISOR {
            self.calm = 0;
            return None;
        }
        if self.level == Shedding::None {
            // A long calm forgets the caution learnt from relapses.
            if self
                .last_lower
                .is_some_and(|t| now.duration_since(t) > RELAPSE * 3)
            {
                self.calm_needed = CALM_WINDOWS;
            }
            return None;
        }
        self.calm += 1;
        if self.calm < self.calm_needed {
            return None;
        }
        self.calm = 0;
        self.last_lower = Some(now);
        self.level = match self.level {
            Shedding::Cameras => Shedding::Thumbnails,
            _ => Shedding::None,
        };
        Some(self.level)
    }

    fn raise(&mut self, now: Instant) -> Option<Shedding> {
        if self.level == Shedding::Cameras
            || self
                .last_raise
                .is_some_and(|t| now.duration_since(t) < HOLD)
        {
            return None;
        }
        if self
            .last_lower
            .is_some_and(|t| now.duration_since(t) < RELAPSE)
        {
            self.calm_needed = (self.calm_needed * 2).min(MAX_CALM_WINDOWS);
        }
        self.last_raise = Some(now);
        self.level = match self.level {
            Shedding::None => Shedding::Thumbnails,
            _ => Shedding::Cameras,
        };
        Some(self.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUFFER: usize = 8 << 20;

    /// Samples every window for `secs` from `from_secs` with `queued` bytes waiting and
    /// `new_drops` more drops each window; returns the level changes with their times.
    fn run(
        g: &mut OverloadGuard,
        start: Instant,
        (from_secs, secs): (f64, f64),
        queued: usize,
        new_drops: u64,
    ) -> Vec<(f64, Shedding)> {
        let mut changes = vec![];
        let mut t = Duration::from_secs_f64(from_secs);
        let end = Duration::from_secs_f64(from_secs + secs);
        while t < end {
            t += Duration::from_millis(10);
            if !g.due(start + t) {
                continue;
            }
            let drops = g.drops.unwrap_or(0) + new_drops;
            let backlog = Backlog {
                queued,
                capacity: BUFFER,
                drops,
            };
            if let Some(l) = g.judge(backlog, start + t) {
                changes.push((t.as_secs_f64(), l));
            }
        }
        changes
    }

    #[test]
    fn a_growing_backlog_sheds_thumbnails_then_cameras_not_faster_than_the_hold() {
        let start = Instant::now();
        let mut g = OverloadGuard::default();
        assert!(
            run(&mut g, start, (0.0, 5.0), BUFFER / 20, 0).is_empty(),
            "a busy worker that keeps its socket short is keeping up"
        );
        let changes = run(&mut g, start, (5.0, 5.0), BUFFER / 2, 0);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].1, Shedding::Thumbnails);
        assert!(
            changes[0].0 <= 5.6,
            "the first behind window raises: {changes:?}"
        );
        assert_eq!(changes[1].1, Shedding::Cameras);
        assert!(
            changes[1].0 - changes[0].0 >= HOLD.as_secs_f64(),
            "the backlog after a raise must not escalate at once: {changes:?}"
        );
    }

    #[test]
    fn kernel_drops_alone_raise_the_level() {
        let start = Instant::now();
        let mut g = OverloadGuard::default();
        run(&mut g, start, (0.0, 1.0), 0, 0);
        let changes = run(&mut g, start, (1.0, 1.0), 0, 50);
        assert_eq!(changes.first().map(|c| c.1), Some(Shedding::Thumbnails));
    }

    #[test]
    fn calm_lowers_one_level_at_a_time_and_a_relapse_makes_it_more_cautious() {
        let start = Instant::now();
        let mut g = OverloadGuard::default();
        run(&mut g, start, (0.0, 1.0), BUFFER / 2, 0);
        assert_eq!(g.level(), Shedding::Thumbnails);
        // A queue between calm and behind holds the level.
        assert!(run(&mut g, start, (1.0, 10.0), BUFFER / 8, 0).is_empty());
        let lowered = run(&mut g, start, (11.0, 5.0), 0, 0);
        assert_eq!(lowered.len(), 1, "{lowered:?}");
        assert_eq!(lowered[0].1, Shedding::None);
        let first_calm = lowered[0].0 - 11.0;
        assert!(
            (2.5..=3.6).contains(&first_calm),
            "3 s of calm: {first_calm}"
        );

        // Load back within seconds: raise again, and now it takes twice the calm to lower.
        let back = run(&mut g, start, (16.0, 1.0), BUFFER / 2, 0);
        assert_eq!(back.first().map(|c| c.1), Some(Shedding::Thumbnails));
        let lowered = run(&mut g, start, (17.0, 10.0), 0, 0);
        let second_calm = lowered[0].0 - 17.0;
        assert!(
            (5.5..=6.6).contains(&second_calm),
            "6 s of calm: {second_calm}"
        );
    }

    #[test]
    fn only_small_renderings_are_thumbnails_and_nothing_is_shed_at_none() {
        let thumb = Want::Size {
            width: 320,
            height: 180,
        };
        let main = Want::Size {
            width: 1280,
            height: 720,
        };
        assert!(Shedding::Thumbnails.sheds(thumb));
        assert!(!Shedding::Thumbnails.sheds(main));
        assert!(!Shedding::Thumbnails.sheds(Want::Highest));
        assert!(Shedding::Cameras.sheds(main));
        assert!(!Shedding::None.sheds(thumb));
    }
}
