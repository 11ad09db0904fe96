//! The bounded queue of encoded frames waiting to be written to one connection.
//!
//! Publishers push shared `Bytes` and never wait; the connection's own task drains everything that
//! is waiting and writes it in one flush. The queue is bounded by bytes: a connection that falls
//! further behind is marked for closing with [`CloseCode::OverCapacity`] instead of growing memory or
//! slowing anyone else. One waiting frame (the usual case: a wakeup per event) is held inline;
//! only a burst allocates, and the writer takes that allocation away with the frames, so an idle
//! connection costs only this struct.

use std::collections::VecDeque;

use bytes::Bytes;
use herald_protocol::CloseCode;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Default byte budget of one connection's queue.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: Frames,
    bytes: usize,
    close: Option<CloseCode>,
    /// Frames thrown away because the connection was closing (counted under the lock already held).
    dropped: u64,
}

/// Frames in order: the oldest inline, the rest (a burst) in a queue allocated only when needed.
#[derive(Debug, Default)]
pub struct Frames {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Frames {
    fn push_back(&mut self, frame: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl IntoIterator for Frames {
    type Item = Bytes;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Bytes>, std::collections::vec_deque::IntoIter<Bytes>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

/// What a drain found besides frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    Open,
    /// The connection must be closed with this code once the drained frames are written.
    Close(CloseCode),
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Self { state: Mutex::new(State::default()), notify: Notify::new(), max_bytes }
    }

    /// Queues a frame. Returns false when the connection is closing (the frame is dropped); a push
    /// that exceeds the budget starts the close with [`CloseCode::OverCapacity`].
    pub fn push(&self, frame: Bytes) -> bool {
        let mut state = self.state.lock();
        if state.close.is_some() {
            state.dropped += 1;
            return false;
        }
        if state.bytes + frame.len() > self.max_bytes {
            state.close = Some(CloseCode::OverCapacity);
            state.dropped += state.frames.len() as u64 + 1;
            state.frames.clear();
            state.bytes = 0;
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Asks the connection's task to close with `code` after what is already queued. The first
    /// close wins.
    pub fn close(&self, code: CloseCode) {
        let mut state = self.state.lock();
        if state.close.is_none() {
            state.close = Some(code);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// The byte budget of this queue.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Bytes and frames waiting to be written, read under one lock (at scrape time; the push path
    /// keeps no extra count).
    pub fn queued(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.bytes, state.frames.len())
    }

    /// The code the connection is closing with, once a close was requested.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.state.lock().close
    }

    /// Frames dropped so far and the close that dropped them (`None` when none were dropped).
    pub fn dropped(&self) -> Option<(CloseCode, u64)> {
        let state = self.state.lock();
        state.close.filter(|_| state.dropped > 0).map(|code| (code, state.dropped))
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().close.is_some()
    }

    /// Takes every waiting frame and reports whether the connection must close.
    pub fn take(&self) -> (Frames, Drained) {
        let mut state = self.state.lock();
        let frames = std::mem::take(&mut state.frames);
        state.bytes = 0;
        let drained = match state.close {
            Some(code) => Drained::Close(code),
            None => Drained::Open,
        };
        (frames, drained)
    }

    /// Moves every waiting frame into `out` and reports whether the connection must close.
    pub fn drain(&self, out: &mut Vec<Bytes>) -> Drained {
        let (frames, drained) = self.take();
        out.extend(frames);
        drained
    }

    /// Passes a wake-up on: a reader that stops waiting without handling one calls this so that
    /// the next reader is not left asleep.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Waits until something was pushed or a close was requested since the last wait.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_instead_of_growing() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert!(!outbox.push(Bytes::from_static(b"1")));
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out), Drained::Close(CloseCode::OverCapacity));
        assert!(out.is_empty(), "queued frames are dropped: the client resumes instead");
        assert!(!outbox.push(Bytes::from_static(b"1")));
        assert_eq!(outbox.dropped(), Some((CloseCode::OverCapacity, 4)), "two queued, the overflow, one late");
    }

    #[test]
    fn accessors_read_what_is_waiting_and_the_close() {
        let outbox = Outbox::new(100);
        assert_eq!((outbox.queued(), outbox.close_code()), ((0, 0), None));
        outbox.push(Bytes::from_static(b"abc"));
        outbox.push(Bytes::from_static(b"de"));
        assert_eq!(outbox.queued(), (5, 2));
        outbox.close(CloseCode::Reconnect);
        let mut out = Vec::new();
        outbox.drain(&mut out);
        assert_eq!(outbox.queued(), (0, 0));
        assert_eq!(outbox.close_code(), Some(CloseCode::Reconnect), "a drain does not forget the close");
    }

    #[test]
    fn drain_keeps_order_and_first_close_wins() {
        let outbox = Outbox::new(100);
        outbox.push(Bytes::from_static(b"a"));
        outbox.push(Bytes::from_static(b"b"));
        outbox.close(CloseCode::Unauthorized);
        outbox.close(CloseCode::Reconnect);
        let mut out = Vec::new();
        assert_eq!(outbox.drain(&mut out), Drained::Close(CloseCode::Unauthorized));
        assert_eq!(out, vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    }

    #[tokio::test]
    async fn ready_wakes_after_a_push_made_before_waiting() {
        let outbox = Outbox::new(100);
        outbox.push(Bytes::from_static(b"a"));
        outbox.ready().await;
    }
}
