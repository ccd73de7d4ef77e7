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
    /// estimate (TWCC), probing towards the layers it wants. On by default.
    pub bandwidth_allocation: bool,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            advertised_ip: IpAddr::from([127, 0, 0, 1]),
            port_base: 7360,
            workers: 0,
            keyframe_request_interval: std::time::Duration::from_millis(500),
            bandwidth_allocation: true,
        }
    }
}
