//! Which worker hosts which room, and which workers and participants are gone.
//!
//! A room lives on exactly one worker (forwarding never crosses a thread), so a new room goes
//! to the least-loaded worker that is still alive, and a worker that died takes no new room.

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

#[derive(Default)]
pub(super) struct Placement {
    /// Room → (worker index, participants on this node).
    rooms: HashMap<RoomId, (usize, usize)>,
    participants: HashMap<ParticipantId, (usize, RoomId)>,
    /// Workers whose thread died: they never get a room again.
    dead_workers: HashSet<usize>,
    /// Participants of a dead worker that signaling has not added again or removed yet: their
    /// requests are refused as `Unavailable` rather than `UnknownParticipant`, which would
    /// read as a bug of the caller.
    lost: HashSet<ParticipantId>,
}

impl Placement {
    /// The worker `request` goes to among `workers`, updating the placement for additions and
    /// removals.
    pub(super) fn place(
        &mut self,
        request: &SfuRequest,
        workers: usize,
    ) -> Result<Placed, SfuError> {
        match request {
            SfuRequest::AddParticipant {
                room, participant, ..
            } => {
                if self.participants.contains_key(participant) {
                    return Err(SfuError::ParticipantExists);
                }
                let worker = match self.rooms.get(room) {
                    Some((w, _)) => *w,
                    None => self.least_loaded(workers)?,
                };
                // Added again after its worker died: it is an ordinary participant now.
                self.lost.remove(participant);
                self.rooms.entry(room.clone()).or_insert((worker, 0)).1 += 1;
                self.participants
                    .insert(participant.clone(), (worker, room.clone()));
                Ok(Placed::Worker(worker))
            }
            SfuRequest::RemoveParticipant { participant } => {
                if self.lost.remove(participant) {
                    return Ok(Placed::AlreadyGone);
                }
                let (worker, room) = self
                    .participants
                    .remove(participant)
                    .ok_or(SfuError::UnknownParticipant)?;
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.1 = entry.1.saturating_sub(1);
                    if entry.1 == 0 {
                        self.rooms.remove(&room);
                    }
                }
                Ok(Placed::Worker(worker))
            }
            other => {
                let participant = other.participant();
                if self.lost.contains(participant) {
                    return Err(worker_failed());
                }
                self.participants
                    .get(participant)
                    .map(|(w, _)| Placed::Worker(*w))
                    .ok_or(SfuError::UnknownParticipant)
            }
        }
    }

    /// A new room goes to the live worker with the fewest participants.
    fn least_loaded(&self, workers: usize) -> Result<usize, SfuError> {
        let mut load = vec![0usize; workers];
        for (w, n) in self.rooms.values() {
            if let Some(l) = load.get_mut(*w) {
                *l += n;
            }
        }
        (0..workers)
            .filter(|w| !self.dead_workers.contains(w))
            .min_by_key(|w| load[*w])
            .ok_or_else(|| SfuError::Unavailable("no media worker is running".into()))
    }

    /// `worker` died: it takes no more rooms, and its rooms and participants leave the
    /// placement so that they can be added again elsewhere. Returns those participants.
    pub(super) fn lose_worker(&mut self, worker: usize) -> Vec<ParticipantId> {
        self.dead_workers.insert(worker);
        self.rooms.retain(|_, (w, _)| *w != worker);
        let mut lost = vec![];
        self.participants.retain(|p, (w, _)| {
            if *w == worker {
                lost.push(p.clone());
            }
            *w != worker
        });
        lost.sort();
        self.lost.extend(lost.iter().cloned());
        lost
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

    fn add(room: &str, participant: &str) -> SfuRequest {
        SfuRequest::AddParticipant {
            room: room.into(),
            participant: participant.into(),
            can_subscribe: true,
            video_subscription: VideoSubscription::Auto,
        }
    }

    #[test]
    fn a_dead_worker_gets_no_new_room_and_its_participants_can_come_back() {
        let mut p = Placement::default();
        assert_eq!(p.place(&add("r1", "a"), 2), Ok(Placed::Worker(0)));
        assert_eq!(p.place(&add("r1", "b"), 2), Ok(Placed::Worker(0)));
        assert_eq!(p.lose_worker(0), vec!["a".into(), "b".into()]);
        // Worker 0 is now the least loaded, but dead.
        assert_eq!(p.place(&add("r2", "c"), 2), Ok(Placed::Worker(1)));
        let stats = SfuRequest::PeerStats {
            participant: "a".into(),
        };
        assert!(matches!(p.place(&stats, 2), Err(SfuError::Unavailable(_))));
        // Added again: its room is on a live worker now.
        assert_eq!(p.place(&add("r1", "a"), 2), Ok(Placed::Worker(1)));
        let remove_b = SfuRequest::RemoveParticipant {
            participant: "b".into(),
        };
        assert_eq!(p.place(&remove_b, 2), Ok(Placed::AlreadyGone));
        assert_eq!(p.place(&remove_b, 2), Err(SfuError::UnknownParticipant));
        assert_eq!(p.lose_worker(1).len(), 2);
        assert!(matches!(
            p.place(&add("r3", "d"), 2),
            Err(SfuError::Unavailable(_))
        ));
    }
}
