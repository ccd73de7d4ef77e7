//! Starting and stopping the all-in-one server: signaling listener plus embedded media node.

use std::net::SocketAddr;
use std::sync::Arc;

use zvon_sfu::api::{ParticipantId, PeerStats};
use zvon_sfu::{SfuNode, SfuRequest, SfuResponse, SfuStats};

use crate::calls::webhooks::{check_url, WebhookConfig, Webhooks};
use crate::config::ServerConfig;

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
}

impl RunningServer {
    /// Round-trip time and loss the media node keeps for a participant, from received RTCP.
    pub async fn peer_stats(&self, participant_id: &str) -> Result<PeerStats, zvon_sfu::SfuError> {
        let request = SfuRequest::PeerStats {
            participant: ParticipantId(participant_id.to_string()),
        };
        match self.hub.sfu().request(request).await? {
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

    pub async fn shutdown(self) {
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
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::BindHttp {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener
        .local_addr()
        .map_err(|source| StartError::BindHttp {
            addr: config.http_addr,
            source,
        })?;

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

    let sfu = Arc::new(SfuNode::start(&config.sfu)?);
    let media_addrs = sfu.media_addrs();
    let sfu_stats = sfu.stats();
    let events = sfu
        .take_events()
        .ok_or_else(|| StartError::Config("media events already taken".into()))?;
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
        sfu,
        config.limits.clone(),
        config.calls.clone(),
        webhooks,
        call_key,
    );
    let ticker_hub = hub.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(CALL_TICK);
        loop {
            every.tick().await;
            ticker_hub.tick_calls();
        }
    });
    let dispatcher = tokio::spawn(hub.clone().dispatch_media_events(events));

    let metrics = Arc::new(Metrics::new(sfu_stats.clone(), hub.clone())?);
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
        }),
        dev_mode: config.dev_mode,
        upgrades: Arc::new(PerIpLimiter::new(config.limits.upgrades_per_second_per_ip)),
    };
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("signaling listener failed: {e}");
        }
        dispatcher.abort();
        ticker.abort();
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
    })
}
