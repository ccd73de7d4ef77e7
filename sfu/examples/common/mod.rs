//! Pieces the cascade benches share: a link pair on loopback, stamped packets, percentiles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zvon_sfu::cascade::{server_endpoint, CascadeConfig, CascadeLink};
use zvon_sfu::relay::{FlowId, RelayPacket};

/// The `p` quantile of sorted latencies (zero when there are none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// A packet of `len` bytes whose first 8 carry its send time since `start`, in ns.
pub fn stamped(
    flow: u32,
    source: u32,
    seq: u64,
    ts: u32,
    pt: u8,
    len: usize,
    start: Instant,
) -> RelayPacket {
    let mut payload = vec![0u8; len.max(8)];
    payload[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
    RelayPacket::plain(FlowId(flow), source, seq, ts, pt, Arc::from(payload))
}

/// The one-way delay of a stamped payload received now.
pub fn delay_of(payload: &[u8], start: Instant) -> Option<Duration> {
    let sent = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    Some(start.elapsed().saturating_sub(Duration::from_nanos(sent)))
}

/// Two ends of one cascade link on loopback: (sending end, receiving end, the endpoints,
/// which must outlive the link).
pub async fn loopback_link(
    config: &CascadeConfig,
) -> (CascadeLink, CascadeLink, [quinn::Endpoint; 2]) {
    let endpoint = server_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), config).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let c = config.clone();
    let accept = tokio::spawn(async move {
        let incoming = endpoint.accept().await.unwrap();
        let link = CascadeLink::accept(incoming, &c).await.unwrap();
        (link, endpoint)
    });
    let client = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let (tx, _) = CascadeLink::connect(&client, addr, config, "a")
        .await
        .unwrap();
    let ((rx, _, _), server) = accept.await.unwrap();
    (tx, rx, [client, server])
}
