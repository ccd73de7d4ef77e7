//! Recording on the worker's side: which local tracks of recorded rooms feed the recorder
//! (`crate::record`), at which simulcast layer, and what it must hear of mutes and
//! departures. The packet path itself is one check in `forwarding.rs`.

use super::*;
use crate::api::RecordingSpec;
use crate::forward::layer_selector::{Layer, MAX_LAYERS};
use crate::record::{Control, PayloadKind};
use str0m::format::Codec;

/// How long a recorded simulcast track shows which layers flow (every one asked for) before
/// it settles on the top one; until then it records the best layer that flowed at its start.
const LAYER_SETTLE: Duration = Duration::from_millis(1500);
/// How often recorded simulcast tracks are checked for a recorded layer that stopped.
const LAYER_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A published track being recorded.
#[derive(Debug, Clone, Copy)]
pub struct RecordTap {
    pub slot: u32,
    /// The one simulcast layer recorded; `None` while none flows.
    pub layer: Option<Layer>,
    /// A simulcast track with every layer asked for, settling on the top one at
    /// `since` + [`LAYER_SETTLE`] (counted in `record_pending`).
    pub settling: bool,
    /// When the settling started, or since when the settled layer is recorded.
    pub since: Instant,
}

impl Worker {
    pub(super) fn set_room_recording(
        &mut self,
        room: RoomId,
        recording: Option<RecordingSpec>,
        now: Instant,
    ) -> Result<SfuResponse, SfuError> {
        if self.recorder.is_none() {
            return Err(SfuError::Unavailable(
                "recording is off on this media node (no record directory)".into(),
            ));
        }
        match recording {
            Some(spec) => {
                if self.recorded_rooms.get(&room.0) == Some(&spec.id) {
                    return Ok(SfuResponse::Done);
                }
                self.stop_room_taps(&room.0);
                self.recorded_rooms.insert(room.0.clone(), spec.id);
                for peer in self.local_members(&room.0) {
                    let n = self.participants[peer.0 as usize].published.len();
                    for i in 0..n {
                        self.start_tap(peer, i, now);
                    }
                }
            }
            None => {
                self.recorded_rooms.remove(&room.0);
                self.stop_room_taps(&room.0);
            }
        }
        Ok(SfuResponse::Done)
    }

    /// The room's participants publishing here (relay proxies are recorded at their origin).
    fn local_members(&self, room: &str) -> Vec<PeerKey> {
        self.router
            .members_of(room)
            .iter()
            .copied()
            .filter(|k| {
                self.participants
                    .get(k.0 as usize)
                    .is_some_and(|p| p.remote.is_none())
            })
            .collect()
    }

    fn stop_room_taps(&mut self, room: &str) {
        for peer in self.local_members(room) {
            let entries: Vec<(TrackKey, Option<RecordTap>)> = self.participants[peer.0 as usize]
                .published
                .iter_mut()
                .map(|e| (e.key, e.record.take()))
                .collect();
            for (key, tap) in entries {
                self.stop_tap(key, tap);
            }
        }
    }

    /// Starts recording published track `index` of `peer` if its room is recorded.
    pub(super) fn start_tap(&mut self, peer: PeerKey, index: usize, now: Instant) {
        let Some(rec) = self.recorder.clone() else {
            return;
        };
        let Some(recording) = self
            .router
            .room_of(peer)
            .and_then(|room| self.recorded_rooms.get(room))
            .cloned()
        else {
            return;
        };
        let Some(p) = self.participants.get(peer.0 as usize) else {
            return;
        };
        let Some(entry) = p.published.get(index).filter(|e| e.record.is_none()) else {
            return;
        };
        let Some(track) = self.router.track(entry.key) else {
            return;
        };
        let payloads = p
            .publisher
            .as_ref()
            .map(|c| payload_kinds(&negotiated(&c.rtc, entry.mid)))
            .unwrap_or_default();
        let slot = rec.new_slot();
        rec.send(Control::StartTrack {
            slot,
            recording,
            participant: p.id.clone(),
            track: entry.id.clone(),
            kind: track.kind,
            source: track.source,
            muted: track.muted,
            payloads,
        });
        let (key, mid, kind, simulcast) = (entry.key, entry.mid, track.kind, entry.rids.len() > 1);
        // A simulcast track is recorded at once from the best layer flowing now (if any),
        // and settles on the top one once every layer had time to show.
        let layer = if simulcast {
            self.router.top_flowing_layer(key, now)
        } else {
            Some(0)
        };
        if let Some(e) = self.participants[peer.0 as usize].published.get_mut(index) {
            e.record = Some(RecordTap {
                slot,
                layer,
                settling: simulcast,
                since: now,
            });
        }
        if simulcast {
            self.router.set_record_demand(key, [true; MAX_LAYERS]);
            self.record_pending += 1;
        }
        if kind == TrackKind::Video && layer.is_some() {
            self.request_keyframe(KeyframeRequest {
                publisher: peer,
                mid,
                layer: layer.filter(|_| simulcast),
            });
        }
    }

    /// The track left (or the recording stopped): its file is closed.
    pub(super) fn stop_tap(&mut self, key: TrackKey, tap: Option<RecordTap>) {
        let (Some(tap), Some(rec)) = (tap, self.recorder.as_ref()) else {
            return;
        };
        rec.send(Control::StopTrack {
            slot: tap.slot,
            at: std::time::SystemTime::now(),
        });
        if tap.settling {
            self.record_pending = self.record_pending.saturating_sub(1);
        }
        self.router.set_record_demand(key, [false; MAX_LAYERS]);
    }

    pub(super) fn record_muted(&self, peer: PeerKey, key: TrackKey, muted: bool) {
        let tap = self
            .participants
            .get(peer.0 as usize)
            .and_then(|p| p.published.iter().find(|e| e.key == key))
            .and_then(|e| e.record);
        if let (Some(tap), Some(rec)) = (tap, self.recorder.as_ref()) {
            rec.send(Control::Mute {
                slot: tap.slot,
                muted,
                at: std::time::SystemTime::now(),
            });
        }
    }

    /// Recorded simulcast tracks that are settling: one that had nothing flowing takes the
    /// first layer that flows, and each settles on the top layer once its layers had time to
    /// show. Nothing to do (and cheap) when none is settling.
    pub(super) fn update_recording(&mut self, now: Instant) {
        self.answer_keyframe_wants();
        self.repick_stopped_layers(now);
        if self.record_pending == 0 {
            return;
        }
        let mut moved = vec![];
        let mut settled = vec![];
        for (k, p) in &mut self.participants {
            for e in &mut p.published {
                let Some(tap) = e.record.as_mut().filter(|t| t.settling) else {
                    continue;
                };
                let Some(top) = self.router.top_flowing_layer(e.key, now) else {
                    continue;
                };
                let settle = now.saturating_duration_since(tap.since) >= LAYER_SETTLE;
                if settle {
                    tap.settling = false;
                    tap.since = now;
                    settled.push((e.key, top));
                }
                if (settle || tap.layer.is_none()) && tap.layer != Some(top) {
                    tap.layer = Some(top);
                    moved.push(KeyframeRequest {
                        publisher: PeerKey(k as u32),
                        mid: e.mid,
                        layer: Some(top),
                    });
                }
            }
        }
        for (key, layer) in settled {
            self.record_pending = self.record_pending.saturating_sub(1);
            let mut only = [false; MAX_LAYERS];
            only[usize::from(layer)] = true;
            self.router.set_record_demand(key, only);
            debug!(
                track = key.0,
                layer, "recording settled on a simulcast layer"
            );
        }
        for req in moved {
            debug!(layer = ?req.layer, "recording moved to another simulcast layer");
            self.request_keyframe(req);
        }
    }
}

impl Worker {
    /// A publisher stops a simulcast layer when its uplink or CPU cannot carry it (and
    /// dynacast stops the ones nobody receives): a recording on a layer that stopped would
    /// freeze for good. It goes back to picking, every layer on again, and the writer
    /// carries the file on at the new layer's keyframe (`writer.rs` rebases its clock).
    fn repick_stopped_layers(&mut self, now: Instant) {
        if self.recorded_rooms.is_empty() || now < self.next_record_check {
            return;
        }
        self.next_record_check = now + LAYER_CHECK_INTERVAL;
        let mut stopped = vec![];
        for (_, p) in &mut self.participants {
            for e in &mut p.published {
                let Some(tap) = e.record.as_mut().filter(|t| !t.settling) else {
                    continue;
                };
                let Some(layer) = tap.layer.filter(|_| e.rids.len() > 1) else {
                    continue;
                };
                if now.saturating_duration_since(tap.since) < LAYER_SETTLE
                    || self.router.layer_flowing(e.key, layer, now)
                {
                    continue;
                }
                debug!(
                    track = e.key.0,
                    layer, "recorded layer stopped: settling again"
                );
                tap.layer = None;
                tap.settling = true;
                tap.since = now;
                stopped.push(e.key);
            }
        }
        for key in stopped {
            self.record_pending += 1;
            self.router.set_record_demand(key, [true; MAX_LAYERS]);
        }
    }

    /// Recorded videos that lost a packet (or never saw a keyframe) ask the publisher for a
    /// keyframe: nobody else may, when no subscriber receives the recorded layer.
    fn answer_keyframe_wants(&mut self) {
        let Some(rec) = self.recorder.clone() else {
            return;
        };
        while let Some(slot) = rec.take_keyframe_want() {
            let wanted = self.participants.iter().find_map(|(k, p)| {
                p.published.iter().find_map(|e| {
                    let tap = e.record.filter(|t| t.slot == slot)?;
                    // No layer flows yet: the one taken when it does asks for the keyframe.
                    let layer = tap.layer?;
                    Some(KeyframeRequest {
                        publisher: PeerKey(k as u32),
                        mid: e.mid,
                        layer: (e.rids.len() > 1).then_some(layer),
                    })
                })
            });
            if let Some(req) = wanted {
                SfuStats::add(&self.stats.recording_keyframe_requests, 1);
                self.request_keyframe(req);
            }
        }
    }
}

/// What each negotiated payload type carries, for the recording thread.
fn payload_kinds(params: &[str0m::format::PayloadParams]) -> Vec<(u8, PayloadKind)> {
    let mut kinds = vec![];
    for p in params {
        let kind = match p.spec().codec {
            Codec::Vp8 => PayloadKind::Vp8,
            Codec::Opus => PayloadKind::Opus,
            _ => PayloadKind::Other,
        };
        kinds.push((*p.pt(), kind));
        if let (Some(red), PayloadKind::Opus) = (p.red(), kind) {
            kinds.push((*red, PayloadKind::OpusRed));
        }
    }
    kinds
}
