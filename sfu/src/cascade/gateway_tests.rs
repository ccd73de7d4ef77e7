//! Two nodes' gateways message by message: announcements cross with link flows, only the
//! layers an edge's subscribers want cross back as one subscription, mutes, keyframe
//! requests and lost links reach the right side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::Mid;

use super::*;
use crate::api::{ParticipantId, TrackId, TrackSource};
use crate::cascade::datagram::{decode, encode};
use crate::cascade::repair::{CACHE_AGE, MAX_TRIES, VIDEO_CACHE};

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
    b.from_node(A_AT_B, sent[0].1.clone(), Instant::now(), &mut out);
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
    let packet = |flow: FlowId| RelayPacket::plain(flow, 9, 1000, 0, 96, Arc::from(&b"vp8"[..]));
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
        a.from_node(B_AT_A, m, Instant::now(), &mut out);
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
        .inbound(A_AT_B, &decode(&buf).unwrap(), Instant::now(), &mut out)
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
        .inbound(A_AT_B, &decode(&buf).unwrap(), Instant::now(), &mut out)
        .unwrap();
    assert_eq!(
        b.worker_targets(i.slot, i.layer).collect::<Vec<_>>(),
        vec![1]
    );
    // A flow B never heard of is dropped.
    encode(FlowId(999), &packet(FlowId(1)), &mut buf);
    assert!(b
        .inbound(A_AT_B, &decode(&buf).unwrap(), Instant::now(), &mut out)
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
    b.from_node(A_AT_B, m[0].1.clone(), Instant::now(), &mut out);
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
    a.from_node(B_AT_A, k[0].1.clone(), Instant::now(), &mut out);
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
    b.from_node(A_AT_B, r[0].1.clone(), Instant::now(), &mut out);
    let r = to_workers(&mut out);
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|(_, x)| matches!(x, RelayControl::Removed { flow } if *flow == local)));
}

#[test]
fn a_lost_node_takes_its_tracks_and_subscriptions_with_it() {
    let (mut a, mut b, link, local) = subscribed_layer0();
    let mut out = vec![];
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
        &RelayPacket::plain(FlowId(1), 1, 1, 0, 96, Arc::from(&b""[..])),
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

/// B's worker 0 subscribes to layer 0 of A's camera; A's worker then sends it to B.
fn subscribed_layer0() -> (Gateway, Gateway, FlowId, FlowId) {
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
        a.from_node(B_AT_A, m, Instant::now(), &mut out);
    }
    out.clear();
    (a, b, link, local)
}

fn camera_packet(seq: u64) -> RelayPacket {
    RelayPacket::plain(
        FlowId(1),
        9,
        seq,
        seq as u32 * 3000,
        96,
        Arc::from(seq.to_be_bytes().as_slice()),
    )
}

/// What A's driver does with a worker's packet: encode it once, keep it, send it to B.
fn a_sends(a: &mut Gateway, seq: u64, now: Instant) -> Bytes {
    let p = camera_packet(seq);
    let o = a.outbound(0, &p).unwrap();
    assert_eq!(
        a.node_targets(o.slot, o.layer).collect::<Vec<_>>(),
        [B_AT_A]
    );
    let mut buf = vec![];
    encode(o.flow, &p, &mut buf);
    let d = Bytes::from(buf);
    a.sent(&o, seq as u16, &d, now);
    d
}

fn seq_of(i: &Inbound) -> u64 {
    u64::from_be_bytes(i.packet.payload[..8].try_into().unwrap())
}

#[test]
fn a_datagram_lost_on_the_link_is_nacked_resent_from_the_cache_and_forwarded_once() {
    let (mut a, mut b, link, local) = subscribed_layer0();
    let now = Instant::now();
    let mut out = vec![];
    let mut forwarded = vec![];
    // 65533..65540 crosses the 16-bit wrap; 65535 and 2 (65538) are lost on the link.
    for seq in 65_533..65_541u64 {
        let d = a_sends(&mut a, seq, now);
        if seq == 65_535 || seq == 65_538 {
            continue;
        }
        if let Some(i) = b.inbound(A_AT_B, &decode(&d).unwrap(), now, &mut out) {
            assert_eq!(i.packet.flow, local);
            forwarded.push(seq_of(&i));
        }
    }
    // Each gap was asked for as soon as it showed, naming the link flow of layer 0.
    let nacks = to_nodes(&mut out);
    let asked: Vec<u16> = nacks
        .iter()
        .flat_map(|(n, m)| {
            assert_eq!(*n, A_AT_B);
            match m {
                RelayControl::Nack { flow, seqs } => {
                    assert_eq!(*flow, link);
                    seqs.clone()
                }
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(asked, vec![65_535, 2]);
    assert_eq!(b.repair.nacks_sent, 2);

    // A answers from its cache, to B only.
    let mut resent = vec![];
    for (_, m) in nacks {
        a.from_node(B_AT_A, m, now, &mut out);
    }
    for o in out.drain(..) {
        match o {
            GatewayOut::Resend {
                node,
                datagram,
                video,
            } => {
                assert_eq!(node, B_AT_A);
                assert!(video);
                resent.push(datagram);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(resent.len(), 2);
    assert_eq!(a.repair.resent, 2);
    // The repairs reach B's workers; a second copy of each (a late original, an answer
    // to a retried NACK) does not.
    for d in resent.iter().chain(resent.iter()) {
        if let Some(i) = b.inbound(A_AT_B, &decode(d).unwrap(), now, &mut out) {
            forwarded.push(seq_of(&i));
        }
    }
    assert!(out.is_empty(), "no NACK for a repaired packet: {out:?}");
    forwarded.sort_unstable();
    assert_eq!(forwarded, (65_533..65_541).collect::<Vec<_>>());
    assert_eq!(b.repair.repaired, 2);
    assert_eq!(b.repair.duplicates, 2);
    assert!(!b.repairs_pending());
}

#[test]
fn an_unanswered_nack_is_retried_after_a_round_trip_then_given_up() {
    let (mut a, mut b, _link, _local) = subscribed_layer0();
    let now = Instant::now();
    let mut out = vec![];
    b.set_rtt(A_AT_B, Duration::from_millis(10));
    for seq in [100u64, 102] {
        let d = a_sends(&mut a, seq, now);
        b.inbound(A_AT_B, &decode(&d).unwrap(), now, &mut out);
    }
    assert_eq!(to_nodes(&mut out).len(), 1, "asked at once");
    // Within the round trip (+50 % and a margin): not again.
    b.poll_repairs(now + Duration::from_millis(15), &mut out);
    assert!(out.is_empty());
    b.poll_repairs(now + Duration::from_millis(21), &mut out);
    assert!(
        matches!(&to_nodes(&mut out)[..], [(A_AT_B, RelayControl::Nack { seqs, .. })] if seqs == &[101])
    );
    let mut at = now + Duration::from_millis(21);
    for _ in 0..10 {
        at += Duration::from_millis(25);
        b.poll_repairs(at, &mut out);
    }
    assert_eq!(to_nodes(&mut out).len(), usize::from(MAX_TRIES) - 2);
    assert!(!b.repairs_pending());
    assert_eq!(b.repair.unrepaired, 1);
}

#[test]
fn a_nack_for_what_the_cache_lost_or_a_layer_not_subscribed_is_not_answered() {
    let (mut a, _b, link, _local) = subscribed_layer0();
    let now = Instant::now();
    let mut out = vec![];
    for seq in 0..(VIDEO_CACHE as u64 + 10) {
        a_sends(&mut a, seq, now);
    }
    // Pushed out of the ring by newer packets; too old; a layer B never asked for.
    for (flow, seq, at) in [
        (link, 3u16, now),
        (link, 515, now + CACHE_AGE * 2),
        (link.layer(1), 515, now),
    ] {
        a.from_node(
            B_AT_A,
            RelayControl::Nack {
                flow,
                seqs: vec![seq],
            },
            at,
            &mut out,
        );
    }
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(a.repair.cache_misses, 3);
    // Still kept: answered.
    a.from_node(
        B_AT_A,
        RelayControl::Nack {
            flow: link,
            seqs: vec![515],
        },
        now,
        &mut out,
    );
    assert!(matches!(
        &out[..],
        [GatewayOut::Resend { node: B_AT_A, .. }]
    ));
}

#[test]
fn a_layer_turned_back_on_or_an_unmute_is_not_a_loss() {
    let (mut a, mut b, link, local) = subscribed_layer0();
    let now = Instant::now();
    let mut out = vec![];
    let deliver = |a: &mut Gateway, b: &mut Gateway, seq: u64, out: &mut Vec<GatewayOut>| {
        let d = a_sends(a, seq, now);
        b.inbound(A_AT_B, &decode(&d).unwrap(), now, out).is_some()
    };
    assert!(deliver(&mut a, &mut b, 10, &mut out));
    assert!(deliver(&mut a, &mut b, 11, &mut out));
    // B's subscribers stop wanting the layer, then want it again; A sent on meanwhile.
    for layers in [LayerMask::NONE, LayerMask(1)] {
        b.from_worker(
            0,
            RelayControl::Subscribe {
                flow: local,
                layers,
            },
            &mut out,
        );
    }
    out.clear();
    assert!(deliver(&mut a, &mut b, 40, &mut out));
    assert!(
        out.is_empty(),
        "asked for packets never meant for B: {out:?}"
    );
    // Muted at the origin (nothing relayed), then unmuted.
    for muted in [true, false] {
        b.from_node(
            A_AT_B,
            RelayControl::Muted { flow: link, muted },
            now,
            &mut out,
        );
    }
    out.clear();
    assert!(deliver(&mut a, &mut b, 90, &mut out));
    assert!(
        out.is_empty(),
        "asked for packets withheld while muted: {out:?}"
    );
    // A real loss after that is still asked for.
    assert!(deliver(&mut a, &mut b, 92, &mut out));
    assert!(
        matches!(&to_nodes(&mut out)[..], [(A_AT_B, RelayControl::Nack { seqs, .. })] if seqs == &[91])
    );
}

/// A room on three nodes: A hosts the lecturer, B and C students. B receives A's camera,
/// but never offers it to C: C gets it from A (a star per track from its origin, not a mesh
/// where the edges feed each other).
#[test]
fn an_imported_track_is_never_passed_on_to_a_third_node() {
    const C_AT_B: NodeIdx = 9;
    let (_a, mut b, _link, local) = linked();
    let mut out = vec![];
    // B learns that the room spans C too: C hears of nothing from B (B exports nothing).
    b.set_nodes(room(), vec![A_AT_B, C_AT_B], &mut out);
    assert!(out.is_empty(), "{out:?}");
    // B's workers take the camera; the subscription goes to A alone.
    b.from_worker(
        0,
        RelayControl::Subscribe {
            flow: local,
            layers: LayerMask(1),
        },
        &mut out,
    );
    assert!(matches!(
        &to_nodes(&mut out)[..],
        [(A_AT_B, RelayControl::Subscribe { .. })]
    ));
    // C asks B for the flow A announced: B has no such export and says nothing.
    b.from_node(
        C_AT_B,
        RelayControl::Subscribe {
            flow: FlowId(1),
            layers: LayerMask(1),
        },
        Instant::now(),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn the_send_stamp_becomes_the_origin_receive_instant_at_the_edge() {
    use crate::cascade::datagram::encode_stamped;
    use crate::cascade::stamp::LinkClock;
    use std::time::UNIX_EPOCH;

    let (mut a, mut b, _, _) = subscribed_layer0();
    // Both nodes read one wall clock, each at its own moment.
    let t0 = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    a.clock = LinkClock::new(t0, wall);
    b.clock = LinkClock::new(
        t0 + Duration::from_millis(7),
        wall + Duration::from_millis(7),
    );
    let mut out = vec![];

    // The origin worker got the packet at t0 + 2 ms; the edge gateway takes it 900 µs later.
    let mut p = camera_packet(1);
    p.received = t0 + Duration::from_millis(2);
    let o = a.outbound(0, &p).unwrap();
    let mut buf = vec![];
    encode_stamped(o.flow, &p, Some(a.clock.stamp(p.received)), &mut buf);
    let now = p.received + Duration::from_micros(900);
    let i = b
        .inbound(A_AT_B, &decode(&buf).unwrap(), now, &mut out)
        .unwrap();
    assert!(i.packet.link_stamped);
    assert_eq!(i.packet.received, p.received);

    // Without a stamp (an older node), the edge's own instant, and nothing to measure.
    let p = camera_packet(2);
    encode(o.flow, &p, &mut buf);
    let i = b
        .inbound(A_AT_B, &decode(&buf).unwrap(), now, &mut out)
        .unwrap();
    assert!(!i.packet.link_stamped);
    assert_eq!(i.packet.received, now);
}
