//! A media worker that panics, on a real node with two workers on loopback: the node must say
//! it is degraded, stop placing rooms there, hand the worker's participants back, and keep
//! serving on the other worker.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;
use zvon_sfu::api::{ParticipantId, PublishedTrack, TrackKind, TrackSource, VideoSubscription};
use zvon_sfu::{SfuConfig, SfuError, SfuEvent, SfuNode, SfuRequest, SfuResponse};

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

fn add(room: &str, participant: &str) -> SfuRequest {
    SfuRequest::AddParticipant {
        room: room.into(),
        participant: participant.into(),
        can_subscribe: true,
        video_subscription: VideoSubscription::Auto,
    }
}

/// A real audio offer from str0m, as a publishing browser would make it.
fn publish(participant: &str) -> SfuRequest {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    let mid = api.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        Some("stream".into()),
        Some("mic".into()),
        None,
    );
    let (offer, _pending) = api.apply().expect("an offer");
    SfuRequest::PublishOffer {
        participant: participant.into(),
        sdp: offer.to_sdp_string(),
        tracks: vec![PublishedTrack {
            mid: mid.to_string(),
            track_id: format!("{participant}-mic").as_str().into(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            muted: false,
        }],
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn worker_lost(events: &mut UnboundedReceiver<SfuEvent>) -> Vec<ParticipantId> {
    timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Some(SfuEvent::WorkerLost { participants }) => return participants,
                Some(_) => continue,
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("the lost participants are reported within 5 s")
}

/// The answer's candidate port: which worker's socket the participant's media goes to.
async fn answer_port(node: &SfuNode, participant: &str) -> u16 {
    match node.request(publish(participant)).await {
        Ok(SfuResponse::PublishAnswer { sdp }) => sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=candidate:"))
            .and_then(|c| c.split_whitespace().nth(5))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no candidate port in {sdp}")),
        other => panic!("expected an answer for {participant}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_panicking_worker_degrades_the_node_and_its_participants_are_handed_back() {
    let config = SfuConfig {
        bind_ip: LOOPBACK.into(),
        advertised_ip: LOOPBACK.into(),
        port_base: 0,
        workers: 2,
        ..Default::default()
    };
    let node = SfuNode::start(&config).expect("media node");
    let mut events = node.take_events().expect("events");
    let stats = node.stats();
    let ports: Vec<u16> = node.media_addrs().iter().map(|a| a.port()).collect();
    wait_until("both workers running", || stats.all_workers_running()).await;

    for p in ["ann", "bob"] {
        assert_eq!(node.request(add("class", p)).await, Ok(SfuResponse::Done));
    }
    assert_eq!(answer_port(&node, "ann").await, ports[0]);
    assert_eq!(node.worker_of(&"bob".into()), Some(0));

    node.panic_worker(0);

    // Everyone on the dead worker is reported, so signaling can move them.
    let mut lost = worker_lost(&mut events).await;
    lost.sort();
    assert_eq!(lost, vec![ParticipantId::from("ann"), "bob".into()]);
    // Readiness (`/readyz`) drops: load balancers and operators see the node is degraded.
    assert!(!stats.all_workers_running());
    assert_eq!(stats.worker_panics.load(Ordering::Relaxed), 1);
    // Requests about a lost participant are refused plainly, not left hanging.
    let refused = node
        .request(SfuRequest::PeerStats {
            participant: "bob".into(),
        })
        .await;
    assert!(
        matches!(refused, Err(SfuError::Unavailable(_))),
        "{refused:?}"
    );

    // Worker 0 has no load now, but a new room goes to the live worker, and media works there.
    assert_eq!(
        node.request(add("other", "cid")).await,
        Ok(SfuResponse::Done)
    );
    assert_eq!(answer_port(&node, "cid").await, ports[1]);
    // A lost participant added again lands on the live worker too.
    assert_eq!(
        node.request(add("class", "ann")).await,
        Ok(SfuResponse::Done)
    );
    assert_eq!(answer_port(&node, "ann").await, ports[1]);
    // Removing one that was never added again is not an error: it is gone already.
    let removed = node
        .request(SfuRequest::RemoveParticipant {
            participant: "bob".into(),
        })
        .await;
    assert_eq!(removed, Ok(SfuResponse::Done));
}
