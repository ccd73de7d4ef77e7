//! One entry function per fuzz target: the bytes a hostile client (or a hostile cluster
//! peer) controls, fed to the parser of ours that first sees them.
//!
//! They live here, in a workspace member built by the stable toolchain, rather than in
//! `fuzz/` (cargo-fuzz, nightly features): the libFuzzer targets call them, and so does the
//! smoke test in `tests/smoke.rs`, which replays the committed seed corpus and a few thousand
//! pseudo-random inputs on every `cargo test --workspace`. A function returns normally for
//! any input; a panic (including a failed `assert!` of an invariant below) is a finding.

mod inert_dtls;

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::media::Mid;
use zvon_sfu::cascade::datagram::{self, LinkRtp};
use zvon_sfu::edge::connection::Connection;
use zvon_sfu::edge::demux::{Demux, Route, Side};
use zvon_sfu::edge::payload_types::{negotiated, payload_type_map, simulcast_rids, video_codecs};
use zvon_sfu::edge::sdp_candidates::in_every_section;
use zvon_sfu::edge::stun::binding_request_local_ufrag;
use zvon_sfu::edge::worker::fuzz_answer_intake;
use zvon_sfu::forward::keyframe::{keyframe_start, VideoCodec};
use zvon_sfu::forward::vp8_munger::Vp8Ids;
use zvon_sfu::forward::PeerKey;
use zvon_sfu::record::{opus_frame, Codec, Vp8Depacketizer, WebmWriter};
use zvon_sfu::relay::RelayPacket;
use zvon_signaling::broadcast::offer::inspect;
use zvon_signaling::config::ApiKey;
use zvon_signaling::protocol::parse_client_message;
use zvon_signaling::rooms::{fuzz_mint_resume_token, fuzz_verify_resume_token};
use zvon_signaling::token::{self, Claims, TokenError};

/// A target's entry: any bytes, no result; a panic is a finding.
pub type Entry = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/<name>.rs` and of its seed
/// directory `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Entry)] = &[
    ("stun_demux", stun_demux),
    ("keyframe", keyframe),
    ("sdp_candidates", sdp_candidates),
    ("publish_offer", publish_offer),
    ("client_message", client_message),
    ("access_token", access_token),
    ("link_frame", link_frame),
    ("resume_token", resume_token),
    ("cascade_datagram", cascade_datagram),
    ("recording", recording),
    ("whip_offer", whip_offer),
    ("subscriber_answer", subscriber_answer),
];

/// The media port's intake for a datagram from an address it has not seen: the STUN
/// binding-request ufrag, then the demux that routes by it.
pub fn stun_demux(data: &[u8]) {
    const OURS: &str = "srvA";
    let key = (PeerKey(1), Side::Publisher);
    let mut demux = Demux::default();
    demux.add_ufrag(OURS.to_string(), key);
    let from: SocketAddr = "192.0.2.7:50000".parse().unwrap();

    let ufrag = binding_request_local_ufrag(data);
    if let Some(u) = ufrag {
        // The ufrag is the part of USERNAME before the first colon, so never contains one.
        assert!(!u.contains(':'), "ufrag {u:?} keeps a colon");
    }
    match demux.route(from, data) {
        Route::NewAddress(k) => {
            assert_eq!(k, key);
            assert_eq!(ufrag, Some(OURS), "routed without naming our ufrag");
            demux.bind_address(from, k);
            // Once bound, anything from that address goes to the connection, STUN or not.
            assert_eq!(demux.route(from, data), Route::Known(key));
            demux.remove_connection(key);
            assert_eq!(demux.route(from, data), Route::Unknown);
        }
        Route::Unknown => assert_ne!(ufrag, Some(OURS)),
        Route::Known(_) => panic!("no address was bound yet"),
    }
}

/// RTP payloads of a publisher's video track: the first byte picks the codec.
pub fn keyframe(data: &[u8]) {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    let codec = match which % 4 {
        0 => VideoCodec::Vp8,
        1 => VideoCodec::Vp9,
        2 => VideoCodec::H264,
        _ => VideoCodec::Other,
    };
    if let Some(start) = keyframe_start(codec, payload) {
        assert_ne!(codec, VideoCodec::Other);
        // VP8 sizes are 14 bits; the other codecs do not report one.
        assert!(start.width <= 0x3fff && start.height <= 0x3fff);
        if codec != VideoCodec::Vp8 {
            assert_eq!((start.width, start.height), (0, 0));
        }
    }
}

/// The candidate post-processing of every SDP we send. In production its input is str0m's
/// output, but it is plain text processing and must not depend on that being well formed.
pub fn sdp_candidates(data: &[u8]) {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let once = in_every_section(sdp);
    if !sdp.contains("a=candidate:") {
        assert_eq!(once, sdp, "nothing to copy, yet the SDP changed");
        return;
    }
    // It only adds lines: every input line survives, in order.
    let mut out = once.split_terminator("\r\n");
    for line in sdp.split_terminator("\r\n") {
        assert!(out.any(|l| l == line), "line {line:?} lost");
    }
    // A second pass (a renegotiation sends str0m's SDP through again) finds nothing to add.
    assert_eq!(in_every_section(&once), once, "not idempotent");
}

/// For targets whose code under test catches a dependency's panic on purpose (the worker's
/// offer guard turns str0m's asserts into `invalid_sdp`): libfuzzer-sys's panic hook aborts
/// at every panic, caught or not, so each run stopped at the first str0m assert the guard
/// already handles. This hook only reports; a panic that escapes the input still aborts the
/// run (libfuzzer-sys aborts when the input's call unwinds), so escaped panics stay crashes.
pub fn report_caught_panics() {
    std::panic::set_hook(Box::new(|info| {
        static REPORTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // The first few name the panic; a fuzzer that keeps finding it must not fill the log.
        if REPORTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
            eprintln!("panic (caught unless the run aborts next): {info}");
        }
    }));
}

/// A client's publish offer, as the worker takes it: parsed by str0m, accepted by a fresh
/// publisher connection, then read by our codec/simulcast extraction and answered through
/// the candidate post-processing. The connection's DTLS is inert ([`inert_dtls`]): no
/// record is exchanged on this path, and building the real one was a third of each input.
pub fn publish_offer(data: &[u8]) {
    let _ = publish_answer(data);
}

/// [`publish_offer`], returning the answer the client would get (`None`: refused), so the
/// smoke test can check that the seeds get through to our code.
pub fn publish_answer(data: &[u8]) -> Option<String> {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    inert_dtls::install();
    let text = std::str::from_utf8(data).ok()?;
    let offer = SdpOffer::from_sdp_string(text).ok()?;
    // One certificate for all inputs, as a worker shares one: making a key per input would
    // spend the fuzzing time in key generation.
    let cert = CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("a DTLS certificate")
    });
    let candidate: SocketAddr = "127.0.0.1:7360".parse().unwrap();
    let mut conn = Connection::new(candidate, Some(cert), Instant::now()).ok()?;
    // As the worker takes it: str0m's own panics on hostile offers are caught there.
    let answer = zvon_sfu::edge::offer_guard::accept_offer(&mut conn.rtc, offer).ok()?;
    // The mids a client can name in its track list: those of the offer, and made-up ones.
    let mids = text
        .split_terminator("\r\n")
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .chain(["0", "1", "nope"]);
    for mid in mids {
        let mid = Mid::from(mid);
        let codecs = video_codecs(&conn.rtc, mid);
        let params = negotiated(&conn.rtc, mid);
        let map = payload_type_map(&params, &conn.rtc, mid);
        // Matched against itself, every negotiated codec finds a partner, and so does the
        // Opus RED riding on it.
        let reds = params.iter().filter(|p| p.red().is_some()).count();
        assert_eq!(codecs.len(), params.len());
        assert_eq!(map.len(), codecs.len() + reds, "{map:?} vs {codecs:?}");
        let _ = simulcast_rids(&conn.rtc, mid);
    }
    Some(in_every_section(&answer.to_sdp_string()))
}

/// One WebSocket text frame of the client protocol.
pub fn client_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_client_message(text);
    if let Some(id) = &parsed.request_id {
        assert!(id.len() <= 64, "request id of {} bytes kept", id.len());
    }
}

const KEY: &str = "APIfuzz";
const SECRET: &str = "a-secret-of-sixteen-or-more";

/// An access token as a client presents it (odd first byte), or claims that we sign and
/// verify again (even first byte), which must come back unchanged.
pub fn access_token(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let keys = [ApiKey {
        key: KEY.into(),
        secret: SECRET.into(),
    }];
    if which % 2 == 1 {
        if let Ok(claims) = token::verify(text, &keys) {
            // Only a token signed with a known key's secret gets here; the fuzzer has no
            // secret, so this is either a seed we signed or a forgery.
            assert_eq!(claims.iss, KEY);
            let again = token::mint(&claims, SECRET).expect("claims that verified sign again");
            assert_eq!(token::verify(&again, &keys), Ok(claims));
        }
        return;
    }
    let Ok(mut claims) = serde_json::from_str::<Claims>(text) else {
        return;
    };
    claims.iss = KEY.into();
    let now = token::now_secs();
    let Ok(signed) = token::mint(&claims, SECRET) else {
        return;
    };
    let verified = token::verify(&signed, &keys);
    // Expiry and not-before are judged by the clock; a day's margin keeps this stable.
    let in_time = claims.exp > now + 86_400
        && claims
            .nbf
            .is_none_or(|nbf| nbf.saturating_add(86_400) < now);
    if in_time {
        assert_eq!(verified, Ok(claims));
    } else {
        assert!(
            matches!(
                verified,
                Err(TokenError::Expired | TokenError::NotYetValid) | Ok(_)
            ),
            "{verified:?}"
        );
    }
}

/// Bytes on a cluster-link QUIC stream: the first byte picks which side reads them.
pub fn link_frame(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let frames = zvon_sfu::link::fuzz_read_frames(which, rest);
    // Every frame takes at least its 4-byte length.
    assert!(frames <= rest.len() / 4);
}

/// A resume token from a reconnecting client, checked against an identity and room. Fields
/// are separated by NUL bytes: `token[\0identity[\0room]]`.
pub fn resume_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let token = parts.next().unwrap_or_default();
    let identity = parts.next().unwrap_or("ann");
    let room = parts.next().unwrap_or("class");
    if let Some(participant) = fuzz_verify_resume_token(SECRET, token, identity, room) {
        // Accepted means it is exactly the token we would mint for that participant.
        assert!(!participant.is_empty());
        assert_eq!(
            fuzz_mint_resume_token(SECRET, &participant, identity, room),
            token
        );
    }
}

/// One QUIC DATAGRAM from another media node (the cascade): the relayed packet's decoder,
/// then what the receiving gateway makes of it (the VP8 ids of a flagged payload), which
/// must encode to a datagram that decodes to the same packet (what a next hop would get).
/// The bytes also go, two at a time, through the per-flow sequence unrolling.
pub fn cascade_datagram(data: &[u8]) {
    if let Ok(rtp) = datagram::decode(data) {
        // The payload is the datagram's own tail (padding removed), never a copy.
        let at = rtp.payload.as_ptr() as usize - data.as_ptr() as usize;
        assert!(at + rtp.payload.len() <= data.len());
        let vp8 = rtp.vp8.then(|| Vp8Ids::parse(rtp.payload)).flatten();
        let packet = RelayPacket {
            marker: rtp.marker,
            audio_level: rtp.audio_level,
            voice_activity: rtp.voice_activity,
            video_orientation: rtp.video_orientation,
            keyframe: rtp.keyframe,
            vp8,
            ..RelayPacket::plain(
                rtp.flow,
                rtp.source,
                u64::from(rtp.seq),
                rtp.ts,
                rtp.pt,
                rtp.payload.into(),
            )
        };
        let mut out = Vec::new();
        datagram::encode(rtp.flow, &packet, &mut out);
        assert!(out.len() <= datagram::MAX_OVERHEAD + rtp.payload.len());
        let again = datagram::decode(&out).expect("our own datagram decodes");
        assert_eq!(
            again,
            LinkRtp {
                vp8: vp8.is_some(),
                ..rtp
            }
        );
    }
    // A flow's sequence numbers as the receiving gateway unrolls them against the highest
    // so far: the low 16 bits kept, never more than half the number space from it.
    let mut highest: Option<u64> = None;
    for pair in data.chunks_exact(2) {
        let seq = u16::from_be_bytes([pair[0], pair[1]]);
        let ext = datagram::extend_seq(highest, seq);
        assert_eq!(ext as u16, seq);
        if let Some(h) = highest {
            assert!(
                ext.abs_diff(h) <= 0x8000,
                "{seq} after {h} unrolled to {ext}"
            );
        }
        highest = Some(highest.map_or(ext, |h| h.max(ext)));
    }
}

/// The packets of a recorded track as its publisher sent them (the recorder reads the
/// forwarded payloads): the first byte picks VP8, Opus or Opus in RED, then packets of
/// `seq (2) ts (4) marker<<7|len (1) payload (len)`. Frames go to a WebM writer in memory,
/// timed as the recording thread times them.
pub fn recording(data: &[u8]) {
    let Some((&which, mut rest)) = data.split_first() else {
        return;
    };
    let (video, red) = match which % 3 {
        0 => (true, false),
        1 => (false, false),
        _ => (false, true),
    };
    let codec = if video {
        Codec::Vp8 {
            width: 0,
            height: 0,
        }
    } else {
        Codec::Opus
    };
    let mut file = Cursor::new(Vec::new());
    let mut webm = WebmWriter::new(&mut file, codec, 0).expect("a header in memory");
    let mut vp8 = Vp8Depacketizer::default();
    let mut first_ts: Option<u32> = None;
    let mut keyframes = 0;
    let mut pushed = 0;
    while rest.len() >= 7 {
        let seq = u16::from_be_bytes([rest[0], rest[1]]);
        let ts = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let marker = rest[6] & 0x80 != 0;
        let len = usize::from(rest[6] & 0x7f).min(rest.len() - 7);
        let payload = &rest[7..7 + len];
        rest = &rest[7 + len..];
        pushed += payload.len();
        let (data, keyframe, clock) = if video {
            let Some(frame) = vp8.push(seq, ts, marker, payload) else {
                continue;
            };
            // A file starts at a keyframe; only a keyframe has a size; the frame is made of
            // what was pushed, less the descriptors.
            keyframes += usize::from(frame.keyframe);
            assert!(keyframes > 0, "a delta frame before any keyframe");
            assert!(frame.size.is_none() || frame.keyframe);
            assert!(!frame.data.is_empty() && frame.data.len() < pushed);
            assert_eq!(frame.rtp_ts, ts);
            (frame.data, frame.keyframe, 90)
        } else {
            let Some(frame) = opus_frame(payload, red) else {
                continue;
            };
            // The primary block is the payload's own tail (all of it without RED).
            assert!(!frame.is_empty());
            assert_eq!(
                frame.as_ptr() as usize + frame.len(),
                payload.as_ptr() as usize + payload.len()
            );
            assert!(red || frame.len() == payload.len());
            (frame, true, 48)
        };
        let first = *first_ts.get_or_insert(ts);
        let tc = u64::from(ts.wrapping_sub(first)) / clock;
        webm.write_frame(tc, keyframe, data)
            .expect("writes to memory");
    }
    webm.finish(20).expect("writes to memory");
    assert!(file.get_ref().starts_with(&[0x1a, 0x45, 0xdf, 0xa3]));
}

/// A WHIP (publish) or WHEP (view) offer at the HTTP layer, read by our own SDP scan before
/// the media node sees it.
pub fn whip_offer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(media) = inspect(text) else {
        return;
    };
    assert!(!media.is_empty());
    for m in &media {
        assert!((1..=32).contains(&m.mid.len()), "mid {:?}", m.mid);
        // Every mid reported is one the offer wrote.
        assert!(text.lines().any(|l| l
            .trim_end()
            .strip_prefix("a=mid:")
            .is_some_and(|v| v.trim() == m.mid)));
    }
}

/// A subscriber's answer to our offer: the mids the worker compares with the offer's and
/// the BUNDLE group it adds to an all-stopped answer, before str0m parses it (str0m's
/// parser is exercised by `publish_offer`, at a fraction of the rate).
pub fn subscriber_answer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (mids, fixed) = fuzz_answer_intake(text);
    assert_eq!(
        mids.len(),
        text.lines().filter(|l| l.starts_with("m=")).count()
    );
    if fixed != text {
        // Only the empty group is added: every line kept, in order, and the mids unchanged.
        assert!(!text.lines().any(|l| l.starts_with("a=group:")));
        assert!(fixed
            .lines()
            .filter(|l| *l != "a=group:BUNDLE")
            .eq(text.lines()));
        let (mids_after, again) = fuzz_answer_intake(&fixed);
        assert_eq!(mids_after, mids);
        assert_eq!(again, fixed, "not idempotent");
    }
}
