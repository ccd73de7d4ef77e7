//! The cluster link over real sockets on loopback, with a real media node behind it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;
use zvon_sfu::api::{PublishedTrack, TrackKind, TrackSource, VideoSubscription};
use zvon_sfu::link::{client_endpoint, ControlServer, LinkConfig, LinkError, RemoteSfu};
use zvon_sfu::{SfuConfig, SfuError, SfuEvent, SfuNode, SfuRequest, SfuResponse};

const SECRET: &str = "test cluster secret";
const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

fn node() -> (Arc<SfuNode>, UnboundedReceiver<SfuEvent>) {
    let config = SfuConfig {
        bind_ip: LOOPBACK.into(),
        advertised_ip: LOOPBACK.into(),
        port_base: 0,
        workers: 1,
        ..Default::default()
    };
    let node = SfuNode::start(&config).expect("media node");
    let events = node.take_events().expect("events");
    (Arc::new(node), events)
}

/// A media node behind a control server; call inside a runtime.
fn server(config: LinkConfig) -> (ControlServer, Arc<SfuNode>) {
    let (node, events) = node();
    let bind = SocketAddr::from((LOOPBACK, 0));
    let server = ControlServer::start(bind, config, node.clone(), events).expect("server");
    (server, node)
}

async fn connect(
    addr: SocketAddr,
    config: &LinkConfig,
) -> Result<(RemoteSfu, UnboundedReceiver<SfuEvent>), LinkError> {
    let endpoint = client_endpoint(SocketAddr::from((LOOPBACK, 0)))?;
    timeout(
        Duration::from_secs(5),
        RemoteSfu::connect(&endpoint, addr, config),
    )
    .await
    .expect("connect in time")
}

fn add(room: &str, participant: &str, can_subscribe: bool) -> SfuRequest {
    SfuRequest::AddParticipant {
        room: room.into(),
        participant: participant.into(),
        can_subscribe,
        video_subscription: VideoSubscription::Auto,
    }
}

fn peer_stats(participant: &str) -> SfuRequest {
    SfuRequest::PeerStats {
        participant: participant.into(),
    }
}

async fn request(remote: &RemoteSfu, req: SfuRequest) -> Result<SfuResponse, SfuError> {
    timeout(Duration::from_secs(5), remote.request(req))
        .await
        .expect("answer in time")
}

#[tokio::test]
async fn requests_and_typed_errors_cross_the_link() {
    let config = LinkConfig::new(SECRET);
    let (server, _node) = server(config.clone());
    let (remote, _events) = connect(server.local_addr(), &config).await.unwrap();
    assert_eq!(remote.remote_addr(), server.local_addr());

    assert_eq!(
        request(&remote, add("r", "a", true)).await,
        Ok(SfuResponse::Done)
    );
    assert_eq!(
        request(&remote, add("r", "a", true)).await,
        Err(SfuError::ParticipantExists)
    );
    assert_eq!(
        request(&remote, peer_stats("nobody")).await,
        Err(SfuError::UnknownParticipant)
    );
    assert!(matches!(
        request(&remote, peer_stats("a")).await,
        Ok(SfuResponse::PeerStats(_))
    ));

    // Requests run concurrently on their own streams.
    let many: Vec<_> = (0..20)
        .map(|i| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.request(add("r", &format!("p{i}"), false)).await })
        })
        .collect();
    for task in many {
        assert_eq!(task.await.unwrap(), Ok(SfuResponse::Done));
    }

    let stats = server.stats();
    assert_eq!(stats.requests_served.load(Ordering::Relaxed), 24);
    assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 1);
    assert_eq!(stats.open_connections.load(Ordering::Relaxed), 1);
    let link = remote.stats();
    assert!(link.sent_bytes > 0 && link.received_bytes > 0);
    assert!(link.rtt > Duration::ZERO);
    assert!(!remote.is_closed());
}

/// A real offer from str0m as the publishing browser would make it.
fn audio_offer() -> (String, String) {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    let mid = api.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        Some("stream-a".into()),
        Some("mic".into()),
        None,
    );
    let (offer, _pending) = api.apply().expect("an offer");
    (offer.to_sdp_string(), mid.to_string())
}

#[tokio::test]
async fn events_reach_the_connection_that_owns_the_participant() {
    let config = LinkConfig::new(SECRET);
    let (server, _node) = server(config.clone());
    let (publisher_link, mut publisher_events) =
        connect(server.local_addr(), &config).await.unwrap();
    let (subscriber_link, mut subscriber_events) =
        connect(server.local_addr(), &config).await.unwrap();

    assert_eq!(
        request(&publisher_link, add("room", "A", false)).await,
        Ok(SfuResponse::Done)
    );
    let (sdp, mid) = audio_offer();
    let publish = SfuRequest::PublishOffer {
        participant: "A".into(),
        sdp,
        tracks: vec![PublishedTrack {
            mid,
            track_id: "A-mic".into(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
            muted: false,
        }],
    };
    match request(&publisher_link, publish).await {
        Ok(SfuResponse::PublishAnswer { sdp }) => assert!(sdp.starts_with("v=0"), "{sdp}"),
        other => panic!("expected an answer, got {other:?}"),
    }

    assert_eq!(
        request(&subscriber_link, add("room", "B", true)).await,
        Ok(SfuResponse::Done)
    );
    let event = timeout(Duration::from_secs(5), async {
        loop {
            match subscriber_events.recv().await {
                Some(e @ SfuEvent::SubscriberOffer { .. }) => return e,
                Some(_) => continue,
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("a subscriber offer in time");
    let SfuEvent::SubscriberOffer {
        participant,
        sdp,
        tracks,
    } = event
    else {
        unreachable!()
    };
    assert_eq!(participant.0, "B");
    assert!(sdp.starts_with("v=0"));
    assert!(tracks.iter().any(|t| t.track_id.0 == "A-mic"));

    // B's offer is not the publisher link's business.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(e) = publisher_events.try_recv() {
        assert!(
            !matches!(&e, SfuEvent::SubscriberOffer { participant, .. } if participant.0 == "B"),
            "{e:?}"
        );
    }
    assert!(server.stats().events_sent.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn wrong_secret_is_refused_and_the_server_keeps_serving() {
    let config = LinkConfig::new(SECRET);
    let (server, _node) = server(config.clone());

    let wrong = LinkConfig::new("not the secret");
    match connect(server.local_addr(), &wrong).await {
        Err(LinkError::Auth(_)) => {}
        Err(e) => panic!("expected an auth error, got {e}"),
        Ok(_) => panic!("a wrong secret was accepted"),
    }
    let stats = server.stats();
    assert_eq!(stats.auth_failures.load(Ordering::Relaxed), 1);
    assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 0);

    let (remote, _events) = connect(server.local_addr(), &config).await.unwrap();
    assert_eq!(
        request(&remote, add("r", "a", false)).await,
        Ok(SfuResponse::Done)
    );
}

#[tokio::test]
async fn shutdown_closes_the_remote_promptly() {
    let config = LinkConfig::new(SECRET);
    let (server, _node) = server(config.clone());
    let (remote, mut events) = connect(server.local_addr(), &config).await.unwrap();
    server.shutdown();
    let reason = timeout(Duration::from_secs(4), remote.closed())
        .await
        .expect("closed in time");
    assert!(matches!(reason, LinkError::Closed(_)), "{reason}");
    assert!(remote.is_closed());
    assert!(matches!(
        request(&remote, peer_stats("a")).await,
        Err(SfuError::Unavailable(_))
    ));
    // The event channel ends with the connection.
    assert!(timeout(Duration::from_secs(1), events.recv())
        .await
        .expect("event stream ends")
        .is_none());
}

#[tokio::test]
async fn a_dead_media_node_is_noticed_within_the_idle_timeout() {
    let config = LinkConfig::new(SECRET);
    // The media node's link runs in its own runtime; dropping that runtime stops its tasks
    // without a close frame, as a crash or a pulled cable would.
    let media_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (server, _node) = {
        let _guard = media_runtime.enter();
        server(config.clone())
    };
    let (remote, _events) = connect(server.local_addr(), &config).await.unwrap();
    assert_eq!(
        request(&remote, add("r", "a", false)).await,
        Ok(SfuResponse::Done)
    );

    let killed = Instant::now();
    media_runtime.shutdown_background();
    let reason = timeout(Duration::from_secs(4), remote.closed())
        .await
        .expect("a dead peer is seen within 4 s");
    assert!(matches!(reason, LinkError::Closed(_)), "{reason}");
    assert!(killed.elapsed() < Duration::from_secs(4));
    assert!(remote.is_closed());
    drop(server);
}

#[tokio::test]
async fn garbage_datagrams_leave_the_server_working() {
    let config = LinkConfig::new(SECRET);
    let (server, _node) = server(config.clone());
    let (remote, _events) = connect(server.local_addr(), &config).await.unwrap();

    let socket = UdpSocket::bind(SocketAddr::from((LOOPBACK, 0))).unwrap();
    let mut junk = vec![];
    for len in [0usize, 1, 7, 64, 1200, 1500] {
        junk.push(vec![0u8; len]);
        junk.push((0..len).map(|i| (i * 31 + 7) as u8).collect());
        // A long-header first byte, as an Initial packet would start.
        let mut initial: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        if let Some(first) = initial.first_mut() {
            *first = 0xc3;
        }
        junk.push(initial);
    }
    for datagram in &junk {
        let _ = socket.send_to(datagram, server.local_addr());
    }

    assert_eq!(
        request(&remote, add("r", "a", false)).await,
        Ok(SfuResponse::Done)
    );
    assert_eq!(request(&remote, peer_stats("a")).await.map(|_| ()), Ok(()));
    let (fresh, _events) = connect(server.local_addr(), &config).await.unwrap();
    assert_eq!(
        request(&fresh, add("r", "b", false)).await,
        Ok(SfuResponse::Done)
    );
    // Fencing: another connection's participant is not this one's to act on.
    assert_eq!(
        request(&fresh, peer_stats("a")).await.map(|_| ()),
        Err(SfuError::UnknownParticipant)
    );
}

#[tokio::test]
async fn orphans_are_removed_after_the_grace() {
    let mut config = LinkConfig::new(SECRET);
    config.orphan_grace = Duration::from_millis(300);
    let (server, node) = server(config.clone());
    let (signaling, _events) = connect(server.local_addr(), &config).await.unwrap();
    // A second connection keeps the server's connection count honest; the node itself is
    // asked about the orphan (links are fenced: only the owner's may ask).
    let (_observer, _observer_events) = connect(server.local_addr(), &config).await.unwrap();
    assert_eq!(
        request(&signaling, add("r", "orphan", false)).await,
        Ok(SfuResponse::Done)
    );

    // The last handle going closes the link.
    drop(signaling);
    assert!(
        node.request(peer_stats("orphan")).await.is_ok(),
        "media must outlive its signaling connection for the grace"
    );

    let removed = timeout(Duration::from_secs(5), async {
        loop {
            match node.request(peer_stats("orphan")).await {
                Err(SfuError::UnknownParticipant) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(removed.is_ok(), "the orphan was never removed");
    let stats = server.stats();
    assert_eq!(stats.orphans_removed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.open_connections.load(Ordering::Relaxed), 1);
}
