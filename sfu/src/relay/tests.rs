//! The relay state, message by message: flow ids, subscriptions with layers, keyframe
//! requests routed to the origin, and only wanted layers travelling.

use super::*;

/// Two cores of a node: worker 0 originates, worker 1 receives (its local keys are u32).
fn origin_and_remote() -> (OriginFlows<usize>, RemoteTracks<usize, u32>, FlowId, FlowId) {
    let mut origin = OriginFlows::default();
    let (_, camera) = origin.add_track();
    let (_, mic) = origin.add_track();
    let mut remote = RemoteTracks::default();
    remote.insert(0, camera, 3, 10);
    remote.insert(0, mic, 1, 11);
    (origin, remote, camera, mic)
}

/// Carries a receiver's message to the origin, as a pipe would.
fn deliver(origin: &mut OriginFlows<usize>, from: usize, msg: RelayControl<usize>) -> bool {
    match msg {
        RelayControl::Subscribe { flow, layers } => origin.subscribe(from, flow, layers).is_some(),
        other => panic!("not for the origin: {other:?}"),
    }
}

#[test]
fn every_track_and_layer_has_its_own_flow_and_ids_are_never_reused() {
    let mut origin: OriginFlows<usize> = OriginFlows::default();
    let (a_slot, a) = origin.add_track();
    let (_, b) = origin.add_track();
    let layers_a: Vec<FlowId> = (0..3).map(|l| a.layer(l)).collect();
    let layers_b: Vec<FlowId> = (0..3).map(|l| b.layer(l)).collect();
    assert!(layers_a.iter().all(|f| !layers_b.contains(f)));
    origin.remove_track(a_slot);
    assert_eq!(origin.slot_of(a), None);
    let (_, c) = origin.add_track();
    assert!(c != a && c != b, "a removed track's flow came back");
}

#[test]
fn a_receiver_gets_only_the_layers_its_subscribers_want() {
    let (mut origin, mut remote, camera, _) = origin_and_remote();
    let slot = origin.slot_of(camera).unwrap();
    assert_eq!(
        origin.targets(slot, 0).count(),
        0,
        "nothing travels unasked"
    );

    let (to, msg) = remote.want(10, LayerMask(0b100)).unwrap();
    assert_eq!(to, 0);
    assert!(deliver(&mut origin, 1, msg));
    assert_eq!(origin.targets(slot, 2).collect::<Vec<_>>(), vec![1]);
    assert_eq!(origin.targets(slot, 0).count(), 0);
    assert_eq!(origin.demand(slot), LayerMask(0b100));

    // The same want again sends nothing; a layer the track lacks is never asked for.
    assert!(remote.want(10, LayerMask(0b100)).is_none());
    let (_, msg) = remote.want(11, LayerMask(0b111)).unwrap();
    assert!(matches!(
        msg,
        RelayControl::Subscribe {
            layers: LayerMask(1),
            ..
        }
    ));

    // A switch down: the low layer replaces the high one.
    let (_, msg) = remote.want(10, LayerMask(0b001)).unwrap();
    deliver(&mut origin, 1, msg);
    assert_eq!(origin.targets(slot, 0).collect::<Vec<_>>(), vec![1]);
    assert_eq!(origin.targets(slot, 2).count(), 0);

    // Nobody there wants it any more: unsubscribed.
    let (_, msg) = remote.want(10, LayerMask::NONE).unwrap();
    deliver(&mut origin, 1, msg);
    assert!(!origin.is_wanted(slot));
}

#[test]
fn two_receivers_each_get_their_own_layers_and_the_origin_demands_the_union() {
    let (mut origin, _, camera, _) = origin_and_remote();
    let slot = origin.slot_of(camera).unwrap();
    origin.subscribe(1, camera, LayerMask(0b001));
    origin.subscribe(2, camera, LayerMask(0b100));
    assert_eq!(origin.targets(slot, 0).collect::<Vec<_>>(), vec![1]);
    assert_eq!(origin.targets(slot, 2).collect::<Vec<_>>(), vec![2]);
    assert_eq!(origin.demand(slot), LayerMask(0b101));
    assert_eq!(origin.forget_peer(2), vec![slot]);
    assert_eq!(origin.demand(slot), LayerMask(0b001));
    // A subscription for a track removed meanwhile is ignored.
    origin.remove_track(slot);
    assert!(origin.subscribe(1, camera, LayerMask(1)).is_none());
}

#[test]
fn relayed_packets_resolve_to_the_local_track_and_layer() {
    let (_, mut remote, camera, mic) = origin_and_remote();
    assert_eq!(remote.resolve(0, camera.layer(2)), Some((10, 2)));
    assert_eq!(remote.resolve(0, mic), Some((11, 0)));
    // Same flow id from another origin, or a layer the track lacks: not ours.
    assert_eq!(remote.resolve(1, camera), None);
    assert_eq!(remote.resolve(0, mic.layer(1)), None);
    // Removed: late packets are dropped.
    remote.remove(0, camera);
    assert_eq!(remote.resolve(0, camera.layer(1)), None);
    assert!(remote.by_local(10).is_none());
}

#[test]
fn keyframe_requests_go_to_the_origin_with_the_layer() {
    let (_, remote, camera, _) = origin_and_remote();
    match remote.keyframe_request(10, Some(1)) {
        Some((0, RelayControl::KeyframeRequest { flow, layer })) => {
            assert_eq!((flow, layer), (camera, Some(1)));
        }
        other => panic!("{other:?}"),
    }
    assert!(remote.keyframe_request(99, None).is_none());
}

#[test]
fn an_origin_that_leaves_takes_its_tracks_with_it() {
    let (_, mut remote, _, _) = origin_and_remote();
    remote.insert(2, FlowId(1), 1, 20);
    let gone = remote.remove_origin(0);
    let mut locals: Vec<u32> = gone.iter().map(|t| t.local).collect();
    locals.sort();
    assert_eq!(locals, vec![10, 11]);
    assert_eq!(remote.locals().collect::<Vec<_>>(), vec![20]);
}

#[test]
fn layer_masks_round_trip() {
    let m = LayerMask::from_layers([true, false, true]);
    assert_eq!(m, LayerMask(0b101));
    assert_eq!(m.to_layers(), [true, false, true]);
    assert!(m.has(2) && !m.has(1) && !m.has(7));
}
