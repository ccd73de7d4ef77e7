//! The datagrams waiting for room on the link, audio first.
//!
//! quinn keeps its own datagram send buffer and, when it is full, drops the *oldest*
//! datagram whatever it carries. The link therefore hands quinn one datagram at a time, only
//! when quinn has room, and keeps the rest here: audio always leaves before video, and when
//! the bytes waiting pass the budget (a few tens of milliseconds of the link's rate) the
//! oldest video goes first; audio is dropped only when audio alone fills the budget. Old
//! media is worth less than new media, so drops always take the oldest of a class.

use std::collections::VecDeque;

/// Which class a datagram belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Audio,
    Video,
}

/// What [`SendQueue`] counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub queued: u64,
    pub dropped_audio: u64,
    pub dropped_video: u64,
}

/// Two FIFOs under one byte budget. `T` is the datagram (bytes in production).
#[derive(Debug)]
pub struct SendQueue<T> {
    audio: VecDeque<T>,
    video: VecDeque<T>,
    bytes: usize,
    budget: usize,
    pub counts: QueueCounts,
}

impl<T: AsRef<[u8]>> SendQueue<T> {
    pub fn new(budget: usize) -> Self {
        SendQueue {
            audio: VecDeque::new(),
            video: VecDeque::new(),
            bytes: 0,
            budget,
            counts: QueueCounts::default(),
        }
    }

    /// Queues `datagram`, dropping the oldest video (then, with no video left, the oldest
    /// audio) while the queue holds more than the budget.
    pub fn push(&mut self, priority: Priority, datagram: T) {
        self.bytes += datagram.as_ref().len();
        self.counts.queued += 1;
        match priority {
            Priority::Audio => self.audio.push_back(datagram),
            Priority::Video => self.video.push_back(datagram),
        }
        while self.bytes > self.budget {
            if let Some(old) = self.video.pop_front() {
                self.bytes -= old.as_ref().len();
                self.counts.dropped_video += 1;
            } else if let Some(old) = self.audio.pop_front() {
                self.bytes -= old.as_ref().len();
                self.counts.dropped_audio += 1;
            } else {
                break;
            }
        }
    }

    /// The next datagram to send: audio before video, oldest first in each.
    pub fn pop(&mut self) -> Option<T> {
        let next = self.audio.pop_front().or_else(|| self.video.pop_front())?;
        self.bytes -= next.as_ref().len();
        Some(next)
    }

    pub fn len(&self) -> usize {
        self.audio.len() + self.video.len()
    }

    pub fn is_empty(&self) -> bool {
        self.audio.is_empty() && self.video.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(tag: u8, len: usize) -> Vec<u8> {
        vec![tag; len]
    }

    #[test]
    fn audio_leaves_first_and_each_class_keeps_its_order() {
        let mut q = SendQueue::new(10_000);
        q.push(Priority::Video, d(1, 1000));
        q.push(Priority::Audio, d(2, 100));
        q.push(Priority::Video, d(3, 1000));
        q.push(Priority::Audio, d(4, 100));
        let order: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|x| x[0]).collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
        assert_eq!(q.bytes(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn over_budget_the_oldest_video_goes_and_audio_survives() {
        let mut q = SendQueue::new(3_000);
        q.push(Priority::Audio, d(1, 100));
        for tag in 10..15 {
            q.push(Priority::Video, d(tag, 1000));
        }
        q.push(Priority::Audio, d(2, 100));
        assert!(q.bytes() <= 3_000);
        assert_eq!(q.counts.dropped_video, 3);
        assert_eq!(q.counts.dropped_audio, 0);
        let order: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|x| x[0]).collect();
        // Both audio packets, then the two newest video frames' packets.
        assert_eq!(order, vec![1, 2, 13, 14]);
    }

    #[test]
    fn audio_alone_over_budget_drops_the_oldest_audio() {
        let mut q = SendQueue::new(250);
        for tag in 0..5 {
            q.push(Priority::Audio, d(tag, 100));
        }
        assert_eq!(q.counts.dropped_audio, 3);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop().unwrap()[0], 3);
        assert_eq!(q.counts.queued, 5);
    }
}
