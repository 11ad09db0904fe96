//! One client's protocol state: subscriptions, sign-in, client-event budget.
//!
//! A transport feeds the session each text frame it receives; the session answers by queuing frames
//! on the connection's outbox, and asks for a close the same way. Bad input is answered in the
//! protocol's own terms (`pusher:error`, `pusher:subscription_error`, or a close code) and affects
//! only this connection. Dropping the session undoes everything it registered, whatever the reason
//! the connection ended.

use std::sync::Arc;

use herald_protocol::client_message::{ClientEvent, JobGet, JobSubmit, MarkRead, Signin, Subscribe};
use herald_protocol::server_frame::{self, SubscriptionErrorKind};
use herald_protocol::signature::{channel_auth_message, signin_message, verify_auth};
use herald_protocol::{ChannelKind, ChannelName, ClientMessage, CloseCode, ErrorCode, FrameData, Resume};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use crate::app::App;
use crate::connection::Connection;
use crate::engine::Message;
use crate::feeds::is_feed_channel;
use crate::hub::{Confirmation, Join, JoinRefused};
use crate::idempotency::MAX_KEY_LEN;
use crate::jobs::service::SubmitJob;
use crate::metrics::PublishSource;
use crate::presence::MemberJoin;
use crate::rate_limit::TokenBucket;
use crate::subscriptions::Subscriptions;
use crate::webhooks::WebhookEventKind;

/// Room for the envelope around the largest allowed event data.
const ENVELOPE_ALLOWANCE: usize = 2048;

#[derive(Debug)]
pub struct Session {
    app: Arc<App>,
    connection: Arc<Connection>,
    subscriptions: Subscriptions<Subscription>,
    user: Option<SignedIn>,
    client_events: TokenBucket,
    authorized: bool,
    opened_at: Instant,
    /// On an engine: this connection's client events, published one after another in the order
    /// they were sent (started with the first one; ends when the session does).
    publisher: Option<mpsc::UnboundedSender<ClientPublish>>,
}

/// A client event waiting to be published through the engine.
#[derive(Debug)]
struct ClientPublish {
    channel: String,
    message: Message,
    key: Option<String>,
}

#[derive(Debug)]
struct Subscription {
    kind: ChannelKind,
    /// The user id this socket joined a presence channel as.
    member: Option<Arc<str>>,
}

#[derive(Debug)]
struct SignedIn {
    id: Arc<str>,
    watchlist: Vec<Arc<str>>,
}

/// Why a connection is refused before it starts; each is a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionOpenError {
    #[error("app disabled")]
    AppDisabled,
    #[error("app over connection quota")]
    OverQuota,
}

impl SessionOpenError {
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::AppDisabled => CloseCode::AppDisabled,
            Self::OverQuota => CloseCode::OverConnectionQuota,
        }
    }
}

/// How a subscription was authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authorization {
    /// The client's `auth` signature over its socket id (Pusher's way).
    Signature,
    /// The transport checked a token first (SSE).
    Preauthorized,
}

/// A subscription refused, with what pusher-js should be told.
struct Refusal {
    kind: SubscriptionErrorKind,
    message: String,
}

impl Refusal {
    fn new(kind: SubscriptionErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl Session {
    /// Opens a session and queues `pusher:connection_established`.
    pub fn open(
        app: Arc<App>,
        max_queued_bytes: usize,
        activity_timeout_secs: u64,
        now: Instant,
    ) -> Result<Self, SessionOpenError> {
        if !app.config.enabled {
            return Err(SessionOpenError::AppDisabled);
        }
        if !app.try_add_connection() {
            return Err(SessionOpenError::OverQuota);
        }
        let connection = Arc::new(Connection::new(max_queued_bytes));
        connection.outbox.push(server_frame::connection_established(connection.socket_id, activity_timeout_secs));
        let client_events = TokenBucket::new(app.config.client_events_per_second, now);
        Ok(Self {
            app,
            connection,
            subscriptions: Subscriptions::default(),
            user: None,
            client_events,
            authorized: false,
            opened_at: now,
            publisher: None,
        })
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// When the app requires it: the instant by which this connection must have signed in or
    /// subscribed to a private or presence channel.
    pub fn auth_deadline(&self) -> Option<Instant> {
        let secs = self.app.config.require_auth_within_secs;
        (secs > 0).then(|| self.opened_at + Duration::from_secs(secs))
    }

    /// Channels this connection is subscribed to now (its user stream included).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Whether the connection has signed in or subscribed to a signed channel.
    pub fn is_authorized(&self) -> bool {
        self.authorized
    }

    /// When the app's authorization deadline has passed and the connection has neither signed in
    /// nor subscribed to a signed channel, queues `pusher:error` 4009 and the close. Every
    /// transport calls this from its own timer; returns whether it closed.
    pub fn enforce_auth_deadline(&self, now: Instant) -> bool {
        let late = self.auth_deadline().is_some_and(|deadline| deadline <= now) && !self.authorized;
        if late {
            self.close(CloseCode::Unauthorized, "sign in or subscribe to a private channel sooner");
        }
        late
    }

    /// Handles one text frame from the client.
    pub fn handle_text(&mut self, text: &str, now: Instant) {
        let limit = self.app.config.max_payload_bytes + ENVELOPE_ALLOWANCE;
        if text.len() > limit {
            let message = format!("frame of {} bytes is larger than the limit of {limit} bytes", text.len());
            return self.reject(ErrorCode::PayloadTooLarge, &message);
        }
        match ClientMessage::parse(text) {
            Ok(message) => self.handle(message, now),
            Err(error) => self.reject(error.code(), &error.to_string()),
        }
    }

    fn handle(&mut self, message: ClientMessage, now: Instant) {
        match message {
            ClientMessage::Ping => {
                self.connection.outbox.push(server_frame::pong());
            }
            ClientMessage::Pong => {}
            ClientMessage::Subscribe(subscribe) => self.subscribe(subscribe, now),
            ClientMessage::Unsubscribe { channel } => self.unsubscribe(&channel, now),
            ClientMessage::Signin(signin) => self.signin(signin, now),
            ClientMessage::ClientEvent(event) => self.client_event(&event, now),
            ClientMessage::JobSubmit(submit) => self.job_submit(submit, now),
            ClientMessage::JobGet(get) => self.job_get(get),
            ClientMessage::FeedSnapshotRequest(request) => self.feed_snapshot_request(&request.channel),
            ClientMessage::MarkRead(mark) => self.mark_read(mark, now),
        }
    }

    /// Queues a non-fatal `pusher:error`.
    fn reject(&self, code: ErrorCode, message: &str) {
        tracing::info!(socket_id = %self.connection.socket_id, app = %self.app.id(), code = code.code(), "{message:?}");
        self.connection.outbox.push(server_frame::error(code.code(), message));
    }

    /// Queues a `pusher:error` with the close code, then the close itself.
    fn close(&self, code: CloseCode, message: &str) {
        tracing::info!(socket_id = %self.connection.socket_id, app = %self.app.id(), code = code.code(), "closing: {message:?}");
        self.connection.outbox.push(server_frame::error(code.code(), message));
        self.connection.outbox.close(code);
    }

    /// Subscribes to a channel the caller has already authorized by other means (the SSE route's
    /// signed token): no channel signature is checked. Presence channels still need member data,
    /// so they are refused here. The answer is queued like any subscription's.
    pub fn subscribe_preauthorized(&mut self, channel: &str, resume: Option<Resume>, now: Instant) {
        let subscribe = Subscribe {
            channel: channel.to_owned(),
            auth: None,
            channel_data: None,
            resume,
            snapshot: false,
            unread: false,
        };
        self.subscribe_with(subscribe, Authorization::Preauthorized, now);
    }

    fn subscribe(&mut self, subscribe: Subscribe, now: Instant) {
        self.subscribe_with(subscribe, Authorization::Signature, now);
    }

    fn subscribe_with(&mut self, subscribe: Subscribe, authorization: Authorization, now: Instant) {
        if let Err(refusal) = self.try_subscribe(&subscribe, authorization, now) {
            tracing::info!(socket_id = %self.connection.socket_id, app = %self.app.id(), "subscription refused: {:?}", refusal.message);
            let frame = server_frame::subscription_error(&subscribe.channel, refusal.kind, &refusal.message);
            self.connection.outbox.push(frame);
        }
    }

    fn try_subscribe(
        &mut self,
        subscribe: &Subscribe,
        authorization: Authorization,
        now: Instant,
    ) -> Result<(), Refusal> {
        let config = &self.app.config;
        let channel = ChannelName::parse(&subscribe.channel, config.max_channel_name_len)
            .map_err(|e| Refusal::new(SubscriptionErrorKind::InvalidChannel, e.to_string()))?;
        let already = self.subscriptions.contains_key(channel.as_str());
        if !already && self.subscriptions.len() >= config.max_channels_per_connection {
            let max = config.max_channels_per_connection;
            return Err(Refusal::new(
                SubscriptionErrorKind::LimitReached,
                format!("at most {max} channels per connection"),
            ));
        }
        if channel.kind() == ChannelKind::ServerToUser && !self.is_signed_in_as(channel.user_id()) {
            return Err(Refusal::new(SubscriptionErrorKind::Auth, "sign in as this user to subscribe to its stream"));
        }
        if channel.kind().requires_auth() && authorization == Authorization::Signature {
            let message =
                channel_auth_message(self.connection.socket_id, channel.as_str(), subscribe.channel_data.as_deref());
            verify_auth(self.app.key(), self.app.secret(), message.as_bytes(), subscribe.auth.as_deref())
                .map_err(|e| Refusal::new(SubscriptionErrorKind::Auth, e.to_string()))?;
        }
        let member = match channel.kind() {
            ChannelKind::Presence => Some(self.presence_member(subscribe.channel_data.as_deref())?),
            _ => None,
        };
        let member = match (already, member) {
            (true, _) => self
                .subscriptions
                .get(channel.as_str())
                .and_then(|s| s.member.clone())
                .map(|user_id| MemberJoin { user_id, user_info: None }),
            (false, member) => member,
        };
        let snapshot = subscribe.snapshot && is_feed_channel(channel.as_str());
        let unread = subscribe.unread && self.user.is_some();
        let confirmed = (snapshot || unread).then(|| Arc::new(tokio::sync::Notify::new()));
        let join = Join {
            member: member.as_ref(),
            resume: subscribe.resume.as_ref(),
            confirmation: Confirmation::SubscriptionSucceeded,
            confirmed: confirmed.as_ref(),
        };
        let joined =
            self.app.hub.subscribe(&channel, &self.connection, join, now).map_err(|JoinRefused::PresenceFull| {
                let max = config.max_presence_members;
                Refusal::new(SubscriptionErrorKind::LimitReached, format!("presence channel is full ({max} members)"))
            })?;
        self.authorized |= channel.kind().requires_auth();
        let subscription = Subscription { kind: channel.kind(), member: member.map(|m| m.user_id) };
        self.subscriptions.insert(Arc::from(channel.as_str()), subscription);
        self.app.joined(channel.as_str(), joined, self.connection.socket_id);
        if let Some(confirmed) = confirmed {
            self.after_confirmation(channel.as_str(), confirmed, snapshot, unread);
        }
        Ok(())
    }

    fn is_signed_in_as(&self, user_id: Option<&str>) -> bool {
        self.user.as_ref().is_some_and(|user| Some(&*user.id) == user_id)
    }

    fn presence_member(&self, channel_data: Option<&str>) -> Result<MemberJoin, Refusal> {
        #[derive(Deserialize)]
        struct ChannelData {
            user_id: serde_json::Value,
            #[serde(default)]
            user_info: Option<Box<RawValue>>,
        }
        let auth_error = |m: &str| Refusal::new(SubscriptionErrorKind::Auth, m);
        let data = channel_data.ok_or_else(|| auth_error("presence channels need channel_data"))?;
        let data: ChannelData =
            serde_json::from_str(data).map_err(|_| auth_error("channel_data must be a JSON object with user_id"))?;
        let user_id = match data.user_id {
            serde_json::Value::String(s) if !s.is_empty() => s,
            // pusher-js keys members by String(user_id): 10.0 and 1e3 are "10" and "1000" there.
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => i.to_string(),
                (_, Some(u), _) => u.to_string(),
                (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{f:.0}"),
                _ => n.to_string(),
            },
            _ => return Err(auth_error("user_id must be a non-empty string or a number")),
        };
        let config = &self.app.config;
        if user_id.len() > config.max_presence_user_id_len {
            let max = config.max_presence_user_id_len;
            return Err(Refusal::new(
                SubscriptionErrorKind::LimitReached,
                format!("user_id is longer than {max} characters"),
            ));
        }
        if data.user_info.as_ref().is_some_and(|info| info.get().len() > config.max_presence_user_info_bytes) {
            let max = config.max_presence_user_info_bytes;
            return Err(Refusal::new(
                SubscriptionErrorKind::LimitReached,
                format!("user_info is larger than {max} bytes"),
            ));
        }
        Ok(MemberJoin { user_id: Arc::from(user_id), user_info: data.user_info })
    }

    fn unsubscribe(&mut self, channel: &str, now: Instant) {
        // The user stream stays joined for as long as the connection is signed in.
        if self.subscriptions.get(channel).is_none_or(|s| s.kind == ChannelKind::ServerToUser) {
            return;
        }
        self.subscriptions.remove(channel);
        let left = self.app.hub.unsubscribe(channel, self.connection.socket_id, now);
        self.app.left(channel, left);
    }

    fn signin(&mut self, signin: Signin, now: Instant) {
        if let Err(message) = self.try_signin(&signin, now) {
            self.close(CloseCode::Unauthorized, &format!("sign-in refused: {message}"));
        }
    }

    fn try_signin(&mut self, signin: &Signin, now: Instant) -> Result<(), String> {
        #[derive(Deserialize)]
        struct UserData {
            id: serde_json::Value,
            #[serde(default)]
            watchlist: Vec<serde_json::Value>,
        }
        let config = &self.app.config;
        if !config.user_signin {
            return Err("user sign-in is disabled for this app".into());
        }
        let message = signin_message(self.connection.socket_id, &signin.user_data);
        verify_auth(self.app.key(), self.app.secret(), message.as_bytes(), Some(&signin.auth))
            .map_err(|e| e.to_string())?;
        let user: UserData =
            serde_json::from_str(&signin.user_data).map_err(|_| "user_data must be a JSON object with an id")?;
        let id = match user.id {
            serde_json::Value::String(id) if !id.is_empty() => id,
            _ => return Err("user_data.id must be a non-empty string".into()),
        };
        if id.len() > config.max_presence_user_id_len
            || ChannelName::parse(&format!("#server-to-user-{id}"), usize::MAX).is_err()
        {
            return Err("user_data.id must be at most 128 characters from [A-Za-z0-9_-=@,.;]".into());
        }
        if let Some(current) = &self.user {
            if *current.id != *id {
                return Err("this connection is already signed in as another user".into());
            }
            let id = current.id.clone();
            self.join_user_stream(&id, signin, None, now);
            return Ok(());
        }
        let mut watchlist: Vec<Arc<str>> =
            user.watchlist.iter().filter_map(|v| v.as_str()).filter(|s| !s.is_empty()).map(Arc::from).collect();
        if watchlist.len() > config.max_watchlist_size {
            watchlist.truncate(config.max_watchlist_size);
            let max = config.max_watchlist_size;
            self.reject(
                ErrorCode::WatchlistTruncated,
                &format!("watchlist is longer than {max} ids; the first {max} are watched"),
            );
        }
        let id: Arc<str> = Arc::from(id);
        let (came_online, watchlist_state) = self.app.users.sign_in(&id, &self.connection, &watchlist);
        self.join_user_stream(&id, signin, watchlist_state.as_ref(), now);
        if came_online {
            self.app.user_online_here(&id, true, self.connection.socket_id);
        }
        self.user = Some(SignedIn { id, watchlist });
        self.authorized = true;
        Ok(())
    }

    /// Joins `#server-to-user-<id>` (again, for a repeated sign-in), which queues `signin_success`
    /// with the stream's position and, when asked, what the user missed.
    fn join_user_stream(&mut self, id: &str, signin: &Signin, then: Option<&bytes::Bytes>, now: Instant) {
        let channel = ChannelName::server_to_user(id);
        let confirmation = Confirmation::SigninSuccess { user_data: &signin.user_data, then };
        let join = Join { member: None, resume: signin.resume.as_ref(), confirmation, confirmed: None };
        // Without a member there is no limit to refuse on.
        if let Ok(joined) = self.app.hub.subscribe(&channel, &self.connection, join, now) {
            self.app.joined(channel.as_str(), joined, self.connection.socket_id);
        }
        let subscription = Subscription { kind: ChannelKind::ServerToUser, member: None };
        self.subscriptions.insert(Arc::from(channel.as_str()), subscription);
    }

    fn client_event(&mut self, event: &ClientEvent, now: Instant) {
        let user_id = match self.check_client_event(&event.event, &event.channel, &event.data, now) {
            Ok(user_id) => user_id,
            Err((code, message)) => return self.reject(code, &message),
        };
        let socket_id = self.connection.socket_id;
        if self.app.is_clustered() {
            return self.client_event_shared(event, user_id, now);
        }
        let deliver = || {
            let encode = |serial| {
                let data = FrameData::Json(&event.data);
                server_frame::channel_event(&event.event, &event.channel, data, user_id.as_deref(), serial)
            };
            self.app.counters().published(PublishSource::Client, 1);
            let serial = self.app.hub.publish(&event.channel, encode, Some(socket_id), None, now);
            let data = event.data.get();
            self.app.webhook_client_event(&event.channel, &event.event, data, socket_id, user_id.as_ref());
            vec![serial]
        };
        match event.idempotency_key.as_deref() {
            None => {
                deliver();
            }
            Some(key) if key.is_empty() || key.len() > MAX_KEY_LEN => {
                let message = format!("client event rejected: idempotency_key must be 1 to {MAX_KEY_LEN} characters");
                self.reject(ErrorCode::ClientEventRejected, &message);
            }
            Some(key) => {
                // Scoped to the sender, so no member can claim another's key.
                let signed_in = self.user.as_ref().map(|u| u.id.clone());
                let sender = user_id.clone().or(signed_in).map_or_else(|| socket_id.to_string(), |id| id.to_string());
                let scoped = format!("{sender}\0{key}");
                self.app.client_idempotency.run(&scoped, &event.channel, now, deliver);
            }
        }
    }

    /// Sends a client event through the engine, in the background: the socket's task must not wait
    /// for the round trip. Keys are remembered by the engine, for every node.
    fn client_event_shared(&mut self, event: &ClientEvent, user_id: Option<Arc<str>>, _now: Instant) {
        let socket_id = self.connection.socket_id;
        let mut scoped_key = None;
        if let Some(key) = event.idempotency_key.as_deref() {
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                let message = format!("client event rejected: idempotency_key must be 1 to {MAX_KEY_LEN} characters");
                return self.reject(ErrorCode::ClientEventRejected, &message);
            }
            let signed_in = self.user.as_ref().map(|u| u.id.clone());
            let sender = user_id.clone().or(signed_in).map_or_else(|| socket_id.to_string(), |id| id.to_string());
            scoped_key = Some(format!("c:{sender}\n{key}"));
        }
        let message = Message {
            event: event.event.clone(),
            data: event.data.get().to_owned(),
            json: true,
            user_id: user_id.map(|id| id.to_string()),
            exclude: Some(socket_id),
        };
        let publish = ClientPublish { channel: event.channel.clone(), message, key: scoped_key };
        let publisher = self.publisher.get_or_insert_with(|| spawn_publisher(self.app.clone(), socket_id));
        let _ = publisher.send(publish);
    }

    /// Checks a client event; on success returns the presence user id to attach.
    fn check_client_event(
        &mut self,
        event: &str,
        channel: &str,
        data: &RawValue,
        now: Instant,
    ) -> Result<Option<Arc<str>>, (ErrorCode, String)> {
        let config = &self.app.config;
        let rejected = |m: &str| (ErrorCode::ClientEventRejected, format!("client event rejected: {m}"));
        if !config.client_events {
            return Err(rejected("client events are disabled for this app"));
        }
        if event.len() > config.max_event_name_len {
            return Err(rejected(&format!("event name is longer than {} characters", config.max_event_name_len)));
        }
        let subscription = self.subscriptions.get(channel).ok_or_else(|| rejected("not subscribed to the channel"))?;
        if is_feed_channel(channel) {
            return Err(rejected("feed channels change only through the feed routes"));
        }
        match subscription.kind {
            ChannelKind::Private | ChannelKind::Presence => {}
            ChannelKind::PrivateEncrypted => return Err(rejected("not allowed on encrypted channels")),
            _ => return Err(rejected("only allowed on private and presence channels")),
        }
        if data.get().len() > config.max_payload_bytes {
            let message = format!("client event data is larger than {} bytes", config.max_payload_bytes);
            return Err((ErrorCode::PayloadTooLarge, message));
        }
        let member = subscription.member.clone();
        if !self.client_events.try_take(now) {
            let message = format!("client event rejected: more than {} per second", config.client_events_per_second);
            return Err((ErrorCode::ClientEventRateLimited, message));
        }
        Ok(member)
    }
}

/// Publishes one connection's client events in order: each waits for the one before it.
fn spawn_publisher(app: Arc<App>, socket_id: herald_protocol::SocketId) -> mpsc::UnboundedSender<ClientPublish> {
    let (sender, mut queue) = mpsc::unbounded_channel::<ClientPublish>();
    tokio::spawn(async move {
        while let Some(publish) = queue.recv().await {
            let wanted = app.webhook_sink().is_some_and(|sink| sink.wants(WebhookEventKind::ClientEvent));
            let hook = wanted.then(|| (publish.message.event.clone(), publish.message.data.clone()));
            let user_id: Option<Arc<str>> = publish.message.user_id.as_deref().map(Arc::from);
            match app.publish_client_event(&publish.channel, publish.message, publish.key.as_deref()).await {
                Ok(true) => {
                    if let Some((event, data)) = hook {
                        app.webhook_client_event(&publish.channel, &event, &data, socket_id, user_id.as_ref());
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(app = %app.id(), %socket_id, "client event not published: {error}"),
            }
        }
    });
    sender
}

/// How long answers that follow a subscription's confirmation wait for it (a replica hub confirms
/// after the engine's snapshot).
const CONFIRMATION_WAIT: Duration = Duration::from_secs(10);

/// Sends `user`'s cursor and unread count for `channel` (`herald:unread`).
async fn send_unread(app: &App, connection: &Connection, user: &str, channel: &str) {
    match app.unread(user, vec![channel.to_owned()]).await {
        Ok(found) => {
            for unread in found {
                let data = serde_json::json!({ "cursor": unread.cursor, "unread": unread.unread }).to_string();
                connection.outbox.push(server_frame::channel_notice("herald:unread", channel, &data));
            }
        }
        Err(error) => tracing::warn!(app = %app.id(), %channel, "unread count failed: {error}"),
    }
}

/// What a connection is told about its job requests.
fn job_answer(connection: &Connection, event: &str, request_id: Option<&str>, body: serde_json::Value) {
    let mut data = body;
    data["request_id"] = serde_json::json!(request_id);
    connection.outbox.push(server_frame::herald_event(event, &data.to_string()));
}

impl Session {
    /// `herald:job_submit`: the job is filed under the signed-in user, whatever the client says.
    fn job_submit(&mut self, submit: JobSubmit, now: Instant) {
        let request_id = submit.request_id.clone();
        let reject = |connection: &Connection, reason: &str| {
            let body = serde_json::json!({ "queue": submit.queue, "reason": reason });
            job_answer(connection, "herald:job_rejected", request_id.as_deref(), body);
        };
        let Some(user) = &self.user else {
            return reject(&self.connection, "sign in before submitting jobs");
        };
        if !self.client_events.try_take(now) {
            let max = self.app.config.client_events_per_second;
            return reject(&self.connection, &format!("more than {max} requests per second"));
        }
        let job = SubmitJob {
            payload: submit.payload,
            priority: 0,
            delay: Duration::ZERO,
            user_id: Some(user.id.to_string()),
            idempotency_key: submit.idempotency_key,
            from_client: true,
        };
        let (app, connection, queue) = (self.app.clone(), self.connection.clone(), submit.queue);
        tokio::spawn(async move {
            match app.store_job(&queue, job).await {
                Ok((job, repeated)) => {
                    let body = serde_json::json!({ "job": job.public(), "repeated": repeated });
                    job_answer(&connection, "herald:job_accepted", request_id.as_deref(), body);
                    if !repeated {
                        app.announce_submitted(&job).await;
                    }
                }
                Err(error) => {
                    let body = serde_json::json!({ "queue": queue, "reason": error.to_string() });
                    job_answer(&connection, "herald:job_rejected", request_id.as_deref(), body);
                }
            }
        });
    }

    /// `herald:job_get`: one of the signed-in user's own jobs.
    fn job_get(&mut self, get: JobGet) {
        let Some(user) = &self.user else {
            let body = serde_json::json!({ "id": get.id, "reason": "sign in first" });
            return job_answer(&self.connection, "herald:job_rejected", get.request_id.as_deref(), body);
        };
        let (app, connection, user_id) = (self.app.clone(), self.connection.clone(), user.id.clone());
        tokio::spawn(async move {
            let found = app.job(&get.id).await.ok().flatten().filter(|job| job.user_id.as_deref() == Some(&*user_id));
            let (event, body) = match found {
                Some(job) => ("herald:job_state", serde_json::json!({ "job": job.public() })),
                None => ("herald:job_rejected", serde_json::json!({ "id": get.id, "reason": "no such job" })),
            };
            job_answer(&connection, event, get.request_id.as_deref(), body);
        });
    }
}

impl Session {
    /// Once the subscription is confirmed (and so in place), sends the feed's snapshot and the
    /// unread count: every change after the snapshot's position reaches this connection as an
    /// event, and both answers follow `subscription_succeeded`. A join that is never confirmed
    /// (refused, or unsubscribed first) sends nothing.
    fn after_confirmation(&self, channel: &str, confirmed: Arc<tokio::sync::Notify>, snapshot: bool, unread: bool) {
        let (app, connection, channel) = (self.app.clone(), self.connection.clone(), channel.to_owned());
        let user = self.user.as_ref().map(|user| user.id.clone());
        tokio::spawn(async move {
            if tokio::time::timeout(CONFIRMATION_WAIT, confirmed.notified()).await.is_err() {
                return;
            }
            if snapshot {
                app.send_feed_snapshot(&connection, &channel).await;
            }
            if let (true, Some(user)) = (unread, user) {
                send_unread(&app, &connection, &user, &channel).await;
            }
        });
    }

    fn send_feed_snapshot(&self, channel: &str) {
        let (app, connection, channel) = (self.app.clone(), self.connection.clone(), channel.to_owned());
        tokio::spawn(async move { app.send_feed_snapshot(&connection, &channel).await });
    }

    /// `herald:feed_snapshot_request`: only for a feed channel this connection subscribed to.
    fn feed_snapshot_request(&self, channel: &str) {
        if !is_feed_channel(channel) || !self.subscriptions.contains_key(channel) {
            let message = "feed snapshot refused: subscribe to the feed channel first";
            return self.reject(ErrorCode::ClientEventRejected, message);
        }
        self.send_feed_snapshot(channel);
    }

    /// `herald:mark_read`: moves the signed-in user's cursor; the answer is `herald:read` on the
    /// user's stream, which every connection of the user gets.
    fn mark_read(&mut self, mark: MarkRead, now: Instant) {
        let Some(user) = &self.user else {
            return self.reject(ErrorCode::ClientEventRejected, "mark_read refused: sign in first");
        };
        if ChannelName::parse(&mark.channel, self.app.config.max_channel_name_len).is_err() {
            return self.reject(ErrorCode::ClientEventRejected, "mark_read refused: invalid channel name");
        }
        if !self.client_events.try_take(now) {
            let max = self.app.config.client_events_per_second;
            let message = format!("mark_read refused: more than {max} requests per second");
            return self.reject(ErrorCode::ClientEventRateLimited, &message);
        }
        let (app, user) = (self.app.clone(), user.id.clone());
        tokio::spawn(async move {
            if let Err(error) = app.mark_read(&user, &mark.channel, mark.serial).await {
                tracing::warn!(app = %app.id(), "mark_read failed: {error}");
            }
        });
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let now = Instant::now();
        for channel in self.subscriptions.keys() {
            let left = self.app.hub.unsubscribe(channel, self.connection.socket_id, now);
            self.app.left(channel, left);
        }
        if let Some(user) = self.user.take()
            && self.app.users.sign_out(&user.id, self.connection.socket_id, &user.watchlist)
        {
            self.app.user_online_here(&user.id, false, self.connection.socket_id);
        }
        if let Some((code, frames)) = self.connection.outbox.dropped() {
            self.app.counters().frames_dropped(code.code(), frames);
        }
        self.app.remove_connection();
    }
}
