//! The Lua scripts that make each shared change atomic.
//!
//! Publish takes the next serial, appends to history, trims, sets expiries, updates the cache and
//! publishes, all in one script: no node can see serial 7 before serial 6, and history never has
//! a hole. Presence join and leave count nodes per user in the channel's slot, so `member_added`
//! and `member_removed` are published exactly once however many nodes race. The publish step is
//! one Lua function ([`PUBLISH_EVENT`]) that the feed scripts share, so a feed change is stored and
//! published in the same script. A channel's meta (epoch and serial) expires after a quiet spell,
//! except where a feed or counted events made it persistent: those serials are remembered elsewhere.

use std::sync::LazyLock;

use redis::Script;

/// Defines `publish_event(meta, history, cache, epoch if new, payload, keep, history ttl ms, meta ttl
/// ms, cache ttl ms, pub/sub channel, publish command, persist)`, which returns the serial and the
/// epoch. Every script that publishes a channel event starts with it, so an event from a feed script
/// is an ordinary channel event. A meta key that has no expiry (a feed's, or a channel with counted
/// events) keeps none: its serials must outlive any quiet spell. `persist` makes it so.
pub(crate) const PUBLISH_EVENT: &str = r"
local function publish_event(meta, hist, cache, fresh, payload, keep, hist_ttl, meta_ttl, cache_ttl, channel, command, persist)
  local epoch = redis.call('HGET', meta, 'epoch')
  local created = false
  if not epoch then
    epoch = fresh
    created = true
    redis.call('HSET', meta, 'epoch', epoch, 'head', 0)
  end
  local serial = redis.call('HINCRBY', meta, 'head', 1)
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local msg = 'E\n' .. serial .. '\n' .. epoch .. '\n' .. string.format('%d', ms) .. '\n' .. payload
  keep = tonumber(keep)
  if keep > 0 then
    redis.call('RPUSH', hist, msg)
    redis.call('LTRIM', hist, -keep, -1)
    redis.call('PEXPIRE', hist, hist_ttl)
  end
  if persist then
    redis.call('PERSIST', meta)
  elseif created or redis.call('PTTL', meta) >= 0 then
    redis.call('PEXPIRE', meta, meta_ttl)
  end
  if tonumber(cache_ttl) > 0 then
    redis.call('SET', cache, msg, 'PX', cache_ttl)
  end
  redis.call(command, channel, msg)
  return serial, epoch
end
";

/// KEYS: meta, history, cache. ARGV: epoch if new, payload, keep, history ttl ms, meta ttl ms,
/// cache ttl ms (0: not a cache channel), pub/sub channel, publish command (SPUBLISH in a
/// cluster). Returns the serial.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PUBLISH_EVENT}
local serial = publish_event(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7], ARGV[8], false)
return serial
"
    ))
});

/// KEYS: meta, history, cache, members. ARGV: epoch if new, meta ttl ms, create (1/0).
/// Returns {epoch, head, history, cached or '', members as field/value list}, or false.
pub(crate) static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[3] ~= '1' then return false end
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'head', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif redis.call('PTTL', KEYS[1]) >= 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local head = redis.call('HGET', KEYS[1], 'head')
local cached = redis.call('GET', KEYS[3]) or ''
return {epoch, head, redis.call('LRANGE', KEYS[2], 0, -1), cached, redis.call('HGETALL', KEYS[4])}
",
    )
});

/// KEYS: members, member nodes, member counts. ARGV: user, node, user_info, pub/sub channel,
/// message, publish command. Returns 1 when the user became a member.
pub(crate) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HSETNX', KEYS[2], ARGV[1] .. '\n' .. ARGV[2], 1) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[3], ARGV[1], 1) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call(ARGV[6], ARGV[4], ARGV[5])
  return 1
end
return 0
",
    )
});

/// KEYS: members, member nodes, member counts. ARGV: user, node, pub/sub channel, message,
/// publish command. Returns 1 when the user stopped being a member.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HDEL', KEYS[2], ARGV[1] .. '\n' .. ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[3], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call(ARGV[5], ARGV[3], ARGV[4])
  return 1
end
return 0
",
    )
});

/// KEYS: webhooked, webhook nodes, webhook member nodes, webhook member counts, subscriptions.
/// ARGV: kind (occupied, vacated, added, removed, count), this node, user, this node's count.
/// What webhooks told is kept per channel ("o", "m\n<user>"), and which nodes reported the channel
/// (a member) and have not reported it gone: so each change is told once, by the first node that
/// sees it, and a departure only when no other node still holds the channel (the member). Every
/// node reports its own arrivals before its departures, so this never waits on the nodes' counts.
/// Returns 1 to tell, 0 not to; for count, the subscriptions summed over nodes with this node's
/// own count (its flushed one may be behind).
pub(crate) static ARBITRATE_WEBHOOK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local kind, node, user = ARGV[1], ARGV[2], ARGV[3]
if kind == 'occupied' then
  redis.call('HSET', KEYS[2], node, 1)
  return redis.call('HSETNX', KEYS[1], 'o', 1)
elseif kind == 'vacated' then
  redis.call('HDEL', KEYS[2], node)
  if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
  return redis.call('HDEL', KEYS[1], 'o')
elseif kind == 'added' then
  if redis.call('HSETNX', KEYS[3], user .. '\n' .. node, 1) == 1 then
    redis.call('HINCRBY', KEYS[4], user, 1)
  end
  return redis.call('HSETNX', KEYS[1], 'm\n' .. user, 1)
elseif kind == 'removed' then
  if redis.call('HDEL', KEYS[3], user .. '\n' .. node) == 1 and redis.call('HINCRBY', KEYS[4], user, -1) <= 0 then
    redis.call('HDEL', KEYS[4], user)
  end
  if tonumber(redis.call('HGET', KEYS[4], user) or '0') > 0 then return 0 end
  return redis.call('HDEL', KEYS[1], 'm\n' .. user)
end
local total = tonumber(ARGV[4])
local subs = redis.call('HGETALL', KEYS[5])
for i = 1, #subs, 2 do
  if subs[i] ~= node then total = total + tonumber(subs[i + 1]) end
end
return total
",
    )
});

/// KEYS: webhook nodes, webhook member nodes, webhook member counts. ARGV: a dead node, a user of
/// it ('' for the channel itself). Forgets what the dead node reported, so that the departure the
/// withdrawing node then reports is judged without it.
pub(crate) static FORGET_WEBHOOK_NODE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local node, user = ARGV[1], ARGV[2]
if user == '' then
  return redis.call('HDEL', KEYS[1], node)
end
if redis.call('HDEL', KEYS[2], user .. '\n' .. node) == 1 and redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
  redis.call('HDEL', KEYS[3], user)
end
return 1
",
    )
});
