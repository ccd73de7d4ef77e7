//! The relay between the media workers of one node: a bounded lock-free queue per ordered
//! worker pair for packets, an unbounded channel per worker for the (rare) control messages,
//! and one wake-up per destination per loop iteration, never per packet.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use tokio::sync::{mpsc, Notify};

use crate::relay::{RelayControl, RelayPacket};

/// Packets queued per worker pair: ~0.5 s of a class's video relayed one way.
const QUEUE_PACKETS: usize = 4096;
/// Above this fill, video is refused so that audio still finds room (shedding order).
const VIDEO_LIMIT: usize = QUEUE_PACKETS * 3 / 4;

/// A control message and the worker it comes from (`None`: the node's placement).
pub type ControlIn = (usize, RelayControl<usize>);

/// One worker's ends of the node's relay.
pub struct RelayPipe {
    index: usize,
    /// By destination worker; `None` for itself.
    out: Vec<Option<Arc<ArrayQueue<RelayPacket>>>>,
    wakers: Vec<Arc<Notify>>,
    control: Vec<mpsc::UnboundedSender<ControlIn>>,
    /// Queues into this worker, with their sender.
    inbound: Vec<(usize, Arc<ArrayQueue<RelayPacket>>)>,
    control_rx: Option<mpsc::UnboundedReceiver<ControlIn>>,
    /// Destinations that got packets since the last [`RelayPipe::wake`], one bit each.
    pushed: u64,
    /// Packets refused because a queue was full (or too full for video).
    pub dropped: u64,
}

/// The node's handle on the workers' control channels (placement's room messages).
#[derive(Clone)]
pub struct RelayControlSenders(Vec<mpsc::UnboundedSender<ControlIn>>);

impl RelayControlSenders {
    /// Sends `msg` to `worker` as coming from the node (`from` = the worker itself, which
    /// the worker reads as "not another worker").
    pub fn send(&self, worker: usize, msg: RelayControl<usize>) {
        if let Some(tx) = self.0.get(worker) {
            let _ = tx.send((worker, msg));
        }
    }
}

/// The relay of a node with `workers` workers: each worker's pipe, and the node's senders.
pub fn relay_pipes(workers: usize) -> (Vec<RelayPipe>, RelayControlSenders) {
    assert!(workers <= 64, "the wake mask holds 64 workers");
    let queues: Vec<Vec<Option<Arc<ArrayQueue<RelayPacket>>>>> = (0..workers)
        .map(|from| {
            (0..workers)
                .map(|to| (from != to).then(|| Arc::new(ArrayQueue::new(QUEUE_PACKETS))))
                .collect()
        })
        .collect();
    let wakers: Vec<Arc<Notify>> = (0..workers).map(|_| Arc::new(Notify::new())).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let pipes = receivers
        .into_iter()
        .enumerate()
        .map(|(i, rx)| RelayPipe {
            index: i,
            out: queues[i].clone(),
            wakers: wakers.clone(),
            control: senders.clone(),
            inbound: (0..workers)
                .filter_map(|from| queues[from][i].clone().map(|q| (from, q)))
                .collect(),
            control_rx: Some(rx),
            pushed: 0,
            dropped: 0,
        })
        .collect();
    (pipes, RelayControlSenders(senders))
}

impl RelayPipe {
    /// A pipe for a worker alone on its node (tests, one-worker nodes).
    pub fn alone() -> Self {
        relay_pipes(1).0.remove(0)
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// What wakes this worker for relayed packets, and its control messages (taken once by
    /// the worker loop).
    pub fn take_inputs(&mut self) -> (Arc<Notify>, Option<mpsc::UnboundedReceiver<ControlIn>>) {
        (self.wakers[self.index].clone(), self.control_rx.take())
    }

    /// Packet path: queues `packet` for worker `to`. Video is refused once the queue is
    /// three-quarters full, audio only when it is full.
    pub fn push(&mut self, to: usize, packet: RelayPacket, video: bool) {
        let Some(Some(q)) = self.out.get(to) else {
            return;
        };
        if (video && q.len() >= VIDEO_LIMIT) || q.push(packet).is_err() {
            self.dropped += 1;
            return;
        }
        self.pushed |= 1 << to;
    }

    /// Wakes every worker that got packets since the last call; once per loop iteration.
    pub fn wake(&mut self) {
        let mut pushed = std::mem::take(&mut self.pushed);
        while pushed != 0 {
            let to = pushed.trailing_zeros() as usize;
            pushed &= pushed - 1;
            if let Some(w) = self.wakers.get(to) {
                w.notify_one();
            }
        }
    }

    /// Takes up to `limit` relayed packets, oldest first per sender; `true` when some are
    /// left (the caller wakes itself again rather than starve its socket).
    pub fn pop_into(&mut self, limit: usize, out: &mut Vec<(usize, RelayPacket)>) -> bool {
        out.clear();
        let per_queue = (limit / self.inbound.len().max(1)).max(1);
        let mut left = false;
        for (from, q) in &self.inbound {
            for _ in 0..per_queue {
                match q.pop() {
                    Some(p) => out.push((*from, p)),
                    None => break,
                }
            }
            left |= !q.is_empty();
        }
        left
    }

    /// Wakes this worker itself (packets were left in its queues).
    pub fn wake_self(&self) {
        self.wakers[self.index].notify_one();
    }

    /// Sends a control message to worker `to`.
    pub fn send_control(&self, to: usize, msg: RelayControl<usize>) {
        if let Some(tx) = self.control.get(to) {
            let _ = tx.send((self.index, msg));
        }
    }
}
