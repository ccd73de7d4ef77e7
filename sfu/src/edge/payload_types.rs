//! Maps a publisher's payload types to a subscriber's.
//!
//! Each browser numbers codecs its own way; the same VP8 may be PT 96 upstream and PT 98
//! downstream. Matched on codec, clock rate and, for H.264, profile and packetization mode.

use str0m::format::{Codec, PayloadParams};
use str0m::media::{Mid, Rid, Rids};
use str0m::Rtc;

use crate::forward::keyframe::VideoCodec;

pub fn payload_type_map(
    pub_params: &[PayloadParams],
    subscriber: &Rtc,
    subscriber_mid: Mid,
) -> Vec<(u8, u8)> {
    let sub_params = negotiated(subscriber, subscriber_mid);
    let mut map = vec![];
    // Each PayloadParams is a main codec (its RTX, if any, rides along as `resend`).
    for p in pub_params {
        if let Some(q) = sub_params.iter().find(|q| same_codec(p, q)) {
            map.push((*p.pt(), *q.pt()));
            // Opus RED rides on the Opus params. Its blocks name the primary payload type
            // inside the payload, which is not rewritten: browsers number Opus alike.
            if let (Some(from), Some(to)) = (p.red(), q.red()) {
                map.push((*from, *to));
            }
        }
    }
    map
}

/// The payload types negotiated on m-line `mid`, main codecs with their RTX.
pub fn negotiated(rtc: &Rtc, mid: Mid) -> Vec<PayloadParams> {
    let all = rtc.codec_config().params();
    let Some(media) = rtc.media(mid) else {
        return vec![];
    };
    let remote = media.remote_pts();
    all.iter()
        .filter(|p| remote.is_empty() || remote.contains(&p.pt()))
        .cloned()
        .collect()
}

fn same_codec(a: &PayloadParams, b: &PayloadParams) -> bool {
    let (a, b) = (a.spec(), b.spec());
    a.codec == b.codec
        && a.clock_rate == b.clock_rate
        && a.format.profile_level_id.map(|p| p >> 16) == b.format.profile_level_id.map(|p| p >> 16)
        && a.format.packetization_mode == b.format.packetization_mode
}

/// The video codecs negotiated on a publisher's m-line, by payload type.
pub fn video_codecs(publisher: &Rtc, mid: Mid) -> Vec<(u8, VideoCodec)> {
    negotiated(publisher, mid)
        .iter()
        .map(|p| {
            let codec = match p.spec().codec {
                Codec::Vp8 => VideoCodec::Vp8,
                Codec::Vp9 => VideoCodec::Vp9,
                Codec::H264 => VideoCodec::H264,
                _ => VideoCodec::Other,
            };
            (*p.pt(), codec)
        })
        .collect()
}

/// The simulcast rids a publisher's m-line receives, in the offer's order (which the
/// protocol fixes as lowest layer first); empty without simulcast.
pub fn simulcast_rids(publisher: &Rtc, mid: Mid) -> Vec<Rid> {
    match publisher.media(mid).map(|m| m.rids_rx()) {
        Some(Rids::Specific(rids)) if rids.len() > 1 => rids.clone(),
        _ => vec![],
    }
}
