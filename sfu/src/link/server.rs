//! The media node's end of the link: accepts signaling nodes, serves their requests with the
//! node and streams each one the events it owns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::auth::authenticate_server;
use super::frame::{read_frame, write_frame};
use super::router::{Claim, ConnId, Router};
use super::{tls, LinkConfig, LinkError, PROTOCOL_ERROR_CODE, SHUTDOWN_CODE};
use crate::api::{ParticipantId, RoomId, SfuError, SfuEvent, SfuRequest, SfuResponse};
use crate::cascade::{CascadeConfig, CASCADE_ALPN};
use crate::node::SfuNode;

/// Counters of a [`ControlServer`], for metrics.
#[derive(Debug, Default)]
pub struct LinkServerStats {
    /// Connections that passed authentication.
    pub connections_accepted: AtomicU64,
    /// Connections closed for a wrong or missing cluster tag.
    pub auth_failures: AtomicU64,
    /// Requests answered (successfully or with the node's error).
    pub requests_served: AtomicU64,
    /// Events written to a signaling connection.
    pub events_sent: AtomicU64,
    /// Events no connection owned (their participant's connection was lost, or never known).
    pub events_dropped: AtomicU64,
    /// Participants removed because their signaling connection stayed lost for the grace.
    pub orphans_removed: AtomicU64,
    /// Authenticated connections open now.
    pub open_connections: AtomicU64,
}

/// What the connection tasks share.
struct Shared {
    node: Arc<SfuNode>,
    config: LinkConfig,
    router: Router,
    stats: Arc<LinkServerStats>,
    next_conn: AtomicU64,
}

/// Media-node side of the link. Runs (in tasks of the runtime it was started in) until
/// [`ControlServer::shutdown`].
pub struct ControlServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    stats: Arc<LinkServerStats>,
}

impl ControlServer {
    /// Binds the QUIC endpoint and starts accepting signaling nodes. `events` is the node's
    /// event stream ([`SfuNode::take_events`]). Must be called inside a tokio runtime.
    pub fn start(
        bind: SocketAddr,
        config: LinkConfig,
        node: Arc<SfuNode>,
        events: mpsc::UnboundedReceiver<SfuEvent>,
    ) -> Result<ControlServer, LinkError> {
        if config.cluster_secret.is_empty() {
            return Err(LinkError::Auth("the cluster secret is empty".into()));
        }
        // The port serves the cascade between media nodes too (its own ALPN), so the server
        // transport carries the cascade's media settings; the signaling link ignores them.
        let mut cascade = CascadeConfig::new(config.cluster_secret.clone());
        cascade.congestion = config.cascade_congestion;
        let mut transport = tls::transport_config(&config, true)?;
        cascade.tune(&mut transport);
        let server_config =
            tls::server_config_with(&[super::ALPN, CASCADE_ALPN], Arc::new(transport))?;
        node.start_cascade(cascade)
            .map_err(|e| LinkError::Bind(format!("cascade gateway: {e}")))?;
        let endpoint = quinn::Endpoint::server(server_config, bind)
            .map_err(|e| LinkError::Bind(format!("{bind}: {e}")))?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|e| LinkError::Bind(e.to_string()))?;
        let stats = Arc::new(LinkServerStats::default());
        let shared = Arc::new(Shared {
            node,
            config,
            router: Router::default(),
            stats: stats.clone(),
            next_conn: AtomicU64::new(1),
        });
        tokio::spawn(dispatch_events(shared.clone(), events));
        tokio::spawn(accept_loop(endpoint.clone(), shared));
        tracing::info!("cluster link listening on {local_addr}");
        Ok(ControlServer {
            endpoint,
            local_addr,
            stats,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Arc<LinkServerStats> {
        self.stats.clone()
    }

    /// Closes every connection and stops accepting. Participants are then treated like those
    /// of any lost connection (removed after the orphan grace).
    pub fn shutdown(&self) {
        self.endpoint
            .close(SHUTDOWN_CODE.into(), b"media node shutting down");
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    // `accept` returns None once the endpoint is closed.
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve_connection(incoming, shared.clone()));
    }
}

/// Node events → the owning connections.
async fn dispatch_events(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<SfuEvent>) {
    while let Some(event) = events.recv().await {
        if shared.router.route(event) == 0 {
            shared.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn serve_connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("link handshake with {remote} failed: {e}");
            return;
        }
    };
    if alpn(&connection).as_deref() == Some(CASCADE_ALPN) {
        // Another media node: the node's cascade gateway authenticates and serves it.
        shared.node.cascade_incoming(connection);
        return;
    }
    if let Err(e) = authenticate_server(&connection, &shared.config.cluster_secret).await {
        shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("link from {remote} refused: {e}");
        return;
    }
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .open_connections
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!("signaling node {remote} connected (link {conn_id})");

    let (event_tx, event_rx) = mpsc::unbounded_channel();
    shared.router.connect(conn_id, event_tx);
    tokio::spawn(write_events(connection.clone(), event_rx, shared.clone()));

    let reason = loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_request(send, recv, conn_id, shared.clone()));
            }
            Err(e) => break e,
        }
    };
    shared
        .stats
        .open_connections
        .fetch_sub(1, Ordering::Relaxed);
    shared.router.lose(conn_id);
    tracing::warn!("signaling node {remote} lost (link {conn_id}): {reason}");
    tokio::spawn(remove_orphans_after_grace(conn_id, shared));
}

/// The protocol the peer chose in the handshake.
fn alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The connection's single event stream, in node order.
async fn write_events(
    connection: quinn::Connection,
    mut events: mpsc::UnboundedReceiver<SfuEvent>,
    shared: Arc<Shared>,
) {
    let mut stream = match connection.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("no event stream: {e}");
            return;
        }
    };
    while let Some(event) = events.recv().await {
        match write_frame(&mut stream, &event).await {
            Ok(()) => {
                shared.stats.events_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(LinkError::Protocol(e)) => {
                // Not encodable in a frame: the only thing lost is this event.
                shared.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!("event not sent: {e}");
            }
            Err(_) => return,
        }
    }
}

/// What a served request changes in event ownership.
enum Ownership {
    Adopt(ParticipantId, RoomId),
    /// A new owner takes a participant over from a lost connection: routed to it before the
    /// node is asked, so that no event of the participant goes to the dead connection meanwhile.
    TakeOver(ParticipantId, RoomId),
    Forget(ParticipantId),
    Unchanged,
}

impl Ownership {
    fn of(request: &SfuRequest) -> Ownership {
        match request {
            SfuRequest::AddParticipant {
                room, participant, ..
            } => Ownership::Adopt(participant.clone(), room.clone()),
            SfuRequest::RemoveParticipant { participant } => Ownership::Forget(participant.clone()),
            SfuRequest::Adopt { room, participant } => {
                Ownership::TakeOver(participant.clone(), room.clone())
            }
            _ => Ownership::Unchanged,
        }
    }
}

async fn serve_request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    conn_id: ConnId,
    shared: Arc<Shared>,
) {
    let result: Result<SfuResponse, SfuError> = match read_frame::<_, SfuRequest>(&mut recv).await {
        Ok(Some(request)) if !owns(&request, conn_id, &shared) => Err(SfuError::UnknownParticipant),
        Ok(Some(request)) => {
            let ownership = Ownership::of(&request);
            let claim = claim(&ownership, conn_id, &shared);
            let result = shared.node.request(request).await;
            settle_ownership(ownership, claim, &result, conn_id, &shared).await;
            result
        }
        Ok(None) => Err(SfuError::InvalidRequest("empty request stream".into())),
        Err(LinkError::Protocol(e)) => {
            // Stop the sender (it may still be writing an oversized frame), but answer
            // so that a client bug shows up as a typed error instead of a reset.
            let _ = recv.stop(PROTOCOL_ERROR_CODE.into());
            Err(SfuError::InvalidRequest(e))
        }
        Err(_) => return, // the stream or connection died; nobody is listening
    };
    shared.stats.requests_served.fetch_add(1, Ordering::Relaxed);
    if write_frame(&mut send, &result).await.is_ok() {
        let _ = send.finish();
    }
}

/// Fencing: a request about a participant another connection owns (it was adopted away from
/// this one) is answered as if the participant were unknown, and never reaches the node.
fn owns(request: &SfuRequest, conn_id: ConnId, shared: &Shared) -> bool {
    match request {
        SfuRequest::AddParticipant { .. } | SfuRequest::Adopt { .. } => true,
        SfuRequest::Cascade { .. } | SfuRequest::Record { .. } => true,
        other => other
            .participant()
            .is_some_and(|p| shared.router.may_act(conn_id, p)),
    }
}

/// Routes a participant being added to this connection before the node sees the request.
fn claim(ownership: &Ownership, conn_id: ConnId, shared: &Shared) -> Option<Claim> {
    match ownership {
        Ownership::Adopt(participant, room) => {
            Some(shared.router.claim(conn_id, participant, room))
        }
        Ownership::TakeOver(participant, room) => {
            shared
                .router
                .adopt(conn_id, participant.clone(), room.clone());
            None
        }
        _ => None,
    }
}

/// Makes the routes agree with what the node did.
async fn settle_ownership(
    ownership: Ownership,
    claim: Option<Claim>,
    result: &Result<SfuResponse, SfuError>,
    conn_id: ConnId,
    shared: &Shared,
) {
    match (ownership, claim, result) {
        (Ownership::Adopt(..), Some(Claim::New), Ok(_)) => {}
        (Ownership::Adopt(participant, _), Some(Claim::New), Err(_)) => {
            shared.router.release(conn_id, &participant);
        }
        // The node took a participant the routes still listed (a stale entry): it is ours.
        (Ownership::Adopt(participant, room), _, Ok(_)) => {
            let adopted = shared.router.adopt(conn_id, participant.clone(), room);
            if !adopted {
                // The connection's grace ended while the node was adding the participant:
                // nobody would ever remove it.
                remove_orphan(participant, shared).await;
            }
        }
        (Ownership::Forget(participant), _, Ok(_) | Err(SfuError::UnknownParticipant)) => {
            shared.router.forget(&participant);
        }
        // Nothing to take over: the participant is gone from the node.
        (Ownership::TakeOver(participant, _), _, Err(_)) => {
            shared.router.release(conn_id, &participant);
        }
        _ => {}
    }
}

async fn remove_orphans_after_grace(conn_id: ConnId, shared: Arc<Shared>) {
    tokio::time::sleep(shared.config.orphan_grace).await;
    let orphans = shared.router.reap(conn_id);
    if !orphans.is_empty() {
        tracing::info!(
            "removing {} participants of lost link {conn_id} after the orphan grace",
            orphans.len()
        );
    }
    for participant in orphans {
        remove_orphan(participant, &shared).await;
    }
}

async fn remove_orphan(participant: ParticipantId, shared: &Shared) {
    let request = SfuRequest::RemoveParticipant {
        participant: participant.clone(),
    };
    match shared.node.request(request).await {
        Ok(_) => {
            shared.stats.orphans_removed.fetch_add(1, Ordering::Relaxed);
        }
        // Already gone (removed through another path): nothing to do.
        Err(SfuError::UnknownParticipant) => {}
        Err(e) => tracing::warn!("removing orphan {participant}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SfuConfig;
    use crate::link::AUTH_ERROR_CODE;
    use std::time::{Duration, Instant};

    /// A client that completes the QUIC handshake but never sends its tag is closed with the
    /// auth code once the server's wait runs out, and counted.
    #[tokio::test]
    async fn a_client_without_a_tag_is_closed_after_the_auth_timeout() {
        let node = SfuNode::start(&SfuConfig {
            bind_ip: [127, 0, 0, 1].into(),
            advertised_ip: [127, 0, 0, 1].into(),
            port_base: 0,
            workers: 1,
            ..Default::default()
        })
        .unwrap();
        let events = node.take_events().unwrap();
        let config = LinkConfig::new("secret");
        let server = ControlServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            config.clone(),
            Arc::new(node),
            events,
        )
        .unwrap();
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let connection = endpoint
            .connect_with(
                tls::client_config(&config).unwrap(),
                server.local_addr(),
                tls::SERVER_NAME,
            )
            .unwrap()
            .await
            .unwrap();
        let start = Instant::now();
        let reason = tokio::time::timeout(Duration::from_secs(4), connection.closed())
            .await
            .expect("closed by the server");
        assert!(start.elapsed() >= Duration::from_millis(1500));
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, AUTH_ERROR_CODE.into());
                assert_eq!(&close.reason[..], b"auth");
            }
            other => panic!("{other}"),
        }
        assert_eq!(server.stats().auth_failures.load(Ordering::Relaxed), 1);
        assert_eq!(server.stats().open_connections.load(Ordering::Relaxed), 0);
    }
}
