//! A real fleet: `redis-server` and several `zvon serve --cluster` processes, driven by webrtc-rs
//! participants through the documented protocol. Each test kills, pauses or drains real
//! processes and checks what a user would notice: media flowing, the socket staying open,
//! documented errors.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use zvon_interop::cluster::{ClusterNode, NodeOptions, TestRedis};
use zvon_interop::{bounded, msg_type, token, SignalClient, TestParticipant, SIGNAL_TIMEOUT};

/// One fleet at a time: each test runs several processes on a 2-core machine.
static FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const FLOWING: Duration = Duration::from_secs(10);

async fn both_directions_flow(a: &TestParticipant, b: &TestParticipant) -> Result<()> {
    zvon_interop::assert_flowing(a, b, FLOWING).await
}

/// ann and bob in `room` through `node`, publishing and receiving each other.
async fn call_through(
    node: &ClusterNode,
    room: &str,
) -> Result<(TestParticipant, TestParticipant)> {
    let a = TestParticipant::join_and_publish(node.http_addr, &token(room, "ann"), room).await?;
    let b = TestParticipant::join_and_publish(node.http_addr, &token(room, "bob"), room).await?;
    both_directions_flow(&a, &b).await?;
    Ok((a, b))
}

/// After their media node went away: both get `media_reset` (after log indexes `from`),
/// republish, and receive a complete video frame from each other. Returns the reasons.
async fn media_back(
    a: &mut TestParticipant,
    b: &mut TestParticipant,
    from: (usize, usize),
) -> Result<(String, String)> {
    let reasons = tokio::try_join!(
        a.recover_media(from.0, Duration::from_secs(8)),
        b.recover_media(from.1, Duration::from_secs(8))
    )?;
    tokio::try_join!(
        first_frame_from(a, &b.id, Duration::from_secs(10)),
        first_frame_from(b, &a.id, Duration::from_secs(10)),
    )?;
    Ok(reasons)
}

/// Time until `p` has a complete video frame (a packet with the marker bit) from `from_id`.
async fn first_frame_from(p: &TestParticipant, from_id: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let frame = p
            .received_from(from_id, "video")
            .is_some_and(|t| t.packets.iter().any(|pk| pk.marker));
        if frame {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}: no complete video frame from {from_id} within {limit:?}",
                p.id
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_one_room_through_either_url() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(90), async {
        let redis = TestRedis::start()?;
        let n1 = ClusterNode::start(&redis, NodeOptions::new("n1", "both")).await?;
        let n2 = ClusterNode::start(&redis, NodeOptions::new("n2", "both")).await?;
        let room = "any-node";
        let a = TestParticipant::join_and_publish(n1.http_addr, &token(room, "ann"), room).await?;
        let b = TestParticipant::join_and_publish(n2.http_addr, &token(room, "bob"), room).await?;
        // One room, not two: each sees the other in it.
        a.signal
            .wait_from(0, SIGNAL_TIMEOUT, "participant_joined bob", |v| {
                msg_type(v) == "participant_joined" && v["participant"]["identity"] == "bob"
            })
            .await?;
        both_directions_flow(&a, &b).await?;
        // n1 claimed the room first; n2 carried bob's socket there.
        assert_eq!(n1.metric("zvon_cluster_rooms_owned", &[]).await?, 1.0);
        assert_eq!(n2.metric("zvon_cluster_rooms_owned", &[]).await?, 0.0);
        assert_eq!(n2.metric("zvon_cluster_proxied_sessions", &[]).await?, 1.0);
        assert_eq!(
            redis
                .cli(&["GET", &format!("zvon:room:{room}")])?
                .split('|')
                .next(),
            Some("n1")
        );
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_media_node_participants_move_without_rejoining() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        let redis = TestRedis::start()?;
        let signaling = ClusterNode::start(&redis, NodeOptions::new("sig", "signaling")).await?;
        let mut m1 = ClusterNode::start(&redis, NodeOptions::new("m1", "media")).await?;
        let mut m2 = ClusterNode::start(&redis, NodeOptions::new("m2", "media")).await?;
        let room = "failover";
        let (mut a, mut b) = call_through(&signaling, room).await?;
        let host = redis.cli(&["GET", &format!("zvon:room-media:{room}")])?;
        let (victim, survivor) = match host.as_str() {
            "m1" => (&mut m1, &m2),
            "m2" => (&mut m2, &m1),
            other => bail!("room placed on {other:?}, not m1 or m2"),
        };
        let (from_a, from_b) = (a.signal.log_len(), b.signal.log_len());
        let killed = Instant::now();
        victim.kill();
        let (reason_a, reason_b) = media_back(&mut a, &mut b, (from_a, from_b)).await?;
        assert_eq!(
            (reason_a.as_str(), reason_b.as_str()),
            ("media_node_lost", "media_node_lost")
        );
        let recovered = killed.elapsed();
        println!("media node kill -9 -> next complete video frame both ways: {recovered:?}");
        both_directions_flow(&a, &b).await?;
        // No rejoin: the sockets stayed open and the participants kept their ids.
        assert!(!a.signal.is_ended() && !b.signal.is_ended());
        assert!(
            a.signal
                .log()
                .iter()
                .filter(|v| msg_type(v) == "joined")
                .count()
                == 1,
            "ann joined again"
        );
        assert_eq!(
            redis.cli(&["GET", &format!("zvon:room-media:{room}")])?,
            survivor.id,
            "room not moved to the surviving media node"
        );
        assert!(
            signaling
                .metric("zvon_cluster_media_nodes_lost_total", &[])
                .await?
                >= 1.0
        );
        assert_eq!(
            signaling
                .metric("zvon_cluster_participants_moved_total", &[("result", "ok")])
                .await?,
            2.0
        );
        assert!(
            recovered <= Duration::from_secs(5),
            "media came back {recovered:?} after the kill (target 5 s)"
        );
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_wrong_cluster_secret_is_refused_and_counted() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(90), async {
        let redis = TestRedis::start()?;
        let signaling = ClusterNode::start(&redis, NodeOptions::new("sig", "signaling")).await?;
        let mut impostor = NodeOptions::new("impostor", "media");
        impostor.secret = "not-the-cluster-secret-at-all".into();
        let impostor = ClusterNode::start(&redis, impostor).await?;
        // The only media node refuses us (and we it): no room can be placed.
        let room = "secret";
        // `joined` comes first; the media node's refusal follows as a fatal error.
        let ann = TestParticipant::join(signaling.http_addr, &token(room, "ann"), room).await?;
        ann.signal
            .wait_error("media_unavailable", Duration::from_secs(10))
            .await?;
        assert_eq!(ann.signal.wait_closed(SIGNAL_TIMEOUT).await?, Some(4503));
        assert!(
            impostor
                .metric("zvon_cluster_control_auth_failures_total", &[])
                .await?
                >= 1.0
        );
        assert!(
            signaling
                .metric("zvon_cluster_link_failures_total", &[])
                .await?
                >= 1.0
        );
        // A genuine media node joins: rooms go there, never to the impostor.
        let _good = ClusterNode::start(&redis, NodeOptions::new("good", "media")).await?;
        let room = "secret-2";
        let a = TestParticipant::join_and_publish(signaling.http_addr, &token(room, "ann"), room)
            .await?;
        let b = TestParticipant::join_and_publish(signaling.http_addr, &token(room, "bob"), room)
            .await?;
        both_directions_flow(&a, &b).await?;
        assert_eq!(
            redis.cli(&["GET", &format!("zvon:room-media:{room}")])?,
            "good"
        );
        assert_eq!(
            impostor
                .metric("zvon_cluster_control_requests_total", &[])
                .await?,
            0.0
        );
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_with_a_stale_epoch_cannot_serve_the_room() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(90), async {
        let redis = TestRedis::start()?;
        let n1 = ClusterNode::start(&redis, NodeOptions::new("n1", "both")).await?;
        let n2 = ClusterNode::start(&redis, NodeOptions::new("n2", "both")).await?;
        let room = "stale";
        let key = format!("zvon:room:{room}");
        let a = TestParticipant::join(n1.http_addr, &token(room, "ann"), room).await?;
        let first = redis.cli(&["GET", &key])?;
        let epoch = |v: &str| v.rsplit('|').next().and_then(|e| e.parse::<u64>().ok());
        let ours = epoch(&first).context("no epoch")?;
        assert!(first.starts_with("n1|"), "owner {first:?}");
        // What n1 finds when it comes back from a network split: n2 took the room over with a
        // newer epoch while n1 could not refresh its lease.
        let theirs = format!("n2|{}", ours + 1);
        assert_eq!(redis.cli(&["SET", &key, &theirs, "PX", "5000"])?, "OK");
        a.signal
            .wait_error("room_moved", Duration::from_secs(5))
            .await?;
        assert_eq!(
            a.signal.wait_closed(Duration::from_secs(5)).await?,
            Some(4012)
        );
        assert_eq!(n1.metric("zvon_cluster_rooms_lost_total", &[]).await?, 1.0);
        assert_eq!(
            redis.cli(&["GET", &key])?,
            theirs,
            "n1 overwrote the new owner"
        );
        // Joining again through either node lands at the new owner.
        let again = TestParticipant::join(n1.http_addr, &token(room, "ann"), room).await?;
        let b = TestParticipant::join(n2.http_addr, &token(room, "bob"), room).await?;
        again
            .signal
            .wait_from(0, SIGNAL_TIMEOUT, "bob in ann's room", |v| {
                msg_type(v) == "participant_joined" && v["participant"]["identity"] == "bob"
            })
            .await?;
        assert_eq!(n1.metric("zvon_cluster_proxied_sessions", &[]).await?, 1.0);
        assert!(redis.cli(&["GET", &key])?.starts_with("n2|"));
        again.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_calls_and_the_fleet_heals() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        let mut redis = TestRedis::start()?;
        let n1 = ClusterNode::start(&redis, NodeOptions::new("n1", "both")).await?;
        let n2 = ClusterNode::start(&redis, NodeOptions::new("n2", "both")).await?;
        let room = "redis-loss";
        let a = TestParticipant::join_and_publish(n1.http_addr, &token(room, "ann"), room).await?;
        let b = TestParticipant::join_and_publish(n2.http_addr, &token(room, "bob"), room).await?;
        both_directions_flow(&a, &b).await?;
        let before = (
            a.received_from(&b.id, "audio")
                .map(|t| t.packets.len())
                .unwrap_or(0),
            b.received_from(&a.id, "audio")
                .map(|t| t.packets.len())
                .unwrap_or(0),
        );
        redis.kill();
        let down = Instant::now();
        // Longer than every lease: nobody may drop the running call.
        tokio::time::sleep(Duration::from_secs(4)).await;
        both_directions_flow(&a, &b).await?;
        assert_eq!(n1.metric("zvon_cluster_redis_up", &[]).await?, 0.0);
        // A new room cannot be placed while Redis is away: a documented, fatal error.
        let refused =
            TestParticipant::join(n1.http_addr, &token("redis-new", "cid"), "redis-new").await;
        let error = format!(
            "{:#}",
            refused.err().context("joined a new room without Redis")?
        );
        assert!(error.contains("cluster_unavailable"), "{error}");
        redis.restart()?;
        println!("redis away for {:?}", down.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        both_directions_flow(&a, &b).await?;
        // Audio kept flowing all along: nothing lost while Redis was away (a few packets of
        // slack for a loaded 2-core machine's own socket drops).
        for (p, other, from) in [(&a, &b.id, before.0), (&b, &a.id, before.1)] {
            let (gaps, missed) = audio_gaps(p, other, from)?;
            println!(
                "{}: {missed} audio packets missed in {gaps} gaps while Redis restarted",
                p.id
            );
            assert!(
                missed <= 3,
                "{}: {missed} audio packets lost while Redis restarted",
                p.id
            );
        }
        // Healed without restarts: the room's owner holds its lease again, and new rooms work.
        assert_eq!(n1.metric("zvon_cluster_redis_up", &[]).await?, 1.0);
        assert!(redis
            .cli(&["GET", &format!("zvon:room:{room}")])?
            .starts_with("n1|"));
        let c =
            TestParticipant::join(n2.http_addr, &token("redis-new", "cid"), "redis-new").await?;
        c.close().await;
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

/// Audio sequence gaps `p` saw from `other` since packet index `from`, and how many
/// packets they missed.
fn audio_gaps(p: &TestParticipant, other: &str, from: usize) -> Result<(usize, u32)> {
    let track = p.received_from(other, "audio").context("no audio")?;
    let seqs: Vec<u16> = track
        .main_packets()
        .iter()
        .skip(from)
        .map(|pk| pk.seq)
        .collect();
    let missed = seqs
        .windows(2)
        .map(|w| u32::from(w[1].wrapping_sub(w[0])).saturating_sub(1))
        .filter(|m| *m > 0 && *m < 30_000)
        .collect::<Vec<u32>>();
    Ok((missed.len(), missed.iter().sum()))
}

/// `p` comes back on a new socket through `node` with its resume token: the same participant.
async fn resume_through(
    node: &ClusterNode,
    p: &TestParticipant,
    room: &str,
) -> Result<SignalClient> {
    let socket = SignalClient::connect(node.http_addr, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    socket
        .send_json(&json!({
            "type": "join", "protocol": 1, "token": token(room, &p.identity),
            "room": room, "resume": p.joined["resume_token"],
        }))
        .await?;
    let joined = socket.wait_type("joined", Duration::from_secs(10)).await?;
    if joined["resumed"] != true || joined["participant"]["id"] != p.id.as_str() {
        bail!("{} did not resume: {joined}", p.id);
    }
    Ok(socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_signaling_node_hands_its_rooms_over_without_losing_media() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        let redis = TestRedis::start()?;
        let mut s1 = ClusterNode::start(&redis, NodeOptions::new("s1", "signaling")).await?;
        let s2 = ClusterNode::start(&redis, NodeOptions::new("s2", "signaling")).await?;
        let _media = ClusterNode::start(&redis, NodeOptions::new("m1", "media")).await?;
        let room = "signaling-drain";
        let (a, b) = call_through(&s1, room).await?;
        let count = |p: &TestParticipant, other: &str| {
            p.received_from(other, "audio")
                .map(|t| t.main_packets().len())
                .unwrap_or(0)
        };
        let before = (count(&a, &b.id), count(&b, &a.id));
        let started = Instant::now();
        let exit = s1.terminate(Duration::from_secs(10)).await?;
        assert!(exit.success(), "s1 did not exit cleanly: {exit}");
        // Closed with "going away", not an error: resume elsewhere.
        assert_eq!(a.signal.wait_closed(SIGNAL_TIMEOUT).await?, Some(1001));
        for p in [&a, &b] {
            resume_through(&s2, p, room).await?;
        }
        println!(
            "signaling drain -> both sessions resumed on s2 after {:?}",
            started.elapsed()
        );
        both_directions_flow(&a, &b).await?;
        for (p, other, from) in [(&a, &b.id, before.0), (&b, &a.id, before.1)] {
            let (gaps, missed) = audio_gaps(p, other, from)?;
            println!(
                "{}: {missed} audio packets missed in {gaps} gaps across the drain",
                p.id
            );
            assert!(
                missed <= 3,
                "{}: {missed} audio packets lost in the drain",
                p.id
            );
        }
        assert!(redis
            .cli(&["GET", &format!("zvon:room:{room}")])?
            .starts_with("s2|"));
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_signaling_node_media_flows_on_and_sessions_resume_elsewhere() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        let redis = TestRedis::start()?;
        let mut s1 = ClusterNode::start(&redis, NodeOptions::new("s1", "signaling")).await?;
        let s2 = ClusterNode::start(&redis, NodeOptions::new("s2", "signaling")).await?;
        let media = ClusterNode::start(&redis, NodeOptions::new("m1", "media")).await?;
        let room = "signaling-loss";
        let (a, b) = call_through(&s1, room).await?;
        let count = |p: &TestParticipant, other: &str| {
            p.received_from(other, "audio")
                .map(|t| t.main_packets().len())
                .unwrap_or(0)
        };
        let before = (count(&a, &b.id), count(&b, &a.id));
        s1.kill();
        let killed = Instant::now();
        a.signal.wait_closed(Duration::from_secs(5)).await?;
        // The media node keeps forwarding: the call goes on without signaling.
        both_directions_flow(&a, &b).await?;
        assert_eq!(
            media
                .metric("zvon_cluster_orphans_removed_total", &[])
                .await?,
            0.0
        );
        // Both come back through another node with their resume tokens; s2 claims the room
        // once s1's lease runs out and adopts their media sessions.
        let mut resumed = vec![];
        for p in [&a, &b] {
            resumed.push(resume_through(&s2, p, room).await?);
        }
        let back = killed.elapsed();
        println!("signaling node killed -> both sessions resumed on s2 after {back:?}");
        // bob's snapshot shows ann with her tracks: the room is whole again on s2.
        let joined_b = resumed[1].wait_type("joined", SIGNAL_TIMEOUT).await?;
        let ann = joined_b["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["id"] == a.id.as_str()))
            .context("ann missing from bob's resumed room")?;
        assert_eq!(ann["tracks"].as_array().map(Vec::len), Some(2), "{ann}");
        both_directions_flow(&a, &b).await?;
        // No audio lost across the whole failover.
        for (p, other, from) in [(&a, &b.id, before.0), (&b, &a.id, before.1)] {
            let (gaps, missed) = audio_gaps(p, other, from)?;
            println!(
                "{}: {missed} audio packets missed in {gaps} gaps across the failover",
                p.id
            );
            assert_eq!(
                missed, 0,
                "{}: audio lost while signaling failed over",
                p.id
            );
        }
        assert!(redis
            .cli(&["GET", &format!("zvon:room:{room}")])?
            .starts_with("s2|"));
        assert_eq!(
            s2.metric("zvon_cluster_participants_adopted_total", &[])
                .await?,
            2.0
        );
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_media_node_hands_its_participants_over() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        let redis = TestRedis::start()?;
        let signaling = ClusterNode::start(&redis, NodeOptions::new("sig", "signaling")).await?;
        let mut m1 = ClusterNode::start(&redis, NodeOptions::new("m1", "media")).await?;
        let mut m2 = ClusterNode::start(&redis, NodeOptions::new("m2", "media")).await?;
        let room = "drain";
        let (mut a, mut b) = call_through(&signaling, room).await?;
        let host = redis.cli(&["GET", &format!("zvon:room-media:{room}")])?;
        let draining = if host == "m1" { &mut m1 } else { &mut m2 };
        let (from_a, from_b) = (a.signal.log_len(), b.signal.log_len());
        let started = Instant::now();
        let (exit, recovered) = tokio::join!(draining.terminate(Duration::from_secs(10)), async {
            let reasons = tokio::try_join!(
                a.recover_media(from_a, Duration::from_secs(8)),
                b.recover_media(from_b, Duration::from_secs(8))
            )?;
            both_directions_flow(&a, &b).await?;
            anyhow::Ok(reasons)
        });
        let (reason_a, _) = recovered?;
        assert_eq!(reason_a, "media_node_draining");
        assert!(exit?.success(), "the drained node did not exit cleanly");
        println!("drained and exited in {:?}", started.elapsed());
        assert!(redis.cli(&["EXISTS", &format!("zvon:node:{host}")])? == "0");
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_node_cut_off_the_network_is_replaced() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        // A media node on a host of its own (a network namespace behind a veth pair).
        let host = zvon_interop::cluster::TestHost::create(1)?;
        // Participants reach the far host through the veth, and the near node over loopback.
        let _bind = zvon_interop::PeerAddress::set(host.gateway);
        let redis = TestRedis::start_for_hosts(host.gateway)?;
        let signaling = ClusterNode::start(&redis, NodeOptions::new("sig", "signaling")).await?;
        let mut remote = NodeOptions::new("far", "media");
        remote.host = Some((host.netns.clone(), host.ip));
        let far = ClusterNode::start(&redis, remote).await?;
        let room = "cut";
        let (mut a, mut b) = call_through(&signaling, room).await?;
        assert_eq!(
            redis.cli(&["GET", &format!("zvon:room-media:{room}")])?,
            "far"
        );
        // A second media node comes up here, then the far one's network goes away.
        let _near = ClusterNode::start(&redis, NodeOptions::new("near", "media")).await?;
        let (from_a, from_b) = (a.signal.log_len(), b.signal.log_len());
        let cut = Instant::now();
        host.cut()?;
        media_back(&mut a, &mut b, (from_a, from_b)).await?;
        println!(
            "media node cut off -> next complete video frame both ways: {:?}",
            cut.elapsed()
        );
        both_directions_flow(&a, &b).await?;
        assert_eq!(
            redis.cli(&["GET", &format!("zvon:room-media:{room}")])?,
            "near"
        );
        drop(far);
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

/// `sig`, two media nodes and a call between ann and bob; the node under it and the other.
async fn failover_call(
    redis: &TestRedis,
) -> Result<(
    ClusterNode,
    ClusterNode,
    ClusterNode,
    TestParticipant,
    TestParticipant,
)> {
    let signaling = ClusterNode::start(redis, NodeOptions::new("sig", "signaling")).await?;
    let m1 = ClusterNode::start(redis, NodeOptions::new("m1", "media")).await?;
    let m2 = ClusterNode::start(redis, NodeOptions::new("m2", "media")).await?;
    let room = "restart-race";
    let (a, b) = call_through(&signaling, room).await?;
    let (victim, survivor) = match redis
        .cli(&["GET", &format!("zvon:room-media:{room}")])?
        .as_str()
    {
        "m1" => (m1, m2),
        "m2" => (m2, m1),
        other => bail!("room placed on {other:?}, not m1 or m2"),
    };
    Ok((signaling, victim, survivor, a, b))
}

/// A client that restarts ICE as soon as its path goes silent (docs/protocol.md, "Telling a
/// dead path") restarts into a media node that just died: the request waits on the dead link
/// until the node is declared lost. It is then refused with `media_moving`, which the socket
/// survives, and `media_reset` follows on that socket. (It was refused with the fatal
/// `media_unavailable`: the socket closed, the reset went out while it was gone and was lost,
/// and the browser client answered the new node's offer on its old connection.) An offer of
/// the replaced publisher connection that crossed the reset is refused the same way, or the
/// new node would take the closed connection for ann's publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_into_a_killed_media_node_is_answered_by_media_reset() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        let redis = TestRedis::start()?;
        let (_signaling, mut victim, _survivor, mut a, mut b) = failover_call(&redis).await?;
        let old = a.publisher.as_ref().context("ann publishes")?;
        let (audio_mid, video_mid) = (old.audio_mid.clone(), old.video_mid.clone());
        let old_offer = old
            .peer
            .pc
            .local_description()
            .await
            .context("no offer")?
            .sdp;
        let (from_a, from_b) = (a.signal.log_len(), b.signal.log_len());
        victim.kill();
        a.signal
            .send_json(&json!({"type": "subscriber_ice_restart", "request_id": "restart"}))
            .await?;
        let (_, refused) = a
            .signal
            .wait_from(
                from_a,
                Duration::from_secs(10),
                "the restart's answer",
                |v| msg_type(v) == "error" && v["request_id"] == "restart",
            )
            .await?;
        assert_eq!(refused["code"], "media_moving", "{refused}");
        a.signal
            .wait_from(from_a, Duration::from_secs(10), "media_reset", |v| {
                msg_type(v) == "media_reset"
            })
            .await?;
        a.signal
            .send_json(&json!({
                "type": "publish_offer", "request_id": "stale", "sdp": old_offer,
                "tracks": [
                    {"mid": audio_mid, "kind": "audio", "source": "microphone", "muted": false},
                    {"mid": video_mid, "kind": "video", "source": "camera", "muted": false},
                ],
            }))
            .await?;
        let (_, stale) = a
            .signal
            .wait_from(from_a, SIGNAL_TIMEOUT, "the stale offer's answer", |v| {
                v["request_id"] == "stale"
            })
            .await?;
        assert_eq!(stale["code"], "media_moving", "{stale}");
        media_back(&mut a, &mut b, (from_a, from_b)).await?;
        both_directions_flow(&a, &b).await?;
        assert!(!a.signal.is_ended(), "ann's socket closed");
        let joins = a
            .signal
            .log()
            .iter()
            .filter(|v| msg_type(v) == "joined")
            .count();
        assert_eq!(joins, 1, "ann joined again");
        a.close().await;
        b.close().await;
        Ok(())
    })
    .await;
}

/// A socket that drops while its participant is moved to another media node: the
/// `media_reset` waits for the resume and comes right after `joined`, before the new node's
/// offer. Without it the client would keep its dead connections and answer that offer on
/// the old subscriber connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_reset_missed_while_the_socket_was_down_comes_on_resume() {
    let _fleet = FLEET.lock().await;
    bounded(Duration::from_secs(120), async {
        let redis = TestRedis::start()?;
        let (signaling, mut victim, _survivor, mut a, b) = failover_call(&redis).await?;
        let from_a = a.signal.log_len();
        victim.kill();
        b.signal.drop_connection().await;
        // Both moved while bob had no socket.
        let moved = Instant::now();
        while signaling
            .metric("zvon_cluster_participants_moved_total", &[("result", "ok")])
            .await?
            < 2.0
        {
            if moved.elapsed() > Duration::from_secs(15) {
                bail!(
                    "the participants were not moved within 15 s of the kill:\n{}",
                    signaling.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.recover_media(from_a, Duration::from_secs(8)).await?;
        let socket = resume_through(&signaling, &b, "restart-race").await?;
        let (reset_at, reset) = socket
            .wait_from(0, SIGNAL_TIMEOUT, "media_reset", |v| {
                msg_type(v) == "media_reset"
            })
            .await?;
        assert_eq!(reset["reason"], "media_node_lost");
        // ann published again on the new node: bob is offered her tracks, after the reset.
        let (offer_at, _) = socket
            .wait_from(0, SIGNAL_TIMEOUT, "subscriber_offer", |v| {
                msg_type(v) == "subscriber_offer"
            })
            .await?;
        assert!(
            reset_at < offer_at,
            "the offer came before the reset: {:?}",
            socket.log()
        );
        socket.close().await;
        a.close().await;
        Ok(())
    })
    .await;
}
