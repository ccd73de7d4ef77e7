//! Our ICE candidate in every m-section of the SDP we send, not only the first.
//!
//! str0m writes `a=candidate` into the first m-section only (hard-coded in its SDP builder,
//! no setting for it) and never writes `a=end-of-candidates`. That is enough for a peer that reads
//! candidates per bundle group, but not for one that reads them from another m-section of
//! the group: aiortc takes the remote candidates of the bundle from the *last* m-section,
//! finds none, and never connects. RFC 8839 §5.1 / RFC 8843 let every bundled m-section
//! repeat the candidates, so we copy them into each one that is in use. This is done on the
//! SDP text at our boundary rather than by patching or vendoring str0m, so a str0m upgrade
//! stays a version bump; if str0m ever writes them everywhere itself, this finds nothing to
//! add.

/// `sdp` with every candidate line found anywhere in it also in each m-section that is not
/// rejected (port 0) and lacks them, followed by `a=end-of-candidates`: an ICE-lite server
/// knows all its candidates when it writes the SDP (one host candidate per worker), and
/// str0m writes none of those lines, so a peer honouring `a=ice-options:trickle` would wait
/// for more.
pub fn in_every_section(sdp: &str) -> String {
    let lines: Vec<&str> = sdp.split_terminator("\r\n").collect();
    let is_media = |l: &&str| l.starts_with("m=");
    let mut candidates: Vec<&str> = Vec::new();
    for l in lines.iter().filter(|l| l.starts_with("a=candidate:")) {
        if !candidates.contains(l) {
            candidates.push(l);
        }
    }
    if candidates.is_empty() {
        return sdp.to_string();
    }

    let sections = lines.iter().filter(|l| is_media(l)).count();
    let mut out = String::with_capacity(sdp.len() + 128 * sections);
    let mut push = |l: &str| {
        out.push_str(l);
        out.push_str("\r\n");
    };
    let first_media = lines.iter().position(is_media).unwrap_or(lines.len());
    for l in &lines[..first_media] {
        push(l);
    }
    let mut start = first_media;
    while start < lines.len() {
        let end = lines[start + 1..]
            .iter()
            .position(is_media)
            .map_or(lines.len(), |i| start + 1 + i);
        let section = &lines[start..end];
        // A rejected m-section (port 0) takes no transport at all.
        let rejected = section[0].split(' ').nth(1) == Some("0");
        let (mut has_end, mut missing) = (false, candidates.clone());
        for l in section {
            if *l == "a=end-of-candidates" {
                has_end = true;
                if !rejected {
                    // Candidates go before the line that says there are no more.
                    for c in missing.drain(..) {
                        push(c);
                    }
                }
            } else {
                missing.retain(|c| c != l);
            }
            push(l);
        }
        if !rejected {
            for c in missing {
                push(c);
            }
            if !has_end {
                push("a=end-of-candidates");
            }
        }
        start = end;
    }
    out
}

/// `sdp` without its `a=candidate` lines: what a client lists never reaches str0m.
///
/// An ICE-lite agent sends no checks, so a remote candidate from the SDP does only one thing
/// in str0m: a check that later arrives from that address pairs with it at the candidate's
/// priority instead of as peer-reflexive. A host candidate outranks the peer-reflexive
/// one a NAT rebinding produces, and str0m then keeps sending to the dead host address until
/// it expires (15 s); stripped, every remote is peer-reflexive (as on a connection whose
/// client sent no candidates, which is what a browser that answers before gathering does),
/// priorities are even, and `edge::send_path` can name the one to give up. Nothing else
/// changes: checks still come from wherever the client is, and are answered there.
pub fn without_candidates(sdp: &str) -> std::borrow::Cow<'_, str> {
    if !sdp.contains("a=candidate:") {
        return std::borrow::Cow::Borrowed(sdp);
    }
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if !line.starts_with("a=candidate:") {
            out.push_str(line);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::connection::Connection;
    use std::time::Instant;
    use str0m::change::SdpOffer;
    use str0m::media::{Direction, MediaKind};
    use str0m::Rtc;

    /// The m-sections of `sdp`, each as its lines.
    fn sections(sdp: &str) -> Vec<Vec<&str>> {
        let mut out: Vec<Vec<&str>> = vec![];
        for l in sdp.split_terminator("\r\n") {
            if l.starts_with("m=") {
                out.push(vec![]);
            }
            if let Some(s) = out.last_mut() {
                s.push(l);
            }
        }
        out
    }

    /// Every m-section in use has the candidate, and says there are no more after it.
    fn assert_candidates_everywhere(sdp: &str) {
        let sections = sections(sdp);
        assert!(sections.len() >= 2, "{sdp}");
        for s in sections
            .iter()
            .filter(|s| s[0].split(' ').nth(1) != Some("0"))
        {
            let cand = s.iter().position(|l| l.starts_with("a=candidate:"));
            let end = s.iter().position(|l| *l == "a=end-of-candidates");
            assert!(
                matches!((cand, end), (Some(c), Some(e)) if c < e),
                "m-section without its candidate and end-of-candidates: {s:#?}"
            );
            assert_eq!(
                s.iter().filter(|l| l.starts_with("a=candidate:")).count(),
                1,
                "exactly our one candidate: {s:#?}"
            );
        }
    }

    const ADDR: &str = "127.0.0.1:7360";

    #[test]
    fn a_subscriber_offer_carries_the_candidate_in_every_m_section() {
        let now = Instant::now();
        let mut conn = Connection::new(ADDR.parse().unwrap(), None, now).unwrap();
        let mut api = conn.rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, _) = api.apply().unwrap();
        let raw = offer.to_sdp_string();
        assert_eq!(
            raw.matches("a=candidate:").count(),
            1,
            "str0m writes it once, in the first m-section: {raw}"
        );
        let fixed = in_every_section(&raw);
        assert_candidates_everywhere(&fixed);
        // Still an offer a peer parses, with the same m-lines.
        let parsed = SdpOffer::from_sdp_string(&fixed).unwrap();
        assert_eq!(sections(&parsed.to_sdp_string()).len(), 3);
    }

    #[test]
    fn a_publish_answer_carries_the_candidate_in_every_m_section() {
        let now = Instant::now();
        // The client side: a full (not lite) peer offering audio and video to send.
        let mut client = Rtc::new(now);
        let mut api = client.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, _) = api.apply().unwrap();
        let mut conn = Connection::new(ADDR.parse().unwrap(), None, now).unwrap();
        let answer = conn.rtc.sdp_api().accept_offer(offer).unwrap();
        assert_candidates_everywhere(&in_every_section(&answer.to_sdp_string()));
    }

    #[test]
    fn an_ice_tcp_candidate_goes_everywhere_too_as_passive_on_the_media_port() {
        let now = Instant::now();
        let mut conn = Connection::new(ADDR.parse().unwrap(), None, now).unwrap();
        conn.add_tcp_passive_candidate(ADDR.parse().unwrap())
            .unwrap();
        let mut api = conn.rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, _) = api.apply().unwrap();
        let fixed = in_every_section(&offer.to_sdp_string());
        for s in sections(&fixed) {
            let cands: Vec<&&str> = s.iter().filter(|l| l.starts_with("a=candidate:")).collect();
            assert_eq!(cands.len(), 2, "udp and tcp in every section: {s:#?}");
            assert!(cands
                .iter()
                .any(|c| c.contains(" udp ") && c.contains("127.0.0.1 7360 typ host")));
            assert!(
                cands.iter().any(|c| c.contains(" tcp ")
                    && c.contains("127.0.0.1 7360 typ host")
                    && c.contains("tcptype passive")),
                "{cands:#?}"
            );
        }
    }

    #[test]
    fn rejected_sections_stay_without_and_present_ones_are_not_doubled() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 2\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   a=candidate:1 1 udp 2130706175 127.0.0.1 7360 typ host\r\n\
                   a=end-of-candidates\r\na=sendonly\r\n\
                   m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=inactive\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=end-of-candidates\r\n";
        let fixed = in_every_section(sdp);
        assert_candidates_everywhere(&fixed);
        let s = sections(&fixed);
        assert_eq!(s[0].len(), 5, "first section unchanged: {:#?}", s[0]);
        assert_eq!(
            s[1],
            vec!["m=video 0 UDP/TLS/RTP/SAVPF 96", "a=mid:1", "a=inactive"]
        );
        assert_eq!(
            s[2],
            vec![
                "m=video 9 UDP/TLS/RTP/SAVPF 96",
                "a=mid:2",
                "a=candidate:1 1 udp 2130706175 127.0.0.1 7360 typ host",
                "a=end-of-candidates"
            ]
        );
        assert!(fixed.starts_with("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"));
        assert!(fixed.ends_with("\r\n"));
        // Without any candidate there is nothing to copy.
        let none = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert_eq!(in_every_section(none), none);
    }

    #[test]
    fn client_candidates_are_stripped_and_the_rest_kept() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   a=candidate:1 1 udp 2122260223 198.51.100.2 40000 typ host generation 0\r\n\
                   a=candidate:2 1 udp 1686052607 203.0.113.9 50000 typ srflx raddr 198.51.100.2 rport 40000\r\n\
                   a=end-of-candidates\r\na=sendonly\r\n";
        let out = without_candidates(sdp);
        assert!(!out.contains("a=candidate"), "{out}");
        assert_eq!(
            out,
            sdp.split_inclusive("\r\n")
                .filter(|l| !l.starts_with("a=candidate:"))
                .collect::<String>()
        );
        let none = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert!(matches!(
            without_candidates(none),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
