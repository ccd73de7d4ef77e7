//! Which rooms this signaling node owns. Exactly one node owns a room (a Redis key claimed with
//! `SET NX` and an epoch, leased for a few seconds and refreshed every second); the others send
//! that room's sockets to it. A node that finds its epoch stale has lost the room and must stop
//! serving it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::stats::FleetStats;
use crate::cluster::{Registry, RoomClaim};
use crate::protocol::ErrorCode;
use crate::rooms::{Hub, Refusal};

/// How long a room key lives without refreshes: the time a dead owner holds its rooms.
pub const ROOM_LEASE: Duration = Duration::from_secs(3);
pub const ROOM_REFRESH: Duration = Duration::from_secs(1);
/// A claimed room is kept this long even while empty: its first join is still on the way.
const CLAIM_SETTLE: Duration = Duration::from_secs(5);

/// The lease of everything about calls between users: device sockets, call decisions and call
/// rooms live on the one node holding it, so that every call is decided in one place (accept,
/// decline, glare and double accept stay exactly-once across the fleet). No room name can
/// collide with it: room names starting with `#` are refused.
pub const CALLS_LEASE: &str = "#calls";

/// The lease a room's sockets follow: call rooms go with the calls.
pub fn lease_for_room(room: &str) -> &str {
    if room.starts_with("call-") {
        CALLS_LEASE
    } else {
        room
    }
}

/// Where a socket for a room must go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    /// Another node owns the room: its signaling base URL.
    Owner {
        node: String,
        url: String,
    },
}

struct Owned {
    epoch: u64,
    claimed_at: Instant,
}

pub struct RoomLeases {
    registry: Registry,
    owned: Mutex<HashMap<String, Owned>>,
    stats: Arc<FleetStats>,
}

impl RoomLeases {
    pub fn new(registry: Registry, stats: Arc<FleetStats>) -> Self {
        RoomLeases {
            registry,
            owned: Mutex::new(HashMap::new()),
            stats,
        }
    }

    fn owned(&self) -> MutexGuard<'_, HashMap<String, Owned>> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn owned_count(&self) -> usize {
        self.owned().len()
    }

    /// Claims `room` for this node, or names its owner. A draining node claims nothing new.
    pub async fn route(&self, room: &str) -> Result<Route, Refusal> {
        if self.owned().contains_key(room) {
            return Ok(Route::Local);
        }
        if self
            .stats
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return self.route_away(room).await;
        }
        let refused = |e: crate::cluster::ClusterError| {
            self.stats.join_refused();
            (
                ErrorCode::ClusterUnavailable,
                format!("cluster registry unavailable: {e}"),
            )
        };
        match self.registry.claim_room(room, ROOM_LEASE).await {
            Ok(RoomClaim::Owned { epoch }) => {
                self.stats.claimed();
                info!(room, epoch, "room claimed");
                self.owned().insert(
                    room.to_string(),
                    Owned {
                        epoch,
                        claimed_at: Instant::now(),
                    },
                );
                Ok(Route::Local)
            }
            Ok(RoomClaim::OwnedBy { node, .. }) => {
                let info = self.registry.node(&node).await.map_err(refused)?;
                match info.and_then(|i| i.http_url) {
                    Some(url) => Ok(Route::Owner { node, url }),
                    // The owner's lease is gone but its room key is not yet: it died less
                    // than a lease ago. The caller retries until the key expires.
                    None => Err((
                        ErrorCode::ClusterUnavailable,
                        format!("room owner {node} is gone; the room is being taken over"),
                    )),
                }
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// A draining node sends a room's sockets to its owner, or, when nobody owns it, to another
    /// signaling node, which will claim it.
    async fn route_away(&self, room: &str) -> Result<Route, Refusal> {
        let unavailable = |why: String| (ErrorCode::ClusterUnavailable, why);
        let nodes = self
            .registry
            .nodes()
            .await
            .map_err(|e| unavailable(format!("cluster registry unavailable: {e}")))?;
        let owner = self.registry.room_owner(room).await.ok().flatten();
        let me = self.registry.node_id();
        let target = nodes.iter().find(|n| match &owner {
            Some((node, _)) => n.id == *node && n.id != me,
            None => n.roles.signaling && !n.draining && n.id != me,
        });
        match target.and_then(|n| n.http_url.clone().map(|url| (n.id.clone(), url))) {
            Some((node, url)) => Ok(Route::Owner { node, url }),
            None => Err(unavailable(
                "this node is draining and no other can take the room yet".into(),
            )),
        }
    }

    /// Refreshes the leases of owned rooms, releases empty ones, and evicts rooms another node
    /// took. Runs every [`ROOM_REFRESH`] for the life of the node.
    pub async fn maintain(&self, hub: &Hub) {
        let rooms: Vec<(String, u64, Instant)> = self
            .owned()
            .iter()
            .map(|(room, o)| (room.clone(), o.epoch, o.claimed_at))
            .collect();
        for (room, epoch, claimed_at) in rooms {
            let in_use = if room == CALLS_LEASE {
                hub.calls_in_use()
            } else {
                hub.room_is_open(&room)
            };
            if !in_use && claimed_at.elapsed() > CLAIM_SETTLE {
                self.owned().remove(&room);
                match self.registry.release_room(&room, epoch).await {
                    Ok(_) => info!(room, epoch, "room released"),
                    Err(e) => warn!(room, "room release failed (its lease will expire): {e}"),
                }
                continue;
            }
            match self.registry.refresh_room(&room, epoch, ROOM_LEASE).await {
                Ok(true) => {}
                // The key is gone or names someone else: Redis restarted empty, or we were cut
                // off long enough for another node to take the room.
                Ok(false) => match self.registry.claim_room(&room, ROOM_LEASE).await {
                    Ok(RoomClaim::Owned { epoch }) => {
                        info!(room, epoch, "room lease re-claimed");
                        if let Some(o) = self.owned().get_mut(&room) {
                            o.epoch = epoch;
                        }
                    }
                    Ok(RoomClaim::OwnedBy {
                        node,
                        epoch: theirs,
                    }) => {
                        warn!(room, ours = epoch, theirs, owner = %node, "room lost to another node");
                        self.owned().remove(&room);
                        self.stats.room_lost();
                        if room == CALLS_LEASE {
                            hub.evict_calls().await;
                        } else {
                            hub.evict_room(&room).await;
                        }
                    }
                    Err(e) => warn!(room, "room lease: {e}"),
                },
                // Redis unreachable: the room goes on; nobody else can claim it either.
                Err(e) => warn!(room, "room lease refresh failed: {e}"),
            }
        }
        let owned = self.owned().len() as u64;
        self.stats
            .rooms_owned
            .store(owned, std::sync::atomic::Ordering::Relaxed);
    }

    /// Gives every room up (a drained node hands its rooms over).
    pub async fn release_all(&self) {
        let rooms: Vec<(String, u64)> = self
            .owned()
            .drain()
            .map(|(room, o)| (room, o.epoch))
            .collect();
        for (room, epoch) in rooms {
            let _ = self.registry.release_room(&room, epoch).await;
        }
    }
}
