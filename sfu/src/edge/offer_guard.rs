//! A client's offer, taken by str0m without letting it panic the media worker.
//!
//! str0m 0.25 asserts on some malformed offers: fuzzing `publish_offer` found one where a
//! payload type claimed by a second m-line's attributes panics `accept_offer` ("Pt locked
//! multiple times", `src/format/payload_params.rs`). A panic in a worker takes down every
//! room on it (supervision re-places them), so one hostile client could interrupt many.
//! The offer is taken inside `catch_unwind`; a panic is an offer refused, and the caller
//! must not keep using a connection it already had (str0m may have been halfway through).

use std::panic::{catch_unwind, AssertUnwindSafe};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::{Rtc, RtcError};

/// Why an offer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum OfferRefused {
    /// str0m returned an error; the connection is as it was.
    #[error("{0}")]
    Rejected(RtcError),
    /// str0m panicked on it; the connection may be inconsistent and must be dropped.
    #[error("the SDP library panicked on this offer: {0}")]
    Panicked(String),
}

/// `rtc.sdp_api().accept_offer(offer)`, with a panic turned into [`OfferRefused::Panicked`].
pub fn accept_offer(rtc: &mut Rtc, offer: SdpOffer) -> Result<SdpAnswer, OfferRefused> {
    match catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer))) {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(OfferRefused::Rejected(e)),
        Err(payload) => Err(OfferRefused::Panicked(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::edge::connection::Connection;

    /// The input the fuzzer found (`fuzz/` target `publish_offer`): pt 102 is H.264 in the
    /// video m-line, and the audio m-line, which does not list it, carries an rtpmap for it.
    const PT_CLAIMED_TWICE: &[u8] = include_bytes!("testdata/offer_pt_claimed_twice.sdp");

    #[test]
    fn an_offer_str0m_panics_on_is_refused_and_the_worker_goes_on() {
        let text = String::from_utf8_lossy(PT_CLAIMED_TWICE);
        let offer = SdpOffer::from_sdp_string(&text).expect("parses");
        let candidate = "127.0.0.1:7360".parse().unwrap();
        let mut conn = Connection::new(candidate, None, Instant::now()).unwrap();
        // str0m 0.25 panics on it (when upstream fixes the assert, expect `Rejected` here).
        match accept_offer(&mut conn.rtc, offer) {
            Err(OfferRefused::Panicked(m)) => assert!(m.contains("Pt locked"), "{m}"),
            other => panic!("expected str0m's panic, caught: {other:?}"),
        }
        // The thread that took it goes on, and a fresh connection takes an ordinary offer.
        let good = text.replace("a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42eation-mode=1;profile-level-id=42e01f\r\na=rtpmap:103 rtx/90000\r\na=fmtp:103 apt:102\r\n", "");
        assert_ne!(good, text, "the audio m-line's stray rtpmap was taken out");
        let mut fresh = Connection::new(candidate, None, Instant::now()).unwrap();
        let offer = SdpOffer::from_sdp_string(&good).expect("parses");
        assert!(accept_offer(&mut fresh.rtc, offer).is_ok());
    }
}
