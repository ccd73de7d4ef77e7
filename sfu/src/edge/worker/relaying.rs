//! A room spanning workers: this worker's side of the relay (see [`crate::relay`]).
//!
//! Tracks published here are announced to every other worker hosting part of the room and
//! handed, per packet, to those whose subscribers want the packet's layer. Tracks published
//! there appear here as a proxy participant (no connection) with ordinary router tracks, so
//! layer selection, rewriting, keyframe handling and speaker detection run unchanged; what
//! the subscribers here need flows back as subscriptions and keyframe requests.

use super::forwarding::Media;
use super::*;
use crate::edge::connection::RemoteOrigin;
use crate::forward::router::KeyframeDecision;
use crate::forward::TrackKey;
use crate::relay::{LayerMask, RelayControl, TrackAnnouncement};

impl Worker {
    /// The other workers hosting `room`.
    fn peers_of(&self, room: &str) -> &[usize] {
        self.room_peers
            .get(room)
            .map_or(&[][..], |(_, p)| p.as_slice())
    }

    fn is_home(&self, room: &str) -> bool {
        self.room_peers
            .get(room)
            .is_none_or(|(home, _)| *home == self.relay.index())
    }

    /// A local track was published: it gets its flows, and the room's other workers hear of it.
    pub(super) fn relay_track_added(&mut self, peer: PeerKey, key: TrackKey) {
        let (slot, flow) = self.origin.add_track();
        self.origin_tracks.insert(flow, key);
        let Some(entry) = self
            .participants
            .get_mut(peer.0 as usize)
            .and_then(|p| p.published.iter_mut().find(|t| t.key == key))
        else {
            return;
        };
        entry.relay = Some(slot);
        let Some(room) = self.router.room_of(peer).map(str::to_owned) else {
            return;
        };
        for to in self.peers_of(&room).to_vec() {
            self.announce(peer, key, &room, to);
        }
    }

    fn announce(&self, peer: PeerKey, key: TrackKey, room: &str, to: usize) {
        let Some(p) = self.participants.get(peer.0 as usize) else {
            return;
        };
        let (Some(entry), Some(track)) = (
            p.published.iter().find(|t| t.key == key),
            self.router.track(key),
        ) else {
            return;
        };
        let Some(flow) = entry.relay.and_then(|s| self.origin.flow(s)) else {
            return;
        };
        let announcement = TrackAnnouncement {
            room: RoomId(room.to_string()),
            participant: p.id.clone(),
            track_id: entry.id.clone(),
            flow,
            mid: entry.mid,
            kind: track.kind,
            source: track.source,
            muted: track.muted,
            layers: track.layer_count(),
            clock_rate: if track.kind == TrackKind::Audio {
                48_000
            } else {
                90_000
            },
            params: p
                .publisher
                .as_ref()
                .map(|c| negotiated(&c.rtc, entry.mid))
                .unwrap_or_default(),
        };
        self.relay
            .send_control(to, RelayControl::Announce(Box::new(announcement)));
    }

    /// A local track is gone (unpublished, withdrawn, its publisher left the room `room`).
    pub(super) fn relay_track_removed(&mut self, room: Option<&str>, entry: &PublishedTrackEntry) {
        let Some(slot) = entry.relay else {
            return;
        };
        let Some(flow) = self.origin.flow(slot) else {
            return;
        };
        self.origin.remove_track(slot);
        self.origin_tracks.remove(&flow);
        for &to in room.map_or(&[][..], |r| self.peers_of(r)) {
            self.relay.send_control(to, RelayControl::Removed { flow });
        }
    }

    /// A local track was muted or unmuted: the room's other workers follow.
    pub(super) fn relay_track_muted(&mut self, peer: PeerKey, key: TrackKey, muted: bool) {
        let Some(flow) = self
            .participants
            .get(peer.0 as usize)
            .and_then(|p| p.published.iter().find(|t| t.key == key))
            .and_then(|t| t.relay)
            .and_then(|s| self.origin.flow(s))
        else {
            return;
        };
        let Some(room) = self.router.room_of(peer) else {
            return;
        };
        for &to in self.peers_of(room) {
            self.relay
                .send_control(to, RelayControl::Muted { flow, muted });
        }
    }

    pub(super) fn handle_relay_control(
        &mut self,
        from: usize,
        msg: RelayControl<usize>,
        now: Instant,
    ) {
        self.relay_demand_dirty = true;
        match msg {
            RelayControl::RoomPeers { room, home, peers } => {
                self.set_room_peers(room.0, home, peers)
            }
            RelayControl::Announce(a) if from != self.relay.index() => self.add_remote(from, *a),
            RelayControl::Muted { flow, muted } => {
                let Some(key) = self.remote.get(from, flow).map(|t| t.local) else {
                    return;
                };
                if !muted {
                    // Nothing was relayed while muted: no hole for the subscribers here.
                    self.router.restart_downtracks(key);
                }
                if let Some(req) = self.router.set_muted(key, muted, now) {
                    self.request_keyframe(req);
                }
            }
            RelayControl::Removed { flow } => {
                if let Some(t) = self.remote.remove(from, flow) {
                    self.remove_remote_track(t.local);
                }
            }
            RelayControl::Subscribe { flow, layers } => {
                let Some(&key) = self.origin_tracks.get(&flow) else {
                    return;
                };
                let before = self
                    .origin
                    .slot_of(flow)
                    .map_or(LayerMask::NONE, |s| self.origin.demand(s));
                let Some(slot) = self.origin.subscribe(from, flow, layers) else {
                    return;
                };
                self.router
                    .set_relay_demand(key, self.origin.demand(slot).to_layers());
                // A worker starting on a video needs a keyframe to start from.
                let video = self
                    .router
                    .track(key)
                    .is_some_and(|t| t.kind == TrackKind::Video);
                let added = LayerMask(layers.0 & !before.0);
                if video && !added.is_empty() {
                    let simulcast = self.router.track(key).is_some_and(|t| t.layer_count() > 1);
                    let layer = simulcast.then(|| added.0.trailing_zeros() as u8);
                    self.relayed_keyframe_request(key, layer, now);
                }
            }
            RelayControl::KeyframeRequest { flow, layer } => {
                if let Some(&key) = self.origin_tracks.get(&flow) {
                    self.relayed_keyframe_request(key, layer, now);
                }
            }
            // Workers share memory: nothing between them is lost but what a full queue
            // refuses, and re-sending into a full queue would not help (see relay_pipe).
            RelayControl::Announce(_) | RelayControl::Nack { .. } => {}
        }
    }

    fn relayed_keyframe_request(&mut self, key: TrackKey, layer: Option<u8>, now: Instant) {
        SfuStats::add(&self.stats.keyframe_requests_received, 1);
        match self.router.relayed_keyframe_request(key, layer, now) {
            KeyframeDecision::Send(r) => self.request_keyframe(r),
            KeyframeDecision::Suppressed => {
                SfuStats::add(&self.stats.keyframe_requests_suppressed, 1)
            }
            KeyframeDecision::UnknownMid => {}
        }
    }

    /// The node's placement: which workers host `room` now. New peers hear of every track
    /// published here; the tracks of peers that left go, with their subscriptions.
    fn set_room_peers(&mut self, room: String, home: usize, peers: Vec<usize>) {
        let me = self.relay.index();
        let before: Vec<usize> = self.peers_of(&room).to_vec();
        let now_peers: Vec<usize> = if peers.contains(&me) {
            peers.into_iter().filter(|p| *p != me).collect()
        } else {
            vec![]
        };
        if now_peers.is_empty() {
            self.room_peers.remove(&room);
        } else {
            self.room_peers
                .insert(room.clone(), (home, now_peers.clone()));
        }
        let local_tracks: Vec<(PeerKey, TrackKey)> = self
            .router
            .members_of(&room)
            .iter()
            .filter_map(|p| self.participants.get(p.0 as usize).map(|x| (*p, x)))
            .filter(|(_, p)| p.remote.is_none())
            .flat_map(|(k, p)| p.published.iter().map(move |t| (k, t.key)))
            .collect();
        for &to in now_peers.iter().filter(|p| !before.contains(p)) {
            for &(peer, key) in &local_tracks {
                self.announce(peer, key, &room, to);
            }
        }
        if now_peers.is_empty() {
            // This worker no longer shares the room: every proxy in it goes, whatever its
            // origin (an announcement may have arrived after the last change).
            let proxies: Vec<PeerKey> = self
                .participants
                .iter()
                .filter(|(_, p)| p.remote.as_ref().is_some_and(|r| r.room == room))
                .map(|(k, _)| PeerKey(k as u32))
                .collect();
            for proxy in proxies {
                self.remove_proxy(proxy);
            }
        }
        for gone in before.into_iter().filter(|p| !now_peers.contains(p)) {
            // Its subscriptions on this room's tracks end.
            for &(peer, key) in &local_tracks {
                let flow = self.participants[peer.0 as usize]
                    .published
                    .iter()
                    .find(|t| t.key == key)
                    .and_then(|t| t.relay)
                    .and_then(|s| self.origin.flow(s));
                if let Some(slot) =
                    flow.and_then(|f| self.origin.subscribe(gone, f, LayerMask::NONE))
                {
                    self.router
                        .set_relay_demand(key, self.origin.demand(slot).to_layers());
                }
            }
            // Its publishers' proxies here go.
            let proxies: Vec<PeerKey> = self
                .participants
                .iter()
                .filter(|(_, p)| {
                    p.remote
                        .as_ref()
                        .is_some_and(|r| r.worker == gone && r.room == room)
                })
                .map(|(k, _)| PeerKey(k as u32))
                .collect();
            for proxy in proxies {
                self.remove_proxy(proxy);
            }
        }
    }

    /// A track of another worker's publisher: a local source for the subscribers here.
    fn add_remote(&mut self, from: usize, a: TrackAnnouncement) {
        // Taken even before this worker heard from placement that it hosts the room: the
        // origin may have heard first, and its announcement overtaken placement's message.
        if self.remote.get(from, a.flow).is_some() {
            return;
        }
        let proxy = match self.by_id.get(&a.participant) {
            Some(&k) if self.participants[k.0 as usize].remote.is_some() => k,
            // The same participant is local here: never both.
            Some(_) => return,
            None => {
                let mut p = Participant::new(a.participant.clone(), false);
                p.remote = Some(RemoteOrigin {
                    worker: from,
                    room: a.room.0.clone(),
                });
                let key = PeerKey(self.participants.insert(p) as u32);
                self.by_id.insert(a.participant.clone(), key);
                self.router.add_participant(key, &a.room.0, None);
                key
            }
        };
        let Some(key) = self.router.add_track(
            proxy,
            a.mid,
            a.kind,
            a.clock_rate,
            a.muted,
            usize::from(a.layers),
        ) else {
            return;
        };
        self.router.set_source(key, a.source);
        self.track_ids.insert(key, a.track_id.clone());
        self.remote.insert(from, a.flow, a.layers, key);
        self.participants[proxy.0 as usize]
            .published
            .push(PublishedTrackEntry {
                mid: a.mid,
                key,
                id: a.track_id,
                rids: vec![],
                codecs: vec![],
                relay: None,
                params: a.params,
                record: None,
            });
    }

    /// A remote track is gone; its proxy goes with its last track.
    fn remove_remote_track(&mut self, key: TrackKey) {
        let Some(publisher) = self.router.track(key).map(|t| t.publisher) else {
            return;
        };
        self.router.remove_track(key);
        self.track_ids.remove(&key);
        let Some(p) = self.participants.get_mut(publisher.0 as usize) else {
            return;
        };
        p.published.retain(|t| t.key != key);
        if p.published.is_empty() {
            self.remove_proxy(publisher);
        }
    }

    /// Forgets a proxy and its tracks (its subscribers' copies close at the next offer).
    pub(super) fn remove_proxy(&mut self, proxy: PeerKey) {
        let Some(p) = self.participants.get(proxy.0 as usize) else {
            return;
        };
        let Some(origin) = p.remote.as_ref().map(|r| r.worker) else {
            return;
        };
        for t in &p.published {
            if let Some(flow) = self.remote.by_local(t.key).map(|r| r.flow) {
                self.remote.remove(origin, flow);
            }
            self.track_ids.remove(&t.key);
        }
        self.router.remove_participant(proxy);
        if let Some(p) = self.participants.try_remove(proxy.0 as usize) {
            self.by_id.remove(&p.id);
        }
    }

    /// Relayed packets: each goes through the router as a local publisher's would.
    pub(super) fn drain_relay(&mut self, now: Instant) {
        let mut batch = std::mem::take(&mut self.relay_in);
        let left = self.relay.pop_into(RELAY_PER_WAKE, &mut batch);
        if !batch.is_empty() {
            self.meter.batch_received(now);
        }
        for (from, p) in batch.drain(..) {
            if p.link_stamped {
                self.meter
                    .cascade_hop(now.saturating_duration_since(p.received));
            }
            let Some((track, layer)) = self.remote.resolve(from, p.flow) else {
                continue;
            };
            let Some(kind) = self.router.track(track).map(|t| t.kind) else {
                continue;
            };
            let incoming = IncomingRtp {
                track,
                source: p.source,
                seq: p.seq,
                ts: p.ts,
                pt: p.pt,
                audio_level: p.audio_level,
                layer,
                keyframe: p.keyframe,
                payload_len: p.payload.len(),
                vp8: p.vp8,
            };
            let media = Media {
                marker: p.marker,
                ext: ExtensionValues {
                    audio_level: p.audio_level,
                    voice_activity: p.voice_activity,
                    video_orientation: p.video_orientation,
                    ..Default::default()
                },
                wallclock: p.received,
                payload: &p.payload,
                // The origin found the IDs in this descriptor: parsing it again cannot fail.
                vp8: p.vp8.and_then(|_| Vp8Descriptor::parse(&p.payload).ok()),
            };
            self.fan_out(&incoming, kind, &media, now);
        }
        self.relay_in = batch;
        if left {
            self.relay.wake_self();
        }
    }

    /// Tells each remote track's origin which layers the subscribers here need, when that
    /// changed; the room's home also takes every audio track, for speaker detection.
    pub(super) fn update_relay_demand(&mut self, now: Instant) {
        let due = self.next_relay_demand.is_none_or(|t| now >= t);
        if !(due || self.relay_demand_dirty) {
            return;
        }
        self.relay_demand_dirty = false;
        self.next_relay_demand = Some(now + crate::forward::router::DEMAND_CHECK);
        let locals: Vec<TrackKey> = self.remote.locals().collect();
        for key in locals {
            let Some(track) = self.router.track(key) else {
                continue;
            };
            let mut want = self.router.relay_want(key);
            if track.kind == TrackKind::Audio {
                let room = self
                    .participants
                    .get(track.publisher.0 as usize)
                    .and_then(|p| p.remote.as_ref())
                    .map(|r| r.room.as_str());
                if room.is_some_and(|r| self.is_home(r)) {
                    want[0] = true;
                }
            }
            if let Some((to, msg)) = self.remote.want(key, LayerMask::from_layers(want)) {
                self.relay.send_control(to, msg);
            }
        }
    }
}
