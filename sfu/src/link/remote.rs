//! The signaling node's end of the link: one connection to one media node, used like an
//! in-process [`SfuNode`](crate::node::SfuNode).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::auth::authenticate_client;
use super::frame::{read_frame, write_frame};
use super::{tls, LinkConfig, LinkError, PROTOCOL_ERROR_CODE, SHUTDOWN_CODE};
use crate::api::{SfuError, SfuEvent, SfuRequest, SfuResponse};

/// The QUIC endpoint of a signaling process: one, reused for every media node.
/// Must be called inside a tokio runtime.
pub fn client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint, LinkError> {
    quinn::Endpoint::client(bind).map_err(|e| LinkError::Bind(format!("{bind}: {e}")))
}

/// Transport figures of a link, from quinn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkSnapshot {
    pub rtt: Duration,
    pub lost_packets: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// Closes the connection when the last [`RemoteSfu`] clone goes: the event reader holds a
/// connection handle too, which would otherwise keep an unused link alive forever.
struct Link {
    connection: quinn::Connection,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.connection
            .close(SHUTDOWN_CODE.into(), b"signaling dropped the link");
    }
}

/// One authenticated connection to one media node. Cheap to clone; the connection closes
/// when the last clone is dropped.
#[derive(Clone)]
pub struct RemoteSfu {
    link: Arc<Link>,
}

impl RemoteSfu {
    /// Connects to the media node at `addr` and authenticates with the cluster secret. The
    /// receiver yields the events of the participants this link adds, in node order; it
    /// ends when the connection does.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        config: &LinkConfig,
    ) -> Result<(RemoteSfu, mpsc::UnboundedReceiver<SfuEvent>), LinkError> {
        let client_config = tls::client_config(config)?;
        let connecting = endpoint
            .connect_with(client_config, addr, tls::SERVER_NAME)
            .map_err(|e| LinkError::Connect(format!("{addr}: {e}")))?;
        let connection = connecting
            .await
            .map_err(|e| LinkError::Connect(format!("{addr}: {e}")))?;
        authenticate_client(&connection, &config.cluster_secret).await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_events(connection.clone(), events_tx));
        tracing::info!("linked to media node {addr}");
        Ok((
            RemoteSfu {
                link: Arc::new(Link { connection }),
            },
            events_rx,
        ))
    }

    /// Sends one request and waits for its answer. A transport failure is
    /// [`SfuError::Unavailable`]; the node's own errors arrive as they were.
    pub async fn request(&self, request: SfuRequest) -> Result<SfuResponse, SfuError> {
        let unavailable = |e: LinkError| SfuError::Unavailable(e.to_string());
        let connection = &self.link.connection;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| unavailable(LinkError::from_connection(&e)))?;
        write_frame(&mut send, &request)
            .await
            .map_err(unavailable)?;
        // Finishing tells the server the request is complete.
        let _ = send.finish();
        match read_frame::<_, Result<SfuResponse, SfuError>>(&mut recv).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(SfuError::Unavailable(
                "the media node closed the request without an answer".into(),
            )),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Resolves when the connection is gone: closed by either side, or the media node
    /// silent for the idle timeout.
    pub async fn closed(&self) -> LinkError {
        LinkError::from_connection(&self.link.connection.closed().await)
    }

    pub fn is_closed(&self) -> bool {
        self.link.connection.close_reason().is_some()
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.link.connection.remote_address()
    }

    pub fn stats(&self) -> LinkSnapshot {
        let stats = self.link.connection.stats();
        LinkSnapshot {
            rtt: stats.path.rtt,
            lost_packets: stats.path.lost_packets,
            sent_bytes: stats.udp_tx.bytes,
            received_bytes: stats.udp_rx.bytes,
        }
    }
}

/// Copies the server's event stream into the channel until either ends.
async fn read_events(connection: quinn::Connection, events: mpsc::UnboundedSender<SfuEvent>) {
    let mut stream = match connection.accept_uni().await {
        Ok(s) => s,
        Err(_) => return, // closed before any event; `closed()` tells why
    };
    loop {
        match read_frame::<_, SfuEvent>(&mut stream).await {
            Ok(Some(event)) => {
                // Nobody listening is fine: the requests still work.
                let _ = events.send(event);
            }
            Ok(None) | Err(LinkError::Closed(_)) => return,
            Err(e) => {
                // The stream cannot be resynchronised after a bad frame, and events
                // missing silently would leave participants stuck: drop the link.
                tracing::error!(
                    "media node {} broke the event stream: {e}",
                    connection.remote_address()
                );
                connection.close(PROTOCOL_ERROR_CODE.into(), b"event stream");
                return;
            }
        }
    }
}
