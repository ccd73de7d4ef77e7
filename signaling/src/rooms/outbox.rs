//! A session's queue of messages waiting to be written to its socket.
//!
//! The hub queues while holding its lock, so queuing must never wait: a full queue refuses the
//! message instead. A full queue means the client stopped reading (or reads far slower than
//! its room talks); keeping every room event for it would grow without bound, so the queue
//! marks itself overflowed and wakes its session, which cuts the socket (`slow_consumer`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use prometheus::IntGauge;
use tokio::sync::{mpsc, Notify};

use super::Outbound;
use crate::protocol::ErrorCode;

/// What the session's writer gets: messages already serialized, so that their size is known
/// when they are queued (and a broadcast is serialized once, not once per recipient).
#[derive(Debug)]
pub enum Queued {
    Text(Utf8Bytes),
    /// Send this error and close the socket with its close code.
    Fatal(ErrorCode, String),
    /// Close normally.
    Close,
    /// Close with 1001: the node is draining (see [`Outbound::GoingAway`]).
    GoingAway,
}

impl Queued {
    fn bytes(&self) -> usize {
        match self {
            Queued::Text(t) => t.len(),
            Queued::Fatal(_, m) => m.len(),
            Queued::Close | Queued::GoingAway => 0,
        }
    }
}

/// The message was not queued: the session is gone, or too far behind and being cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session is gone or too far behind")]
pub struct NotQueued;

#[derive(Debug)]
struct Shared {
    bytes: AtomicUsize,
    max_bytes: usize,
    overflowed: AtomicBool,
    /// Wakes the session when the queue overflowed, even in the middle of a write.
    cut: Notify,
    /// Bytes queued on every socket of the server.
    gauge: IntGauge,
}

impl Shared {
    fn dequeued(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.gauge.sub(bytes as i64);
    }
}

/// The sending half, held by the hub (and the session itself). Cloning shares the queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

/// The session's half.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Queued>,
    shared: Arc<Shared>,
}

/// A queue of at most `max_messages` messages and `max_bytes` bytes; `gauge` counts the
/// bytes waiting.
pub fn outbox(max_messages: usize, max_bytes: usize, gauge: IntGauge) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(max_messages.max(1));
    let shared = Arc::new(Shared {
        bytes: AtomicUsize::new(0),
        max_bytes,
        overflowed: AtomicBool::new(false),
        cut: Notify::new(),
        gauge,
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver { rx, shared },
    )
}

impl Outbox {
    /// Queues `out` without waiting. Gives it back when the session is gone or too far behind
    /// (then the session is told to cut its socket).
    pub fn send(&self, out: Outbound) -> Result<(), Box<Outbound>> {
        let queued = match &out {
            Outbound::Message(m, request_id) => {
                Queued::Text(m.to_json(request_id.as_deref()).into())
            }
            Outbound::Json(v, request_id) => {
                let mut v = v.clone();
                if let (Some(id), Some(obj)) = (request_id, v.as_object_mut()) {
                    obj.insert("request_id".into(), id.clone().into());
                }
                Queued::Text(v.to_string().into())
            }
            Outbound::Fatal(code, message) => Queued::Fatal(*code, message.clone()),
            Outbound::Close => Queued::Close,
            Outbound::GoingAway => Queued::GoingAway,
        };
        self.push(queued).map_err(|NotQueued| Box::new(out))
    }

    /// Queues an already serialized message (one serialization for a whole room).
    pub fn send_text(&self, text: Utf8Bytes) -> Result<(), NotQueued> {
        self.push(Queued::Text(text))
    }

    fn push(&self, queued: Queued) -> Result<(), NotQueued> {
        let shared = &self.shared;
        if shared.overflowed.load(Ordering::Relaxed) || self.tx.is_closed() {
            return Err(NotQueued);
        }
        let bytes = queued.bytes();
        let total = shared.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let fits = total <= shared.max_bytes || matches!(queued, Queued::Close | Queued::GoingAway);
        let refused = if fits {
            match self.tx.try_send(queued) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some(true),
                Err(mpsc::error::TrySendError::Closed(_)) => Some(false),
            }
        } else {
            Some(true)
        };
        match refused {
            None => {
                shared.gauge.add(bytes as i64);
                Ok(())
            }
            Some(overflow) => {
                shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
                if overflow && !shared.overflowed.swap(true, Ordering::Relaxed) {
                    // A permit is stored if the session is not waiting right now.
                    shared.cut.notify_one();
                }
                Err(NotQueued)
            }
        }
    }
}

impl OutboxReceiver {
    /// The next queued message. Never `None` while the session holds its own [`Outbox`].
    pub async fn recv(&mut self) -> Option<Queued> {
        let queued = self.rx.recv().await?;
        self.shared.dequeued(queued.bytes());
        Some(queued)
    }

    pub fn try_recv(&mut self) -> Option<Queued> {
        let queued = self.rx.try_recv().ok()?;
        self.shared.dequeued(queued.bytes());
        Some(queued)
    }

    /// Tells when the queue overflowed; usable while the receiver itself is borrowed.
    pub fn overflow_signal(&self) -> OverflowSignal {
        OverflowSignal(self.shared.clone())
    }
}

/// Resolves once a queue overflowed: its client is too far behind.
#[derive(Debug, Clone)]
pub struct OverflowSignal(Arc<Shared>);

impl OverflowSignal {
    pub async fn wait(&self) {
        // The flag covers a permit another waiter already consumed.
        while !self.0.overflowed.load(Ordering::Relaxed) {
            self.0.cut.notified().await;
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        // Refuse further messages and give back what is still queued to the gauge.
        self.rx.close();
        while let Ok(queued) = self.rx.try_recv() {
            self.shared.dequeued(queued.bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;

    fn pong() -> Outbound {
        Outbound::Message(ServerMessage::Pong, None)
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_asks_for_the_cut() {
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let (tx, mut rx) = outbox(2, 1024, gauge.clone());
        assert!(tx.send(pong()).is_ok() && tx.send(pong()).is_ok());
        assert_eq!(gauge.get(), 2 * r#"{"type":"pong"}"#.len() as i64);
        assert!(tx.send(pong()).is_err());
        // Once overflowed, nothing more is queued even with room again.
        assert!(rx.try_recv().is_some());
        assert!(tx.send(pong()).is_err());
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            rx.overflow_signal().wait(),
        )
        .await
        .expect("overflow is signalled");
        drop(rx);
        assert_eq!(gauge.get(), 0, "dropping the receiver releases the gauge");
    }

    #[test]
    fn a_byte_bound_refuses_big_messages() {
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let (tx, _rx) = outbox(100, 40, gauge);
        assert!(tx.send(pong()).is_ok());
        assert!(tx.send(pong()).is_ok());
        assert!(tx.send(pong()).is_err(), "a third pong passes 40 bytes");
    }
}
