//! Counters of this node's life in the fleet, read by the metrics collector at scrape time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Default)]
pub struct FleetStats {
    pub placements: AtomicU64,
    pub placement_failures: AtomicU64,
    pub link_failures: AtomicU64,
    /// Media nodes whose link died while rooms of ours were on them.
    pub nodes_lost: AtomicU64,
    /// Participants moved to another media node (failover or drain).
    pub participants_moved: AtomicU64,
    pub failovers_failed: AtomicU64,
    pub drained_participants: AtomicU64,
    /// Participants taken over from a signaling node that died, media untouched.
    pub adopted: AtomicU64,
    pub rooms_claimed: AtomicU64,
    /// Rooms this node owned until another node took them (a stale epoch).
    pub rooms_lost: AtomicU64,
    pub rooms_owned: AtomicU64,
    /// Joins refused because the registry could not say who owns the room.
    pub joins_refused: AtomicU64,
    pub proxied_sessions: AtomicU64,
    pub proxied_sessions_open: AtomicU64,
    /// Nodes with a live lease by role, as last listed.
    pub nodes_signaling: AtomicU64,
    pub nodes_media: AtomicU64,
    pub lease_ok: AtomicBool,
    /// The node removed its lease on the way out; no heartbeat may put it back.
    pub left: AtomicBool,
    pub draining: AtomicBool,
}

impl FleetStats {
    fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
    pub fn placed(&self) {
        Self::bump(&self.placements, 1);
    }
    pub fn placement_failed(&self) {
        Self::bump(&self.placement_failures, 1);
    }
    pub fn link_failed(&self) {
        Self::bump(&self.link_failures, 1);
    }
    pub fn node_lost(&self) {
        Self::bump(&self.nodes_lost, 1);
    }
    pub fn node_drained(&self, participants: usize) {
        Self::bump(&self.drained_participants, participants as u64);
    }
    pub fn moved(&self) {
        Self::bump(&self.participants_moved, 1);
    }
    pub fn move_failed(&self) {
        Self::bump(&self.failovers_failed, 1);
    }
    pub fn adopted(&self) {
        Self::bump(&self.adopted, 1);
    }
    pub fn claimed(&self) {
        Self::bump(&self.rooms_claimed, 1);
    }
    pub fn room_lost(&self) {
        Self::bump(&self.rooms_lost, 1);
    }
    pub fn join_refused(&self) {
        Self::bump(&self.joins_refused, 1);
    }
}

/// Counts a proxied socket as open until dropped.
pub struct OpenSession<'a>(&'a FleetStats);

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.proxied_sessions_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FleetStats {
    pub fn proxied_session(&self) -> OpenSession<'_> {
        Self::bump(&self.proxied_sessions, 1);
        Self::bump(&self.proxied_sessions_open, 1);
        OpenSession(self)
    }
}
