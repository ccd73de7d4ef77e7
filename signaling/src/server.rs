//! Starting and stopping the all-in-one server: signaling listener plus embedded media node.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::sync::mpsc;
use zvon_sfu::api::{ParticipantId, PeerStats};
use zvon_sfu::link::{client_endpoint, ControlServer, LinkConfig};
use zvon_sfu::{SfuEvent, SfuNode, SfuRequest, SfuResponse, SfuStats};

use crate::calls::webhooks::{check_url, WebhookConfig, Webhooks};
use crate::cluster::Registry;
use crate::config::{ClusterConfig, Role, ServerConfig};
use crate::fleet::{Fleet, FleetStats, LoadMeter, MediaFleet, NodeLost, RoomLeases};
use crate::media_plane::MediaPlane;

/// How often ring timeouts are checked.
const CALL_TICK: std::time::Duration = std::time::Duration::from_millis(250);
use crate::http::{router, AppState};
use crate::metrics::{Metrics, MetricsError};
use crate::rate_limit::PerIpLimiter;
use crate::rooms::Hub;
use crate::session::SessionContext;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind signaling listener {addr}: {source}")]
    BindHttp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind metrics listener {addr}: {source}")]
    BindMetrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot start media node: {0}")]
    Media(#[from] zvon_sfu::SfuError),
    #[error("configuration: {0}")]
    Config(String),
}

/// A server running in this process. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    /// Where the signaling HTTP + WebSocket listener actually listens.
    pub http_addr: SocketAddr,
    /// The media sockets, one per worker, as bound.
    pub media_addrs: Vec<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Live media counters (dropped garbage datagrams, forwarded packets, keyframe requests...).
    pub sfu_stats: Arc<SfuStats>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    metrics_task: tokio::task::JoinHandle<()>,
    metrics_stop: tokio::sync::oneshot::Sender<()>,
    fleet: Option<Arc<Fleet>>,
}

impl RunningServer {
    /// The media node running in this process in all-in-one mode (tests break it on purpose);
    /// `None` in cluster mode.
    pub fn embedded_media(&self) -> Option<Arc<SfuNode>> {
        match self.hub.media() {
            MediaPlane::Embedded(node) => Some(node.clone()),
            MediaPlane::Fleet(_) => None,
        }
    }

    /// Round-trip time and loss the media node keeps for a participant, from received RTCP.
    pub async fn peer_stats(&self, participant_id: &str) -> Result<PeerStats, zvon_sfu::SfuError> {
        let request = SfuRequest::PeerStats {
            participant: ParticipantId(participant_id.to_string()),
        };
        match self.hub.media().request(request).await? {
            SfuResponse::PeerStats(stats) => Ok(stats),
            other => Err(zvon_sfu::SfuError::InvalidRequest(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Rooms and participants currently known to signaling.
    pub fn room_count(&self) -> usize {
        self.hub.room_count()
    }

    /// A call's state as the server API reports it.
    pub fn call_report(&self, call_id: &str) -> Option<serde_json::Value> {
        self.hub.call_report(call_id)
    }

    pub fn participant_count(&self) -> usize {
        self.hub.participant_count()
    }

    /// This node's fleet membership (cluster mode).
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Cluster mode: stop taking rooms, let media and rooms move to other nodes, leave the
    /// registry. Returns within the drain timeout; call [`RunningServer::shutdown`] after.
    pub async fn drain(&self) {
        if let Some(fleet) = &self.fleet {
            let stats = self.sfu_stats.clone();
            let peers = move || {
                stats
                    .workers
                    .iter()
                    .map(|w| SfuStats::get(&w.peers))
                    .sum::<u64>()
            };
            fleet.drain(Some(&self.hub), peers).await;
        }
    }

    /// All-in-one mode: `/readyz` answers 503, no new joins (`server_draining`), every
    /// participant gets `server_draining`; returns once everyone left or at `timeout`, with the
    /// sockets still open closed with 1001. Call [`RunningServer::shutdown`] after.
    pub async fn drain_standalone(&self, timeout: std::time::Duration) {
        self.metrics.set_shutting_down();
        self.hub.drain(timeout).await;
    }

    pub async fn shutdown(self) {
        if let Some(fleet) = &self.fleet {
            if let Some(control) = &fleet.control {
                control.shutdown();
            }
            fleet.leave().await;
        }
        // Load balancers watching /readyz stop sending new clients while sessions drain.
        self.metrics.set_shutting_down();
        let _ = self.shutdown.send(());
        let _ = self.task.await;
        let _ = self.metrics_stop.send(());
        let _ = self.metrics_task.await;
    }
}

/// Binds the listeners and starts serving. Must be called inside a tokio runtime.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    if config.api_keys.is_empty() {
        return Err(StartError::Config(
            "at least one API key is needed (--api-key/--api-secret, or --dev)".into(),
        ));
    }
    if config.api_keys.iter().any(|k| k.secret.len() < 16) {
        return Err(StartError::Config(
            "API secrets must be at least 16 characters".into(),
        ));
    }
    if config.cluster.as_ref().is_some_and(|c| c.secret.len() < 16) {
        return Err(StartError::Config(
            "the cluster secret must be at least 16 characters".into(),
        ));
    }
    let role = config.cluster.as_ref().map_or(Role::Both, |c| c.role);
    // A media-only node serves no clients: its public listener stays closed.
    let listener = if role.signaling() {
        Some(
            tokio::net::TcpListener::bind(config.http_addr)
                .await
                .map_err(|source| StartError::BindHttp {
                    addr: config.http_addr,
                    source,
                })?,
        )
    } else {
        None
    };
    let http_addr = match &listener {
        Some(l) => l.local_addr().map_err(|source| StartError::BindHttp {
            addr: config.http_addr,
            source,
        })?,
        None => config.http_addr,
    };

    // Bound before the media node starts so a taken port fails fast, and /healthz answers
    // (with /readyz still 503) while the workers come up.
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| StartError::BindMetrics {
            addr: config.metrics_addr,
            source,
        })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|source| StartError::BindMetrics {
            addr: config.metrics_addr,
            source,
        })?;

    let local = if role.media() {
        Some(Arc::new(SfuNode::start(&config.sfu)?))
    } else {
        None
    };
    let media_addrs = local.as_ref().map(|n| n.media_addrs()).unwrap_or_default();
    let sfu_stats = local
        .as_ref()
        .map(|n| n.stats())
        .unwrap_or_else(|| Arc::new(SfuStats::new(0)));
    let local_events = match &local {
        Some(node) => Some(
            node.take_events()
                .ok_or_else(|| StartError::Config("media events already taken".into()))?,
        ),
        None => None,
    };

    let (media, events, fleet, lost) = match &config.cluster {
        None => {
            let (Some(node), Some(events)) = (local.clone(), local_events) else {
                return Err(StartError::Config(
                    "the all-in-one server needs media".into(),
                ));
            };
            (MediaPlane::Embedded(node), events, None, None)
        }
        Some(cluster) => {
            let joined =
                join_fleet(cluster, &config, http_addr, local.clone(), local_events).await?;
            (joined.media, joined.events, Some(joined.fleet), joined.lost)
        }
    };

    let call_key = config.api_keys[0].clone();
    let webhooks = match &config.webhook_url {
        Some(url) => {
            check_url(url).map_err(|e| StartError::Config(format!("webhook URL: {e}")))?;
            Webhooks::start(WebhookConfig::new(
                url.clone(),
                call_key.key.clone(),
                call_key.secret.clone(),
            ))
        }
        None => Webhooks::disabled(),
    };
    let hub = Hub::new(
        media,
        config.limits.clone(),
        config.calls.clone(),
        webhooks,
        call_key,
        config.turn.clone(),
    );
    if let Some(dir) = &config.sfu.record_dir {
        hub.set_record_dir(dir.clone());
    }
    let mut background = vec![];
    background.push(tokio::spawn({
        let hub = hub.clone();
        async move {
            let mut every = tokio::time::interval(CALL_TICK);
            loop {
                every.tick().await;
                hub.tick_calls();
            }
        }
    }));
    background.push(tokio::spawn(hub.clone().dispatch_media_events(events)));
    if let Some(mut lost) = lost {
        let hub = hub.clone();
        background.push(tokio::spawn(async move {
            while let Some(gone) = lost.recv().await {
                hub.media_node_lost(gone).await;
            }
        }));
    }
    if let Some(fleet) = &fleet {
        let signaling_hub = role.signaling().then(|| hub.clone());
        let load = LoadMeter::new(local.as_ref().map(|n| n.stats()));
        background.push(tokio::spawn(fleet.clone().run(signaling_hub, load)));
    }

    let metrics = Arc::new(Metrics::new(sfu_stats.clone(), hub.clone(), fleet.clone())?);
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = tokio::spawn(crate::metrics::serve(
        metrics_listener,
        metrics.clone(),
        async move {
            let _ = metrics_stopped.await;
        },
    ));
    let state = AppState {
        session: Arc::new(SessionContext {
            hub: hub.clone(),
            metrics: metrics.clone(),
            keys: Arc::new(config.api_keys.clone()),
            limits: config.limits.clone(),
            fleet: fleet.clone(),
        }),
        dev_mode: config.dev_mode,
        upgrades: Arc::new(PerIpLimiter::new(config.limits.upgrades_per_second_per_ip)),
        trusted_proxies: Arc::new(config.trusted_proxies.clone()),
        allowed_origins: Arc::new(config.allowed_origins.clone()),
    };
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        match listener {
            Some(listener) => {
                // No Nagle: `joined` and the subscriber offer right behind it (two writes) must
                // not wait for the client's delayed ACK of the first (up to 40 ms on Linux).
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY: {e}");
                    }
                });
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!("signaling listener failed: {e}");
                }
            }
            None => {
                let _ = stop.await;
            }
        }
        for task in background {
            task.abort();
        }
    });
    Ok(RunningServer {
        http_addr,
        media_addrs,
        metrics_addr,
        sfu_stats,
        shutdown,
        task,
        hub,
        metrics,
        metrics_task,
        metrics_stop,
        fleet,
    })
}

/// What joining a fleet gives the rest of the server.
struct FleetMembership {
    media: MediaPlane,
    events: mpsc::UnboundedReceiver<SfuEvent>,
    fleet: Arc<Fleet>,
    lost: Option<mpsc::UnboundedReceiver<NodeLost>>,
}

async fn join_fleet(
    cluster: &ClusterConfig,
    config: &ServerConfig,
    http_addr: SocketAddr,
    local: Option<Arc<SfuNode>>,
    local_events: Option<mpsc::UnboundedReceiver<SfuEvent>>,
) -> Result<FleetMembership, StartError> {
    let registry = Registry::connect(&cluster.redis_url, &cluster.node_id)
        .await
        .map_err(|e| StartError::Config(format!("cluster {}: {e}", cluster.redis_url)))?;
    let mut link = LinkConfig::new(cluster.secret.clone());
    link.orphan_grace = cluster.orphan_grace;
    link.cascade_congestion = cluster.cascade_congestion;
    let stats = Arc::new(FleetStats::default());

    // Every signaling node, this one included, drives media nodes over QUIC: one path, and the
    // local node's events can have one reader only.
    let control = match (&local, local_events) {
        (Some(node), Some(events)) => Some(
            ControlServer::start(cluster.quic_addr, link.clone(), node.clone(), events)
                .map_err(|e| StartError::Config(format!("QUIC link {}: {e}", cluster.quic_addr)))?,
        ),
        _ => None,
    };
    let quic_addr = control.as_ref().map(|c| {
        cluster.advertise_quic.unwrap_or_else(|| {
            let bound = c.local_addr();
            if bound.ip().is_unspecified() {
                SocketAddr::new(config.sfu.advertised_ip, bound.port())
            } else {
                bound
            }
        })
    });
    let http_url = cluster.role.signaling().then(|| {
        cluster
            .advertise_http
            .clone()
            .unwrap_or_else(|| format!("http://{http_addr}"))
    });

    let (events_tx, events) = mpsc::unbounded_channel();
    let (media, media_fleet, lost) = if cluster.role.signaling() {
        let endpoint = client_endpoint(SocketAddr::from(([0, 0, 0, 0], 0)))
            .map_err(|e| StartError::Config(format!("QUIC client endpoint: {e}")))?;
        let (lost_tx, lost) = mpsc::unbounded_channel();
        let media_fleet = MediaFleet::new(
            registry.clone(),
            endpoint,
            link,
            events_tx,
            lost_tx,
            stats.clone(),
            (cluster.room_spread_after, cluster.room_spread_busy),
        );
        (
            MediaPlane::Fleet(media_fleet.clone()),
            Some(media_fleet),
            Some(lost),
        )
    } else {
        // A media-only node's hub never sees a socket; it exists for the metrics.
        let Some(node) = local else {
            return Err(StartError::Config("a node needs a role".into()));
        };
        drop(events_tx);
        (MediaPlane::Embedded(node), None, None)
    };
    let rooms = cluster
        .role
        .signaling()
        .then(|| RoomLeases::new(registry.clone(), stats.clone()));
    let fleet = Arc::new(Fleet {
        config: cluster.clone(),
        registry,
        stats,
        media: media_fleet,
        rooms,
        control,
        http_url,
        quic_addr,
    });
    // Announce the node before serving, so that placement can find it at once.
    fleet.put_lease(Default::default()).await;
    Ok(FleetMembership {
        media,
        events,
        fleet,
        lost,
    })
}
