//! Media node settings.

use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Address the media sockets bind to.
    pub bind_ip: IpAddr,
    /// Address written into ICE candidates: the public IP when behind NAT.
    pub advertised_ip: IpAddr,
    /// First media port; worker `i` binds `port_base + i`. 0 picks ephemeral ports (tests).
    pub port_base: u16,
    /// Worker threads, one socket each. 0 means one per CPU core.
    pub workers: usize,
    /// Smallest gap between two keyframe requests sent to one publisher's track.
    pub keyframe_request_interval: std::time::Duration,
    /// Fit each subscriber's video layers into its connection's send-side bandwidth
    /// estimate (TWCC). Off by default: on a loaded 2-core test machine the delay-based
    /// estimate collapses to ~200 kbit/s on loopback and would pin everyone to the low layer.
    pub bandwidth_allocation: bool,
    /// A room's new participants go to the least-loaded worker once the room's home worker
    /// is this busy (share of the last second, 0..1); the room then spans workers through
    /// the relay. Above 1 a room never spreads.
    pub spread_busy: f64,
    /// Also spread a room once it has this many participants on the node, whatever the
    /// load (0: only by load). Tests force spreading with 1.
    pub spread_after: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            advertised_ip: IpAddr::from([127, 0, 0, 1]),
            port_base: 7360,
            workers: 0,
            keyframe_request_interval: std::time::Duration::from_millis(500),
            bandwidth_allocation: false,
            // Spreading costs a relay hop per packet and worker: worth it well before the
            // home worker saturates (a 1 + 200 class keeps one worker 93-99 % busy).
            spread_busy: 0.5,
            spread_after: 0,
        }
    }
}
