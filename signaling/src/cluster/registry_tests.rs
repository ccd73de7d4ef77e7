//! Registry against a real `redis-server` (see `test_redis.rs`).

use std::time::{Duration, Instant};

use super::test_redis::{raw, TestRedis};
use super::*;

fn info(id: &str, media: bool) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        roles: NodeRoles {
            signaling: true,
            media,
        },
        http_url: Some("http://127.0.0.1:7450".to_owned()),
        quic_addr: Some("127.0.0.1:7451".parse().unwrap()),
        load: NodeLoad {
            participants: 3,
            busy: 0.25,
            bitrate_bps: 1_000_000,
        },
        draining: false,
    }
}

fn ids(nodes: &[NodeInfo]) -> Vec<String> {
    let mut ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    ids.sort();
    ids
}

const LONG: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn lease_put_read_and_expiry() {
    let redis = TestRedis::start();
    let a = Registry::connect(&redis.url(), "a").await.unwrap();
    let b = Registry::connect(&redis.url(), "b").await.unwrap();
    assert_eq!(a.node_id(), "a");
    a.put_lease(&info("a", true), LONG).await.unwrap();
    b.put_lease(&info("b", false), SHORT).await.unwrap();

    assert_eq!(ids(&a.nodes().await.unwrap()), ["a", "b"]);
    assert_eq!(a.node("b").await.unwrap(), Some(info("b", false)));
    assert_eq!(a.node("nobody").await.unwrap(), None);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ids(&a.nodes().await.unwrap()), ["a"]);
    assert_eq!(a.node("b").await.unwrap(), None);
    let mut conn = raw(&redis).await;
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("zvon:nodes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, ["a"], "expired lease pruned from the set");

    a.remove_lease().await.unwrap();
    assert!(a.nodes().await.unwrap().is_empty());
    let stats = a.stats().snapshot();
    assert!(stats.up);
    assert_eq!(stats.garbage_entries, 0);

    // Only the node a registry speaks for can be leased through it.
    assert!(matches!(
        a.put_lease(&info("b", true), LONG).await,
        Err(ClusterError::ForeignLease { .. })
    ));
}

#[tokio::test]
async fn garbage_leases_are_skipped_and_counted() {
    let redis = TestRedis::start();
    let a = Registry::connect(&redis.url(), "a").await.unwrap();
    a.put_lease(&info("a", true), LONG).await.unwrap();
    let mut conn = raw(&redis).await;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("zvon:node:json")
        .arg("{not json")
        .ignore()
        .cmd("SADD")
        .arg("zvon:node:set")
        .arg("x")
        .ignore()
        .cmd("SET")
        .arg("zvon:node:liar")
        .arg(serde_json::to_string(&info("someone-else", true)).unwrap())
        .ignore()
        .cmd("SADD")
        .arg("zvon:nodes")
        .arg(&["json", "set", "liar"])
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    assert_eq!(ids(&a.nodes().await.unwrap()), ["a"]);
    assert_eq!(a.stats().snapshot().garbage_entries, 3);
    assert!(matches!(
        a.node("json").await,
        Err(ClusterError::Garbage(_))
    ));
    assert!(matches!(a.node("set").await, Err(ClusterError::Garbage(_))));

    // Garbage where a room owner should be: an error, never a panic or a claim.
    let _: () = redis::cmd("SET")
        .arg("zvon:room:r")
        .arg("no-separator")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        a.claim_room("r", LONG).await,
        Err(ClusterError::Garbage(_))
    ));
    assert!(matches!(
        a.room_owner("r").await,
        Err(ClusterError::Garbage(_))
    ));
    let _: () = redis::cmd("SADD")
        .arg("zvon:room:s")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        a.claim_room("s", LONG).await,
        Err(ClusterError::Garbage(_))
    ));
    let stats = a.stats().snapshot();
    assert!(stats.up, "garbage is not an outage");
    assert!(stats.errors_claim >= 2);
}

#[tokio::test]
async fn room_claims_are_exclusive_and_fenced_by_epoch() {
    let redis = TestRedis::start();
    let a = Registry::connect(&redis.url(), "a").await.unwrap();
    let b = Registry::connect(&redis.url(), "b").await.unwrap();

    let (ca, cb) = tokio::join!(a.claim_room("room", SHORT), b.claim_room("room", SHORT));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    let (owner, other, first_epoch) = match (&ca, &cb) {
        (RoomClaim::Owned { epoch }, RoomClaim::OwnedBy { node, epoch: seen }) => {
            assert_eq!(node, "a");
            assert_eq!(seen, epoch);
            (&a, &b, *epoch)
        }
        (RoomClaim::OwnedBy { node, epoch: seen }, RoomClaim::Owned { epoch }) => {
            assert_eq!(node, "b");
            assert_eq!(seen, epoch);
            (&b, &a, *epoch)
        }
        other => panic!("exactly one owner expected, got {other:?}"),
    };
    // Claiming again as owner keeps the epoch; the other still sees the owner.
    assert_eq!(
        owner.claim_room("room", SHORT).await.unwrap(),
        RoomClaim::Owned { epoch: first_epoch }
    );
    assert_eq!(
        other.room_owner("room").await.unwrap(),
        Some((owner.node_id().to_owned(), first_epoch))
    );
    owner.set_room_media("room", "m1").await.unwrap();
    assert_eq!(
        other.room_media("room").await.unwrap().as_deref(),
        Some("m1")
    );

    // The owner stops refreshing (say it hung); its claim expires and the other takes over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let RoomClaim::Owned {
        epoch: second_epoch,
    } = other.claim_room("room", LONG).await.unwrap()
    else {
        panic!("the other node should own the room after expiry");
    };
    assert!(second_epoch > first_epoch);

    // The stale owner can neither extend nor delete the new claim.
    assert!(!owner.refresh_room("room", first_epoch, LONG).await.unwrap());
    assert!(!owner.release_room("room", first_epoch).await.unwrap());
    assert_eq!(
        owner.room_owner("room").await.unwrap(),
        Some((other.node_id().to_owned(), second_epoch))
    );
    assert_eq!(
        owner.claim_room("room", LONG).await.unwrap(),
        RoomClaim::OwnedBy {
            node: other.node_id().to_owned(),
            epoch: second_epoch
        }
    );

    // The new owner refreshes and releases. A refresh extends the media mapping too (a room
    // may outlive the mapping's own TTL); release drops it.
    other.set_room_media("room", "m2").await.unwrap();
    let mut conn = raw(&redis).await;
    let _: () = redis::cmd("PEXPIRE")
        .arg("zvon:room-media:room")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(other
        .refresh_room("room", second_epoch, LONG)
        .await
        .unwrap());
    let media_ttl: i64 = redis::cmd("PTTL")
        .arg("zvon:room-media:room")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        media_ttl > 3_000_000,
        "media mapping extended, ttl {media_ttl} ms"
    );
    assert!(other.release_room("room", second_epoch).await.unwrap());
    assert_eq!(owner.room_owner("room").await.unwrap(), None);
    assert_eq!(owner.room_media("room").await.unwrap(), None);
    assert!(!other
        .refresh_room("room", second_epoch, LONG)
        .await
        .unwrap());

    // Epochs keep growing across releases, so a stale epoch can never match again.
    let RoomClaim::Owned { epoch: third_epoch } = owner.claim_room("room", LONG).await.unwrap()
    else {
        panic!("free room should be claimable");
    };
    assert!(third_epoch > second_epoch);
}

#[tokio::test]
async fn redis_outage_gives_errors_and_heals_on_restart() {
    let redis = TestRedis::start();
    let registry = Registry::connect(&redis.url(), "a").await.unwrap();
    registry.put_lease(&info("a", true), LONG).await.unwrap();

    let port = redis.kill();
    let started = Instant::now();
    let result = registry.put_lease(&info("a", true), LONG).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(
            result,
            Err(ClusterError::Timeout(_) | ClusterError::Redis(_))
        ),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    for _ in 0..3 {
        let started = Instant::now();
        assert!(registry.claim_room("room", LONG).await.is_err());
        assert!(registry.nodes().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let stats = registry.stats().snapshot();
    assert!(!stats.up);
    assert!(stats.errors_lease >= 1 && stats.errors_claim >= 3 && stats.errors_nodes >= 3);

    // Same port, same Registry: it reconnects by itself.
    let _redis = TestRedis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match registry.put_lease(&info("a", true), LONG).await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(%err, "not reconnected yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("registry did not heal after redis restart: {err}"),
        }
    }
    assert_eq!(ids(&registry.nodes().await.unwrap()), ["a"]);
    // Scripts were flushed with the old server; they must load again.
    assert_eq!(
        registry.claim_room("room", LONG).await.unwrap(),
        RoomClaim::Owned { epoch: 1 }
    );
    assert!(registry.stats().snapshot().up);
}

#[tokio::test]
async fn connect_fails_clearly_and_quickly() {
    // A port nobody listens on: port 1 (privileged, never served here). A port bound and
    // released by the test was taken by another test's redis-server in one run.
    let port = 1;
    let started = Instant::now();
    let result = Registry::connect(&format!("redis://127.0.0.1:{port}"), "a").await;
    assert!(
        matches!(
            result,
            Err(ClusterError::Timeout(_) | ClusterError::Redis(_))
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(matches!(
        Registry::connect("http://nope", "a").await,
        Err(ClusterError::InvalidUrl { .. })
    ));
    assert!(matches!(
        Registry::connect("redis://127.0.0.1:1", "a|b").await,
        Err(ClusterError::InvalidName { .. })
    ));
}

#[tokio::test]
async fn hung_redis_times_out() {
    let redis = TestRedis::start();
    let registry = Registry::connect(&redis.url(), "a").await.unwrap();
    registry.put_lease(&info("a", true), LONG).await.unwrap();
    // Freeze the server: the connection stays open but nothing answers.
    let pid = redis_pid(&redis);
    signal(pid, "STOP");
    let started = Instant::now();
    let result = registry.nodes().await;
    signal(pid, "CONT");
    assert!(
        matches!(result, Err(ClusterError::Timeout(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(registry.stats().snapshot().timeouts >= 1);
}

fn redis_pid(redis: &TestRedis) -> u32 {
    redis.pid()
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Handlers run the registry on a multi-threaded runtime: its futures must be `Send`.
#[allow(dead_code)]
fn futures_are_send(registry: &Registry) {
    fn send<T: Send>(_: T) {}
    send(registry.nodes());
    send(registry.claim_room("r", LONG));
    send(registry.put_lease(&info("a", true), LONG));
    send(registry.release_room("r", 1));
}
