//! Two nodes' gateways message by message: announcements cross with link flows, only the
//! layers an edge's subscribers want cross back as one subscription, mutes, keyframe
//! requests and lost links reach the right side.

use std::sync::Arc;
use std::time::Instant;

use str0m::media::Mid;

use super::*;
use crate::api::{ParticipantId, TrackId, TrackSource};
use crate::cascade::datagram::{decode, encode};

/// Each node has workers 0 and 1; the gateway is relay peer 2.
const G: usize = 2;
/// Node A knows node B as link 7, B knows A as link 3.
const B_AT_A: NodeIdx = 7;
const A_AT_B: NodeIdx = 3;

fn room() -> RoomId {
    RoomId("lecture".into())
}

fn camera(flow: u32) -> RelayControl<usize> {
    RelayControl::Announce(Box::new(TrackAnnouncement {
        room: room(),
        participant: ParticipantId("teacher".into()),
        track_id: TrackId("cam".into()),
        flow: FlowId(flow),
        mid: Mid::from("0"),
        kind: TrackKind::Video,
        source: TrackSource::Camera,
        muted: false,
        layers: 3,
        clock_rate: 90_000,
        params: vec![],
    }))
}

fn peers(workers: Vec<usize>) -> RelayControl<usize> {
    RelayControl::RoomPeers {
        room: room(),
        home: workers[0],
        peers: workers,
    }
}

fn to_nodes(out: &mut Vec<GatewayOut>) -> Vec<(NodeIdx, NodeControl)> {
    out.drain(..)
        .map(|o| match o {
            GatewayOut::ToNode(n, m) => (n, m),
            other => panic!("expected a node message, got {other:?}"),
        })
        .collect()
}

fn to_workers(out: &mut Vec<GatewayOut>) -> Vec<(usize, RelayControl<usize>)> {
    out.drain(..)
        .map(|o| match o {
            GatewayOut::ToWorker(w, m) => (w, m),
            other => panic!("expected a worker message, got {other:?}"),
        })
        .collect()
}

/// A publishes on its worker 0 (worker flow 1); B hosts the room on workers 0 and 1.
fn linked() -> (Gateway, Gateway, FlowId, FlowId) {
    let (mut a, mut b) = (Gateway::new(G), Gateway::new(G));
    let mut out = vec![];
    a.from_worker(G, peers(vec![0, G]), &mut out);
    a.set_nodes(room(), vec![B_AT_A], &mut out);
    assert!(out.is_empty());
    a.from_worker(0, camera(1), &mut out);
    let sent = to_nodes(&mut out);
    assert_eq!(sent.len(), 1);
    let (n, RelayControl::Announce(announced)) = &sent[0] else {
        panic!("{sent:?}");
    };
    assert_eq!(*n, B_AT_A);
    let link = announced.flow;

    b.from_worker(G, peers(vec![0, 1, G]), &mut out);
    b.set_nodes(room(), vec![A_AT_B], &mut out);
    b.from_node(A_AT_B, sent[0].1.clone(), &mut out);
    let told = to_workers(&mut out);
    assert_eq!(told.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![0, 1]);
    let RelayControl::Announce(local) = &told[0].1 else {
        panic!("{told:?}");
    };
    assert_eq!(local.participant.0, "teacher");
    (a, b, link, local.flow)
}

#[test]
fn only_the_layers_edge_subscribers_want_cross_once_per_node() {
    let (mut a, mut b, link, local) = linked();
    let mut out = vec![];
    // Nothing crosses unasked.
    let packet = |flow: FlowId| RelayPacket {
        flow,
        source: 9,
        seq: 1000,
        ts: 0,
        pt: 96,
        marker: false,
        audio_level: None,
        voice_activity: None,
        video_orientation: None,
        keyframe: None,
        vp8: None,
        received: Instant::now(),
        payload: Arc::from(&b"vp8"[..]),
    };
    let o = a.outbound(0, &packet(FlowId(1).layer(2))).unwrap();
    assert_eq!(a.node_targets(o.slot, o.layer).count(), 0);

    // Worker 0 of B wants the high layer, worker 1 the low one: one subscription to A, the union.
    b.from_worker(
        0,
        RelayControl::Subscribe {
            flow: local,
            layers: LayerMask(0b100),
        },
        &mut out,
    );
    b.from_worker(
        1,
        RelayControl::Subscribe {
            flow: local,
            layers: LayerMask(0b001),
        },
        &mut out,
    );
    let asks = to_nodes(&mut out);
    assert_eq!(asks.len(), 2);
    let (n, last) = asks.last().unwrap();
    assert_eq!(*n, A_AT_B);
    assert!(
        matches!(last, RelayControl::Subscribe { flow, layers: LayerMask(0b101) } if *flow == link)
    );

    // A turns it into its worker's subscription, on the worker's own flow.
    for (_, m) in asks {
        a.from_node(B_AT_A, m, &mut out);
    }
    let subs = to_workers(&mut out);
    assert!(matches!(
        subs.last(),
        Some((
            0,
            RelayControl::Subscribe {
                flow: FlowId(1),
                layers: LayerMask(0b101)
            }
        ))
    ));

    // Layer 2 and 0 now cross to B; layer 1 does not.
    for (layer, crosses) in [(0u8, true), (1, false), (2, true)] {
        let o = a.outbound(0, &packet(FlowId(1).layer(layer))).unwrap();
        assert_eq!(o.flow, link.layer(layer));
        assert!(o.video);
        let nodes: Vec<NodeIdx> = a.node_targets(o.slot, o.layer).collect();
        assert_eq!(nodes == vec![B_AT_A], crosses, "layer {layer}");
    }

    // Over the wire and into B's workers: the worker that wants each layer gets it.
    let mut buf = vec![];
    encode(link.layer(2), &packet(FlowId(1).layer(2)), &mut buf);
    let i = b
        .inbound(A_AT_B, &decode(&buf).unwrap(), Instant::now())
        .unwrap();
    assert_eq!(i.packet.flow, local.layer(2));
    assert_eq!(i.packet.seq & 0xFFFF, 1000);
    assert_eq!(&i.packet.payload[..], b"vp8");
    assert_eq!(
        b.worker_targets(i.slot, i.layer).collect::<Vec<_>>(),
        vec![0]
    );
    encode(link.layer(0), &packet(FlowId(1)), &mut buf);
    let i = b
        .inbound(A_AT_B, &decode(&buf).unwrap(), Instant::now())
        .unwrap();
    assert_eq!(
        b.worker_targets(i.slot, i.layer).collect::<Vec<_>>(),
        vec![1]
    );
    // A flow B never heard of is dropped.
    encode(FlowId(999), &packet(FlowId(1)), &mut buf);
    assert!(b
        .inbound(A_AT_B, &decode(&buf).unwrap(), Instant::now())
        .is_none());
}

#[test]
fn mutes_keyframe_requests_and_removals_reach_the_other_side() {
    let (mut a, mut b, link, local) = linked();
    let mut out = vec![];
    a.from_worker(
        0,
        RelayControl::Muted {
            flow: FlowId(1),
            muted: true,
        },
        &mut out,
    );
    let m = to_nodes(&mut out);
    assert!(
        matches!(&m[..], [(B_AT_A, RelayControl::Muted { flow, muted: true })] if *flow == link)
    );
    b.from_node(A_AT_B, m[0].1.clone(), &mut out);
    let m = to_workers(&mut out);
    assert_eq!(m.len(), 2);
    assert!(m
        .iter()
        .all(|(_, x)| matches!(x, RelayControl::Muted { flow, muted: true } if *flow == local)));

    // A keyframe request from B's worker reaches the publisher's worker on A (its origin
    // throttles it with its own).
    b.from_worker(
        1,
        RelayControl::KeyframeRequest {
            flow: local,
            layer: Some(0),
        },
        &mut out,
    );
    let k = to_nodes(&mut out);
    a.from_node(B_AT_A, k[0].1.clone(), &mut out);
    assert!(matches!(
        &to_workers(&mut out)[..],
        [(
            0,
            RelayControl::KeyframeRequest {
                flow: FlowId(1),
                layer: Some(0)
            }
        )]
    ));

    // Unpublished on A: gone on B's workers.
    a.from_worker(0, RelayControl::Removed { flow: FlowId(1) }, &mut out);
    let r = to_nodes(&mut out);
    b.from_node(A_AT_B, r[0].1.clone(), &mut out);
    let r = to_workers(&mut out);
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|(_, x)| matches!(x, RelayControl::Removed { flow } if *flow == local)));
}

#[test]
fn a_lost_node_takes_its_tracks_and_subscriptions_with_it() {
    let (mut a, mut b, link, local) = linked();
    let mut out = vec![];
    b.from_worker(
        0,
        RelayControl::Subscribe {
            flow: local,
            layers: LayerMask(1),
        },
        &mut out,
    );
    for (_, m) in to_nodes(&mut out) {
        a.from_node(B_AT_A, m, &mut out);
    }
    out.clear();
    // A loses B: its worker stops sending for B.
    a.node_lost(B_AT_A, &mut out);
    assert!(matches!(
        &to_workers(&mut out)[..],
        [(
            0,
            RelayControl::Subscribe {
                flow: FlowId(1),
                layers: LayerMask::NONE
            }
        )]
    ));
    let o = a.outbound(
        0,
        &RelayPacket {
            flow: FlowId(1),
            source: 1,
            seq: 1,
            ts: 0,
            pt: 96,
            marker: false,
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
            keyframe: None,
            vp8: None,
            received: Instant::now(),
            payload: Arc::from(&b""[..]),
        },
    );
    assert_eq!(a.node_targets(o.unwrap().slot, 0).count(), 0);
    let _ = link;
    // B loses A: the teacher's track leaves B's workers.
    b.node_lost(A_AT_B, &mut out);
    let r = to_workers(&mut out);
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|(_, x)| matches!(x, RelayControl::Removed { flow } if *flow == local)));
    // A node joining the room later hears of A's tracks at once.
    a.set_nodes(room(), vec![11], &mut out);
    assert!(matches!(
        &to_nodes(&mut out)[..],
        [(11, RelayControl::Announce(_))]
    ));
}
