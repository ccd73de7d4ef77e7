//! One participant's signaling WebSocket for targets that speak JSON text messages (Zvon and
//! the benchmark's mediasoup app): the task that turns participant commands into messages and
//! server messages into events until either side ends, then reports why as
//! [`SignalEvent::Closed`]. Each target brings its own encoding and decoding.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{SignalCommand, SignalEvent};

/// A message sent every `every` so that the server does not time the session out.
pub struct KeepAlive {
    pub every: Duration,
    pub text: String,
}

/// Spawns the session's task on an open socket (the join already sent) and returns its
/// event and command channels. `encode` may skip a command the target has no message for;
/// `decode` gives `None` for a message with no event and `Err` for one it cannot read, which
/// is logged and skipped.
pub fn spawn<S, E, D>(
    ws: WebSocketStream<S>,
    encode: E,
    decode: D,
    keep_alive: Option<KeepAlive>,
) -> (mpsc::Receiver<SignalEvent>, mpsc::Sender<SignalCommand>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Fn(&SignalCommand) -> Option<String> + Send + 'static,
    D: Fn(&str) -> Result<Option<SignalEvent>, serde_json::Error> + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (event_tx, events) = mpsc::channel(16);
    let (commands, mut command_rx) = mpsc::channel::<SignalCommand>(16);
    tokio::spawn(async move {
        // Without a keep-alive the tick never comes (an hour apart, and skipped below).
        let every = keep_alive
            .as_ref()
            .map_or(Duration::from_secs(3600), |k| k.every);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let reason = loop {
            tokio::select! {
                cmd = command_rx.recv() => {
                    let Some(cmd) = cmd else {
                        // The participant is gone: close politely, which counts as leaving.
                        let _ = sink.send(Message::Close(None)).await;
                        break "dropped".to_string();
                    };
                    let Some(text) = encode(&cmd) else { continue };
                    if sink.send(Message::text(text)).await.is_err() {
                        break "send_failed".to_string();
                    }
                }
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => match decode(text.as_str()) {
                        Ok(Some(ev)) => {
                            if event_tx.send(ev).await.is_err() {
                                break "dropped".to_string();
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::debug!("unparsed server message: {e}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break match frame {
                            Some(f) => format!("ws_close_{}", u16::from(f.code)),
                            None => "ws_close".to_string(),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("ws_error: {e}"),
                    None => break "eof".to_string(),
                },
                _ = ping.tick(), if keep_alive.is_some() => {
                    let Some(k) = &keep_alive else { continue };
                    if sink.send(Message::text(k.text.clone())).await.is_err() {
                        break "send_failed".to_string();
                    }
                }
            }
        };
        let _ = event_tx.send(SignalEvent::Closed { reason }).await;
    });
    (events, commands)
}
