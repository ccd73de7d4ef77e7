//! SIGTERM to an all-in-one `zvon` process (no `--cluster`): it stops taking joins
//! (`/readyz` 503, a new `join` refused with `server_draining`, 1001), tells everyone in a
//! room (`server_draining` with the time left), lets running calls go on, closes the sockets
//! still open with 1001 at `--drain-timeout`, and exits cleanly.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use serde_json::json;
use zvon_interop::cluster::ClusterNode;
use zvon_interop::{bounded, http_get, msg_type, token, SignalClient, TestParticipant};

const DRAIN: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_a_single_node() {
    bounded(Duration::from_secs(90), async {
        let mut node =
            ClusterNode::start_standalone("drain-alone", &["--drain-timeout", "8s"]).await?;
        let room = "drain-room";
        let addr = node.http_addr;
        let mut ann = TestParticipant::join_and_publish(addr, &token(room, "ann"), room).await?;
        let bob = TestParticipant::join_and_publish(addr, &token(room, "bob"), room).await?;
        zvon_interop::assert_flowing(&ann, &bob, Duration::from_secs(15)).await?;

        let (from_ann, from_bob) = (ann.signal.log_len(), bob.signal.log_len());
        node.send_sigterm();
        let sigterm = Instant::now();
        for (p, from) in [(&ann, from_ann), (&bob, from_bob)] {
            let (_, notice) = p
                .signal
                .wait_from(from, Duration::from_secs(3), "server_draining", |v| {
                    msg_type(v) == "server_draining"
                })
                .await?;
            ensure!(
                notice["timeout_ms"] == 8000,
                "server_draining without the drain timeout: {notice}"
            );
        }
        let (status, _) = http_get(node.metrics_addr, "/readyz").await?;
        ensure!(status == 503, "/readyz {status} while draining");

        // A newcomer is turned away with a documented code; resumes are not (not tested here).
        let carl = SignalClient::connect(node.http_addr, None)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        carl.send_json(&json!({"type": "join", "protocol": 1,
            "token": token(room, "carl"), "room": room}))
            .await?;
        carl.wait_error("server_draining", Duration::from_secs(3))
            .await?;
        let code = carl.wait_closed(Duration::from_secs(3)).await?;
        ensure!(code == Some(1001), "a refused join closed with {code:?}");

        // The running call goes on; Ann leaves on her own, the process waits for Bob.
        zvon_interop::assert_flowing(&ann, &bob, Duration::from_secs(5))
            .await
            .context("media while draining")?;
        ann.leave().await?;
        ensure!(
            node.exited()?.is_none(),
            "exited while bob was still in his call"
        );

        // At the deadline the rest is closed with 1001 and the process exits cleanly.
        let code = bob
            .signal
            .wait_closed(DRAIN + Duration::from_secs(5))
            .await?;
        ensure!(code == Some(1001), "bob's socket closed with {code:?}");
        let waited = sigterm.elapsed();
        ensure!(
            waited >= DRAIN - Duration::from_millis(500),
            "closed after {waited:?}, before the drain timeout"
        );
        let status = node.wait_exit(Duration::from_secs(10)).await?;
        ensure!(status.success(), "exit status {status} after the drain");
        ensure!(
            !bob.signal.log().iter().any(|v| msg_type(v) == "error"),
            "bob got an error: {:?}",
            bob.signal.log()
        );
        Ok(())
    })
    .await
}
