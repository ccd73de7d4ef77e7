//! Viewers (WHEP): a subscriber whose connection the viewer offered, with one fixed m-line per
//! kind ("slot") that the router points at whichever track the viewer should see now. A
//! switch is a retarget of the slot's downtrack: no renegotiation, and the same rewriter
//! continues sequence numbers and timestamps from the new source (like a simulcast layer
//! switch), starting at the new track's next keyframe.

use std::time::Instant;

use str0m::media::Mid;

use super::{
    Downtrack, DowntrackKey, DowntrackState, KeyframeRequest, LayerCap, LayerSelector, PeerKey,
    Router, RtpRewriter, TrackKey, Vp8Munger, Want,
};
use crate::api::TrackKind;

impl Router {
    /// Makes `peer` (already a member, without subscribe right) a viewer: tracks reach it only
    /// through [`Router::add_viewer_slot`] and [`Router::retarget`], never by fan-out, and a
    /// track that goes leaves its slot empty instead of closing the m-line.
    pub fn mark_viewer(&mut self, peer: PeerKey) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.viewer = true;
        }
    }

    /// A slot of `kind` on the viewer's negotiated m-line `mid`, showing nothing yet.
    pub fn add_viewer_slot(
        &mut self,
        peer: PeerKey,
        kind: TrackKind,
        mid: Mid,
    ) -> Option<DowntrackKey> {
        self.members.get(&peer).filter(|m| m.viewer)?;
        let clock_rate = if kind == TrackKind::Audio {
            48_000
        } else {
            90_000
        };
        self.next_seq_seed = self
            .next_seq_seed
            .wrapping_mul(1_103_515_245)
            .wrapping_add(12_345);
        let first_seq = ((self.next_seq_seed >> 8) & 0x3fff) as u16;
        let key = DowntrackKey(self.downtracks.insert(Downtrack {
            subscriber: peer,
            track: None,
            kind,
            publisher: peer,
            state: DowntrackState::Active {
                mid,
                pt_map: vec![],
            },
            rewriter: RtpRewriter::new(clock_rate, first_seq, self.next_seq_seed),
            vp8: Vp8Munger::default(),
            want: Want::Highest,
            selector: LayerSelector::default(),
            cap: LayerCap::Unlimited,
            await_keyframe: false,
            backlog_hold: None,
            connecting: self.members.get(&peer).is_some_and(|m| m.connecting),
        }) as u32);
        if let Some(m) = self.members.get_mut(&peer) {
            m.downtracks.push(key);
        }
        Some(key)
    }

    /// Points a viewer's slot at `track` (`None`: shows nothing) with the payload-type map
    /// of its m-line for that track. Returns a keyframe request for a video track, so the
    /// switch happens at once rather than at the publisher's next periodic keyframe; the
    /// request is not throttled (a viewer switching must not stare at the old frame).
    pub fn retarget(
        &mut self,
        slot: DowntrackKey,
        track: Option<TrackKey>,
        pt_map: Vec<(u8, u8)>,
        now: Instant,
    ) -> Option<KeyframeRequest> {
        let dt = self.downtracks.get_mut(slot.0 as usize)?;
        let DowntrackState::Active { mid, .. } = dt.state else {
            return None;
        };
        let new = track.filter(|t| {
            self.tracks
                .get(t.0 as usize)
                .is_some_and(|t| t.kind == dt.kind && t.publisher != dt.subscriber)
        });
        if new == dt.track {
            dt.state = DowntrackState::Active { mid, pt_map };
            return None;
        }
        if let Some(old) = dt.track.and_then(|t| self.tracks.get_mut(t.0 as usize)) {
            old.downtracks.retain(|k| *k != slot);
        }
        dt.track = new;
        dt.state = DowntrackState::Active { mid, pt_map };
        // The next packet (of the new source) continues the stream; video waits for a
        // keyframe of the layer the selector picks.
        dt.rewriter.restart();
        dt.vp8.restart();
        dt.selector = LayerSelector::default();
        // A track without simulcast forwards from any packet: the viewer's decoder would get
        // the new source's delta frames against the old one's picture.
        dt.await_keyframe = dt.kind == TrackKind::Video;
        let track = self.tracks.get_mut(new?.0 as usize)?;
        dt.publisher = track.publisher;
        track.downtracks.push(slot);
        if track.kind != TrackKind::Video || track.muted {
            return None;
        }
        track.keyframe_request_now(dt.want, now)
    }

    /// The track a viewer's slot shows now.
    pub fn slot_track(&self, slot: DowntrackKey) -> Option<TrackKey> {
        self.downtracks.get(slot.0 as usize)?.track
    }
}
