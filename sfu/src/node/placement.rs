//! Which workers host which room, and which workers and participants are gone.
//!
//! A room starts on the least-loaded live worker, its *home*. While the home keeps up, the
//! room's participants join it there (forwarding never crosses a thread). Once the home is
//! busy past [`Spread::busy`] (or the room has [`Spread::after`] participants), new
//! participants go to the least-loaded live worker and the room spans workers: the caller
//! tells each of its workers which others host it ([`RoomSpan`]), and the relay carries
//! the tracks each one's subscribers want.

use std::collections::{HashMap, HashSet};

use crate::api::{ParticipantId, RoomId, SfuError, SfuRequest};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placed {
    /// To this worker.
    Worker(usize),
    /// Nowhere: it removes a participant whose worker died, which is already gone.
    AlreadyGone,
}

/// When a room spreads over workers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spread {
    /// The home worker's busy share (0..1) from which new participants go elsewhere.
    pub busy: f64,
    /// Participants of the room on the node from which it spreads whatever the load; 0: never.
    pub after: usize,
}

/// The set of workers hosting `room` changed: every worker in `notify` (old and new hosts)
/// must hear the new set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RoomSpan {
    pub room: RoomId,
    pub home: usize,
    pub workers: Vec<usize>,
    pub notify: Vec<usize>,
}

#[derive(Debug)]
struct RoomPlace {
    home: usize,
    /// Participants per worker.
    counts: HashMap<usize, usize>,
}

impl RoomPlace {
    fn workers(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(w, _)| *w)
            .collect();
        w.sort_unstable();
        w
    }

    fn total(&self) -> usize {
        self.counts.values().sum()
    }
}

#[derive(Default)]
pub(super) struct Placement {
    rooms: HashMap<RoomId, RoomPlace>,
    participants: HashMap<ParticipantId, (usize, RoomId)>,
    /// Workers whose thread died: they never get a room again.
    dead_workers: HashSet<usize>,
    /// Participants of a dead worker that signaling has not added again or removed yet: their
    /// requests are refused as `Unavailable` rather than `UnknownParticipant`, which would
    /// read as a bug of the caller.
    lost: HashSet<ParticipantId>,
}

impl Placement {
    /// The worker `request` goes to among `workers` (whose recent busy shares are `busy`),
    /// updating the placement for additions and removals; and the room's new span when the
    /// set of workers hosting it changed.
    pub(super) fn place(
        &mut self,
        request: &SfuRequest,
        workers: usize,
        busy: &[f64],
        spread: Spread,
    ) -> Result<(Placed, Option<RoomSpan>), SfuError> {
        match request {
            SfuRequest::AddParticipant {
                room, participant, ..
            } => {
                if self.participants.contains_key(participant) {
                    return Err(SfuError::ParticipantExists);
                }
                let worker = match self.rooms.get(room) {
                    Some(r) => {
                        let home_busy = busy.get(r.home).copied().unwrap_or(0.0);
                        let crowded = spread.after > 0 && r.total() >= spread.after;
                        if crowded || home_busy >= spread.busy {
                            self.least_loaded(workers)?
                        } else {
                            r.home
                        }
                    }
                    None => self.least_loaded(workers)?,
                };
                // Added again after its worker died: it is an ordinary participant now.
                self.lost.remove(participant);
                let place = self.rooms.entry(room.clone()).or_insert(RoomPlace {
                    home: worker,
                    counts: HashMap::new(),
                });
                let before = place.workers();
                *place.counts.entry(worker).or_default() += 1;
                self.participants
                    .insert(participant.clone(), (worker, room.clone()));
                let span = self.span_change(room, before);
                Ok((Placed::Worker(worker), span))
            }
            SfuRequest::RemoveParticipant { participant } => {
                if self.lost.remove(participant) {
                    return Ok((Placed::AlreadyGone, None));
                }
                let (worker, room) = self
                    .participants
                    .remove(participant)
                    .ok_or(SfuError::UnknownParticipant)?;
                let span = self.leave(&room, worker, 1);
                Ok((Placed::Worker(worker), span))
            }
            other => {
                let Some(participant) = other.participant() else {
                    return Err(SfuError::InvalidRequest(
                        "not a participant's request".into(),
                    ));
                };
                if self.lost.contains(participant) {
                    return Err(worker_failed());
                }
                self.participants
                    .get(participant)
                    .map(|(w, _)| (Placed::Worker(*w), None))
                    .ok_or(SfuError::UnknownParticipant)
            }
        }
    }

    /// `count` participants of `room` left `worker`.
    fn leave(&mut self, room: &RoomId, worker: usize, count: usize) -> Option<RoomSpan> {
        let place = self.rooms.get_mut(room)?;
        let before = place.workers();
        if let Some(n) = place.counts.get_mut(&worker) {
            *n = n.saturating_sub(count);
            if *n == 0 {
                place.counts.remove(&worker);
            }
        }
        if place.counts.is_empty() {
            self.rooms.remove(room);
        } else if !place.counts.contains_key(&place.home) {
            // The home emptied: the busiest remaining host of the room takes over.
            if let Some((&w, _)) = place
                .counts
                .iter()
                .max_by_key(|(w, n)| (**n, usize::MAX - **w))
            {
                place.home = w;
            }
        }
        self.span_change(room, before)
    }

    /// The span to announce when the room's hosts changed from `before`; nothing for a room
    /// on one worker before and after (no relay involved).
    fn span_change(&self, room: &RoomId, before: Vec<usize>) -> Option<RoomSpan> {
        let (home, workers) = match self.rooms.get(room) {
            Some(p) => (p.home, p.workers()),
            None => (before.first().copied().unwrap_or(0), vec![]),
        };
        if workers == before || (workers.len() <= 1 && before.len() <= 1) {
            return None;
        }
        let mut notify: Vec<usize> = before.iter().chain(&workers).copied().collect();
        notify.sort_unstable();
        notify.dedup();
        Some(RoomSpan {
            room: room.clone(),
            home,
            workers,
            notify,
        })
    }

    /// The live worker with the fewest participants.
    fn least_loaded(&self, workers: usize) -> Result<usize, SfuError> {
        let mut load = vec![0usize; workers];
        for (w, _) in self.participants.values() {
            if let Some(l) = load.get_mut(*w) {
                *l += 1;
            }
        }
        (0..workers)
            .filter(|w| !self.dead_workers.contains(w))
            .min_by_key(|w| load[*w])
            .ok_or_else(|| SfuError::Unavailable("no media worker is running".into()))
    }

    /// `worker` died: it takes no more rooms, and its participants leave the placement so
    /// that they can be added again elsewhere. Returns those participants, and the spans of
    /// rooms it shared with other workers.
    pub(super) fn lose_worker(&mut self, worker: usize) -> (Vec<ParticipantId>, Vec<RoomSpan>) {
        self.dead_workers.insert(worker);
        let mut lost = vec![];
        let mut rooms: HashMap<RoomId, usize> = HashMap::new();
        self.participants.retain(|p, (w, room)| {
            if *w == worker {
                lost.push(p.clone());
                *rooms.entry(room.clone()).or_default() += 1;
            }
            *w != worker
        });
        let mut spans = vec![];
        for (room, n) in rooms {
            spans.extend(self.leave(&room, worker, n));
        }
        lost.sort();
        self.lost.extend(lost.iter().cloned());
        (lost, spans)
    }

    /// The room's home and the workers hosting it, if any.
    pub(super) fn span_of(&self, room: &RoomId) -> Option<(usize, Vec<usize>)> {
        self.rooms.get(room).map(|p| (p.home, p.workers()))
    }

    /// The worker hosting `participant`, if it is on a live one.
    pub(super) fn worker_of(&self, participant: &ParticipantId) -> Option<usize> {
        self.participants.get(participant).map(|(w, _)| *w)
    }
}

fn worker_failed() -> SfuError {
    SfuError::Unavailable("the participant's media worker failed; add it again".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VideoSubscription;

    const NEVER: Spread = Spread {
        busy: 2.0,
        after: 0,
    };

    fn add(room: &str, participant: &str) -> SfuRequest {
        SfuRequest::AddParticipant {
            room: room.into(),
            participant: participant.into(),
            can_subscribe: true,
            video_subscription: VideoSubscription::Auto,
        }
    }

    fn remove(participant: &str) -> SfuRequest {
        SfuRequest::RemoveParticipant {
            participant: participant.into(),
        }
    }

    fn worker(p: &mut Placement, r: &SfuRequest, busy: &[f64], s: Spread) -> Placed {
        p.place(r, busy.len(), busy, s).unwrap().0
    }

    #[test]
    fn a_dead_worker_gets_no_new_room_and_its_participants_can_come_back() {
        let mut p = Placement::default();
        let idle = [0.0, 0.0];
        assert_eq!(
            worker(&mut p, &add("r1", "a"), &idle, NEVER),
            Placed::Worker(0)
        );
        assert_eq!(
            worker(&mut p, &add("r1", "b"), &idle, NEVER),
            Placed::Worker(0)
        );
        assert_eq!(p.lose_worker(0).0, vec!["a".into(), "b".into()]);
        // Worker 0 is now the least loaded, but dead.
        assert_eq!(
            worker(&mut p, &add("r2", "c"), &idle, NEVER),
            Placed::Worker(1)
        );
        let stats = SfuRequest::PeerStats {
            participant: "a".into(),
        };
        assert!(matches!(
            p.place(&stats, 2, &idle, NEVER),
            Err(SfuError::Unavailable(_))
        ));
        // Added again: its room is on a live worker now.
        assert_eq!(
            worker(&mut p, &add("r1", "a"), &idle, NEVER),
            Placed::Worker(1)
        );
        assert_eq!(
            p.place(&remove("b"), 2, &idle, NEVER),
            Ok((Placed::AlreadyGone, None))
        );
        assert_eq!(
            p.place(&remove("b"), 2, &idle, NEVER),
            Err(SfuError::UnknownParticipant)
        );
        assert_eq!(p.lose_worker(1).0.len(), 2);
        assert!(matches!(
            p.place(&add("r3", "d"), 2, &idle, NEVER),
            Err(SfuError::Unavailable(_))
        ));
    }

    #[test]
    fn a_room_spreads_when_its_home_is_busy_and_the_hosts_hear_of_it() {
        let mut p = Placement::default();
        let spread = Spread {
            busy: 0.5,
            after: 0,
        };
        let calm = [0.2, 0.0];
        assert_eq!(
            p.place(&add("class", "t"), 2, &calm, spread).unwrap(),
            (Placed::Worker(0), None)
        );
        assert_eq!(
            worker(&mut p, &add("class", "s1"), &calm, spread),
            Placed::Worker(0)
        );
        // The home is busy: the next student goes to the other worker, and both hear it.
        let busy = [0.7, 0.1];
        let (placed, span) = p.place(&add("class", "s2"), 2, &busy, spread).unwrap();
        assert_eq!(placed, Placed::Worker(1));
        let span = span.expect("the room spans two workers now");
        assert_eq!(
            (span.home, span.workers.clone(), span.notify.clone()),
            (0, vec![0, 1], vec![0, 1])
        );
        // Least loaded by participants: worker 1 until it has as many as worker 0.
        assert_eq!(
            worker(&mut p, &add("class", "s3"), &busy, spread),
            Placed::Worker(1)
        );
        // Worker 1 empties: the room is back on one worker, and both hear that too.
        p.place(&remove("s2"), 2, &busy, spread).unwrap();
        let (_, span) = p.place(&remove("s3"), 2, &busy, spread).unwrap();
        let span = span.expect("worker 1 left the room");
        assert_eq!((span.workers, span.notify), (vec![0], vec![0, 1]));
    }

    #[test]
    fn spreading_can_be_forced_by_room_size_and_the_home_moves_when_it_empties() {
        let mut p = Placement::default();
        let spread = Spread {
            busy: 2.0,
            after: 1,
        };
        let idle = [0.0, 0.0];
        assert_eq!(
            worker(&mut p, &add("r", "pub"), &idle, spread),
            Placed::Worker(0)
        );
        assert_eq!(
            worker(&mut p, &add("r", "sub"), &idle, spread),
            Placed::Worker(1)
        );
        let (_, span) = p.place(&remove("pub"), 2, &idle, spread).unwrap();
        assert_eq!(span.map(|s| (s.home, s.workers)), Some((1, vec![1])));
        // A worker dying takes its share of a spread room with it.
        assert_eq!(
            worker(&mut p, &add("r", "x"), &idle, spread),
            Placed::Worker(0)
        );
        let (lost, spans) = p.lose_worker(0);
        assert_eq!(lost, vec!["x".into()]);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].workers, vec![1]);
    }
}
