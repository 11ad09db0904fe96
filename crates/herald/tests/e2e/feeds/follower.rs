//! A feed subscriber as docs/protocol.md describes one: subscribe with `"snapshot": true`, hold
//! events until the snapshot is complete (the last `herald:feed_snapshot` page, without `more`),
//! drop those at or below its serial, apply the rest in order, and on a gap (or a snapshot behind
//! the confirmed position) send `herald:feed_snapshot_request` and rebuild. It only decides; the caller owns the socket and sends what it returns.
//!
//! The copy is strict: an event that does not fit it (a publish of an id it holds, an edit of one
//! it lacks, an unknown anchor) is recorded as a problem rather than skipped, and so is a frame out
//! of the documented order.

use serde_json::{Value, json};

use crate::support::data_of;

/// A client's copy of a feed: ids and values in order, and the serial it is current at.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalFeed {
    pub items: Vec<(String, Value)>,
    pub serial: u64,
}

impl LocalFeed {
    /// From a snapshot or a `GET` of the feed: `{"items": [{id, value, serial}], "position"}`.
    pub fn of(feed: &Value) -> Self {
        let items = feed["items"].as_array().unwrap_or_else(|| panic!("no items in {feed}"));
        let items = items.iter().map(|i| (i["id"].as_str().unwrap().to_owned(), i["value"].clone())).collect();
        Self { items, serial: feed["position"]["serial"].as_u64().unwrap() }
    }

    pub fn ids(&self) -> Vec<&str> {
        self.items.iter().map(|(id, _)| id.as_str()).collect()
    }

    pub fn index(&self, id: &str) -> Option<usize> {
        self.items.iter().position(|(item, _)| item == id)
    }

    /// Where an item goes after `after` (null: the head).
    fn slot(&self, after: &Value) -> Result<usize, String> {
        match after.as_str() {
            None if after.is_null() => Ok(0),
            None => Err(format!("after is {after}")),
            Some(anchor) => self.index(anchor).map(|i| i + 1).ok_or_else(|| format!("no anchor {anchor:?}")),
        }
    }

    /// Applies the next event's data. An event that does not fit the copy is an error.
    fn apply(&mut self, event: &str, data: &Value) -> Result<(), String> {
        let id = data["id"].as_str().ok_or("no id")?.to_owned();
        match (event, self.index(&id)) {
            ("herald:feed_publish", None) => {
                let at = self.slot(&data["after"])?;
                self.items.insert(at, (id, data["value"].clone()));
            }
            ("herald:feed_edit", Some(at)) => self.items[at].1 = data["value"].clone(),
            ("herald:feed_retract", Some(at)) => {
                self.items.remove(at);
            }
            ("herald:feed_move", Some(from)) => {
                let item = self.items.remove(from);
                let at = self.slot(&data["after"])?;
                self.items.insert(at, item);
            }
            (event, found) => {
                let holds = if found.is_some() { "holds" } else { "does not hold" };
                return Err(format!("{event} of {id:?}, which the copy {holds}"));
            }
        }
        Ok(())
    }
}

/// What one subscriber saw, for the report.
#[derive(Debug, Default)]
pub struct Seen {
    pub subscribes: u32,
    /// Complete snapshots, and the pages they came in.
    pub snapshots: u32,
    pub pages: u32,
    pub requests: u32,
    pub gaps: u32,
    /// Events at or below the copy's serial, dropped as the doc says.
    pub dropped: u32,
    pub applied: u32,
    /// Events thrown away on purpose (see [`Follower::lose_next`]).
    pub lost: u32,
    /// `recovered` of each subscribe sent with `resume`.
    pub recovered: Vec<bool>,
}

/// One subscriber's protocol state for a feed channel, across its connections.
#[derive(Debug)]
pub struct Follower {
    channel: &'static str,
    pub copy: Option<LocalFeed>,
    epoch: String,
    /// A snapshot was asked for (by subscribing or a request) and has not come yet.
    pub awaiting: bool,
    /// Events that came while awaiting: (serial, event, data), in arrival order.
    held: Vec<(u64, String, Value)>,
    /// The pages of a snapshot so far: their items, and the position the first one gave.
    page_items: Vec<Value>,
    page_position: Option<Value>,
    /// The serial the current connection's `subscription_succeeded` confirmed, once it came.
    confirmed: Option<u64>,
    /// Throw the next live event away, as if it were lost, to see the gap handling work.
    pub lose_next: bool,
    pub seen: Seen,
    pub problems: Vec<String>,
}

impl Follower {
    pub fn new(channel: &'static str) -> Self {
        Self {
            channel,
            copy: None,
            epoch: String::new(),
            awaiting: false,
            held: Vec::new(),
            page_items: Vec::new(),
            page_position: None,
            confirmed: None,
            lose_next: false,
            seen: Seen::default(),
            problems: Vec::new(),
        }
    }

    /// The subscribe frame of a new connection: always with a snapshot, with `resume` when asked
    /// and there is a copy to resume from.
    pub fn subscribe(&mut self, resume: bool) -> Value {
        self.awaiting = true;
        self.held.clear();
        self.page_items.clear();
        self.page_position = None;
        self.confirmed = None;
        self.seen.subscribes += 1;
        let mut data = json!({"channel": self.channel, "snapshot": true});
        if let Some(copy) = self.copy.as_ref().filter(|_| resume) {
            data["resume"] = json!({"epoch": self.epoch, "serial": copy.serial});
        }
        json!({"event": "pusher:subscribe", "data": data})
    }

    /// Asks for a new snapshot, unless one is already coming.
    pub fn request(&mut self) -> Option<Value> {
        if self.awaiting {
            return None;
        }
        self.awaiting = true;
        self.seen.requests += 1;
        Some(json!({"event": "herald:feed_snapshot_request", "data": {"channel": self.channel}}))
    }

    /// Whether the copy is complete up to `serial`.
    pub fn current_at(&self, serial: u64) -> bool {
        !self.awaiting && self.copy.as_ref().is_some_and(|c| c.serial >= serial)
    }

    /// Handles one frame; returns a snapshot request to send, if one is needed.
    pub fn on_frame(&mut self, frame: &Value) -> Option<Value> {
        let event = frame["event"].as_str().unwrap_or_default();
        if event != "pusher_internal:subscription_succeeded" && self.confirmed.is_none() {
            let at = frame["serial"].as_u64().or_else(|| data_of(frame)["position"]["serial"].as_u64());
            self.problems.push(format!("{event} (serial {at:?}) came before subscription_succeeded"));
        }
        match event {
            "pusher_internal:subscription_succeeded" => {
                let resubscribed = self.confirmed.is_some();
                let position = frame["position"]["serial"].as_u64().unwrap_or(0);
                self.confirmed = Some(position);
                if let Some(recovered) = frame["recovered"].as_bool().filter(|_| !resubscribed) {
                    self.seen.recovered.push(recovered);
                }
                // Unasked (a node lost track of the channel): refetch. A snapshot that came before
                // this confirmation (recorded as a problem above) may be behind it: ask again.
                let early_and_behind = self.copy.as_ref().is_some_and(|c| !self.awaiting && c.serial < position);
                if (resubscribed && frame["recovered"] == false) || early_and_behind { self.request() } else { None }
            }
            "herald:feed_snapshot" => self.on_snapshot(&data_of(frame)),
            "herald:feed_publish" | "herald:feed_edit" | "herald:feed_move" | "herald:feed_retract" => {
                let Some(serial) = frame["serial"].as_u64() else {
                    self.problems.push(format!("feed event without a serial: {frame}"));
                    return None;
                };
                if self.lose_next && !self.awaiting && self.copy.is_some() {
                    self.lose_next = false;
                    self.seen.lost += 1;
                    return None;
                }
                self.on_event(serial, event, data_of(frame))
            }
            _ => {
                self.problems.push(format!("unexpected frame {frame}"));
                None
            }
        }
    }

    /// One page of a snapshot; the last one (without `more`) completes it.
    fn on_snapshot(&mut self, page: &Value) -> Option<Value> {
        self.seen.pages += 1;
        if !self.awaiting {
            self.problems.push(format!("a snapshot nobody asked for at {}", page["position"]));
        }
        let position = self.page_position.get_or_insert_with(|| page["position"].clone());
        if *position != page["position"] {
            self.problems.push(format!("pages of one snapshot at {position} and {}", page["position"]));
        }
        self.page_items.extend(page["items"].as_array().into_iter().flatten().cloned());
        if page["more"] == true {
            return None;
        }
        self.seen.snapshots += 1;
        let data = json!({"items": std::mem::take(&mut self.page_items), "position": self.page_position.take()});
        let copy = LocalFeed::of(&data);
        self.epoch = data["position"]["epoch"].as_str().unwrap_or_default().to_owned();
        self.awaiting = false;
        let behind = copy.serial < self.confirmed.unwrap_or(0);
        self.copy = Some(copy);
        if behind {
            return self.request();
        }
        let mut request = None;
        for (serial, event, data) in std::mem::take(&mut self.held) {
            request = request.or(self.on_event(serial, &event, data));
        }
        request
    }

    fn on_event(&mut self, serial: u64, event: &str, data: Value) -> Option<Value> {
        let Some(copy) = self.copy.as_mut().filter(|_| !self.awaiting) else {
            self.held.push((serial, event.to_owned(), data));
            return None;
        };
        if serial <= copy.serial {
            self.seen.dropped += 1;
            return None;
        }
        if serial > copy.serial + 1 {
            self.seen.gaps += 1;
            self.held.push((serial, event.to_owned(), data));
            return self.request();
        }
        match copy.apply(event, &data) {
            Ok(()) => {
                copy.serial = serial;
                self.seen.applied += 1;
                None
            }
            Err(error) => {
                let ids = copy.ids().join(",");
                self.problems.push(format!("event {serial} {event} {data} does not fit [{ids}]: {error}"));
                self.request()
            }
        }
    }
}
