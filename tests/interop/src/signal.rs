//! The signaling half of a test client: one WebSocket to `/rtc`, every server message kept in
//! an event log that tests can wait on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WsSink = SplitSink<WsStream, Message>;

/// Log entries the harness adds itself (never sent by a server) start with `__`:
/// `{"type":"__closed","code":1009,"reason":"..."}` when the server sent a close frame,
/// `{"type":"__eof"}` when the stream ended, `{"type":"__not_json","raw":"..."}`,
/// `{"type":"__binary","len":N}`, `{"type":"__client_error","what":"..."}`.
pub const CLOSED: &str = "__closed";
pub const EOF: &str = "__eof";

/// Why an upgrade to `/rtc` did not produce a socket.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade with a plain HTTP status (e.g. 429).
    Http(u16),
    Other(anyhow::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Http(status) => write!(f, "upgrade refused with HTTP {status}"),
            ConnectError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A WebSocket to the server with a background reader that logs every message.
pub struct SignalClient {
    /// `None` once the connection was dropped ([`SignalClient::drop_connection`]).
    sink: tokio::sync::Mutex<Option<WsSink>>,
    log: Arc<Mutex<Vec<Value>>>,
    changed: watch::Receiver<usize>,
    reader: tokio::task::JoinHandle<()>,
}

impl SignalClient {
    /// Opens `ws://{http_addr}/rtc`. Server messages whose `type` is in `route_types` are also sent
    /// to `route` (used to answer `subscriber_offer`s); all of them go to the log.
    pub async fn connect(
        http_addr: SocketAddr,
        route: Option<(Vec<&'static str>, mpsc::UnboundedSender<Value>)>,
    ) -> Result<SignalClient, ConnectError> {
        Self::connect_with_headers(http_addr, &[], route).await
    }

    /// [`SignalClient::connect`] with extra upgrade request headers (`Origin`, what a reverse
    /// proxy adds).
    pub async fn connect_with_headers(
        http_addr: SocketAddr,
        headers: &[(&'static str, &str)],
        route: Option<(Vec<&'static str>, mpsc::UnboundedSender<Value>)>,
    ) -> Result<SignalClient, ConnectError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{http_addr}/rtc");
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::Other(anyhow!(e).context(format!("request {url}"))))?;
        for (name, value) in headers {
            let value = value
                .parse()
                .map_err(|e| ConnectError::Other(anyhow!("header {name}: {e}")))?;
            request.headers_mut().append(*name, value);
        }
        let (ws, _response) = match tokio_tungstenite::connect_async(request).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                return Err(ConnectError::Http(response.status().as_u16()))
            }
            Err(e) => {
                return Err(ConnectError::Other(
                    anyhow!(e).context(format!("connect {url}")),
                ))
            }
        };
        let (sink, mut stream) = ws.split();
        let log = Arc::new(Mutex::new(Vec::<Value>::new()));
        let (changed_tx, changed) = watch::channel(0usize);
        let reader_log = log.clone();
        let reader = tokio::spawn(async move {
            let push = |v: Value| {
                let len = {
                    let mut log = reader_log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push(v);
                    log.len()
                };
                changed_tx.send_replace(len);
            };
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(text)) => {
                        let value = match serde_json::from_str::<Value>(text.as_str()) {
                            Ok(v) => v,
                            Err(_) => json!({"type": "__not_json", "raw": text.as_str()}),
                        };
                        tracing::debug!(target: "zvon_interop::ws", "<- {}", truncate(text.as_str(), 300));
                        tracing::trace!(target: "zvon_interop::ws", "<- {}", text.as_str());
                        if let Some((types, tx)) = &route {
                            let t = value.get("type").and_then(Value::as_str).unwrap_or("");
                            if types.contains(&t) {
                                let _ = tx.send(value.clone());
                            }
                        }
                        push(value);
                    }
                    Ok(Message::Binary(b)) => push(json!({"type": "__binary", "len": b.len()})),
                    Ok(Message::Close(frame)) => {
                        let (code, reason) = match frame {
                            Some(f) => (u16::from(f.code), f.reason.to_string()),
                            None => (1005, String::new()),
                        };
                        push(json!({"type": CLOSED, "code": code, "reason": reason}));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        push(json!({"type": "__ws_error", "error": e.to_string()}));
                        break;
                    }
                }
            }
            push(json!({"type": EOF}));
        });
        Ok(SignalClient {
            sink: tokio::sync::Mutex::new(Some(sink)),
            log,
            changed,
            reader,
        })
    }

    pub async fn send_message(&self, msg: Message) -> Result<()> {
        match self.sink.lock().await.as_mut() {
            Some(sink) => sink.send(msg).await.context("websocket send"),
            None => bail!("websocket send: the connection was dropped"),
        }
    }

    pub async fn send_json(&self, value: &Value) -> Result<()> {
        let text = value.to_string();
        tracing::debug!(target: "zvon_interop::ws", "-> {}", truncate(&text, 300));
        tracing::trace!(target: "zvon_interop::ws", "-> {}", text);
        self.send_message(Message::text(text)).await
    }

    pub async fn send_text(&self, text: impl Into<String>) -> Result<()> {
        self.send_message(Message::text(text.into())).await
    }

    /// Sends a close frame; ignores errors (the socket may be gone already).
    pub async fn close(&self) {
        if let Some(sink) = self.sink.lock().await.as_mut() {
            let _ = sink.send(Message::Close(None)).await;
            let _ = sink.close().await;
        }
    }

    /// Drops the TCP connection without a closing handshake, as a lost network does (a
    /// close frame would be a deliberate leave). The server keeps the session for a resume.
    pub async fn drop_connection(&self) {
        // The socket closes once both halves are gone: the sink here, the stream in the reader.
        self.sink.lock().await.take();
        self.reader.abort();
    }

    /// A copy of every message received so far.
    pub fn log(&self) -> Vec<Value> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until a message at index `>= from` satisfies `pred`; returns its index and value.
    pub async fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(usize, Value)> {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((i, v)) = log.iter().enumerate().skip(from).find(|(_, v)| pred(v)) {
                    return Ok((i, v.clone()));
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // Sender dropped: the reader ended, nothing more will come; check once more.
                Ok(Err(_)) => {
                    let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((i, v)) = log.iter().enumerate().skip(from).find(|(_, v)| pred(v)) {
                        return Ok((i, v.clone()));
                    }
                    bail!("{what}: socket ended without it; log: {}", summarize(&log));
                }
                Err(_) => {
                    let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                    bail!(
                        "timed out after {timeout:?} waiting for {what}; log: {}",
                        summarize(&log)
                    );
                }
            }
        }
    }

    /// Waits for a message of type `ty` anywhere in the log.
    pub async fn wait_type(&self, ty: &str, timeout: Duration) -> Result<Value> {
        Ok(self
            .wait_from(0, timeout, ty, |v| msg_type(v) == ty)
            .await?
            .1)
    }

    /// Waits for an `error` with `code`, anywhere in the log.
    pub async fn wait_error(&self, code: &str, timeout: Duration) -> Result<Value> {
        let what = format!("error {code}");
        Ok(self
            .wait_from(0, timeout, &what, |v| {
                msg_type(v) == "error" && v["code"] == code
            })
            .await?
            .1)
    }

    /// Waits until the server closed the socket (close frame or end of stream); returns the
    /// close code if a close frame came.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<Option<u16>> {
        let (_, v) = self
            .wait_from(0, timeout, "socket closed", |v| {
                let t = msg_type(v);
                t == CLOSED || t == EOF || t == "__ws_error"
            })
            .await?;
        if msg_type(&v) == CLOSED {
            return Ok(v["code"].as_u64().and_then(|c| u16::try_from(c).ok()));
        }
        // Stream ended: a close frame may still be in the log before it.
        Ok(self
            .log()
            .iter()
            .find(|v| msg_type(v) == CLOSED)
            .and_then(|v| v["code"].as_u64())
            .and_then(|c| u16::try_from(c).ok()))
    }

    /// True once the reader saw the end of the stream.
    pub fn is_ended(&self) -> bool {
        self.reader.is_finished()
    }
}

impl Drop for SignalClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

pub fn msg_type(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &s[..end], s.len())
}

/// One line per logged message, SDP elided, for failure messages.
pub fn summarize(log: &[Value]) -> String {
    let items: Vec<String> = log
        .iter()
        .map(|v| {
            let mut v = v.clone();
            if let Some(obj) = v.as_object_mut() {
                if obj.contains_key("sdp") {
                    obj.insert("sdp".into(), json!("…"));
                }
                if let Some(raw) = obj.get("raw").and_then(Value::as_str) {
                    let short = truncate(raw, 80);
                    obj.insert("raw".into(), json!(short));
                }
            }
            truncate(&v.to_string(), 400)
        })
        .collect();
    format!("[{}]", items.join(", "))
}
