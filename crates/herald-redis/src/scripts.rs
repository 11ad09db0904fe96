//! The Lua scripts that make each shared change atomic.
//!
//! Publish takes the next serial, appends to history, trims, sets expiries, updates the cache and
//! publishes, all in one script: no node can see serial 7 before serial 6, and history never has
//! a hole. Presence join and leave count nodes per user in the channel's slot, so `member_added`
//! and `member_removed` are published exactly once however many nodes race.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: meta, history, cache. ARGV: epoch if new, payload, keep, history ttl ms, meta ttl ms,
/// cache ttl ms (0: not a cache channel), pub/sub channel, publish command (SPUBLISH in a
/// cluster). Returns the serial.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'head', 0)
end
local serial = redis.call('HINCRBY', KEYS[1], 'head', 1)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local msg = 'E\n' .. serial .. '\n' .. epoch .. '\n' .. string.format('%d', ms) .. '\n' .. ARGV[2]
local keep = tonumber(ARGV[3])
if keep > 0 then
  redis.call('RPUSH', KEYS[2], msg)
  redis.call('LTRIM', KEYS[2], -keep, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[3], msg, 'PX', ARGV[6])
end
redis.call(ARGV[8], ARGV[7], msg)
return serial
",
    )
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
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
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
