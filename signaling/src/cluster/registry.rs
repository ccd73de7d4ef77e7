//! The Redis-backed registry: node leases, room ownership with fencing epochs, and the
//! room → media node mapping. See the module docs of [`crate::cluster`] for the key layout.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script};

use super::{
    ClusterError, NodeInfo, COMMAND_TIMEOUT, CONNECT_TIMEOUT, EPOCH_RETENTION, KEY_PREFIX,
};

/// A room's media mapping lives this long after it was set or its room claim last refreshed;
/// it is deleted on release, the TTL only cleans up after owners that died without releasing.
const ROOM_MEDIA_TTL: Duration = Duration::from_secs(3600);

/// One TCP connect attempt; the whole [`Registry::connect`] is bounded by [`CONNECT_TIMEOUT`].
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Few, short reconnect attempts: a failed reconnect is retried on the next command anyway,
/// and a long backoff would keep a restarted Redis unused for seconds.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(250);

/// Claims a room if nobody owns it, else reports the owner; refreshes our own claim (and
/// the room's media mapping, if any, so a room outliving its TTL keeps its media node).
/// KEYS: room, room-epoch, room-media. ARGV: node, ttl ms, epoch retention ms, media ttl ms.
/// Returns "node|epoch".
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner = string.match(cur, '^(.*)|%d+$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
    redis.call('PEXPIRE', KEYS[3], ARGV[4])
  end
  return cur
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local val = ARGV[1] .. '|' .. epoch
redis.call('SET', KEYS[1], val, 'PX', ARGV[2])
return val
",
    )
});

/// Extends a claim only if it is still exactly ours (node and epoch): a stale owner must
/// not extend the claim of whoever took the room over. The media mapping is extended with
/// it: its own TTL only cleans up after owners that died, a live room must keep it.
/// KEYS: room, room-epoch, room-media. ARGV: "node|epoch", ttl ms, epoch retention ms,
/// media ttl ms.
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  return 1
end
return 0
",
    )
});

/// Compare-and-delete of a claim and its media mapping. KEYS: room, room-media.
/// ARGV: "node|epoch".
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
",
    )
});

/// Lists live leases in one atomic round trip and prunes ids whose lease expired (a lease
/// re-put between a separate read and prune could otherwise be pruned while alive).
/// KEYS: the node set. ARGV: node key prefix. Returns a flat list id, json, id, json, ...
/// where json is nil for a key that holds something other than a string.
static NODES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  local t = redis.call('TYPE', key).ok
  if t == 'none' then
    redis.call('SREM', KEYS[1], id)
  elseif t == 'string' then
    table.insert(out, id)
    table.insert(out, redis.call('GET', key))
  else
    table.insert(out, id)
    table.insert(out, false)
  end
end
return out
",
    )
});

fn nodes_key() -> String {
    format!("{KEY_PREFIX}nodes")
}
fn node_key_prefix() -> String {
    format!("{KEY_PREFIX}node:")
}
fn node_key(id: &str) -> String {
    format!("{KEY_PREFIX}node:{id}")
}
fn room_key(room: &str) -> String {
    format!("{KEY_PREFIX}room:{room}")
}
fn room_epoch_key(room: &str) -> String {
    format!("{KEY_PREFIX}room-epoch:{room}")
}
fn room_media_key(room: &str) -> String {
    format!("{KEY_PREFIX}room-media:{room}")
}

/// Milliseconds for PX/PEXPIRE; Redis rejects 0, and a zero TTL is a caller bug we would
/// rather turn into "expires at once" than into an error.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Who owns a room after [`Registry::claim_room`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomClaim {
    /// This node owns the room; `epoch` fences everything done on its behalf.
    Owned { epoch: u64 },
    /// Another node owns it; proxy to that node.
    OwnedBy { node: String, epoch: u64 },
}

/// Which counter an operation's failures go to.
#[derive(Debug, Clone, Copy)]
enum Op {
    Lease,
    Nodes,
    Claim,
    Refresh,
    Release,
    Other,
}

/// Health counters of one [`Registry`] (shared by its clones), for metrics and readiness.
#[derive(Debug, Default)]
pub struct RegistryStats {
    pub errors_lease: AtomicU64,
    pub errors_nodes: AtomicU64,
    pub errors_claim: AtomicU64,
    pub errors_refresh: AtomicU64,
    pub errors_release: AtomicU64,
    pub errors_other: AtomicU64,
    /// Operations that hit their time bound (also counted in the per-op errors).
    pub timeouts: AtomicU64,
    /// Entries Redis held that we could not use (skipped or reported as garbage).
    pub garbage_entries: AtomicU64,
    /// Whether Redis answered the last command. A garbage answer still counts as up: the
    /// data is wrong, not the connection, and readiness should not flap over one bad key.
    pub up: AtomicBool,
}

/// A plain copy of [`RegistryStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStatsSnapshot {
    pub errors_lease: u64,
    pub errors_nodes: u64,
    pub errors_claim: u64,
    pub errors_refresh: u64,
    pub errors_release: u64,
    pub errors_other: u64,
    pub timeouts: u64,
    pub garbage_entries: u64,
    pub up: bool,
}

impl RegistryStats {
    pub fn snapshot(&self) -> RegistryStatsSnapshot {
        RegistryStatsSnapshot {
            errors_lease: self.errors_lease.load(Ordering::Relaxed),
            errors_nodes: self.errors_nodes.load(Ordering::Relaxed),
            errors_claim: self.errors_claim.load(Ordering::Relaxed),
            errors_refresh: self.errors_refresh.load(Ordering::Relaxed),
            errors_release: self.errors_release.load(Ordering::Relaxed),
            errors_other: self.errors_other.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            garbage_entries: self.garbage_entries.load(Ordering::Relaxed),
            up: self.up.load(Ordering::Relaxed),
        }
    }

    fn errors(&self, op: Op) -> &AtomicU64 {
        match op {
            Op::Lease => &self.errors_lease,
            Op::Nodes => &self.errors_nodes,
            Op::Claim => &self.errors_claim,
            Op::Refresh => &self.errors_refresh,
            Op::Release => &self.errors_release,
            Op::Other => &self.errors_other,
        }
    }

    fn record<T>(&self, op: Op, result: &Result<T, ClusterError>) {
        match result {
            Ok(_) => self.up.store(true, Ordering::Relaxed),
            Err(err) => {
                self.errors(op).fetch_add(1, Ordering::Relaxed);
                match err {
                    ClusterError::Timeout(_) => {
                        self.timeouts.fetch_add(1, Ordering::Relaxed);
                        self.up.store(false, Ordering::Relaxed);
                    }
                    ClusterError::Redis(_) => self.up.store(false, Ordering::Relaxed),
                    ClusterError::Garbage(_) => {
                        self.garbage();
                        self.up.store(true, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
    }

    fn garbage(&self) {
        self.garbage_entries.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sorts a Redis error into what callers can act on.
fn classify(op: &'static str, err: RedisError) -> ClusterError {
    let wrong_type = err.code() == Some("WRONGTYPE");
    // INCR on an epoch key that holds something other than a number.
    let not_integer = err.to_string().contains("not an integer");
    if err.is_timeout() {
        ClusterError::Timeout(op)
    } else if wrong_type
        || not_integer
        || matches!(
            err.kind(),
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType
        )
    {
        ClusterError::Garbage(format!("{op}: {err}"))
    } else {
        ClusterError::Redis(format!("{op}: {err}"))
    }
}

/// Splits a room owner value `"node|epoch"`.
fn parse_owner(raw: &[u8]) -> Result<(String, u64), ClusterError> {
    let garbage =
        || ClusterError::Garbage(format!("room owner {:?}", String::from_utf8_lossy(raw)));
    let text = std::str::from_utf8(raw).map_err(|_| garbage())?;
    let (node, epoch) = text.rsplit_once('|').ok_or_else(garbage)?;
    let epoch = epoch.parse::<u64>().map_err(|_| garbage())?;
    if node.is_empty() {
        return Err(garbage());
    }
    Ok((node.to_owned(), epoch))
}

fn parse_node(id: &str, raw: &[u8]) -> Result<NodeInfo, ClusterError> {
    let info: NodeInfo = serde_json::from_slice(raw)
        .map_err(|err| ClusterError::Garbage(format!("lease of node {id:?}: {err}")))?;
    // A lease whose body names another node would route traffic to the wrong place.
    if info.id != id {
        return Err(ClusterError::Garbage(format!(
            "lease at node {id:?} names node {:?}",
            info.id
        )));
    }
    Ok(info)
}

fn check_name(what: &'static str, name: &str) -> Result<(), ClusterError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('|') {
        // '|' separates node and epoch in room owner values.
        "contains '|'"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(ClusterError::InvalidName {
        what,
        reason: reason.to_owned(),
    })
}

/// Handle to the fleet registry for one node. Cheap to clone; clones share the connection
/// and the stats.
#[derive(Clone)]
pub struct Registry {
    conn: ConnectionManager,
    node_id: Arc<str>,
    stats: Arc<RegistryStats>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Connects to `url` (`redis://HOST:PORT`) on behalf of node `node_id`. Fails within
    /// about [`CONNECT_TIMEOUT`] when Redis is unreachable, so a misconfigured node stops
    /// at start instead of limping. Later outages heal by themselves: the connection
    /// reconnects on the next command after Redis is back.
    pub async fn connect(url: &str, node_id: &str) -> Result<Registry, ClusterError> {
        check_name("node id", node_id)?;
        // The URL may carry a password: errors name neither it nor the URL.
        let client = redis::Client::open(url).map_err(|err| ClusterError::InvalidUrl {
            url: redact(url),
            reason: err.to_string(),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_ATTEMPT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| ClusterError::Timeout("connect"))?
        .map_err(|err| match classify("connect", err) {
            ClusterError::Garbage(msg) => ClusterError::Redis(msg),
            other => other,
        })?;
        let stats = Arc::new(RegistryStats::default());
        stats.up.store(true, Ordering::Relaxed);
        Ok(Registry {
            conn,
            node_id: node_id.into(),
            stats,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn stats(&self) -> Arc<RegistryStats> {
        self.stats.clone()
    }

    /// Bounds `fut` by [`COMMAND_TIMEOUT`] and records the outcome in the stats.
    async fn run<T>(
        &self,
        op: Op,
        name: &'static str,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, ClusterError> {
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(name, err)),
            Err(_) => Err(ClusterError::Timeout(name)),
        };
        if let Err(err) = &result {
            tracing::debug!(op = name, %err, "cluster registry call failed");
        }
        self.stats.record(op, &result);
        result
    }

    /// Counts an answer that Redis gave but we cannot use, for a call that fails because of it.
    fn garbage(&self, op: Op, err: ClusterError) -> ClusterError {
        self.stats.garbage();
        self.stats.errors(op).fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%err, "unusable data in cluster registry");
        err
    }

    /// Publishes this node's lease: its info as JSON at `zvon:node:{id}` expiring after
    /// `ttl`, and its id in `zvon:nodes`. Renew well within `ttl`.
    pub async fn put_lease(&self, info: &NodeInfo, ttl: Duration) -> Result<(), ClusterError> {
        if info.id != *self.node_id {
            return Err(ClusterError::ForeignLease {
                lease: info.id.clone(),
                registry: self.node_id.to_string(),
            });
        }
        let mut info = info.clone();
        // JSON has no NaN: serde_json would write null and every reader would drop the lease.
        if !info.load.busy.is_finite() {
            info.load.busy = 1.0;
        }
        let json = serde_json::to_string(&info)
            .map_err(|err| ClusterError::Redis(format!("encode lease: {err}")))?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(node_key(&self.node_id))
            .arg(json)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .cmd("SADD")
            .arg(nodes_key())
            .arg(&*self.node_id)
            .ignore();
        let mut conn = self.conn.clone();
        self.run(Op::Lease, "put_lease", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Withdraws this node's lease at once (clean shutdown), rather than letting it expire.
    pub async fn remove_lease(&self) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(node_key(&self.node_id))
            .ignore()
            .cmd("SREM")
            .arg(nodes_key())
            .arg(&*self.node_id)
            .ignore();
        let mut conn = self.conn.clone();
        self.run(Op::Lease, "remove_lease", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// All nodes with a live lease. Ids whose lease expired are pruned from `zvon:nodes`;
    /// entries that cannot be used (not a string, not our JSON) are skipped, logged and
    /// counted in [`RegistryStats::garbage_entries`], so one bad key never hides the fleet.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let mut conn = self.conn.clone();
        let flat: Vec<Option<Vec<u8>>> = self
            .run(Op::Nodes, "nodes", async move {
                NODES
                    .key(nodes_key())
                    .arg(node_key_prefix())
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if !flat.len().is_multiple_of(2) {
            return Err(self.garbage(
                Op::Nodes,
                ClusterError::Garbage(format!("nodes: odd reply length {}", flat.len())),
            ));
        }
        let mut nodes = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            let id = pair[0].as_deref().map(String::from_utf8_lossy);
            let parsed = match (&id, pair[1].as_deref()) {
                (Some(id), Some(raw)) => parse_node(id, raw),
                (Some(id), None) => Err(ClusterError::Garbage(format!(
                    "lease of node {id:?} is not a string"
                ))),
                (None, _) => Err(ClusterError::Garbage("nil node id".to_owned())),
            };
            match parsed {
                Ok(info) => nodes.push(info),
                Err(err) => {
                    self.stats.garbage();
                    tracing::warn!(%err, "skipping unusable node lease");
                }
            }
        }
        Ok(nodes)
    }

    /// One node's live lease.
    pub async fn node(&self, id: &str) -> Result<Option<NodeInfo>, ClusterError> {
        let mut conn = self.conn.clone();
        let key = node_key(id);
        let raw: Option<Vec<u8>> = self
            .run(Op::Other, "node", async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        parse_node(id, &raw)
            .map(Some)
            .map_err(|err| self.garbage(Op::Other, err))
    }

    /// Claims `room` for this node for `ttl`, atomically: if nobody owns it, this node
    /// becomes the owner with a new epoch higher than any before; if this node already owns
    /// it, the claim is refreshed and keeps its epoch; otherwise the owner is reported.
    pub async fn claim_room(&self, room: &str, ttl: Duration) -> Result<RoomClaim, ClusterError> {
        check_name("room name", room)?;
        let mut conn = self.conn.clone();
        let mut invocation = CLAIM.prepare_invoke();
        invocation
            .key(room_key(room))
            .key(room_epoch_key(room))
            .key(room_media_key(room))
            .arg(&*self.node_id)
            .arg(millis(ttl))
            .arg(millis(EPOCH_RETENTION))
            .arg(millis(ROOM_MEDIA_TTL));
        let raw: Vec<u8> = self
            .run(Op::Claim, "claim_room", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        let (node, epoch) = parse_owner(&raw).map_err(|err| self.garbage(Op::Claim, err))?;
        Ok(if node == *self.node_id {
            RoomClaim::Owned { epoch }
        } else {
            RoomClaim::OwnedBy { node, epoch }
        })
    }

    /// Extends this node's claim on `room` if it still holds it with `epoch`. `false` means
    /// the claim was lost (expired, or taken over with a higher epoch): stop acting as owner.
    pub async fn refresh_room(
        &self,
        room: &str,
        epoch: u64,
        ttl: Duration,
    ) -> Result<bool, ClusterError> {
        let mut conn = self.conn.clone();
        let mut invocation = REFRESH.prepare_invoke();
        invocation
            .key(room_key(room))
            .key(room_epoch_key(room))
            .key(room_media_key(room))
            .arg(format!("{}|{epoch}", self.node_id))
            .arg(millis(ttl))
            .arg(millis(EPOCH_RETENTION))
            .arg(millis(ROOM_MEDIA_TTL));
        let refreshed: i64 = self
            .run(Op::Refresh, "refresh_room", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(refreshed == 1)
    }

    /// Gives up this node's claim on `room` (and the room's media mapping) if it still
    /// holds it with `epoch`; never deletes a newer owner's claim.
    pub async fn release_room(&self, room: &str, epoch: u64) -> Result<bool, ClusterError> {
        let mut conn = self.conn.clone();
        let mut invocation = RELEASE.prepare_invoke();
        invocation
            .key(room_key(room))
            .key(room_media_key(room))
            .arg(format!("{}|{epoch}", self.node_id));
        let released: i64 = self
            .run(Op::Release, "release_room", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(released == 1)
    }

    /// The current owner of `room` and its epoch.
    pub async fn room_owner(&self, room: &str) -> Result<Option<(String, u64)>, ClusterError> {
        let mut conn = self.conn.clone();
        let key = room_key(room);
        let raw: Option<Vec<u8>> = self
            .run(Op::Other, "room_owner", async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        raw.map(|raw| parse_owner(&raw).map_err(|err| self.garbage(Op::Other, err)))
            .transpose()
    }

    /// Records which media node hosts `room`.
    pub async fn set_room_media(&self, room: &str, media_node: &str) -> Result<(), ClusterError> {
        check_name("room name", room)?;
        check_name("media node id", media_node)?;
        let mut conn = self.conn.clone();
        let key = room_media_key(room);
        let media_node = media_node.to_owned();
        self.run(Op::Other, "set_room_media", async move {
            redis::cmd("SET")
                .arg(key)
                .arg(media_node)
                .arg("PX")
                .arg(millis(ROOM_MEDIA_TTL))
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    /// The media node hosting `room`, if one was recorded.
    pub async fn room_media(&self, room: &str) -> Result<Option<String>, ClusterError> {
        let mut conn = self.conn.clone();
        let key = room_media_key(room);
        let raw: Option<Vec<u8>> = self
            .run(Op::Other, "room_media", async move {
                redis::cmd("GET").arg(key).query_async(&mut conn).await
            })
            .await?;
        raw.map(|raw| {
            String::from_utf8(raw).map_err(|err| {
                let err = ClusterError::Garbage(format!("room media of {room:?}: {err}"));
                self.garbage(Op::Other, err)
            })
        })
        .transpose()
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_parse_or_are_garbage() {
        assert_eq!(parse_owner(b"sig-1|7").unwrap(), ("sig-1".to_owned(), 7));
        for bad in [
            &b"sig-1"[..],
            b"sig-1|",
            b"|3",
            b"sig-1|x",
            b"sig-1|-1",
            b"\xff|1",
        ] {
            assert!(
                matches!(parse_owner(bad), Err(ClusterError::Garbage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_that_would_break_owner_values_are_refused() {
        assert!(check_name("node id", "sig-1").is_ok());
        for bad in ["", "a|b", "a\nb"] {
            assert!(check_name("node id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_stay_out_of_errors() {
        assert_eq!(redact("redis://:secret@h:6379"), "redis://***@h:6379");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn ttl_is_never_zero_ms() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_millis(300)), 300);
    }
}
