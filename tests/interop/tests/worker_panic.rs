//! A media worker thread panics under a running call (all-in-one server, two workers): both
//! people are moved to the live worker with `media_reset` and hear each other again, the node
//! reports itself degraded, and a new call in another room works.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use zvon_interop::{bounded, http_get, msg_type, TestParticipant, TestServer};
use zvon_sfu::api::ParticipantId;
use zvon_signaling::ServerConfig;

const FLOWING: Duration = Duration::from_secs(10);

async fn both_directions_flow(a: &TestParticipant, b: &TestParticipant) -> Result<()> {
    zvon_interop::assert_flowing(a, b, FLOWING).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_its_media_worker_panicking() {
    bounded(Duration::from_secs(90), async {
        let mut config = ServerConfig::for_tests();
        config.sfu.workers = 2;
        let server = TestServer::start_with(config).await?;
        let metrics = server.server.metrics_addr;
        let node = server
            .server
            .embedded_media()
            .context("an all-in-one server embeds its media node")?;

        let mut a = server.publishing_participant("doomed", "ann").await?;
        let mut b = server.publishing_participant("doomed", "bob").await?;
        both_directions_flow(&a, &b).await?;
        let (status, _) = http_get(metrics, "/readyz").await?;
        ensure!(status == 200, "/readyz {status} before the panic");

        let worker = node
            .worker_of(&ParticipantId(a.id.clone()))
            .context("ann is placed on a worker")?;
        let (from_a, from_b) = (a.signal.log_len(), b.signal.log_len());
        node.panic_worker(worker);

        // Both are told within seconds, on the socket they already have, and recover.
        let (reason_a, reason_b) = tokio::try_join!(
            a.recover_media(from_a, Duration::from_secs(5)),
            b.recover_media(from_b, Duration::from_secs(5))
        )?;
        ensure!(
            reason_a == "media_node_lost" && reason_b == "media_node_lost",
            "reasons {reason_a:?} {reason_b:?}"
        );
        both_directions_flow(&a, &b)
            .await
            .context("the call flows again after the move")?;
        for p in [&a, &b] {
            ensure!(
                !p.signal.log().iter().any(|v| msg_type(v) == "error"),
                "{} got an error: {:?}",
                p.identity,
                p.signal.log()
            );
        }

        // Operators and load balancers see the node is degraded.
        let (status, _) = http_get(metrics, "/readyz").await?;
        ensure!(status == 503, "/readyz {status} after a worker panicked");
        let (_, text) = http_get(metrics, "/metrics").await?;
        ensure!(
            text.lines().any(|l| l == "zvon_worker_panics_total 1"),
            "zvon_worker_panics_total is not 1"
        );

        // A new call still works, on the live worker.
        let c = server.publishing_participant("fresh", "cid").await?;
        let d = server.publishing_participant("fresh", "dan").await?;
        both_directions_flow(&c, &d)
            .await
            .context("a new call after the panic")?;
        ensure!(
            node.worker_of(&ParticipantId(c.id.clone())) != Some(worker),
            "a new room was placed on the dead worker"
        );

        for p in [a, b, c, d] {
            p.close().await;
        }
        server.shutdown().await;
        Ok(())
    })
    .await
}
