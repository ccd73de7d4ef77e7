//! Choosing a media node for a new room: power of two choices over reported load, plus
//! a memory of what this signaling node placed recently.
//!
//! Sans-IO: no Redis, no clock, randomness from the caller, so it is deterministic under
//! test. Load reports arrive with the lease (every few seconds), so a burst of new rooms
//! would all see the same "idle" node and pile onto it; the recent-placement penalty
//! counts what we just sent to each node until its own report can reflect it. Two random
//! candidates rather than the global minimum keep several signaling nodes, each with its
//! own stale view, from herding onto the same node.

use std::time::{Duration, Instant};

use super::NodeInfo;

/// How many participants a fully busy worker is worth in the score. CPU is what actually
/// runs out on a media node; participants are a proxy that ignores simulcast layers and
/// bitrate, so a busy node should lose against one with many more but cheaper participants.
const BUSY_WEIGHT: f64 = 100.0;

/// One placement remembered for the penalty.
#[derive(Debug, Clone)]
struct Recent {
    at: Instant,
    node: String,
    weight: u32,
}

/// Places rooms onto media nodes; keep one per signaling node.
#[derive(Debug, Clone)]
pub struct Placement {
    window: Duration,
    recent: Vec<Recent>,
}

impl Placement {
    /// `recent_window`: how long a placement counts against its node, about the time a
    /// node's load report takes to reflect it (20 s with the default lease renewal).
    pub fn new(recent_window: Duration) -> Self {
        Placement {
            window: recent_window,
            recent: Vec::new(),
        }
    }

    /// Picks a healthy media node (media role, not draining) for a new room: two distinct
    /// candidates drawn with `rng`, the lower score wins (ties go to the first drawn).
    /// `None` when no node is healthy. Does not record the choice: call [`Self::placed`]
    /// once the room was actually created there.
    pub fn choose(
        &mut self,
        nodes: &[NodeInfo],
        now: Instant,
        rng: &mut impl rand::Rng,
    ) -> Option<String> {
        self.expire(now);
        let healthy: Vec<&NodeInfo> = nodes
            .iter()
            .filter(|node| node.roles.media && !node.draining)
            .collect();
        let chosen = match healthy.len() {
            0 => return None,
            1 => healthy[0],
            n => {
                let first = rng.gen_range(0..n);
                // Draw the second from the n - 1 others so the two always differ.
                let mut second = rng.gen_range(0..n - 1);
                if second >= first {
                    second += 1;
                }
                let (a, b) = (healthy[first], healthy[second]);
                if self.score(b) < self.score(a) {
                    b
                } else {
                    a
                }
            }
        };
        Some(chosen.id.clone())
    }

    /// Records that a room expecting `participants` was placed on `node` at `now`; it counts
    /// against the node until `recent_window` has passed. An empty room still counts as one:
    /// its participants are on their way.
    pub fn placed(&mut self, node: &str, participants: u32, now: Instant) {
        self.expire(now);
        self.recent.push(Recent {
            at: now,
            node: node.to_owned(),
            weight: participants.max(1),
        });
    }

    fn expire(&mut self, now: Instant) {
        let window = self.window;
        self.recent
            .retain(|r| now.saturating_duration_since(r.at) < window);
    }

    /// Lower is better.
    fn score(&self, node: &NodeInfo) -> f64 {
        // Load comes from other processes through Redis: a NaN or out-of-range busy ratio
        // must not make a node look idle (NaN compares false and would win every tie).
        let busy = if node.load.busy.is_finite() {
            f64::from(node.load.busy).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let penalty: u64 = self
            .recent
            .iter()
            .filter(|r| r.node == node.id)
            .map(|r| u64::from(r.weight))
            .sum();
        f64::from(node.load.participants) + busy * BUSY_WEIGHT + penalty as f64
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::cluster::{NodeLoad, NodeRoles};

    fn node(id: &str, media: bool, draining: bool, participants: u32, busy: f32) -> NodeInfo {
        NodeInfo {
            id: id.to_owned(),
            roles: NodeRoles {
                signaling: true,
                media,
            },
            http_url: None,
            quic_addr: None,
            load: NodeLoad {
                participants,
                busy,
                bitrate_bps: 0,
            },
            draining,
        }
    }

    const WINDOW: Duration = Duration::from_secs(20);

    #[test]
    fn empty_or_unhealthy_list_gives_none() {
        let mut placement = Placement::new(WINDOW);
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        assert_eq!(placement.choose(&[], now, &mut rng), None);
        let unhealthy = [
            node("drain", true, true, 0, 0.0),
            node("sig", false, false, 0, 0.0),
        ];
        assert_eq!(placement.choose(&unhealthy, now, &mut rng), None);
    }

    #[test]
    fn draining_and_non_media_nodes_are_never_chosen() {
        let mut placement = Placement::new(WINDOW);
        let now = Instant::now();
        // The unhealthy ones are idle, so only the filter keeps them out.
        let nodes = [
            node("drain", true, true, 0, 0.0),
            node("sig-only", false, false, 0, 0.0),
            node("busy-a", true, false, 400, 0.9),
            node("busy-b", true, false, 300, 0.8),
        ];
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let chosen = placement.choose(&nodes, now, &mut rng).unwrap();
            assert!(chosen.starts_with("busy-"), "seed {seed} chose {chosen}");
        }
    }

    #[test]
    fn idle_node_beats_loaded_one() {
        let now = Instant::now();
        let nodes = [
            node("loaded", true, false, 50, 0.7),
            node("idle", true, false, 0, 0.05),
        ];
        for seed in 0..100 {
            let mut placement = Placement::new(WINDOW);
            let mut rng = StdRng::seed_from_u64(seed);
            assert_eq!(
                placement.choose(&nodes, now, &mut rng).as_deref(),
                Some("idle")
            );
        }
        // Busy weighs more than a few participants: a node that is CPU bound loses even
        // against one with more participants.
        let nodes = [
            node("hot", true, false, 10, 0.95),
            node("cool", true, false, 30, 0.1),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let mut placement = Placement::new(WINDOW);
        assert_eq!(
            placement.choose(&nodes, now, &mut rng).as_deref(),
            Some("cool")
        );
    }

    #[test]
    fn nan_busy_counts_as_fully_busy() {
        let now = Instant::now();
        let nodes = [
            node("nan", true, false, 0, f32::NAN),
            node("ok", true, false, 20, 0.3),
        ];
        let mut placement = Placement::new(WINDOW);
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(
            placement.choose(&nodes, now, &mut rng).as_deref(),
            Some("ok")
        );
    }

    #[test]
    fn burst_spreads_over_equal_nodes() {
        let nodes = [
            node("m1", true, false, 5, 0.1),
            node("m2", true, false, 5, 0.1),
            node("m3", true, false, 5, 0.1),
        ];
        for seed in 0..100 {
            let mut placement = Placement::new(WINDOW);
            let mut rng = StdRng::seed_from_u64(seed);
            let start = Instant::now();
            let mut counts = std::collections::HashMap::new();
            // Ten rooms within a second: the reported load does not move in between.
            for i in 0..10 {
                let now = start + Duration::from_millis(100 * i);
                let chosen = placement.choose(&nodes, now, &mut rng).unwrap();
                placement.placed(&chosen, 1, now);
                *counts.entry(chosen).or_insert(0) += 1;
            }
            let max = counts.values().copied().max().unwrap();
            assert!(max <= 5, "seed {seed}: {counts:?}");
        }
    }

    #[test]
    fn penalty_expires_after_the_window() {
        let nodes = [
            node("m1", true, false, 0, 0.0),
            node("m2", true, false, 0, 0.0),
        ];
        let mut placement = Placement::new(WINDOW);
        let start = Instant::now();
        placement.placed("m1", 50, start);
        let mut rng = StdRng::seed_from_u64(11);
        assert_eq!(
            placement.choose(&nodes, start, &mut rng).as_deref(),
            Some("m2")
        );
        // Once the window has passed, m1's report is trusted again; both are equal and the
        // first drawn wins, so over many draws both come up.
        let later = start + WINDOW;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            seen.insert(placement.choose(&nodes, later, &mut rng).unwrap());
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }
}
