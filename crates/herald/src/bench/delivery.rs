//! What a subscriber receives: `tick` events whose data carries the publisher's send time `t` (µs
//! since the Unix epoch) and a sequence number `seq`, checked for order, loss and duplicates.
//!
//! Publisher and subscribers run in one process, so they share one clock and the latency is
//! publish→receive as the subscriber's task sees it (including the generator's own queueing). It
//! does not decide what counts as loss: the scenario knows how many events each subscriber should
//! have had.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Socket, now_micros};

/// The event name of measured events.
pub const TICK: &str = "tick";
/// The event name that ends a subscriber's run.
pub const END: &str = "end";

/// One subscriber's (or, merged, every subscriber's) tally.
#[derive(Debug, Default)]
pub struct Received {
    pub latencies_us: Vec<u64>,
    /// Events that arrived with a sequence number past the next expected one.
    pub gaps: u64,
    /// Events that arrived with a sequence number already seen.
    pub duplicates: u64,
    /// Subscribers whose connection ended before the run did (e.g. closed 4100 for lagging).
    pub closed: u64,
    next_seq: u64,
}

impl Received {
    /// Counts one `tick`: its latency, and whether its `seq` was the next one.
    pub fn record(&mut self, data: &Value, now_us: u64) {
        let (sent, seq) = (data["t"].as_u64().unwrap_or(now_us), data["seq"].as_u64().unwrap_or(0));
        self.latencies_us.push(now_us.saturating_sub(sent));
        if seq < self.next_seq {
            self.duplicates += 1;
        } else if seq > self.next_seq {
            self.gaps += 1;
        }
        self.next_seq = self.next_seq.max(seq + 1);
    }

    pub fn merge(&mut self, other: Received) {
        self.latencies_us.extend(other.latencies_us);
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.closed += other.closed;
    }

    pub fn delivered(&self) -> u64 {
        self.latencies_us.len() as u64
    }
}

/// A Pusher frame's event name and its data (parsed from the JSON string Pusher sends), or `None`
/// for anything else (pings, protocol events without data).
pub fn parse(text: &str) -> Option<(String, Value)> {
    let frame: Value = serde_json::from_str(text).ok()?;
    let event = frame["event"].as_str()?.to_owned();
    let data = match &frame["data"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => other.clone(),
    };
    Some((event, data))
}

/// Reads `tick`s until `end` or the connection ends.
pub async fn receive_until_end(mut ws: Socket) -> Received {
    let mut received = Received::default();
    while let Some(message) = ws.next().await {
        let Ok(Message::Text(text)) = message else {
            if message.is_err() {
                break;
            }
            continue;
        };
        let now = now_micros();
        match parse(text.as_str()) {
            Some((event, _)) if event == END => return received,
            Some((event, data)) if event == TICK => received.record(&data, now),
            _ => {}
        }
    }
    received.closed = 1;
    received
}

/// Waits for every receiver until `deadline` from now; a receiver still running then is stopped
/// and what it had is lost (counted in `stuck`, the second value).
pub async fn collect(receivers: Vec<JoinHandle<Received>>, deadline: Duration) -> (Received, usize) {
    let until = tokio::time::Instant::now() + deadline;
    let mut all = Received::default();
    let mut stuck = 0;
    for mut receiver in receivers {
        match tokio::time::timeout_at(until, &mut receiver).await {
            Ok(Ok(received)) => all.merge(received),
            Ok(Err(_)) => stuck += 1,
            Err(_) => {
                receiver.abort();
                stuck += 1;
            }
        }
    }
    (all, stuck)
}
