// Public, private and presence channels: subscribe/unsubscribe, auth, presence membership,
// invalid names and limits.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, subscribed, waitFor, uniq, channelAuth, assertNoneBefore,
} from './harness.mjs';

const MAIN = { id: '1', key: 'app-key', secret: 'app-secret' };
const SMALL = {
  id: '2', key: 'small-key', secret: 'small-secret', max_presence_members: 2, max_channels_per_connection: 3,
};

let h;
before(async () => { h = await startHerald({ apps: [MAIN, SMALL] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

function assertSubscriptionError(f, channel, type, status) {
  assert.equal(f.event, 'pusher:subscription_error', f.raw);
  assert.equal(f.channel, channel, f.raw);
  assert.equal(f.data.type, type, f.raw);
  assert.equal(f.data.status, status, f.raw);
  assert.equal(typeof f.data.error, 'string', f.raw);
}

// ---------------------------------------------------------------------------------------------
// Public
// ---------------------------------------------------------------------------------------------

test('public: subscription_succeeded frame and verbatim relay of HTTP-published data', async () => {
  const ch = uniq('public');
  const c = await h.raw();
  const ok = await c.subscribeOk(ch);
  assert.equal(ok.channel, ch);
  if (ok.msg.data !== undefined) assert.deepEqual(ok.data, {}, ok.raw);

  const sdk = h.sdk();
  await sdk.trigger(ch, 'my-event', '{"a":1,"b":"x"}');
  const f = await c.event('my-event', { channel: ch });
  assert.equal(f.msg.data, '{"a":1,"b":"x"}', 'data is relayed as the exact string published');

  await sdk.trigger(ch, 'plain', 'hello world');
  const g = await c.event('plain', { channel: ch });
  assert.equal(g.msg.data, 'hello world');
  assert.equal(g.msg.user_id, undefined);
});

test('public: pusher-js receives objects published by the server SDK', async () => {
  const ch = uniq('public');
  const client = await h.connectedPusher();
  const channel = await subscribed(client, ch);
  const got = waitFor(channel, 'order-shipped');
  await h.sdk().trigger(ch, 'order-shipped', { id: 42, items: ['a', 'b'], nested: { ok: true } });
  assert.deepEqual(await got, { id: 42, items: ['a', 'b'], nested: { ok: true } });
});

test('public: every subscriber receives, events on one channel arrive in publish order', async () => {
  const ch = uniq('public');
  const clients = await Promise.all([1, 2, 3].map(() => h.raw()));
  for (const c of clients) await c.subscribeOk(ch);
  const sdk = h.sdk();
  for (let i = 0; i < 20; i += 1) await sdk.trigger(ch, 'seq', String(i));
  for (const c of clients) {
    const got = [];
    for (let i = 0; i < 20; i += 1) got.push((await c.event('seq', { channel: ch })).msg.data);
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => String(i)));
  }
});

test('unsubscribe stops delivery on that channel only', async () => {
  const ch1 = uniq('unsub');
  const ch2 = uniq('keep');
  const a = await h.raw();
  const witness = await h.raw();
  await a.subscribeOk(ch1);
  await a.subscribeOk(ch2);
  await witness.subscribeOk(ch1);

  a.send({ event: 'pusher:unsubscribe', data: { channel: ch1 } });
  await a.ping(); // the unsubscribe has been processed once the pong is back
  assert.equal(a.all((m) => m.channel === ch1 && m.event !== 'pusher_internal:subscription_succeeded').length, 0,
    'unsubscribe is not acknowledged');

  const sdk = h.sdk();
  await sdk.trigger(ch1, 'after-unsub', 'x');
  await witness.event('after-unsub', { channel: ch1 }); // it has been fanned out
  await sdk.trigger(ch2, 'barrier', 'y');
  const barrier = await a.event('barrier', { channel: ch2 });
  assertNoneBefore(a, barrier, (m) => m.event === 'after-unsub', 'event delivered after unsubscribe');
});

test('apps are isolated: same channel name in two apps', async () => {
  const ch = uniq('shared');
  const a = await h.raw({ app: MAIN });
  const b = await h.raw({ app: SMALL });
  await a.subscribeOk(ch);
  await b.subscribeOk(ch);
  await h.sdk(MAIN).trigger(ch, 'for-main', 'm');
  await a.event('for-main', { channel: ch });
  await h.sdk(SMALL).trigger(ch, 'for-small', 's');
  const bf = await b.event('for-small', { channel: ch });
  assertNoneBefore(b, bf, (m) => m.event === 'for-main', 'event leaked across apps');
  await a.ping();
  assert.equal(a.all('for-small').length, 0);
});

// ---------------------------------------------------------------------------------------------
// Private
// ---------------------------------------------------------------------------------------------

test('private: correct signature subscribes; pusher-js private channel receives', async () => {
  const ch = uniq('private');
  const c = await h.raw();
  await c.subscribeOk(`private-${ch}`);

  const client = await h.connectedPusher();
  const channel = await subscribed(client, `private-${ch}`);
  const got = waitFor(channel, 'secret-event');
  await h.sdk().trigger(`private-${ch}`, 'secret-event', { s: 1 });
  assert.deepEqual(await got, { s: 1 });
});

test('private: bad, missing, foreign-socket and wrong-key signatures get AuthError 401', async () => {
  const c = await h.raw();
  const other = await h.raw();
  const ch = `private-${uniq('p')}`;
  const cases = {
    bad: `${MAIN.key}:${'0'.repeat(64)}`,
    foreignSocket: channelAuth(MAIN, other.socketId, ch),
    wrongKey: channelAuth({ key: 'not-the-key', secret: MAIN.secret }, c.socketId, ch),
    wrongSecret: channelAuth({ key: MAIN.key, secret: 'wrong' }, c.socketId, ch),
    garbage: 'garbage',
    empty: '',
  };
  for (const [name, auth] of Object.entries(cases)) {
    const f = await c.subscribeErr(ch, { auth });
    assertSubscriptionError(f, ch, 'AuthError', 401);
    assert.ok(f, name);
  }
  // no auth field at all
  c.send({ event: 'pusher:subscribe', data: { channel: ch } });
  const f = await c.event('pusher:subscription_error', { channel: ch });
  assertSubscriptionError(f, ch, 'AuthError', 401);
  // the connection stays usable and the channel still works with a valid signature
  await c.ping();
  await c.subscribeOk(ch);
});

test('private: a failed subscription does not deliver events', async () => {
  const ch = `private-${uniq('p')}`;
  const bad = await h.raw();
  const good = await h.raw();
  await bad.subscribeErr(ch, { auth: `${MAIN.key}:${'f'.repeat(64)}` });
  await good.subscribeOk(ch);
  await h.sdk().trigger(ch, 'leak', 'x');
  await good.event('leak', { channel: ch });
  const pong = await bad.ping();
  assertNoneBefore(bad, pong, (m) => m.event === 'leak', 'event delivered to an unauthorized socket');
});

test('pusher-js reports the server subscription_error for a wrong signature', async () => {
  const ch = `private-${uniq('p')}`;
  const client = h.pusherClient({
    authorize: (_params, cb) => cb(null, { auth: `${MAIN.key}:${'a'.repeat(64)}` }),
  });
  const channel = client.subscribe(ch);
  const err = await waitFor(channel, 'pusher:subscription_error');
  assert.equal(err.type, 'AuthError');
  assert.equal(err.status, 401);
  assert.equal(channel.subscribed, false);
});

// ---------------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------------

test('presence: subscription_succeeded carries ids, hash and count', async () => {
  const ch = `presence-${uniq('room')}`;
  const a = await h.raw();
  const okA = await a.subscribeOk(ch, { presence: { user_id: 'u1', user_info: { name: 'Ann' } } });
  assert.equal(okA.dataIsString, true, okA.raw);
  assert.deepEqual(okA.data, { presence: { ids: ['u1'], hash: { u1: { name: 'Ann' } }, count: 1 } });

  const b = await h.raw();
  const okB = await b.subscribeOk(ch, { presence: { user_id: 'u2', user_info: { name: 'Bob' } } });
  assert.deepEqual([...okB.data.presence.ids].sort(), ['u1', 'u2']);
  assert.deepEqual(okB.data.presence.hash, { u1: { name: 'Ann' }, u2: { name: 'Bob' } });
  assert.equal(okB.data.presence.count, 2);

  const added = await a.event('pusher_internal:member_added', { channel: ch });
  assert.equal(added.dataIsString, true, added.raw);
  assert.deepEqual(added.data, { user_id: 'u2', user_info: { name: 'Bob' } });
});

test('presence: member_added/removed once per user, never to the socket that caused it', async () => {
  const ch = `presence-${uniq('room')}`;
  const watcher = await h.raw();
  await watcher.subscribeOk(ch, { presence: { user_id: 'watcher' } });

  const u1a = await h.raw();
  await u1a.subscribeOk(ch, { presence: { user_id: 'u1', user_info: { n: 1 } } });
  await watcher.event('pusher_internal:member_added', { channel: ch });

  // second socket of the same user: no member_added, count unchanged
  const u1b = await h.raw();
  const okB = await u1b.subscribeOk(ch, { presence: { user_id: 'u1', user_info: { n: 1 } } });
  assert.equal(okB.data.presence.count, 2, okB.raw);
  assert.deepEqual([...okB.data.presence.ids].sort(), ['u1', 'watcher']);

  // a barrier published after both joins
  const sdk = h.sdk();
  await sdk.trigger(ch, 'barrier-1', '1');
  const b1 = await watcher.event('barrier-1', { channel: ch });
  assert.equal(watcher.all('pusher_internal:member_added').length, 1, `one member_added for u1: ${watcher.dump()}`);
  const selfBarrier = await u1a.event('barrier-1', { channel: ch });
  assertNoneBefore(u1a, selfBarrier, (m) => m.event === 'pusher_internal:member_added' && m.data.user_id === 'u1',
    'member_added sent to the joining user');
  const selfBarrierB = await u1b.event('barrier-1', { channel: ch });
  assertNoneBefore(u1b, selfBarrierB, (m) => m.event === 'pusher_internal:member_added',
    'member_added sent to the joining socket');
  assert.ok(b1);

  // one socket leaves: the user is still there
  u1a.send({ event: 'pusher:unsubscribe', data: { channel: ch } });
  await u1a.ping();
  await sdk.trigger(ch, 'barrier-2', '2');
  const b2 = await watcher.event('barrier-2', { channel: ch });
  assertNoneBefore(watcher, b2, (m) => m.event === 'pusher_internal:member_removed', 'member_removed while a socket remains');

  // last socket disconnects: member_removed exactly once
  await u1b.close();
  const removed = await watcher.event('pusher_internal:member_removed', { channel: ch });
  assert.deepEqual(removed.data, { user_id: 'u1' });
  await sdk.trigger(ch, 'barrier-3', '3');
  await watcher.event('barrier-3', { channel: ch });
  assert.equal(watcher.all('pusher_internal:member_removed').length, 1);

  const info = await h.http({ path: `/apps/${MAIN.id}/channels/${ch}/users` });
  assert.equal(info.status, 200, info.text);
  assert.deepEqual(info.json, { users: [{ id: 'watcher' }] });
});

test('presence: numeric user_id is accepted', async () => {
  const ch = `presence-${uniq('num')}`;
  const a = await h.raw();
  const ok = await a.subscribeOk(ch, { channel_data: '{"user_id":10,"user_info":{"name":"Mr. Channels"}}' });
  assert.equal(ok.data.presence.count, 1);
  assert.equal(String(ok.data.presence.ids[0]), '10');
});

test('presence: signature must cover channel_data exactly', async () => {
  const ch = `presence-${uniq('room')}`;
  const a = await h.raw();
  const signedFor = '{"user_id":"u1"}';
  const auth = channelAuth(MAIN, a.socketId, ch, signedFor);
  const f = await a.subscribeErr(ch, { auth, channel_data: '{"user_id":"admin"}' });
  assertSubscriptionError(f, ch, 'AuthError', 401);
  // signed without channel_data (private-style) is not valid for presence either
  const g = await a.subscribeErr(ch, { auth: channelAuth(MAIN, a.socketId, ch), channel_data: signedFor });
  assertSubscriptionError(g, ch, 'AuthError', 401);
});

test('presence via pusher-js: members, me, member_added and member_removed', async () => {
  const ch = `presence-${uniq('room')}`;
  const alice = await h.connectedPusher({ presence: () => ({ user_id: 'alice', user_info: { name: 'Alice' } }) });
  const aCh = await subscribed(alice, ch);
  assert.equal(aCh.members.count, 1);
  assert.deepEqual(aCh.members.me, { id: 'alice', info: { name: 'Alice' } });

  const added = waitFor(aCh, 'pusher:member_added');
  const bob = await h.connectedPusher({ presence: () => ({ user_id: 'bob', user_info: { name: 'Bob' } }) });
  const bCh = await subscribed(bob, ch);
  assert.deepEqual(await added, { id: 'bob', info: { name: 'Bob' } });
  assert.equal(aCh.members.count, 2);
  assert.equal(bCh.members.count, 2);
  assert.deepEqual(bCh.members.get('alice'), { id: 'alice', info: { name: 'Alice' } });

  const removed = waitFor(aCh, 'pusher:member_removed');
  bob.disconnect();
  assert.deepEqual(await removed, { id: 'bob', info: { name: 'Bob' } });
  assert.equal(aCh.members.count, 1);
});

test('presence: channel full gives LimitReached 429; another socket of a member still fits', async () => {
  const ch = `presence-${uniq('full')}`;
  const a = await h.raw({ app: SMALL });
  const b = await h.raw({ app: SMALL });
  const c = await h.raw({ app: SMALL });
  await a.subscribeOk(ch, { presence: { user_id: 'a' } });
  await b.subscribeOk(ch, { presence: { user_id: 'b' } });
  const f = await c.subscribeErr(ch, { presence: { user_id: 'c' } });
  assertSubscriptionError(f, ch, 'LimitReached', 429);
  await c.ping();
  // same user on a new socket does not add a member
  const a2 = await h.raw({ app: SMALL });
  const ok = await a2.subscribeOk(ch, { presence: { user_id: 'a' } });
  assert.equal(ok.data.presence.count, 2);
  // no member_added for the refused user
  await h.sdk(SMALL).trigger(ch, 'barrier', 'x');
  const bar = await a.event('barrier', { channel: ch });
  assertNoneBefore(a, bar, (m) => m.event === 'pusher_internal:member_added' && m.data.user_id === 'c',
    'member_added for a refused user');
});

test('presence: user_info over 1 KB and user_id over 128 chars get LimitReached 429', async () => {
  const c = await h.raw();
  const big = `presence-${uniq('big')}`;
  const f = await c.subscribeErr(big, { presence: { user_id: 'u', user_info: { x: 'y'.repeat(1100) } } });
  assertSubscriptionError(f, big, 'LimitReached', 429);
  const longId = `presence-${uniq('long')}`;
  const g = await c.subscribeErr(longId, { presence: { user_id: 'u'.repeat(129) } });
  assertSubscriptionError(g, longId, 'LimitReached', 429);
  // the limits themselves are fine
  await c.subscribeOk(longId, { presence: { user_id: 'u'.repeat(128), user_info: { x: 'y'.repeat(900) } } });
});

// ---------------------------------------------------------------------------------------------
// Names and limits
// ---------------------------------------------------------------------------------------------

test('invalid channel names get InvalidChannel 400 and the connection stays open', async () => {
  const c = await h.raw();
  const bad = ['has space', 'quote"d', 'slash/ed', 'é-accent', '<script>', 'new\nline', '#reserved', 'x'.repeat(201),
    `private-${'x'.repeat(193)}`];
  for (const name of bad) {
    const f = await c.subscribeErr(name, { auth: `${MAIN.key}:${'0'.repeat(64)}` });
    assertSubscriptionError(f, name, 'InvalidChannel', 400);
  }
  await c.ping();
  assert.ok(c.isOpen);
});

test('names use [A-Za-z0-9_-=@,.;] and up to 200 characters', async () => {
  const c = await h.raw();
  await c.subscribeOk('a,b;c=d@e.f_g-h');
  const long = 'y'.repeat(200);
  await c.subscribeOk(long);
  const longPrivate = `private-${'z'.repeat(192)}`;
  assert.equal(longPrivate.length, 200);
  await c.subscribeOk(longPrivate);
  await h.sdk().trigger(long, 'long-name', 'ok');
  await c.event('long-name', { channel: long });
});

test('#server-to-user- channels cannot be subscribed without signing in as that user', async () => {
  const c = await h.raw();
  const ch = '#server-to-user-victim';
  c.subscribe(ch);
  const f = await c.next((m) => m.channel === ch && (m.event === 'pusher:subscription_error'
    || m.event === 'pusher_internal:subscription_succeeded'));
  assertSubscriptionError(f, ch, 'AuthError', 401);
  // signed in as someone else: still refused
  const d = await h.raw();
  d.signin({ id: 'mallory' });
  await d.event('pusher:signin_success');
  d.subscribe(ch);
  const g = await d.next((m) => m.channel === ch && (m.event === 'pusher:subscription_error'
    || m.event === 'pusher_internal:subscription_succeeded'));
  assertSubscriptionError(g, ch, 'AuthError', 401);
  await h.sdk().sendToUser('victim', 'secret', { x: 1 });
  await c.ping();
  await d.ping();
  assert.equal(c.all('secret').length + d.all('secret').length, 0);
});

test('too many channels per connection gives LimitReached 429', async () => {
  const c = await h.raw({ app: SMALL });
  const base = uniq('many');
  for (let i = 0; i < 3; i += 1) await c.subscribeOk(`${base}-${i}`);
  const f = await c.subscribeErr(`${base}-3`);
  assertSubscriptionError(f, `${base}-3`, 'LimitReached', 429);
  // unsubscribing frees a slot
  c.send({ event: 'pusher:unsubscribe', data: { channel: `${base}-0` } });
  await c.ping();
  await c.subscribeOk(`${base}-3`);
});

test('many channels on one connection all deliver', async () => {
  const c = await h.raw();
  const names = Array.from({ length: 50 }, (_, i) => `${uniq('multi')}-${i}`);
  for (const n of names) c.subscribe(n);
  for (const n of names) await c.event('pusher_internal:subscription_succeeded', { channel: n });
  const col = [];
  await h.sdk().trigger(names.slice(0, 50), 'fan', 'f');
  for (const n of names) col.push(await c.event('fan', { channel: n }));
  assert.equal(col.length, 50);
});
