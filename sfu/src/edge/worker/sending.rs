//! Sending while draining: what a receive batch forwarded leaves before the next batch is
//! read, and a large fan-out leaves in pieces as its subscribers are polled, so the first
//! subscribers' copies do not wait for the last one's encryption.
//!
//! Before, a wake read up to 16 receive batches, then polled every subscriber written to,
//! then flushed: a packet's copies waited for every later batch of the wake and for the
//! whole drain (at 1 -> 200, one 3-packet frame is 600 copies at ~15 us, ~9 ms; a keyframe
//! several times that), and the forwarding latency histogram's p99 was the length of a
//! wake, not of a packet's own work.

use super::*;

/// Datagrams queued during a drain at which they are sent before polling on: a few
/// `sendmmsg` calls' worth, so a fan-out of hundreds leaves in pieces.
pub(super) const FLUSH_AT: usize = 4 * super::super::udp_batch::BATCH;

/// Which forwarded copies were handed to the send queue since the last flush, for the
/// forwarding latency histogram: a subscriber connection's copies are counted when it is
/// polled (from its running count of written originals, `EgressTally::written`).
#[derive(Debug, Default)]
pub(crate) struct EarlySend {
    /// `EgressTally::written` of each subscriber connection (by participant slot) when it
    /// was last polled. Grows with the slab, never per packet.
    seen: Vec<u64>,
    polled: u64,
}

impl EarlySend {
    /// The subscriber connection in `slot` was polled with `written` originals written so
    /// far: those written since its last poll are queued now.
    pub(crate) fn polled(&mut self, slot: usize, written: u64) {
        if slot >= self.seen.len() {
            self.seen.resize(slot + 1, 0);
        }
        let seen = std::mem::replace(&mut self.seen[slot], written);
        // A reused slot (a new participant) counts from zero.
        self.polled += if written >= seen {
            written - seen
        } else {
            written
        };
    }

    /// Copies queued since the last call.
    pub(crate) fn take(&mut self) -> u64 {
        std::mem::take(&mut self.polled)
    }
}

impl Worker {
    /// Polls every connection that got input until it only wants a timeout, acting on its
    /// events (forwarding makes more connections dirty, polled in turn), and sends whenever
    /// [`FLUSH_AT`] datagrams are queued. The rest waits for the wake's `flush`.
    pub(super) fn drain_sending(&mut self, now: Instant, socket: &tokio::net::UdpSocket) {
        // Counted from what is queued: a send buffer that is full leaves datagrams behind,
        // and they must not make every later poll try again.
        let mut send_at = self.send_queue.len() + FLUSH_AT;
        while let Some(key) = self.dirty.pop() {
            if let Some(conn) = self.connection_mut(key) {
                conn.queued_for_poll = false;
                // Written media sits unstamped in str0m's send queue until a timeout: hand it
                // one now rather than poll once for nothing and be asked for it.
                if std::mem::take(&mut conn.media_written) && !conn.lost_reported {
                    // The clock: str0m ignores a time older than one an inline timeout gave.
                    if let Err(e) = conn.rtc.handle_input(Input::Timeout(Instant::now())) {
                        debug!("timeout input failed: {e}");
                    }
                }
            }
            self.poll_connection(key, now);
            if key.1 == Side::Subscriber {
                if let Some(c) = self.connection_mut(key) {
                    let written = c.egress.written;
                    self.early_send.polled(key.0 .0 as usize, written);
                }
            }
            if self.send_queue.len() >= send_at {
                self.send_now(socket);
                send_at = self.send_queue.len() + FLUSH_AT;
            }
        }
    }

    /// Sends what is queued and charges the copies in it to the receive batches they came
    /// from (the wake's `flush` charges what is left).
    pub(super) fn send_now(&mut self, socket: &tokio::net::UdpSocket) {
        self.flush(socket);
        self.meter
            .sent_early(Instant::now(), self.early_send.take());
    }
}

#[cfg(test)]
mod tests {
    use super::EarlySend;

    #[test]
    fn copies_are_counted_once_per_poll_and_a_reused_slot_from_zero() {
        let mut e = EarlySend::default();
        e.polled(3, 10);
        e.polled(3, 12);
        e.polled(0, 5);
        assert_eq!(e.take(), 17);
        assert_eq!(e.take(), 0);
        // Polled again with nothing new written.
        e.polled(3, 12);
        assert_eq!(e.take(), 0);
        // Slot 3 now holds a new participant that has been written 2 copies.
        e.polled(3, 2);
        assert_eq!(e.take(), 2);
    }
}
