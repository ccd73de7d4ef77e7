//! The packet path: a publisher's RTP packet fanned out to its subscribers' connections,
//! and keyframe requests carried back to publishers.

use super::*;

/// What every subscriber's copy of one packet shares.
pub(super) struct Media<'a> {
    pub marker: bool,
    pub ext: ExtensionValues,
    pub wallclock: Instant,
    pub payload: &'a std::sync::Arc<[u8]>,
    /// The payload's VP8 descriptor (VP8 only), for patching picture IDs per subscriber.
    pub vp8: Option<Vp8Descriptor>,
}

impl Worker {
    /// The packet path: attribute, fan out, write to each subscriber, hand to the workers
    /// whose subscribers want it. No allocation beyond what str0m does per encrypted datagram.
    pub(super) fn forward(&mut self, publisher: PeerKey, pkt: RtpPacket, now: Instant) {
        let Some(p) = self.participants.get_mut(publisher.0 as usize) else {
            return;
        };
        let Some(conn) = p.publisher.as_mut() else {
            return;
        };
        let Some((mid, rid)) = conn
            .rtc
            .direct_api()
            .stream_rx(&pkt.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            return;
        };
        let Some(entry) = p.published_by_mid(mid) else {
            return;
        };
        let track = entry.key;
        let Some((kind, muted)) = self.router.track(track).map(|t| (t.kind, t.muted)) else {
            return;
        };
        let (layer, keyframe, vp8) = match kind {
            TrackKind::Video => {
                let codec = entry.codec_of(*pkt.header.payload_type);
                let vp8 = (codec == VideoCodec::Vp8)
                    .then(|| Vp8Descriptor::parse(&pkt.payload).ok())
                    .flatten();
                (
                    entry.layer_of(rid),
                    keyframe_start(codec, &pkt.payload),
                    vp8,
                )
            }
            TrackKind::Audio => (0, None, None),
        };
        let relay = entry.relay;
        // Recording: one layer of an unmuted track, handed over without a copy.
        let record = entry
            .record
            .filter(|r| r.layer == Some(layer) && !muted)
            .map(|r| r.slot);
        if let (Some(slot), Some(rec)) = (record, self.recorder.as_ref()) {
            rec.push(RecPacket {
                slot,
                layer,
                seq: *pkt.seq_no as u16,
                ts: pkt.header.timestamp,
                pt: *pkt.header.payload_type,
                marker: pkt.header.marker,
                arrival: pkt.timestamp,
                payload: pkt.payload.clone(),
            });
        }
        let vp8_ids = vp8.as_ref().and_then(Vp8Ids::of);
        self.meter.rtp_received(kind, pkt.payload.len());
        let incoming = IncomingRtp {
            track,
            source: *pkt.header.ssrc,
            seq: *pkt.seq_no,
            ts: pkt.header.timestamp,
            pt: *pkt.header.payload_type,
            audio_level: pkt.header.ext_vals.audio_level,
            layer,
            keyframe,
            payload_len: pkt.payload.len(),
            vp8: vp8_ids,
        };
        // The same for every copy: only what the subscriber's decoder and renderer use.
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        if let Some(slot) = relay.filter(|_| !muted) {
            let video = kind == TrackKind::Video;
            // A few workers at most; most tracks have none.
            for to in self.origin.targets(slot, layer) {
                let Some(flow) = self.origin.flow(slot) else {
                    break;
                };
                self.relay.push(
                    to,
                    RelayPacket {
                        flow: flow.layer(layer),
                        source: incoming.source,
                        seq: incoming.seq,
                        ts: incoming.ts,
                        pt: incoming.pt,
                        marker: pkt.header.marker,
                        audio_level: ext.audio_level,
                        voice_activity: ext.voice_activity,
                        video_orientation: ext.video_orientation,
                        keyframe,
                        vp8: vp8_ids,
                        received: pkt.timestamp,
                        link_stamped: false,
                        payload: pkt.payload.clone(),
                    },
                    video,
                );
            }
        }
        let media = Media {
            marker: pkt.header.marker,
            ext,
            wallclock: pkt.timestamp,
            payload: &pkt.payload,
            vp8,
        };
        self.fan_out(&incoming, kind, &media, now);
    }

    /// Writes one packet, of a local publisher or relayed, to every subscriber the router
    /// picks.
    pub(super) fn fan_out(
        &mut self,
        incoming: &IncomingRtp,
        kind: TrackKind,
        media: &Media<'_>,
        now: Instant,
    ) {
        let mut forwards = std::mem::take(&mut self.forwards);
        self.router.on_rtp(incoming, now, &mut forwards);
        while let Some(r) = self.router.pop_keyframe_request() {
            self.request_keyframe(r);
        }
        let video = kind == TrackKind::Video;
        let len = media.payload.len();
        let mut held_back: Option<PeerKey> = None;
        for f in &forwards {
            let Some(sub) = self
                .participants
                .get_mut(f.subscriber.0 as usize)
                .and_then(|s| s.subscriber.as_mut())
            else {
                continue;
            };
            // Written before ICE and DTLS are up, str0m would queue it without bound: only in
            // the moments after the client reached it (`early_start`).
            if !sub.takes_media(now) {
                continue;
            }
            // A parked connection (nothing sent lately, str0m's estimator at zero so that it
            // does not pad) restarts its estimator before the packet is paced.
            if let Some(from) = sub.idle.on_media(now) {
                sub.rtc.bwe().reset(Bitrate::bps(from));
            }
            let pacing_settled = sub.pacing_settled(now);
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(f.mid, None) else {
                continue;
            };
            // A frame that would start behind a backlog in str0m's pacer is held back, and
            // the downtrack waits for a keyframe (see `forward::egress_backlog`).
            // Before the connection is up its queue only waits for DTLS.
            if video && f.frame_start && sub.connected {
                let backlogged = tx.queue_info().is_some_and(|q| {
                    let waiting = q.first_unsent().map(|t| now.saturating_duration_since(t));
                    let key = incoming.keyframe.is_some();
                    egress_backlog::backlogged(q.byte_size(), waiting, sub.egress_limit_bytes, key)
                });
                if backlogged && self.router.egress_backlogged(f, now) {
                    debug!(
                        subscriber = f.subscriber.0,
                        mid = %f.mid,
                        layer = incoming.layer,
                        "send queue backlogged: frame held back"
                    );
                    held_back = Some(f.subscriber);
                    continue;
                }
            }
            // Unpaced by a cut (`stale_queue`): paced again from the keyframe it starts over
            // at, or once what it had queued is gone; not in the connection's unpaced start
            // (`edge::startup_pacing`).
            if video && f.frame_start && !sub.unpaced_video.is_empty() && pacing_settled {
                let drained = tx.queue_info().is_none_or(|q| q.byte_size() == 0);
                if f.starts_over || drained {
                    if let Some(i) = sub.unpaced_video.iter().position(|m| *m == f.mid) {
                        sub.unpaced_video.swap_remove(i);
                        tx.set_unpaced(false);
                    }
                }
            }
            // A video starting over at this keyframe: the old cache's packets are only in the
            // way (a new cache is empty; str0m has no call that just clears one).
            if video && f.starts_over {
                sub.video_started_over_at = Some(now);
                if let Some(q) = tx.queue_info() {
                    debug!(
                        subscriber = f.subscriber.0,
                        layer = incoming.layer,
                        queued_bytes = q.byte_size(),
                        oldest_ms = q
                            .first_unsent()
                            .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                        "video starts over at a keyframe"
                    );
                }
                tx.set_rtx_cache(RTX_CACHE_PACKETS, sub.rtx_window.age(), Some(RTX_RATIO_CAP));
            }
            let mut write = RtpWrite::new(
                f.pt.into(),
                SeqNo::from(f.seq),
                f.ts,
                media.wallclock,
                media.payload.clone(),
            )
            .marker(media.marker)
            .ext_vals(media.ext.clone())
            .nackable(video);
            // A subscriber that switched layers sees VP8 IDs continuing from what it had;
            // str0m patches them while serializing (no copy of the payload here).
            if let (Some(d), Some(ids)) =
                (media.vp8, f.vp8.filter(|ids| Some(*ids) != incoming.vp8))
            {
                let mut patch = d.patch().picture_id(ids.picture_id);
                if let Some(t) = ids.tl0_pic_idx {
                    patch = patch.tl0_pic_idx(t);
                }
                if let Ok(patch) = patch.build() {
                    write = write.vp8_patch(patch);
                }
            }
            tx.write_rtp(write);
            sub.egress.written += 1;
            sub.media_written = true;
            sub.written.wrote(f.pt, video);
            if !std::mem::replace(&mut sub.queued_for_poll, true) {
                self.dirty.push((f.subscriber, Side::Subscriber));
            }
            self.meter.rtp_forwarded(kind, len);
        }
        if let Some(held) = held_back {
            self.meter.egress_backlog_hold();
            // The hold cut the subscriber: what its old layer queued goes too.
            if let Some(raw) = self.router.raw_egress_estimate(held) {
                self.flush_stale_video(held, raw, now);
            }
            while let Some(r) = self.router.pop_keyframe_request() {
                self.request_keyframe(r);
            }
        }
        self.forwards = forwards;
    }

    /// Sends a PLI for one simulcast layer, or for every stream of the m-line.
    pub(super) fn request_keyframe(&mut self, req: KeyframeRequest) {
        let Some(p) = self.participants.get_mut(req.publisher.0 as usize) else {
            return;
        };
        if p.remote.is_some() {
            // Its publisher is on another worker, which throttles and sends the PLI.
            if let Some((to, msg)) = p
                .track_by_mid(req.mid)
                .and_then(|key| self.remote.keyframe_request(key, req.layer))
            {
                self.relay.send_control(to, msg);
            }
            return;
        }
        let rids = p
            .published_by_mid(req.mid)
            .map_or(&[][..], |t| t.rids.as_slice());
        // At most MAX_LAYERS streams; `None` is the m-line's only stream without simulcast.
        let mut targets = [None; crate::forward::layer_selector::MAX_LAYERS];
        let n = match req.layer {
            Some(l) => {
                targets[0] = rids.get(usize::from(l)).copied();
                1
            }
            None => {
                for (t, r) in targets.iter_mut().zip(rids) {
                    *t = Some(*r);
                }
                rids.len().clamp(1, targets.len())
            }
        };
        let Some(conn) = p.publisher.as_mut() else {
            return;
        };
        let mut api = conn.rtc.direct_api();
        let mut sent = false;
        for rid in &targets[..n] {
            if let Some(rx) = api.stream_rx_by_mid(req.mid, *rid) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                SfuStats::add(&self.stats.keyframe_requests_sent, 1);
                sent = true;
            }
        }
        debug!(publisher = req.publisher.0, layer = ?req.layer, sent, "keyframe request");
        if sent {
            self.mark_dirty((req.publisher, Side::Publisher));
        }
    }
}
