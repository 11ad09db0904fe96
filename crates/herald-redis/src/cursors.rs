//! Read cursors and unread counts kept in Redis: the Redis engine's [`CursorStore`].
//!
//! Everything of one channel lives in its slot (`{<app>:<channel>}`): a sorted set of the serials of
//! its counted events (the newest `keep`), the epoch they belong to, and a hash of user → cursor. So
//! moving a cursor and counting what is after it is one script, and a cursor can only move forward
//! however many nodes mark it at once. A count in a new epoch forgets the old serials and cursors
//! (serials start again), and keeps the channel's meta from expiring, so the epoch changes only when
//! Redis loses data. An unread query over several channels is one script per channel (several slots
//! in a cluster), run concurrently; there is no per-user index of channels.

use std::sync::{Arc, LazyLock};

use futures_util::future::try_join_all;
use herald_core::cursors::{CursorError, CursorFuture, CursorStore, Unread};
use redis::Script;

use crate::Inner;

/// KEYS: counted, counted epoch, cursors, meta. ARGV: serial, keep, epoch. The epoch is the
/// channel's own (from its meta, which the publish just wrote); the caller's (which may not know
/// it) only when the channel has no meta.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[4], 'epoch') or ARGV[3]
local known = redis.call('GET', KEYS[2])
if known ~= epoch then
  if known then redis.call('DEL', KEYS[1], KEYS[3]) end
  redis.call('SET', KEYS[2], epoch)
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[2]) + 1))
redis.call('PERSIST', KEYS[4])
return 1
",
    )
});

/// KEYS: cursors, counted. ARGV: user, serial. Returns {cursor, unread, moved (1/0)}.
static MARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cursor = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
local moved = 0
if tonumber(ARGV[2]) > tonumber(cursor) then
  cursor = ARGV[2]
  redis.call('HSET', KEYS[1], ARGV[1], cursor)
  moved = 1
end
return {cursor, redis.call('ZCOUNT', KEYS[2], '(' .. cursor, '+inf'), moved}
",
    )
});

/// KEYS: cursors, counted. ARGV: user. Returns {cursor, unread}.
static UNREAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cursor = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
return {cursor, redis.call('ZCOUNT', KEYS[2], '(' .. cursor, '+inf')}
",
    )
});

/// Read cursors on the engine's Redis.
#[derive(Debug, Clone)]
pub struct RedisCursors {
    inner: Arc<Inner>,
}

fn unavailable(error: redis::RedisError) -> CursorError {
    CursorError::Unavailable(error.to_string())
}

fn cursor_of(text: &str) -> Result<u64, CursorError> {
    text.parse().map_err(|_| CursorError::Unavailable(format!("malformed cursor in Redis: {text:?}")))
}

impl RedisCursors {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    async fn unread_one(&self, app: &str, user: &str, channel: String) -> Result<Unread, CursorError> {
        let keys = self.inner.keys.channel(app, &channel);
        let (cursor, unread): (String, u64) = UNREAD
            .key(keys.cursors())
            .key(keys.counted())
            .arg(user)
            .invoke_async(&mut self.inner.conn())
            .await
            .map_err(unavailable)?;
        Ok(Unread { cursor: cursor_of(&cursor)?, unread, channel })
    }
}

impl CursorStore for RedisCursors {
    fn count(&self, app: &str, channel: &str, epoch: &str, serial: u64, keep: usize) -> CursorFuture<'_, ()> {
        let keys = self.inner.keys.channel(app, channel);
        let mut invocation = COUNT.prepare_invoke();
        invocation
            .key(keys.counted())
            .key(keys.counted_epoch())
            .key(keys.cursors())
            .key(keys.meta())
            .arg(serial)
            .arg(keep)
            .arg(epoch);
        let mut conn = self.inner.conn();
        Box::pin(async move { invocation.invoke_async::<()>(&mut conn).await.map_err(unavailable) })
    }

    fn mark_read(&self, app: &str, user: &str, channel: &str, serial: u64) -> CursorFuture<'_, (Unread, bool)> {
        let keys = self.inner.keys.channel(app, channel);
        let mut invocation = MARK.prepare_invoke();
        invocation.key(keys.cursors()).key(keys.counted()).arg(user).arg(serial);
        let (mut conn, channel) = (self.inner.conn(), channel.to_owned());
        Box::pin(async move {
            let (cursor, unread, moved): (String, u64, u8) =
                invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
            Ok((Unread { channel, cursor: cursor_of(&cursor)?, unread }, moved == 1))
        })
    }

    fn unread(&self, app: &str, user: &str, channels: Vec<String>) -> CursorFuture<'_, Vec<Unread>> {
        let (app, user) = (app.to_owned(), user.to_owned());
        Box::pin(async move { try_join_all(channels.into_iter().map(|c| self.unread_one(&app, &user, c))).await })
    }
}
