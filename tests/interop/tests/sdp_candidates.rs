//! The SDP a real server sends carries its ICE candidate, and `a=end-of-candidates`, in every
//! m-section in use, not only the first. aiortc reads the candidates of a bundle from its
//! *last* m-section: with the candidate only in the first, it never connects and the server
//! gives up on the media (`media_unavailable`) after ~15 s.

use std::time::Duration;

use anyhow::ensure;
use zvon_interop::{bounded, msg_type, TestParticipant, TestServer};

/// The m-sections of `sdp` in use (port not 0) that lack a candidate line or end with no
/// `a=end-of-candidates`, by their `m=` line.
fn sections_without_candidate(sdp: &str) -> (usize, Vec<String>) {
    let mut sections: Vec<Vec<&str>> = vec![];
    for l in sdp.lines() {
        if l.starts_with("m=") {
            sections.push(vec![]);
        }
        if let Some(s) = sections.last_mut() {
            s.push(l);
        }
    }
    let in_use: Vec<_> = sections
        .iter()
        .filter(|s| s[0].split(' ').nth(1) != Some("0"))
        .collect();
    let lacking = in_use
        .iter()
        .filter(|s| {
            !s.iter().any(|l| l.starts_with("a=candidate:")) || !s.contains(&"a=end-of-candidates")
        })
        .map(|s| s[0].to_string())
        .collect();
    (in_use.len(), lacking)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_m_section_of_offers_and_answers_has_the_candidate() {
    bounded(Duration::from_secs(60), async {
        let server = TestServer::start().await?;
        let room = "sdp-candidates";
        let publisher = server.publishing_participant(room, "camera").await?;
        let viewer =
            TestParticipant::join(server.http_addr(), &server.token(room, "viewer"), room).await?;
        viewer
            .wait_receiving(&publisher.id, "video", 10, Duration::from_secs(20))
            .await?;

        let answer = publisher.publisher.as_ref().expect("published").answer["sdp"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (n, lacking) = sections_without_candidate(&answer);
        ensure!(n == 2, "publish_answer with {n} m-sections in use:\n{answer}");
        ensure!(
            lacking.is_empty(),
            "publish_answer m-sections without candidate/end-of-candidates: {lacking:?}\n{answer}"
        );

        let offers: Vec<String> = viewer
            .signal
            .log()
            .iter()
            .filter(|m| msg_type(m) == "subscriber_offer")
            .filter_map(|m| m["sdp"].as_str().map(str::to_string))
            .collect();
        ensure!(!offers.is_empty(), "no subscriber_offer");
        for offer in &offers {
            let (n, lacking) = sections_without_candidate(offer);
            ensure!(n >= 2, "subscriber_offer with {n} m-sections in use:\n{offer}");
            ensure!(
                lacking.is_empty(),
                "subscriber_offer m-sections without candidate/end-of-candidates: {lacking:?}\n{offer}"
            );
        }
        eprintln!(
            "publish_answer: 2 m-sections, subscriber_offers: {} checked",
            offers.len()
        );
        viewer.close().await;
        publisher.close().await;
        server.shutdown().await;
        Ok(())
    })
    .await;
}
