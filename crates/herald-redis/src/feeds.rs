//! Feeds kept in Redis: the Redis engine's [`FeedStore`], shared by every node.
//!
//! A feed lives in its channel's slot (`{<app>:<channel>}`): a list of ids in order, a hash of
//! id → value, a sorted set of id → serial of the last change, and a sorted set of retracted ids
//! by serial (the newest `max_items`; the highest one forgotten is the feed's horizon). One script
//! checks a change, stores it and publishes its event through the same `publish_event` Lua function
//! the engine's publish uses: the change takes the channel's next serial, goes into its history and
//! reaches every listening node as an ordinary channel event. The feed's channel meta is made
//! persistent there too, so the serials the items carry never fall into a new epoch.
//!
//! Values pass through Lua as text, never decoded (cjson would rewrite numbers). A merge edit is
//! computed here, in Rust, from the item as read, and the script stores it only if the item's serial
//! is still the one read; otherwise the edit is read and merged again.

use std::sync::{Arc, LazyLock};

use herald_core::feeds::{
    self, Applied, FeedChange, FeedChanges, FeedError, FeedFuture, FeedItem, FeedPosition, FeedRef, FeedSnapshot,
    FeedStore, Place, Publish, merge,
};
use redis::{Script, Value};
use serde_json::value::RawValue;

use crate::keys::ChannelKeys;
use crate::scripts::PUBLISH_EVENT;
use crate::{Inner, META_TTL};

/// How often a merge edit is read and merged again when the item keeps changing under it.
const MERGE_ATTEMPTS: usize = 64;

/// `quote(s)`: `s` as a JSON string, escaped exactly as serde_json escapes it.
const QUOTE: &str = r#"
local escapes = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n',
  ['\r'] = '\\r', ['\t'] = '\\t'}
local function quote(s)
  local escaped = string.gsub(s, '[%z\1-\31"\\]', function(c)
    return escapes[c] or string.format('\\u%04x', string.byte(c))
  end)
  return '"' .. escaped .. '"'
end
"#;

/// KEYS: meta, history, cache, order, values, serials, retracted, state. ARGV: kind (publish, edit,
/// retract, move), event, id, value, place (end, index, before, after, or ''), index or anchor, max
/// items, the item's serial the value was computed from ('' when it does not matter), then the
/// publish arguments: epoch if new, keep, history ttl ms, meta ttl ms, cache ttl ms, pub/sub
/// channel, publish command. Returns {'ok', serial, epoch, data}, {'exists'}, {'full'},
/// {'unknown', id} or {'stale'}.
static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PUBLISH_EVENT}{QUOTE}{}",
        r#"
local order, values, serials, retracted = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local kind, id, place, anchor, max = ARGV[1], ARGV[3], ARGV[5], ARGV[6], tonumber(ARGV[7])
local exists = redis.call('HEXISTS', values, id) == 1
if kind == 'publish' then
  if exists then return {'exists'} end
  if redis.call('HLEN', values) >= max then return {'full'} end
elseif not exists then
  return {'unknown', id}
end
if ARGV[8] ~= '' and tonumber(redis.call('ZSCORE', serials, id)) ~= tonumber(ARGV[8]) then return {'stale'} end
if (place == 'before' or place == 'after') and redis.call('HEXISTS', values, anchor) == 0 then
  return {'unknown', anchor}
end

local data = '{"id":' .. quote(id)
if kind == 'publish' or kind == 'edit' then data = data .. ',"value":' .. ARGV[4] end
if kind == 'publish' or kind == 'move' then
  if kind == 'move' then redis.call('LREM', order, 1, id) end
  local after = false
  if place == 'after' then
    redis.call('LINSERT', order, 'AFTER', anchor, id)
    after = anchor
  else
    local len = redis.call('LLEN', order)
    local at = len
    if place == 'before' then at = redis.call('LPOS', order, anchor) end
    if place == 'index' then at = math.min(tonumber(anchor), len) end
    if at > 0 then after = redis.call('LINDEX', order, at - 1) end
    if at >= len then
      redis.call('RPUSH', order, id)
    elseif at == 0 then
      redis.call('LPUSH', order, id)
    else
      redis.call('LINSERT', order, 'BEFORE', redis.call('LINDEX', order, at), id)
    end
  end
  if after then data = data .. ',"after":' .. quote(after) else data = data .. ',"after":null' end
end
data = data .. '}'

local payload = '{"e":' .. quote(ARGV[2]) .. ',"d":' .. quote(data) .. '}'
local serial, epoch = publish_event(KEYS[1], KEYS[2], KEYS[3], ARGV[9], payload, ARGV[10], ARGV[11], ARGV[12],
  ARGV[13], ARGV[14], ARGV[15], true)
if kind == 'retract' then
  redis.call('HDEL', values, id)
  redis.call('ZREM', serials, id)
  redis.call('LREM', order, 1, id)
  redis.call('ZADD', retracted, serial, id)
  local over = redis.call('ZCARD', retracted) - max
  if over > 0 then
    local forgotten = redis.call('ZPOPMIN', retracted, over)
    redis.call('HSET', KEYS[8], 'horizon', forgotten[#forgotten])
  end
else
  if kind ~= 'move' then redis.call('HSET', values, id, ARGV[4]) end
  redis.call('ZADD', serials, serial, id)
  if kind == 'publish' then redis.call('ZREM', retracted, id) end
end
return {'ok', serial, epoch, data}
"#
    ))
});

/// KEYS: meta, order, values, serials, retracted, state. ARGV: since, epoch asked ('' for any),
/// everything (1/0). Returns {epoch, head, complete (1/0), order, items as id/value/serial list,
/// retracted ids}: the items changed after `since`, or every item when complete.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local head = redis.call('HGET', KEYS[1], 'head') or '0'
local since = tonumber(ARGV[1])
local horizon = tonumber(redis.call('HGET', KEYS[6], 'horizon') or '0')
local complete = ARGV[3] == '1' or (ARGV[2] ~= '' and ARGV[2] ~= epoch) or since < horizon
  or since > tonumber(head)
local scored
if complete then
  scored = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
else
  scored = redis.call('ZRANGE', KEYS[4], '(' .. ARGV[1], '+inf', 'BYSCORE', 'WITHSCORES')
end
local serial_of = {}
for i = 1, #scored, 2 do serial_of[scored[i]] = scored[i + 1] end
local order = redis.call('LRANGE', KEYS[2], 0, -1)
local items = {}
for _, id in ipairs(order) do
  local serial = serial_of[id]
  if serial then
    table.insert(items, id)
    table.insert(items, redis.call('HGET', KEYS[3], id) or '')
    table.insert(items, serial)
  end
end
local retracted = {}
if not complete then retracted = redis.call('ZRANGE', KEYS[5], '(' .. ARGV[1], '+inf', 'BYSCORE') end
return {epoch, head, complete and 1 or 0, order, items, retracted}
",
    )
});

/// KEYS: values, serials. ARGV: id. Returns {value, serial} or false.
static ITEM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return false end
return {value, redis.call('ZSCORE', KEYS[2], ARGV[1])}
",
    )
});

/// Feeds on the engine's Redis.
#[derive(Debug, Clone)]
pub struct RedisFeeds {
    inner: Arc<Inner>,
}

fn unavailable(error: redis::RedisError) -> FeedError {
    FeedError::Unavailable(error.to_string())
}

fn malformed(what: &str) -> FeedError {
    FeedError::Unavailable(format!("malformed feed in Redis: {what}"))
}

/// A serial as Redis gives it back: an integer, or a sorted-set score.
fn serial_of(text: &str) -> Result<u64, FeedError> {
    text.parse::<u64>().or_else(|_| text.parse::<f64>().map(|s| s as u64)).map_err(|_| malformed("serial"))
}

fn item_of(id: String, value: String, serial: &str) -> Result<FeedItem, FeedError> {
    let value = RawValue::from_string(value).map_err(|_| malformed("item value"))?;
    Ok(FeedItem { id, value, serial: serial_of(serial)? })
}

fn check_feed(feed: &FeedRef) -> Result<(), FeedError> {
    if feeds::is_feed_channel(&feed.channel) { Ok(()) } else { Err(FeedError::NotAFeed(feed.channel.clone())) }
}

/// The script's name for a place, and its index or anchor.
fn place_args(place: Option<&Place>) -> (&'static str, String) {
    match place {
        None => ("", String::new()),
        Some(Place::End) => ("end", String::new()),
        Some(Place::Index(index)) => ("index", index.to_string()),
        Some(Place::Before(anchor)) => ("before", anchor.clone()),
        Some(Place::After(anchor)) => ("after", anchor.clone()),
    }
}

/// What a read script found.
struct Read {
    position: FeedPosition,
    complete: bool,
    order: Vec<String>,
    items: Vec<FeedItem>,
    retracted: Vec<String>,
}

impl RedisFeeds {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    fn keys(&self, feed: &FeedRef) -> ChannelKeys {
        self.inner.keys.channel(&feed.app, &feed.channel)
    }

    async fn read(&self, feed: &FeedRef, since: u64, epoch: Option<&str>, everything: bool) -> Result<Read, FeedError> {
        type Reply = (String, String, u8, Vec<String>, Vec<String>, Vec<String>);
        let keys = self.keys(feed);
        let (epoch, head, complete, order, flat, retracted): Reply = READ
            .key(keys.meta())
            .key(keys.feed_order())
            .key(keys.feed_values())
            .key(keys.feed_serials())
            .key(keys.feed_retracted())
            .key(keys.feed_state())
            .arg(since)
            .arg(epoch.unwrap_or(""))
            .arg(if everything { "1" } else { "0" })
            .invoke_async(&mut self.inner.conn())
            .await
            .map_err(unavailable)?;
        let mut items = Vec::with_capacity(flat.len() / 3);
        let mut flat = flat.into_iter();
        while let (Some(id), Some(value), Some(serial)) = (flat.next(), flat.next(), flat.next()) {
            items.push(item_of(id, value, &serial)?);
        }
        let position = FeedPosition { epoch, serial: serial_of(&head)? };
        Ok(Read { position, complete: complete == 1, order, items, retracted })
    }

    async fn read_item(&self, feed: &FeedRef, id: &str) -> Result<Option<FeedItem>, FeedError> {
        let keys = self.keys(feed);
        let found: Option<(String, String)> = ITEM
            .key(keys.feed_values())
            .key(keys.feed_serials())
            .arg(id)
            .invoke_async(&mut self.inner.conn())
            .await
            .map_err(unavailable)?;
        found.map(|(value, serial)| item_of(id.to_owned(), value, &serial)).transpose()
    }

    /// Runs the change's script once; `None` when the item was no longer at `expect`.
    async fn store(
        &self,
        feed: &FeedRef,
        change: &FeedChange,
        value: Option<&str>,
        expect: Option<u64>,
    ) -> Result<Option<Applied>, FeedError> {
        let (kind, place) = match change {
            FeedChange::Publish { place, .. } => ("publish", Some(place)),
            FeedChange::Edit { .. } => ("edit", None),
            FeedChange::Retract { .. } => ("retract", None),
            FeedChange::Move { place, .. } => ("move", Some(place)),
        };
        let (place, anchor) = place_args(place);
        let keys = self.keys(feed);
        let retention = feed.retention;
        let reply: Value = APPLY
            .key(keys.meta())
            .key(keys.history())
            .key(keys.cache())
            .key(keys.feed_order())
            .key(keys.feed_values())
            .key(keys.feed_serials())
            .key(keys.feed_retracted())
            .key(keys.feed_state())
            .arg(kind)
            .arg(change.event())
            .arg(change.id())
            .arg(value.unwrap_or(""))
            .arg(place)
            .arg(anchor)
            .arg(feed.limits.max_items)
            .arg(expect.map(|s| s.to_string()).unwrap_or_default())
            .arg(herald_core::engine::fresh_epoch())
            .arg(retention.max_events)
            .arg(retention.max_age_ms.max(1))
            .arg(META_TTL.as_millis() as u64)
            .arg(retention.cache_ttl_ms)
            .arg(&keys.tag)
            .arg(self.inner.target.publish_command())
            .invoke_async(&mut self.inner.conn())
            .await
            .map_err(unavailable)?;
        let Value::Array(parts) = reply else { return Err(malformed("reply")) };
        let text = |i: usize| -> Option<String> { parts.get(i).and_then(|v| redis::from_redis_value_ref(v).ok()) };
        match text(0).as_deref() {
            Some("ok") => {
                let (serial, epoch, data) = (text(1), text(2), text(3));
                let (Some(serial), Some(epoch), Some(data)) = (serial, epoch, data) else {
                    return Err(malformed("reply"));
                };
                let position = FeedPosition { epoch, serial: serial_of(&serial)? };
                Ok(Some(Applied { event: change.event(), data, position }))
            }
            Some("exists") => Err(FeedError::ItemExists(change.id().to_owned())),
            Some("full") => Err(FeedError::FeedFull { max: feed.limits.max_items }),
            Some("unknown") => Err(FeedError::UnknownItem(text(1).unwrap_or_else(|| change.id().to_owned()))),
            Some("stale") => Ok(None),
            _ => Err(malformed("reply")),
        }
    }
}

impl FeedStore for RedisFeeds {
    /// `publish` is not called: the script publishes through Redis, like the engine does.
    fn apply(&self, feed: FeedRef, change: FeedChange, _publish: Publish) -> FeedFuture<'_, Applied> {
        Box::pin(async move {
            check_feed(&feed)?;
            feeds::check_change(&change, feed.limits)?;
            for _ in 0..MERGE_ATTEMPTS {
                let merged: Box<RawValue>;
                let (value, expect) = match &change {
                    FeedChange::Edit { id, value: patch, merge: true } => {
                        let current =
                            self.read_item(&feed, id).await?.ok_or_else(|| FeedError::UnknownItem(id.clone()))?;
                        merged = merge::merge_patch(&current.value, patch)?;
                        feeds::check_size(&merged, feed.limits)?;
                        (Some(merged.get()), Some(current.serial))
                    }
                    FeedChange::Publish { value, .. } | FeedChange::Edit { value, .. } => (Some(value.get()), None),
                    FeedChange::Retract { .. } | FeedChange::Move { .. } => (None, None),
                };
                if let Some(applied) = self.store(&feed, &change, value, expect).await? {
                    return Ok(applied);
                }
            }
            Err(FeedError::Unavailable(format!("item {:?} kept changing during a merge edit", change.id())))
        })
    }

    fn snapshot(&self, feed: FeedRef) -> FeedFuture<'_, FeedSnapshot> {
        Box::pin(async move {
            check_feed(&feed)?;
            let read = self.read(&feed, 0, None, true).await?;
            Ok(FeedSnapshot { items: read.items, position: read.position })
        })
    }

    fn changes(&self, feed: FeedRef, since: u64, epoch: Option<String>) -> FeedFuture<'_, FeedChanges> {
        Box::pin(async move {
            check_feed(&feed)?;
            let read = self.read(&feed, since, epoch.as_deref(), false).await?;
            Ok(FeedChanges {
                items: read.items,
                retracted: read.retracted,
                order: read.order,
                position: read.position,
                complete: read.complete,
            })
        })
    }

    fn item(&self, feed: FeedRef, id: String) -> FeedFuture<'_, Option<FeedItem>> {
        Box::pin(async move {
            check_feed(&feed)?;
            self.read_item(&feed, &id).await
        })
    }
}
