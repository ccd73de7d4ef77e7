//! What happens when a media worker thread panics.
//!
//! Without supervision the thread just ends: its rooms freeze, its `running` flag stays set so
//! the node still reads as ready, and placement keeps sending rooms to it. Instead the panic is
//! caught at the thread's root, counted and logged, the worker is marked dead (so readiness
//! drops and placement avoids it), and its participants are handed back to signaling in one
//! [`SfuEvent::WorkerLost`] so it can set their media up again on a live worker.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::placement::Placement;
use crate::api::SfuEvent;
use crate::stats::SfuStats;

/// What a worker thread needs to report its own death.
pub(super) struct Supervisor {
    pub index: usize,
    pub placement: Arc<Mutex<Placement>>,
    pub events: mpsc::UnboundedSender<SfuEvent>,
    pub stats: Arc<SfuStats>,
    pub relay: crate::edge::relay_pipe::RelayControlSenders,
    /// Rooms spanning nodes, and the gateway's relay index: their spans keep the gateway.
    pub cascaded: Arc<Mutex<std::collections::HashSet<crate::api::RoomId>>>,
    pub gateway: usize,
}

impl Supervisor {
    /// Runs a worker thread's body; a panic in it ends the worker, not the process.
    pub fn run(self, body: impl FnOnce()) {
        // The worker's state is dropped with the panic and never looked at again, so a
        // half-updated invariant in it cannot be observed.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
            self.worker_died(&panic_message(payload.as_ref()));
        }
    }

    fn worker_died(&self, message: &str) {
        SfuStats::add(&self.stats.worker_panics, 1);
        if let Some(w) = self.stats.workers.get(self.index) {
            w.running.store(false, Ordering::Relaxed);
        }
        // The placement lock is never held by a worker, so this panic cannot have poisoned it;
        // another one could, and the maps stay consistent enough to keep placing.
        let (participants, spans) = self
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lose_worker(self.index);
        // Workers sharing a room with the dead one drop its tracks and subscriptions.
        for span in spans {
            let cascaded = self.cascaded.lock().is_ok_and(|c| c.contains(&span.room));
            super::announce_span(&self.relay, span, cascaded.then_some(self.gateway));
        }
        tracing::error!(
            worker = self.index,
            participants = participants.len(),
            "media worker panicked: {message}; it takes no more rooms and its participants \
             are handed back to signaling"
        );
        if !participants.is_empty() {
            let _ = self.events.send(SfuEvent::WorkerLost { participants });
        }
    }
}

/// The text of a panic, as `panic!` and `expect` make it.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}
