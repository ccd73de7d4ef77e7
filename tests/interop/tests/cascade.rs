//! One room on three media nodes of a real fleet (`redis-server`, one signaling and three
//! media `zvon` processes, `--room-spread-after 1`): the publisher's media sits on one node,
//! a viewer's on another, a teacher's on the third, and the media crosses between them over
//! the QUIC cascade. What a user notices: the viewer receives the publisher's audio and video
//! completely (and the publisher the viewer's, the other way), and its keyframe request
//! reaches the publisher; the teacher's mute stops the audio reaching the viewer's node and the unmute
//! brings it back; killing the viewer's media node moves only the viewer, while the
//! publisher goes on undisturbed and the teacher keeps receiving it.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use zvon_interop::cluster::{ClusterNode, NodeOptions, TestRedis};
use zvon_interop::{bounded, claims, msg_type, sign, token, TestParticipant};

use zvon_interop::streams::{admin_mute_stops_audio, complete, count, pli_brings_keyframe};

/// Peer connections the node's media workers hold now.
async fn peers_on(node: &ClusterNode) -> Result<f64> {
    node.metric("zvon_worker_peers", &[]).await
}

/// The one media node among `nodes` (not `except`) with peer connections.
async fn node_with_peers(nodes: &[ClusterNode], except: &str, limit: Duration) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if n.id != except && peers_on(n).await? > 0.0 {
                return Ok(i);
            }
        }
        if Instant::now() > deadline {
            bail!("no other media node holds a peer connection");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spans_three_media_nodes() {
    bounded(Duration::from_secs(150), async {
        let redis = TestRedis::start()?;
        let mut spread = NodeOptions::new("sig", "signaling");
        spread.extra = vec!["--room-spread-after".into(), "1".into()];
        let signaling = ClusterNode::start(&redis, spread).await?;
        let mut media = vec![];
        for id in ["m1", "m2", "m3"] {
            media.push(ClusterNode::start(&redis, NodeOptions::new(id, "media")).await?);
        }
        let room = "cascade";

        let publisher =
            TestParticipant::join_and_publish(signaling.http_addr, &token(room, "lecturer"), room)
                .await?;
        let origin = redis.cli(&["GET", &format!("zvon:room-media:{room}")])?;
        ensure!(origin.starts_with('m'), "room placed on {origin:?}");
        // The viewer publishes too: a meeting across nodes works both ways.
        let viewer =
            TestParticipant::join_and_publish(signaling.http_addr, &token(room, "viewer"), room)
                .await?;

        // Audio and video cross the cascade complete, with a keyframe to start from.
        let video = viewer
            .wait_receiving(&publisher.id, "video", 150, Duration::from_secs(20))
            .await?;
        viewer
            .wait_receiving(&publisher.id, "audio", 100, Duration::from_secs(20))
            .await?;
        ensure!(
            video.packets.iter().any(|p| p.vp8_keyframe),
            "no keyframe among {} video packets",
            video.packets.len()
        );
        complete(&viewer, &publisher.id, "audio")?;
        complete(&viewer, &publisher.id, "video")?;
        publisher
            .wait_receiving(&viewer.id, "video", 100, Duration::from_secs(20))
            .await
            .context("the viewer's video back to the publisher's node")?;
        publisher
            .wait_receiving(&viewer.id, "audio", 100, Duration::from_secs(20))
            .await?;
        complete(&publisher, &viewer.id, "audio")?;
        // The viewer's media is on another node than the publisher's.
        let edge = node_with_peers(&media, &origin, Duration::from_secs(5)).await?;
        let edge_id = media[edge].id.clone();
        println!("publisher on {origin}, viewer on {edge_id}");
        // A keyframe request from the viewer's node reaches the publisher, and a keyframe
        // comes back across.
        pli_brings_keyframe(&viewer, &publisher, "nodes").await?;

        // The packets crossed as cascade datagrams, none too large for the path.
        let origin_node = media
            .iter()
            .find(|n| n.id == origin)
            .context("origin node")?;
        ensure!(
            origin_node
                .metric("zvon_cascade_datagrams_sent_total", &[])
                .await?
                >= 250.0
        );
        ensure!(
            media[edge]
                .metric("zvon_cascade_datagrams_received_total", &[])
                .await?
                >= 250.0
        );
        // The edge's worker measured each crossing packet's hop from its send stamp: a real,
        // non-zero delay (a stamp read wrongly would give 0 or minutes).
        let hops = media[edge]
            .metric("zvon_cascade_hop_latency_seconds_count", &[])
            .await?;
        let hop_sum = media[edge]
            .metric("zvon_cascade_hop_latency_seconds_sum", &[])
            .await?;
        println!(
            "hop latency: {hops} packets, mean {:.3} ms",
            hop_sum / hops * 1e3
        );
        ensure!(hops >= 250.0, "{hops} hop latency samples");
        ensure!(
            hop_sum > 0.0 && hop_sum / hops < 2.0,
            "hop latency sum {hop_sum} s over {hops} packets"
        );
        ensure!(
            origin_node
                .metric(
                    "zvon_cascade_datagrams_dropped_total",
                    &[("reason", "too_large")]
                )
                .await?
                == 0.0
        );

        // A teacher joins (its media lands on the third node) and mutes the lecturer.
        let mut admin = claims(room, "teacher");
        admin.grants.room_admin = true;
        let teacher = TestParticipant::join(signaling.http_addr, &sign(&admin), room).await?;
        teacher
            .wait_receiving(&publisher.id, "audio", 50, Duration::from_secs(20))
            .await?;
        admin_mute_stops_audio(&teacher, &publisher, &viewer, "the viewer's node").await?;

        // The viewer's media node dies: only the viewer moves.
        let (from_viewer, from_publisher) = (viewer.signal.log_len(), publisher.signal.log_len());
        let teacher_audio = count(&teacher, &publisher.id, "audio");
        let mut viewer = viewer;
        media[edge].kill();
        let reason = viewer
            .recover_media(from_viewer, Duration::from_secs(8))
            .await?;
        ensure!(reason == "media_node_lost", "media_reset reason {reason}");
        viewer
            .wait_receiving(&publisher.id, "video", 50, Duration::from_secs(15))
            .await
            .context("video after the viewer moved")?;
        viewer
            .wait_receiving(&publisher.id, "audio", 50, Duration::from_secs(15))
            .await
            .context("audio after the viewer moved")?;
        // The publisher noticed nothing and the teacher kept receiving it.
        ensure!(
            !publisher.signal.is_ended(),
            "the publisher's socket closed"
        );
        let reset = publisher.signal.log()[from_publisher..]
            .iter()
            .any(|v| msg_type(v) == "media_reset");
        ensure!(!reset, "the publisher was moved too");
        ensure!(
            count(&teacher, &publisher.id, "audio") > teacher_audio + 100,
            "the teacher stopped receiving the publisher"
        );
        complete(&teacher, &publisher.id, "audio").context("the teacher's audio")?;

        viewer.close().await;
        teacher.close().await;
        publisher.close().await;
        Ok(())
    })
    .await;
}
