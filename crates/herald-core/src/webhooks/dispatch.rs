//! From channel changes to queued webhook events: the app's sink and its dispatcher task.
//!
//! The hub and sessions call [`WebhookSink::emit`], which only tries to send on a bounded channel
//! (nothing is awaited on the hot path); when the dispatcher is [`COMMAND_CAPACITY`] commands
//! behind, the event is dropped and counted instead of growing memory without limit. The
//! dispatcher holds `channel_vacated` and `member_removed` for the leave delay: a `channel_occupied` (or `member_added` of the same user) that comes within it
//! cancels both, so a page refresh emits nothing. Everything else, and held events whose delay is
//! over, is appended to each interested endpoint's queue in the outbox, in the order released; the
//! endpoint's sender is then woken. Held events live in memory only; a graceful stop appends them.
//!
//! With several nodes (an engine), each node's dispatcher sees only its own part of a channel, so
//! before appending an occupancy, membership or count event it asks the engine to arbitrate: the
//! engine keeps what was told for each channel and member, so each change is told once for the
//! whole cluster, by whichever node saw it, and a departure is told only when no node still has
//! the channel (or the member). Each node then delivers what it told from its own outbox.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use super::counts::CountThrottle;
use super::sender::{self, Endpoint};
use super::{DeadLetter, OutboxError, Replay, WebhookEvent, WebhookEventKind, WebhookOutbox, WebhookPoster, unix_ms};
use crate::app::App;
use crate::engine::Engine;
use crate::metrics::WebhookOutcomes;

/// Asks of the engine for one event's verdict, the first retry after `ARBITRATE_RETRY` (then
/// doubled), each bounded by `ARBITRATE_TIMEOUT`: a short Redis failover is waited out.
const ARBITRATE_ATTEMPTS: u32 = 4;
const ARBITRATE_RETRY: Duration = Duration::from_millis(250);
const ARBITRATE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a graceful stop waits for held events to be queued.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands the dispatcher may be behind before events are dropped. The dispatcher only waits on
/// the outbox (a SQLite transaction, or the engine's verdict with Redis); 65,536 events is seconds
/// of the busiest churn a node sees, so a full channel means the outbox is stuck, not busy. Each
/// waiting event is a few dozen bytes plus its channel name, so the bound is a few MiB per app,
/// where an unbounded channel would grow until the process is killed.
pub const COMMAND_CAPACITY: usize = 65_536;
/// A full channel is logged at most this often (every drop is counted).
const DROP_LOG_EVERY_MS: u64 = 1000;

/// Where an app reports what webhooks are made of. Present only when the app has webhooks.
#[derive(Debug)]
pub struct WebhookSink {
    commands: mpsc::Sender<Command>,
    /// Bits of the event kinds some endpoint wants (with their cancelling partners).
    wants: u8,
    app: Arc<str>,
    outbox: Arc<dyn WebhookOutbox>,
    endpoints: Vec<Arc<Endpoint>>,
    /// Events dropped because the dispatcher's channel was full.
    dropped: AtomicU64,
    /// When a drop was last logged (unix ms).
    drop_logged_ms: AtomicU64,
}

#[derive(Debug)]
enum Command {
    Event(WebhookEvent),
    /// Queue every held event now, then answer.
    Close(oneshot::Sender<()>),
}

impl WebhookSink {
    /// Whether any endpoint would receive events of `kind`.
    pub fn wants(&self, kind: WebhookEventKind) -> bool {
        self.wants & kind.bit() != 0
    }

    /// Hands `event` to the dispatcher without waiting: when the dispatcher is
    /// [`COMMAND_CAPACITY`] commands behind, the event is dropped and counted.
    pub fn emit(&self, event: WebhookEvent) {
        if !self.wants(event.kind()) {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.commands.try_send(Command::Event(event)) {
            self.dropped_one();
        }
    }

    fn dropped_one(&self) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = unix_ms();
        let last = self.drop_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= DROP_LOG_EVERY_MS
            && self.drop_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(app = %self.app, dropped, "webhook dispatcher is {COMMAND_CAPACITY} events behind; events dropped");
        }
    }

    /// Events dropped so far because the dispatcher was too far behind.
    pub fn events_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Each endpoint's outcomes, in the order of the app's `[[apps.webhooks]]` entries.
    pub fn outcomes(&self) -> impl Iterator<Item = &WebhookOutcomes> {
        self.endpoints.iter().map(|endpoint| &endpoint.outcomes)
    }

    /// Events waiting in the outbox for the endpoint at `index` in the app's config.
    pub async fn pending_count(&self, index: usize) -> Result<u64, OutboxError> {
        let endpoint = self.endpoints.get(index).ok_or_else(|| OutboxError::Unavailable("no such endpoint".into()))?;
        self.outbox.pending_count(&self.app, &endpoint.url).await
    }

    /// How many endpoints the app has.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Up to `limit` dead letters of this app, oldest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        self.outbox.dead_letters(&self.app, limit).await
    }

    /// Queues dead letters again and wakes the senders; returns how many.
    pub async fn replay(&self, which: Replay) -> Result<u64, OutboxError> {
        let replayed = self.outbox.replay(&self.app, which).await?;
        for endpoint in &self.endpoints {
            endpoint.wake.notify_one();
        }
        Ok(replayed)
    }
}

/// The running webhook tasks of one app: stop them with [`Webhooks::close`].
#[derive(Debug)]
pub struct Webhooks {
    commands: mpsc::Sender<Command>,
    dispatcher: JoinHandle<()>,
    senders: Vec<JoinHandle<()>>,
}

impl Webhooks {
    /// Queues the held events (so a restart delivers them), then stops the senders. A request in
    /// flight is sent again after a restart.
    /// `Close` waits for room in the channel (it is never dropped like an event), within the same
    /// time limit as the answer.
    pub async fn close(self) {
        let (done, answer) = oneshot::channel();
        let closed = async {
            match self.commands.send(Command::Close(done)).await {
                Ok(()) => answer.await.is_ok(),
                Err(_) => true,
            }
        };
        if !tokio::time::timeout(CLOSE_TIMEOUT, closed).await.unwrap_or(false) {
            tracing::warn!("held webhook events not queued in time");
        }
        self.dispatcher.abort();
        for sender in self.senders {
            sender.abort();
        }
    }
}

/// Starts `app`'s webhook tasks (a dispatcher, one sender per endpoint) and attaches its sink.
/// `None` when the app has no webhook.
pub fn start(app: &App, outbox: Arc<dyn WebhookOutbox>, poster: Arc<dyn WebhookPoster>) -> Option<Webhooks> {
    start_with_capacity(app, outbox, poster, COMMAND_CAPACITY)
}

fn start_with_capacity(
    app: &App,
    outbox: Arc<dyn WebhookOutbox>,
    poster: Arc<dyn WebhookPoster>,
    capacity: usize,
) -> Option<Webhooks> {
    let config = &app.config;
    if config.webhooks.is_empty() {
        return None;
    }
    let app_id: Arc<str> = Arc::from(app.id());
    let endpoints: Vec<Arc<Endpoint>> = config
        .webhooks
        .iter()
        .map(|webhook| {
            Arc::new(Endpoint {
                app: app_id.clone(),
                key: config.key.clone(),
                secret: config.secret.clone(),
                url: Arc::from(webhook.url.as_str()),
                config: webhook.clone(),
                wake: Notify::new(),
                outcomes: WebhookOutcomes::default(),
            })
        })
        .collect();
    let senders = endpoints
        .iter()
        .map(|endpoint| tokio::spawn(sender::run(endpoint.clone(), outbox.clone(), poster.clone())))
        .collect();
    let (commands, receiver) = mpsc::channel(capacity);
    let dispatcher = Dispatcher {
        app: app_id.clone(),
        delay: Duration::from_millis(config.webhook_leave_delay_ms),
        held: HashMap::new(),
        order: VecDeque::new(),
        next_generation: 0,
        counts: CountThrottle::default(),
        outbox: outbox.clone(),
        endpoints: endpoints.clone(),
        arbiter: app.engine.clone(),
    };
    let dispatcher = tokio::spawn(dispatcher.run(receiver));
    let wants = wanted_bits(&config.webhooks);
    let sink = WebhookSink {
        commands: commands.clone(),
        wants,
        app: app_id,
        outbox,
        endpoints,
        dropped: AtomicU64::new(0),
        drop_logged_ms: AtomicU64::new(0),
    };
    if app.webhooks.set(sink).is_err() {
        tracing::warn!(app = %app.id(), "webhooks started twice; the second start is ignored");
    }
    Some(Webhooks { commands, dispatcher, senders })
}

fn wanted_bits(webhooks: &[super::WebhookConfig]) -> u8 {
    use WebhookEventKind::*;
    let all = [ChannelOccupied, ChannelVacated, MemberAdded, MemberRemoved, ClientEvent, CacheMiss, SubscriptionCount];
    let mut bits = 0;
    for kind in all.into_iter().filter(|kind| webhooks.iter().any(|w| w.wants(*kind))) {
        // An arrival cancels a held departure, so each needs the other to be seen.
        bits |= match kind {
            ChannelOccupied | ChannelVacated => ChannelOccupied.bit() | ChannelVacated.bit(),
            MemberAdded | MemberRemoved => MemberAdded.bit() | MemberRemoved.bit(),
            other => other.bit(),
        };
    }
    bits
}

/// A held departure, by what would cancel it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Hold {
    Vacated(Arc<str>),
    Removed(Arc<str>, Arc<str>),
}

/// The leave delay and the appends of one app.
struct Dispatcher {
    app: Arc<str>,
    delay: Duration,
    /// Held events and the generation of their entry in `order`.
    held: HashMap<Hold, (u64, WebhookEvent)>,
    /// Release times, oldest first (the delay is the same for all); stale entries are skipped.
    order: VecDeque<(Instant, Hold, u64)>,
    next_generation: u64,
    /// `subscription_count` events waiting for their channel's quiet time to end.
    counts: CountThrottle,
    outbox: Arc<dyn WebhookOutbox>,
    endpoints: Vec<Arc<Endpoint>>,
    /// The engine that decides for every node what is told (`None` on a single node).
    arbiter: Option<Arc<dyn Engine>>,
}

impl Dispatcher {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut ready = Vec::new();
        loop {
            let held = self.order.front().map(|(at, ..)| *at);
            let deadline = match (held, self.counts.next_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let mut closing = None;
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let mut next = Some(command);
                    while let Some(command) = next.take() {
                        match command {
                            Command::Event(event) => self.accept(event, Instant::now(), &mut ready),
                            Command::Close(done) => {
                                closing = Some(done);
                                break;
                            }
                        }
                        next = commands.try_recv().ok();
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
            match closing {
                Some(done) => {
                    self.release_all(&mut ready);
                    self.append(std::mem::take(&mut ready)).await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    self.release_due(Instant::now(), &mut ready);
                    if !ready.is_empty() {
                        self.append(std::mem::take(&mut ready)).await;
                    }
                }
            }
        }
    }

    /// Holds a departure, cancels it with its arrival, or passes the event on.
    fn accept(&mut self, event: WebhookEvent, now: Instant, ready: &mut Vec<WebhookEvent>) {
        let (hold, cancels) = match &event {
            WebhookEvent::ChannelVacated { channel } => (Some(Hold::Vacated(channel.clone())), None),
            WebhookEvent::MemberRemoved { channel, user_id } => {
                (Some(Hold::Removed(channel.clone(), user_id.clone())), None)
            }
            WebhookEvent::ChannelOccupied { channel } => (None, Some(Hold::Vacated(channel.clone()))),
            WebhookEvent::MemberAdded { channel, user_id } => {
                (None, Some(Hold::Removed(channel.clone(), user_id.clone())))
            }
            WebhookEvent::SubscriptionCount { channel, subscription_count } => {
                return self.counts.offer(channel.clone(), *subscription_count, now, ready);
            }
            _ => (None, None),
        };
        if cancels.is_some_and(|key| self.held.remove(&key).is_some()) {
            return;
        }
        match hold {
            Some(key) if !self.delay.is_zero() => {
                self.next_generation += 1;
                let generation = self.next_generation;
                self.order.push_back((now + self.delay, key.clone(), generation));
                self.held.insert(key, (generation, event));
            }
            _ => ready.push(event),
        }
    }

    /// Passes on the held events whose delay is over, in the order they were held.
    fn release_due(&mut self, now: Instant, ready: &mut Vec<WebhookEvent>) {
        self.counts.release_due(now, ready);
        while let Some((at, ..)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((_, key, generation)) = self.order.pop_front()
                && self.held.get(&key).is_some_and(|(g, _)| *g == generation)
                && let Some((_, event)) = self.held.remove(&key)
            {
                ready.push(event);
            }
        }
    }

    fn release_all(&mut self, ready: &mut Vec<WebhookEvent>) {
        self.release_due(Instant::now() + self.delay, ready);
        self.counts.release_all(ready);
    }

    /// Keeps the events the engine says are this node's to tell (all of them on a single node).
    /// The engine is asked a few times (each ask bounded) before an event is told without its
    /// verdict: an engine that cannot be reached does not silence a change, though it may then be
    /// told twice (the engine's record of it is not updated).
    async fn arbitrate(&self, events: Vec<WebhookEvent>) -> Vec<WebhookEvent> {
        let Some(engine) = &self.arbiter else { return events };
        let mut told = Vec::with_capacity(events.len());
        for event in events {
            if matches!(event.kind(), WebhookEventKind::ClientEvent | WebhookEventKind::CacheMiss) {
                told.push(event);
                continue;
            }
            match ask(engine.as_ref(), &self.app, &event).await {
                Ok(verdict) => told.extend(verdict),
                Err(error) => {
                    tracing::warn!(app = %self.app, "webhook told without the engine's verdict: {error}");
                    told.push(event);
                }
            }
        }
        told
    }

    /// Appends `events` to the queue of each endpoint that wants them, and wakes its sender.
    async fn append(&self, events: Vec<WebhookEvent>) {
        let events = self.arbitrate(events).await;
        let encoded: Vec<(WebhookEventKind, String)> = events.iter().map(|e| (e.kind(), e.to_json())).collect();
        for endpoint in &self.endpoints {
            let wanted: Vec<String> =
                encoded.iter().filter(|(kind, _)| endpoint.config.wants(*kind)).map(|(_, json)| json.clone()).collect();
            if wanted.is_empty() {
                continue;
            }
            let count = wanted.len();
            match self.outbox.append(&self.app, &endpoint.url, wanted).await {
                Ok(()) => endpoint.wake.notify_one(),
                Err(error) => {
                    tracing::warn!(app = %self.app, url = endpoint.shown(), count, "webhook events dropped: {error}");
                }
            }
        }
    }
}

/// The engine's verdict on `event`, asked up to [`ARBITRATE_ATTEMPTS`] times (each ask bounded);
/// the last failure when none answered.
async fn ask(engine: &dyn Engine, app: &str, event: &WebhookEvent) -> Result<Option<WebhookEvent>, String> {
    let mut failure = String::new();
    for attempt in 0..ARBITRATE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(ARBITRATE_RETRY * 2u32.pow(attempt - 1)).await;
        }
        match tokio::time::timeout(ARBITRATE_TIMEOUT, engine.arbitrate_webhook(app, event.clone())).await {
            Ok(Ok(verdict)) => return Ok(verdict),
            Ok(Err(error)) => failure = error.to_string(),
            Err(_) => failure = "timed out".into(),
        }
    }
    Err(failure)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::{MemoryOutbox, WebhookConfig};

    const URL: &str = "http://hook.test/";

    fn dispatcher(delay_ms: u64, event_types: Vec<WebhookEventKind>) -> (Dispatcher, Arc<MemoryOutbox>) {
        let outbox = Arc::new(MemoryOutbox::default());
        let config = WebhookConfig { url: URL.into(), event_types, ..WebhookConfig::default() };
        let endpoint = Arc::new(Endpoint {
            app: "1".into(),
            key: "k".into(),
            secret: herald_protocol::Secret::new("s"),
            url: URL.into(),
            config,
            wake: Notify::new(),
            outcomes: WebhookOutcomes::default(),
        });
        let dispatcher = Dispatcher {
            app: "1".into(),
            delay: Duration::from_millis(delay_ms),
            held: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            counts: CountThrottle::default(),
            outbox: outbox.clone(),
            endpoints: vec![endpoint],
            arbiter: None,
        };
        (dispatcher, outbox)
    }

    fn occupied(channel: &str) -> WebhookEvent {
        WebhookEvent::ChannelOccupied { channel: channel.into() }
    }

    fn vacated(channel: &str) -> WebhookEvent {
        WebhookEvent::ChannelVacated { channel: channel.into() }
    }

    fn added(user: &str) -> WebhookEvent {
        WebhookEvent::MemberAdded { channel: "presence-a".into(), user_id: user.into() }
    }

    fn removed(user: &str) -> WebhookEvent {
        WebhookEvent::MemberRemoved { channel: "presence-a".into(), user_id: user.into() }
    }

    async fn queued(outbox: &MemoryOutbox) -> Vec<String> {
        outbox.pending("1", URL, 100).await.unwrap().into_iter().map(|q| q.event).collect()
    }

    fn json(events: &[WebhookEvent]) -> Vec<String> {
        events.iter().map(WebhookEvent::to_json).collect()
    }

    /// Sends `events` to a running dispatcher at the given offsets (ms from the start) and returns
    /// what was queued once `until_ms` has passed (later events are not sent).
    async fn run(delay_ms: u64, events: Vec<(u64, WebhookEvent)>, until_ms: u64) -> Vec<String> {
        run_for(Vec::new(), delay_ms, events, until_ms).await
    }

    async fn run_for(
        kinds: Vec<WebhookEventKind>,
        delay_ms: u64,
        events: Vec<(u64, WebhookEvent)>,
        until_ms: u64,
    ) -> Vec<String> {
        let (dispatcher, outbox) = dispatcher(delay_ms, kinds);
        let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let task = tokio::spawn(dispatcher.run(receiver));
        let start = Instant::now();
        for (at, event) in events.into_iter().filter(|(at, _)| *at <= until_ms) {
            tokio::time::sleep_until(start + Duration::from_millis(at)).await;
            commands.send(Command::Event(event)).await.unwrap();
        }
        tokio::time::sleep_until(start + Duration::from_millis(until_ms)).await;
        tokio::task::yield_now().await;
        task.abort();
        queued(&outbox).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_within_the_leave_delay_emits_nothing() {
        let events = vec![
            (0, occupied("a")),
            (0, added("u1")),
            (1000, removed("u1")),
            (1000, vacated("a")),
            (3500, occupied("a")),
            (3500, added("u1")),
        ];
        assert_eq!(run(3000, events, 10_000).await, json(&[occupied("a"), added("u1")]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_departure_is_told_once_the_leave_delay_is_over() {
        let events = vec![(0, occupied("a")), (1000, vacated("a")), (5000, occupied("a"))];
        let before = run(3000, events.clone(), 3999).await;
        assert_eq!(before, json(&[occupied("a")]), "held for the delay");
        let after = run(3000, events, 6000).await;
        assert_eq!(after, json(&[occupied("a"), vacated("a"), occupied("a")]));
    }

    #[tokio::test(start_paused = true)]
    async fn another_member_arriving_does_not_cancel_a_departure() {
        let events = vec![(0, removed("u1")), (100, added("u2"))];
        assert_eq!(run(3000, events, 4000).await, json(&[added("u2"), removed("u1")]));
    }

    #[tokio::test(start_paused = true)]
    async fn subscription_counts_are_throttled_to_the_latest() {
        let count = |n| WebhookEvent::SubscriptionCount { channel: "a".into(), subscription_count: n };
        let kinds = vec![WebhookEventKind::SubscriptionCount];
        let events = vec![(0, count(1)), (10, count(2)), (20, count(3)), (30, occupied("a"))];
        assert_eq!(run_for(kinds.clone(), 0, events.clone(), 4000).await, json(&[count(1)]));
        assert_eq!(run_for(kinds, 0, events, 6000).await, json(&[count(1), count(3)]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_delay_passes_everything_at_once() {
        let events = vec![(0, occupied("a")), (0, vacated("a")), (0, occupied("a"))];
        assert_eq!(run(0, events, 1).await, json(&[occupied("a"), vacated("a"), occupied("a")]));
    }

    #[tokio::test(start_paused = true)]
    async fn events_go_only_to_endpoints_that_want_them() {
        let (mut dispatcher, outbox) = dispatcher(0, vec![WebhookEventKind::ChannelVacated]);
        let mut ready = Vec::new();
        dispatcher.accept(occupied("a"), Instant::now(), &mut ready);
        dispatcher.accept(vacated("a"), Instant::now(), &mut ready);
        dispatcher.append(ready).await;
        assert_eq!(queued(&outbox).await, json(&[vacated("a")]));
    }

    /// Refuses every request, so whatever is queued stays pending.
    #[derive(Debug)]
    struct Refusing;

    impl WebhookPoster for Refusing {
        fn post<'a>(&'a self, _: &'a super::super::WebhookRequest) -> super::super::PostFuture<'a> {
            Box::pin(async { Ok(503) })
        }
    }

    #[tokio::test]
    async fn a_full_channel_drops_and_counts_events_but_close_still_gets_through() {
        let webhook = WebhookConfig { url: URL.into(), ..WebhookConfig::default() };
        let config = crate::AppConfig {
            webhooks: vec![webhook],
            webhook_leave_delay_ms: 0,
            ..crate::AppConfig::new("1", "k", "s")
        };
        let app = App::new(config);
        let outbox = Arc::new(MemoryOutbox::default());
        let webhooks = start_with_capacity(&app, outbox.clone(), Arc::new(Refusing), 4).unwrap();
        let sink = app.webhook_sink().unwrap();
        // Nothing has yielded yet, so the dispatcher has not taken a command: four fit, six do not.
        for n in 0..10 {
            sink.emit(occupied(&format!("c{n}")));
        }
        assert_eq!(sink.events_dropped(), 6);
        sink.emit(WebhookEvent::SubscriptionCount { channel: "c0".into(), subscription_count: 1 });
        assert_eq!(sink.events_dropped(), 6, "an unwanted kind is not sent, so not dropped either");
        // The channel is still full: `close` waits for room instead of being dropped, and the held
        // and accepted events are queued before it answers.
        webhooks.close().await;
        let names: Vec<String> = (0..4).map(|n| occupied(&format!("c{n}")).to_json()).collect();
        assert_eq!(queued(&outbox).await, names);
        assert_eq!(sink.pending_count(0).await, Ok(4));
        assert_eq!(sink.events_dropped(), 6);
    }

    #[test]
    fn a_wanted_departure_brings_its_arrival() {
        let config = |kinds: Vec<WebhookEventKind>| WebhookConfig { event_types: kinds, ..WebhookConfig::default() };
        let bits = wanted_bits(&[config(vec![WebhookEventKind::ChannelVacated])]);
        assert_eq!(bits, WebhookEventKind::ChannelOccupied.bit() | WebhookEventKind::ChannelVacated.bit());
        assert_eq!(wanted_bits(&[config(Vec::new())]).count_ones(), 6, "all but subscription_count");
        let counts = wanted_bits(&[config(vec![WebhookEventKind::SubscriptionCount])]);
        assert_eq!(counts, WebhookEventKind::SubscriptionCount.bit());
    }
}
