//! Carrying a room socket that landed on the wrong signaling node to the room's owner.
//!
//! Clients behind one public hostname cannot choose their node, so the node they reach opens
//! its own WebSocket to the owner and pipes frames both ways, unchanged. The owner sees a
//! marked, signed upgrade: it never proxies it again (no loops) and does not count it against
//! the per-IP upgrade limit of the proxying node's address.

use std::time::Duration;

use axum::extract::ws::{self, WebSocket};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// Header a proxying node puts on its upgrade: `node:unix_secs:hex(hmac)`.
pub const PROXY_HEADER: &str = "x-zvon-proxied-by";
/// A proxy header older (or newer) than this is refused: it cannot be replayed for long.
const PROXY_HEADER_SKEW: u64 = 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad owner URL {0:?}")]
    Url(String),
    #[error("owner unreachable: {0}")]
    Connect(String),
    #[error("owner did not answer within {0:?}")]
    Timeout(Duration),
}

fn tag(secret: &str, node: &str, at: u64) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("zvon-proxy|{node}|{at}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The header value this node sends when it proxies.
pub fn sign(secret: &str, node: &str) -> String {
    let at = crate::token::now_secs();
    format!("{node}:{at}:{}", tag(secret, node, at))
}

/// The proxying node's id if `value` is a fresh header signed with the cluster secret.
pub fn verify(secret: &str, value: &str) -> Option<String> {
    let mut parts = value.rsplitn(3, ':');
    let (mac, at, node) = (parts.next()?, parts.next()?, parts.next()?);
    let at: u64 = at.parse().ok()?;
    if crate::token::now_secs().abs_diff(at) > PROXY_HEADER_SKEW {
        return None;
    }
    let mut check = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    check.update(format!("zvon-proxy|{node}|{at}").as_bytes());
    check.verify_slice(&hex::decode(mac).ok()?).ok()?;
    Some(node.to_string())
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the socket to the owner (`base_url` like `http://10.0.0.5:7350`).
pub async fn connect(base_url: &str, header: &str) -> Result<Upstream, ProxyError> {
    let ws_url = match base_url.trim_end_matches('/') {
        u if u.starts_with("http://") => format!("ws://{}/rtc", &u["http://".len()..]),
        u if u.starts_with("https://") => format!("wss://{}/rtc", &u["https://".len()..]),
        u => return Err(ProxyError::Url(u.to_string())),
    };
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|_| ProxyError::Url(ws_url.clone()))?;
    let value = header
        .parse()
        .map_err(|_| ProxyError::Url("proxy header".into()))?;
    request.headers_mut().insert(PROXY_HEADER, value);
    let mut config = tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(4 << 20);
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((upstream, _))) => Ok(upstream),
        Ok(Err(e)) => Err(ProxyError::Connect(e.to_string())),
        Err(_) => Err(ProxyError::Timeout(CONNECT_TIMEOUT)),
    }
}

fn to_upstream(m: ws::Message) -> Option<tungstenite::Message> {
    Some(match m {
        ws::Message::Text(t) => tungstenite::Message::Text(t.as_str().into()),
        ws::Message::Binary(b) => tungstenite::Message::Binary(b),
        ws::Message::Close(frame) => {
            tungstenite::Message::Close(frame.map(|f| tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }))
        }
        // Each side answers its own pings.
        ws::Message::Ping(_) | ws::Message::Pong(_) => return None,
    })
}

fn to_client(m: tungstenite::Message) -> Option<ws::Message> {
    Some(match m {
        tungstenite::Message::Text(t) => ws::Message::Text(t.as_str().into()),
        tungstenite::Message::Binary(b) => ws::Message::Binary(b),
        tungstenite::Message::Close(frame) => ws::Message::Close(frame.map(|f| ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        _ => return None,
    })
}

/// Server API bodies are small JSON objects; anything bigger is not forwarded.
const MAX_FORWARDED_BODY: usize = 64 * 1024;

/// Forwards a server-API request to `base_url` (the node holding what it is about) and returns
/// that node's answer as it is.
pub async fn forward_http(
    request: axum::extract::Request,
    base_url: &str,
    header: &str,
) -> Result<axum::response::Response, ProxyError> {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", base_url.trim_end_matches('/'));
    let body = axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|e| ProxyError::Connect(format!("reading the request: {e}")))?;
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|_| ProxyError::Url(parts.method.to_string()))?;
    let mut forwarded = reqwest::Client::new()
        .request(method, &url)
        .timeout(CONNECT_TIMEOUT * 2)
        .header(PROXY_HEADER, header)
        .body(body.to_vec());
    for name in ["authorization", "content-type"] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = forwarded
        .send()
        .await
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
    let status = axum::http::StatusCode::from_u16(answer.status().as_u16())
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    // A created resource (WHIP/WHEP sessions) is named by its Location.
    let location = answer
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
    let mut response = (
        status,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        bytes.to_vec(),
    )
        .into_response();
    if let Some(v) = location.and_then(|l| axum::http::HeaderValue::from_str(&l).ok()) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, v);
    }
    Ok(response)
}

/// Sends `first` (the client's join, already read here) and pipes both ways until either side
/// closes.
pub async fn pipe(client: WebSocket, mut upstream: Upstream, first: String) {
    if upstream
        .send(tungstenite::Message::Text(first.into()))
        .await
        .is_err()
    {
        return;
    }
    let (mut client_tx, mut client_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    let to_owner = async {
        while let Some(Ok(m)) = client_rx.next().await {
            let closing = matches!(m, ws::Message::Close(_));
            if let Some(m) = to_upstream(m) {
                if up_tx.send(m).await.is_err() {
                    break;
                }
            }
            if closing {
                break;
            }
        }
        let _ = up_tx.close().await;
    };
    let to_client_side = async {
        while let Some(Ok(m)) = up_rx.next().await {
            let closing = matches!(m, tungstenite::Message::Close(_));
            if let Some(m) = to_client(m) {
                if client_tx.send(m).await.is_err() {
                    break;
                }
            }
            if closing {
                break;
            }
        }
        let _ = client_tx.close().await;
    };
    // Whichever side ends first ends the pipe; the other half is dropped.
    tokio::select! {
        _ = to_owner => {}
        _ = to_client_side => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_header_is_signed_with_the_cluster_secret() {
        let value = sign("cluster-secret-0123456789", "node-a");
        assert_eq!(
            verify("cluster-secret-0123456789", &value).as_deref(),
            Some("node-a")
        );
        assert_eq!(verify("another-secret-0123456789", &value), None);
        assert_eq!(verify("cluster-secret-0123456789", "node-a:1:00"), None);
        assert_eq!(verify("cluster-secret-0123456789", "garbage"), None);
    }
}
