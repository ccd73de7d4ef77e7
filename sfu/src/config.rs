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
    /// A room's new participants go to the least-loaded worker once the room's home worker
    /// is this busy (share of the last second, 0..1); the room then spans workers through
    /// the relay. Above 1 a room never spreads.
    pub spread_busy: f64,
    /// Also spread a room once it has this many participants on the node, whatever the
    /// load (0: only by load). Tests force spreading with 1.
    pub spread_after: usize,
    /// How long a connection may take to come up (ICE + DTLS) once the client has what it
    /// needs (our answer to its offer, or our offer it answered); then the participant is
    /// cut (`SfuEvent::MediaLost`) and `media_setup_timeouts` counts it.
    pub media_setup_timeout: std::time::Duration,
    /// Stopped m-lines a subscriber connection may collect before it is replaced by a new
    /// one (str0m never reuses them, so each makes every later offer longer).
    pub max_stopped_mlines: usize,
    /// Where recordings are written (`SfuRequest::Record`); `None` refuses them.
    pub record_dir: Option<std::path::PathBuf>,
    /// Also listen on TCP on each media port and offer an ICE-TCP passive candidate
    /// (RFC 6544) next to the UDP one, for clients whose network blocks UDP. Off by default.
    pub ice_tcp: bool,
}

/// Default [`SfuConfig::max_stopped_mlines`]: about 100–160 KiB of stopped m-lines at most.
pub const MAX_STOPPED_MLINES: usize = 64;

/// Default [`SfuConfig::media_setup_timeout`]: a browser connects in well under a second on
/// a good network and in a few seconds on a bad one; a client that never does is gone.
pub const MEDIA_SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            advertised_ip: IpAddr::from([127, 0, 0, 1]),
            port_base: 7360,
            workers: 0,
            keyframe_request_interval: std::time::Duration::from_millis(500),
            bandwidth_allocation: true,
            // Spreading costs a relay hop per packet and worker: worth it well before the
            // home worker saturates (a 1 + 200 class keeps one worker 93-99 % busy).
            spread_busy: 0.5,
            spread_after: 0,
            media_setup_timeout: MEDIA_SETUP_TIMEOUT,
            max_stopped_mlines: MAX_STOPPED_MLINES,
            record_dir: None,
            ice_tcp: false,
        }
    }
}
