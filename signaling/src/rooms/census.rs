//! Counts of what the hub holds, read by the metrics endpoint at scrape time.

use super::Hub;

/// Rooms, participants and calls at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub rooms: usize,
    /// Participants with a socket attached (those in reconnect grace are not counted).
    pub participants: usize,
    /// Calls ringing or in progress.
    pub calls_active: usize,
}

impl Hub {
    pub fn census(&self) -> Census {
        let state = self.lock();
        Census {
            rooms: state.rooms.len(),
            participants: state
                .participants
                .values()
                .filter(|p| p.outbox.is_some())
                .count(),
            calls_active: state.calls.active_count(),
        }
    }
}
