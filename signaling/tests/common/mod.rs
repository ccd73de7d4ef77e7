//! Shared by the protocol tests: a server on loopback, WebSocket helpers with bounded waits.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use zvon_signaling::token::{mint, Claims};
use zvon_signaling::{start, RunningServer, ServerConfig};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(5);

pub fn token(room: &str, identity: &str, edit: impl FnOnce(&mut Claims)) -> String {
    let mut c = Claims::new(
        ServerConfig::DEV_API_KEY,
        room,
        identity,
        Duration::from_secs(600),
    );
    edit(&mut c);
    mint(&c, ServerConfig::DEV_API_SECRET).expect("mint")
}

pub async fn server(edit: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig::for_tests();
    edit(&mut config);
    start(config).await.expect("server starts")
}

pub async fn connect(server: &RunningServer) -> Ws {
    let url = format!("ws://{}/rtc", server.http_addr);
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Next JSON message, skipping pings; `None` when the socket closed.
pub async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("server answers in time")?
        {
            Ok(Message::Text(t)) => {
                return Some(serde_json::from_str(&t).expect("server sends JSON"))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads until a message of `kind` arrives, returning it.
pub async fn expect_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let m = next(ws)
            .await
            .unwrap_or_else(|| panic!("socket closed while waiting for {kind}"));
        if m["type"] == kind {
            return m;
        }
    }
}

/// The close code the server ends the socket with (after any messages).
pub async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("server closes in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

pub async fn join(server: &RunningServer, room: &str, identity: &str) -> (Ws, Value) {
    let mut ws = connect(server).await;
    send(
        &mut ws,
        json!({"type":"join","protocol":1,"token":token(room, identity, |_| {}),"room":room}),
    )
    .await;
    let joined = expect_type(&mut ws, "joined").await;
    (ws, joined)
}

pub async fn http_get(server: &RunningServer, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(server.http_addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.expect("read");
    let status = body
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body)
}

/// A raw HTTP/1.1 request; returns status and the whole response text.
pub async fn http_request(
    server: &RunningServer,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut tcp = TcpStream::connect(server.http_addr).await.expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out)
}
