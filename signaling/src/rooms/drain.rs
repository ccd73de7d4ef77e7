//! Shutting one server down gently (all-in-one mode; a fleet node drains through `fleet/`):
//! no new joins, every session told how long it has, then every socket closed with 1001.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::info;

use super::Hub;
use crate::protocol::ServerMessage;

/// How often the drain looks whether everyone has left.
const POLL: Duration = Duration::from_millis(200);
/// Lets the 1001 close frames go out before the process exits.
const CLOSE_FLUSH: Duration = Duration::from_millis(300);

impl Hub {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stops taking joins and tells every participant the server goes away within `timeout`.
    pub fn start_draining(&self, timeout: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let message = ServerMessage::ServerDraining {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let state = self.lock();
        for pid in state.participants.keys() {
            state.send(pid, message.clone());
        }
    }

    /// The whole drain: waits until every participant has left or `timeout` passed, then
    /// closes every remaining socket (participants and devices) with 1001.
    pub async fn drain(&self, timeout: Duration) {
        self.start_draining(timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        info!(
            participants = self.participant_count(),
            ?timeout,
            "draining: no new joins"
        );
        while self.participant_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        let closed = self.hand_over_all();
        info!(
            left_behind = self.participant_count(),
            closed, "drained: remaining sockets closed with 1001"
        );
        if closed > 0 {
            tokio::time::sleep(CLOSE_FLUSH).await;
        }
    }
}
