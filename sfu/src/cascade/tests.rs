//! The cascade link over real QUIC on loopback: control messages both ways, relayed RTP
//! intact and in order, oversize packets counted, a wrong secret refused.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::media::Mid;

use super::datagram::{decode, encode, extend_seq, MAX_OVERHEAD};
use super::*;
use crate::api::{ParticipantId, RoomId, TrackId, TrackKind, TrackSource};
use crate::link::LinkError;
use crate::relay::{FlowId, LayerMask, RelayControl, RelayPacket, TrackAnnouncement};

const SECRET: &str = "cascade-test-secret-0123";

async fn pair(
    server_secret: &str,
    client_secret: &str,
) -> (
    Result<
        (
            CascadeLink,
            tokio::sync::mpsc::UnboundedReceiver<NodeControl>,
        ),
        LinkError,
    >,
    Result<
        (
            CascadeLink,
            tokio::sync::mpsc::UnboundedReceiver<NodeControl>,
        ),
        LinkError,
    >,
) {
    let server_config = CascadeConfig::new(server_secret);
    let endpoint = server_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), &server_config).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let incoming = endpoint.accept().await.unwrap();
        let r = CascadeLink::accept(incoming, &server_config)
            .await
            .map(|(link, rx, peer)| {
                assert_eq!(peer, "node-b");
                (link, rx)
            });
        // Keep the endpoint alive as long as the test's link.
        std::mem::forget(endpoint);
        r
    });
    let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let dialed =
        CascadeLink::connect(&client, addr, &CascadeConfig::new(client_secret), "node-b").await;
    std::mem::forget(client);
    (accept.await.unwrap(), dialed)
}

fn announcement(flow: FlowId, kind: TrackKind) -> TrackAnnouncement {
    TrackAnnouncement {
        room: RoomId("lecture".into()),
        participant: ParticipantId("teacher".into()),
        track_id: TrackId("cam".into()),
        flow,
        mid: Mid::from("1"),
        kind,
        source: TrackSource::Camera,
        muted: false,
        layers: 3,
        clock_rate: 90_000,
        params: vec![],
    }
}

fn rtp(seq: u64, len: usize) -> RelayPacket {
    RelayPacket::plain(
        FlowId(0),
        42,
        seq,
        seq as u32 * 3000,
        96,
        Arc::from(vec![(seq % 251) as u8; len]),
    )
}

#[tokio::test]
async fn control_messages_cross_both_ways_in_order() {
    let (origin, edge) = pair(SECRET, SECRET).await;
    let (origin, mut origin_rx) = origin.unwrap();
    let (edge, mut edge_rx) = edge.unwrap();

    origin.send_control(RelayControl::Announce(Box::new(announcement(
        FlowId(9),
        TrackKind::Video,
    ))));
    origin.send_control(RelayControl::Muted {
        flow: FlowId(9),
        muted: true,
    });
    let got = tokio::time::timeout(Duration::from_secs(5), edge_rx.recv())
        .await
        .unwrap()
        .unwrap();
    match got {
        RelayControl::Announce(a) => {
            assert_eq!((a.flow, a.layers, a.kind), (FlowId(9), 3, TrackKind::Video));
            assert_eq!(a.participant.0, "teacher");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        edge_rx.recv().await,
        Some(RelayControl::Muted { muted: true, .. })
    ));

    edge.send_control(RelayControl::Subscribe {
        flow: FlowId(9),
        layers: LayerMask(0b100),
    });
    edge.send_control(RelayControl::KeyframeRequest {
        flow: FlowId(9),
        layer: Some(2),
    });
    assert!(matches!(
        origin_rx.recv().await,
        Some(RelayControl::Subscribe {
            layers: LayerMask(0b100),
            ..
        })
    ));
    assert!(matches!(
        origin_rx.recv().await,
        Some(RelayControl::KeyframeRequest { layer: Some(2), .. })
    ));
    assert_eq!(edge.stats().control_received.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn relayed_rtp_arrives_intact_and_a_full_packet_fits_from_the_start() {
    let (origin, edge) = pair(SECRET, SECRET).await;
    let (origin, _rx1) = origin.unwrap();
    let (edge, _rx2) = edge.unwrap();
    // The MTU floor: a browser's full-size RTP packet fits before any MTU discovery.
    let max = origin.max_datagram_size().unwrap();
    assert!(max >= 1200 + MAX_OVERHEAD, "max datagram {max}");

    let mut buf = vec![];
    let total = 300u64;
    let sender = async {
        for seq in 0..total {
            let audio = seq % 3 == 0;
            let p = rtp(65_400 + seq, if audio { 120 } else { 1200 });
            let flow = if audio { FlowId(1) } else { FlowId(9) };
            encode(flow, &p, &mut buf);
            let priority = if audio {
                Priority::Audio
            } else {
                Priority::Video
            };
            origin.send(priority, Bytes::copy_from_slice(&buf));
            if seq % 20 == 19 {
                // ~a lecture's rate, not a burst past the budget.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let receiver = async {
        let mut last: [Option<u64>; 2] = [None, None];
        let mut got = 0u64;
        while got < total {
            let d = tokio::time::timeout(Duration::from_secs(5), edge.read_datagram())
                .await
                .expect("datagrams stopped")
                .unwrap();
            let p = decode(&d).unwrap();
            let i = usize::from(p.flow == FlowId(9));
            let seq = extend_seq(last[i], p.seq);
            if let Some(l) = last[i] {
                assert!(seq > l, "out of order on loopback");
            }
            last[i] = Some(seq);
            // A flow's first packet unrolls to 65 536 + its number, so this is the sent
            // number, before and past the 16-bit wrap; payloads are untouched.
            let original = seq - 65_536;
            assert_eq!(p.source, 42);
            assert_eq!(p.payload[0], (original % 251) as u8);
            assert_eq!(p.payload.len(), if i == 0 { 120 } else { 1200 });
            got += 1;
        }
        last
    };
    let ((), last) = tokio::join!(sender, receiver);
    // Both flows crossed the 16-bit wrap and unrolled past it.
    assert_eq!(last[0], Some(65_536 + 65_400 + 297));
    assert_eq!(last[1], Some(65_536 + 65_400 + 299));
    assert_eq!(origin.stats().datagrams_sent.load(Ordering::Relaxed), total);
    assert_eq!(origin.stats().dropped_audio.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_packet_too_large_for_the_path_is_counted_and_the_link_goes_on() {
    let (origin, edge) = pair(SECRET, SECRET).await;
    let (origin, _rx1) = origin.unwrap();
    let (edge, _rx2) = edge.unwrap();
    let max = origin.max_datagram_size().unwrap();
    origin.send(Priority::Video, Bytes::from(vec![0x80; max + 1]));
    let mut buf = vec![];
    encode(FlowId(1), &rtp(5, 100), &mut buf);
    origin.send(Priority::Audio, Bytes::copy_from_slice(&buf));
    let d = tokio::time::timeout(Duration::from_secs(5), edge.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decode(&d).unwrap().seq, 5);
    // The oversize one was refused by quinn and counted; the link carried on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.stats().too_large.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "TooLarge not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_node_with_the_wrong_secret_is_refused() {
    let (server, client) = pair(SECRET, "another-cluster-secret").await;
    assert!(
        matches!(server, Err(LinkError::Auth(_))),
        "{:?}",
        server.err()
    );
    assert!(
        matches!(client, Err(LinkError::Auth(_))),
        "{:?}",
        client.err()
    );
}
