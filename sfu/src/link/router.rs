//! Which signaling connection owns which participant, and so receives which events.
//!
//! Control traffic only (a few messages per participant and second at most), so one mutex
//! around plain maps is enough; it is never held across an await.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::api::{ParticipantId, RoomId, SfuEvent};

/// A signaling connection, numbered by the server.
pub type ConnId = u64;

enum Owner {
    /// Connected: its events go here.
    Live(mpsc::UnboundedSender<SfuEvent>),
    /// Lost, within the orphan grace: its participants keep media but get no events.
    Lost,
}

#[derive(Default)]
struct Routes {
    owners: HashMap<ConnId, Owner>,
    participants: HashMap<ParticipantId, (ConnId, RoomId)>,
    /// Room → connection → participants it owns there, for `ActiveSpeakers`.
    rooms: HashMap<RoomId, HashMap<ConnId, usize>>,
}

/// What [`Router::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Now routed to the claiming connection.
    New,
    /// Already routed (to this or another connection); nothing changed.
    Known,
    /// The claiming connection's grace is over; nothing changed.
    Reaped,
}

impl Routes {
    fn insert(&mut self, conn: ConnId, participant: ParticipantId, room: RoomId) {
        *self
            .rooms
            .entry(room.clone())
            .or_default()
            .entry(conn)
            .or_default() += 1;
        self.participants.insert(participant, (conn, room));
    }

    fn forget(&mut self, participant: &ParticipantId) -> Option<(ConnId, RoomId)> {
        let (conn, room) = self.participants.remove(participant)?;
        if let Some(conns) = self.rooms.get_mut(&room) {
            if let Some(count) = conns.get_mut(&conn) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    conns.remove(&conn);
                }
            }
            if conns.is_empty() {
                self.rooms.remove(&room);
            }
        }
        Some((conn, room))
    }
}

#[derive(Default)]
pub struct Router {
    routes: Mutex<Routes>,
}

impl Router {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // A panic elsewhere while holding the lock leaves maps that are still consistent
        // enough for routing; keep serving instead of poisoning the whole link.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection passed authentication; its events go to `events`.
    pub fn connect(&self, conn: ConnId, events: mpsc::UnboundedSender<SfuEvent>) {
        self.routes().owners.insert(conn, Owner::Live(events));
    }

    /// The connection is gone; its participants become orphans until [`Router::reap`].
    pub fn lose(&self, conn: ConnId) {
        if let Some(owner) = self.routes().owners.get_mut(&conn) {
            *owner = Owner::Lost;
        }
    }

    /// Records, before the node is asked, that `conn` is adding `participant`: the node emits
    /// the participant's first events (a subscriber offer) before it answers, and they must
    /// already find their way. A participant already routed elsewhere is left alone (the
    /// node will refuse the duplicate).
    pub fn claim(&self, conn: ConnId, participant: &ParticipantId, room: &RoomId) -> Claim {
        let mut routes = self.routes();
        if !routes.owners.contains_key(&conn) {
            return Claim::Reaped;
        }
        if routes.participants.contains_key(participant) {
            return Claim::Known;
        }
        routes.insert(conn, participant.clone(), room.clone());
        Claim::New
    }

    /// Undoes a [`Claim::New`] the node refused, unless the participant changed hands since.
    pub fn release(&self, conn: ConnId, participant: &ParticipantId) {
        let mut routes = self.routes();
        if routes.participants.get(participant).map(|(c, _)| *c) == Some(conn) {
            routes.forget(participant);
        }
    }

    /// Records that `conn` added `participant`, replacing any stale route. False if the
    /// connection was already reaped: nobody will ever remove that participant, so the
    /// caller must.
    pub fn adopt(&self, conn: ConnId, participant: ParticipantId, room: RoomId) -> bool {
        let mut routes = self.routes();
        if !routes.owners.contains_key(&conn) {
            return false;
        }
        routes.forget(&participant);
        routes.insert(conn, participant, room);
        true
    }

    /// The participant left the node.
    pub fn forget(&self, participant: &ParticipantId) {
        self.routes().forget(participant);
    }

    /// Ends the orphan grace of a lost connection: forgets it and returns the participants it
    /// still owned, which the caller removes from the node.
    pub fn reap(&self, conn: ConnId) -> Vec<ParticipantId> {
        let mut routes = self.routes();
        routes.owners.remove(&conn);
        let orphans: Vec<ParticipantId> = routes
            .participants
            .iter()
            .filter(|(_, (owner, _))| *owner == conn)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &orphans {
            routes.forget(p);
        }
        orphans
    }

    /// Whether requests about `participant` from `conn` may act on it: only its owner's do, so
    /// a signaling node that lost the participant to another (it adopted it) cannot remove it
    /// or renegotiate it by mistake. A participant nobody routes is left to the node to judge.
    pub fn may_act(&self, conn: ConnId, participant: &ParticipantId) -> bool {
        self.routes()
            .participants
            .get(participant)
            .is_none_or(|(owner, _)| *owner == conn)
    }

    /// Hands `event` to the connections it concerns; returns how many took it (0: dropped).
    pub fn route(&self, event: SfuEvent) -> usize {
        let routes = self.routes();
        let send = |conn: &ConnId, event: SfuEvent| match routes.owners.get(conn) {
            Some(Owner::Live(tx)) => tx.send(event).is_ok(),
            _ => false,
        };
        match &event {
            SfuEvent::SubscriberOffer { participant, .. }
            | SfuEvent::MediaConnected { participant }
            | SfuEvent::MediaLost { participant }
            | SfuEvent::SubscriberReset { participant }
            | SfuEvent::PublisherLayers { participant, .. }
            | SfuEvent::VideoPausedForBandwidth { participant, .. } => {
                match routes.participants.get(participant) {
                    Some((conn, _)) => usize::from(send(conn, event)),
                    None => 0,
                }
            }
            SfuEvent::ActiveSpeakers { room, .. }
            | SfuEvent::RecordingFailed { room, .. }
            | SfuEvent::RecordingFinished { room, .. } => match routes.rooms.get(room) {
                Some(conns) => conns
                    .keys()
                    .filter(|conn| send(conn, event.clone()))
                    .count(),
                None => 0,
            },
            // Each owner hears about its own participants only.
            SfuEvent::WorkerLost { participants } => {
                let mut by_owner: HashMap<ConnId, Vec<ParticipantId>> = HashMap::new();
                for p in participants {
                    if let Some((conn, _)) = routes.participants.get(p) {
                        by_owner.entry(*conn).or_default().push(p.clone());
                    }
                }
                by_owner
                    .into_iter()
                    .filter(|(conn, participants)| {
                        let participants = participants.clone();
                        send(conn, SfuEvent::WorkerLost { participants })
                    })
                    .count()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speakers(room: &str) -> SfuEvent {
        SfuEvent::ActiveSpeakers {
            room: room.into(),
            speakers: vec![],
        }
    }

    fn connected(p: &str) -> SfuEvent {
        SfuEvent::MediaConnected {
            participant: p.into(),
        }
    }

    #[test]
    fn only_the_owner_acts_on_a_participant() {
        let router = Router::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        router.connect(1, tx.clone());
        router.connect(2, tx);
        let (a, room) = (ParticipantId::from("a"), RoomId::from("r"));
        assert_eq!(router.claim(1, &a, &room), Claim::New);
        assert!(router.may_act(1, &a) && !router.may_act(2, &a));
        // Connection 1 died; 2 adopted the participant: 1's late requests must not touch it.
        router.lose(1);
        assert!(router.adopt(2, a.clone(), room));
        assert!(router.may_act(2, &a) && !router.may_act(1, &a));
        assert!(router.may_act(1, &"unrouted".into()));
    }

    #[test]
    fn events_go_to_the_owner_and_speakers_to_every_connection_in_the_room() {
        let router = Router::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        router.connect(1, tx1);
        router.connect(2, tx2);
        assert!(router.adopt(1, "a".into(), "r".into()));
        assert!(router.adopt(2, "b".into(), "r".into()));
        assert!(router.adopt(2, "c".into(), "r".into()));

        assert_eq!(router.route(connected("a")), 1);
        assert_eq!(rx1.try_recv().ok(), Some(connected("a")));
        assert!(rx2.try_recv().is_err());

        assert_eq!(router.route(speakers("r")), 2);
        assert_eq!(rx1.try_recv().ok(), Some(speakers("r")));
        assert_eq!(rx2.try_recv().ok(), Some(speakers("r")));
        assert!(rx2.try_recv().is_err(), "one event per connection");

        assert_eq!(router.route(connected("nobody")), 0);
        assert_eq!(router.route(speakers("empty")), 0);

        router.forget(&"a".into());
        assert_eq!(router.route(connected("a")), 0);
        assert_eq!(router.route(speakers("r")), 1);
    }

    #[test]
    fn a_lost_worker_is_reported_to_each_owner_with_its_own_participants() {
        let router = Router::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        router.connect(1, tx1);
        router.connect(2, tx2);
        assert!(router.adopt(1, "a".into(), "r".into()));
        assert!(router.adopt(2, "b".into(), "r".into()));
        let lost = |ps: &[&str]| SfuEvent::WorkerLost {
            participants: ps.iter().map(|p| ParticipantId::from(*p)).collect(),
        };
        assert_eq!(router.route(lost(&["a", "b", "nobody"])), 2);
        assert_eq!(rx1.try_recv().ok(), Some(lost(&["a"])));
        assert_eq!(rx2.try_recv().ok(), Some(lost(&["b"])));
    }

    #[test]
    fn lost_connections_get_nothing_and_reap_returns_their_participants() {
        let router = Router::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        router.connect(1, tx);
        assert!(router.adopt(1, "a".into(), "r".into()));
        router.lose(1);
        assert_eq!(router.route(connected("a")), 0);
        // A request that finishes during the grace still counts as the connection's.
        assert!(router.adopt(1, "b".into(), "r".into()));
        let mut orphans = router.reap(1);
        orphans.sort();
        assert_eq!(orphans, vec![ParticipantId::from("a"), "b".into()]);
        assert!(!router.adopt(1, "c".into(), "r".into()));
        assert!(router.reap(1).is_empty());
    }

    #[test]
    fn a_claim_routes_before_the_answer_and_a_refusal_undoes_it() {
        let router = Router::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        router.connect(1, tx1);
        router.connect(2, tx2);
        assert_eq!(router.claim(1, &"a".into(), &"r".into()), Claim::New);
        assert_eq!(router.route(connected("a")), 1);
        assert_eq!(rx1.try_recv().ok(), Some(connected("a")));

        // Connection 2 tries the same id: the route stays with 1, and 2's refusal keeps it.
        assert_eq!(router.claim(2, &"a".into(), &"r".into()), Claim::Known);
        router.release(2, &"a".into());
        assert_eq!(router.route(connected("a")), 1);

        router.release(1, &"a".into());
        assert_eq!(router.route(connected("a")), 0);
        assert_eq!(router.route(speakers("r")), 0);

        router.lose(2);
        router.reap(2);
        assert_eq!(router.claim(2, &"b".into(), &"r".into()), Claim::Reaped);
    }
}
