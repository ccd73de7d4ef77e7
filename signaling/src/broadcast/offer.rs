//! A first look at a WHIP or WHEP offer, before the media node sees it: which m-lines it has
//! and whether their codecs are ones Zvon forwards. Lets the HTTP layer answer with the codes
//! RFC 9725 clients expect (400 malformed, 406 no usable codec) instead of a generic refusal.

use zvon_sfu::api::TrackKind;

/// One live m-line of the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    pub mid: String,
    pub kind: TrackKind,
    /// The offerer sends on it (`sendrecv`/`sendonly`, the default).
    pub sends: bool,
    /// The offerer receives on it (`sendrecv`/`recvonly`, the default).
    pub receives: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("not an SDP offer: {0}")]
    Malformed(String),
    #[error("no codec Zvon forwards: {0}")]
    UnsupportedCodec(String),
}

/// Codecs the media node forwards (it matches them by name between publisher and subscriber).
const AUDIO: &[&str] = &["opus"];
const VIDEO: &[&str] = &["vp8", "vp9", "h264"];

/// The offer's live audio and video m-lines. Each must carry a mid and a codec Zvon forwards;
/// other m-lines (data channels, stopped ones) are ignored.
pub fn inspect(sdp: &str) -> Result<Vec<OfferedMedia>, OfferError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(OfferError::Malformed("it does not start with v=0".into()));
    }
    struct Section {
        kind: Option<TrackKind>,
        port_zero: bool,
        mid: Option<String>,
        codecs: Vec<String>,
        direction: Option<String>,
    }
    let mut sections: Vec<Section> = vec![];
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split(' ');
            let kind = match parts.next() {
                Some("audio") => Some(TrackKind::Audio),
                Some("video") => Some(TrackKind::Video),
                _ => None,
            };
            let port_zero = parts.next() == Some("0");
            sections.push(Section {
                kind,
                port_zero,
                mid: None,
                codecs: vec![],
                direction: None,
            });
            continue;
        }
        let Some(s) = sections.last_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            s.mid = Some(mid.trim().to_string());
        } else if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
            if let Some(name) = rtpmap.split(' ').nth(1).and_then(|c| c.split('/').next()) {
                s.codecs.push(name.to_ascii_lowercase());
            }
        } else if let Some(d @ ("sendrecv" | "sendonly" | "recvonly" | "inactive")) =
            line.strip_prefix("a=")
        {
            s.direction = Some(d.to_string());
        }
    }
    let mut media = vec![];
    for s in sections {
        let Some(kind) = s.kind.filter(|_| !s.port_zero) else {
            continue;
        };
        let mid = s
            .mid
            .filter(|m| !m.is_empty() && m.len() <= 32)
            .ok_or_else(|| {
                OfferError::Malformed("every m-line needs an a=mid of 1-32 characters".into())
            })?;
        let (known, name) = match kind {
            TrackKind::Audio => (AUDIO, "audio"),
            TrackKind::Video => (VIDEO, "video"),
        };
        if !s.codecs.iter().any(|c| known.contains(&c.as_str())) {
            return Err(OfferError::UnsupportedCodec(format!(
                "{name} m-line {mid} offers {:?}; Zvon forwards {}",
                s.codecs,
                known.join(", ")
            )));
        }
        let direction = s.direction.as_deref().unwrap_or("sendrecv");
        media.push(OfferedMedia {
            mid,
            kind,
            sends: matches!(direction, "sendrecv" | "sendonly"),
            receives: matches!(direction, "sendrecv" | "recvonly"),
        });
    }
    if media.is_empty() {
        return Err(OfferError::Malformed(
            "the offer has no audio or video m-line".into(),
        ));
    }
    Ok(media)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBS: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\na=rtpmap:97 rtx/90000\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";

    #[test]
    fn finds_the_live_audio_and_video_mlines() {
        let media = inspect(OBS).unwrap();
        assert_eq!(media.len(), 2);
        assert_eq!(
            (media[0].mid.as_str(), media[0].kind),
            ("0", TrackKind::Audio)
        );
        assert!(media[1].sends && !media[1].receives);
        let viewer = OBS.replace("a=sendonly", "a=recvonly");
        assert!(inspect(&viewer)
            .unwrap()
            .iter()
            .all(|m| m.receives && !m.sends));
    }

    #[test]
    fn refuses_garbage_and_unknown_codecs_apart() {
        assert!(matches!(inspect("hello"), Err(OfferError::Malformed(_))));
        assert!(matches!(
            inspect("v=0\r\ns=-\r\n"),
            Err(OfferError::Malformed(_))
        ));
        let av1_only = OBS.replace("H264/90000", "AV1/90000");
        assert!(matches!(
            inspect(&av1_only),
            Err(OfferError::UnsupportedCodec(_))
        ));
        let no_mid = OBS.replace("a=mid:1\r\n", "");
        assert!(matches!(inspect(&no_mid), Err(OfferError::Malformed(_))));
        // A stopped m-line with an unknown codec is not in the way.
        let stopped = av1_only.replace("m=video 9", "m=video 0");
        assert_eq!(inspect(&stopped).unwrap().len(), 1);
    }
}
