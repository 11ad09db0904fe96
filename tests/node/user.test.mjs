// User sign-in, server-to-user events (sendToUser), watchlist online/offline and
// terminateUserConnections.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, waitFor, collect, uniq, userAuth, withTimeout, eventually, assertNoneBefore,
} from './harness.mjs';

const MAIN = { id: '1', key: 'app-key', secret: 'app-secret' };

let h;
before(async () => { h = await startHerald({ apps: [MAIN] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

/** pusher-js client signed in as `user`, with its #server-to-user channel subscribed. */
async function signedInPusher(user, opts = {}) {
  const client = await h.connectedPusher({ user, ...opts });
  const channelName = `#server-to-user-${user.id}`;
  const ready = waitFor(client.connection, 'message', {
    filter: (m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === channelName,
  });
  client.signin();
  await withTimeout(client.user.signinDonePromise, 5000, 'signin');
  assert.equal(client.user.user_data?.id, user.id, 'pusher-js accepted pusher:signin_success');
  await ready;
  return client;
}

/** Raw client signed in as `user` (data object or string); also subscribes #server-to-user-<id>. */
async function signedInRaw(user, { subscribe = true } = {}) {
  const c = await h.raw();
  c.signin(user);
  const ok = await c.event('pusher:signin_success');
  if (subscribe) await c.subscribeOk(`#server-to-user-${user.id}`);
  return { c, ok };
}

test('pusher:signin → pusher:signin_success echoing the exact user_data string', async () => {
  const userData = '{"id":"u-raw","user_info":{"name":"Raw"}}';
  const c = await h.raw();
  c.signin(userData);
  const ok = await c.event('pusher:signin_success');
  assert.equal(ok.data.user_data, userData, ok.raw);
  assert.equal(ok.msg.channel, undefined);
});

test('sendToUser reaches every connection of that user and nobody else', async () => {
  const id = uniq('user');
  const a1 = await signedInPusher({ id });
  const a2 = await signedInPusher({ id });
  const other = await signedInPusher({ id: `${id}-other` });
  const notSignedIn = await h.connectedPusher();
  const otherGot = collect(other.user, 'notification');
  const g1 = waitFor(a1.user, 'notification');
  const g2 = waitFor(a2.user, 'notification');
  await h.sdk().sendToUser(id, 'notification', { text: 'hello you' });
  assert.deepEqual(await g1, { text: 'hello you' });
  assert.deepEqual(await g2, { text: 'hello you' });

  // barrier for `other`: its own notification, sent afterwards
  const og = waitFor(other.user, 'barrier');
  await h.sdk().sendToUser(`${id}-other`, 'barrier', {});
  await og;
  assert.equal(otherGot.items.length, 0, 'another user received the notification');
  assert.equal(notSignedIn.connection.state, 'connected');
});

test('raw: server-to-user event frame is on #server-to-user-<id>', async () => {
  const id = uniq('rawuser');
  const { c } = await signedInRaw({ id });
  await h.sdk().sendToUser(id, 'direct', { n: 1 });
  const f = await c.event('direct', { channel: `#server-to-user-${id}` });
  assert.deepEqual(f.data, { n: 1 });
});

test('a bad signin signature closes the connection with 4009', async () => {
  const c = await h.raw();
  const userData = '{"id":"intruder"}';
  c.signin(userData, { auth: `${MAIN.key}:${'0'.repeat(64)}` });
  const closed = await withTimeout(c.closed, 5000, 'close after bad signin');
  assert.equal(closed.code, 4009, c.dump());
  assert.equal(c.all('pusher:signin_success').length, 0);
});

test('signin signed for another socket or with the wrong key is refused', async () => {
  const other = await h.raw();
  for (const auth of [
    (c, ud) => userAuth(MAIN, other.socketId, ud),
    (c, ud) => userAuth({ key: 'nope', secret: MAIN.secret }, c.socketId, ud),
    (c, ud) => userAuth({ key: MAIN.key, secret: 'wrong-secret' }, c.socketId, ud),
  ]) {
    const c = await h.raw();
    const ud = '{"id":"x"}';
    c.signin(ud, { auth: auth(c, ud) });
    const closed = await withTimeout(c.closed, 5000, 'close after bad signin');
    assert.equal(closed.code, 4009, c.dump());
    assert.equal(c.all('pusher:signin_success').length, 0);
  }
});

test('user_data without a string id is refused', async () => {
  for (const ud of ['{"user_info":{}}', '{"id":""}', 'not json']) {
    const c = await h.raw();
    c.signin(ud);
    const f = await c.next((m) => m.event === 'pusher:error' || m.event === 'pusher:signin_success', {
      label: 'signin answer',
    }).catch(async (e) => {
      if (c.closeInfo) return { closed: c.closeInfo };
      throw e;
    });
    if (f.closed) assert.equal(f.closed.code, 4009, c.dump());
    else assert.equal(f.event, 'pusher:error', `${ud}: ${f.raw}`);
  }
});

test('a connection already signed in as one user cannot sign in as another', async () => {
  const { c } = await signedInRaw({ id: 'first-user' }, { subscribe: false });
  c.signin({ id: 'second-user' });
  const f = await c.next((m) => m.event === 'pusher:error' || m.event === 'pusher:signin_success', {
    label: 'second signin answer',
  }).catch(async (e) => {
    if (c.closeInfo) return { closed: c.closeInfo };
    throw e;
  });
  if (f.closed) assert.equal(f.closed.code, 4009);
  else assert.equal(f.event, 'pusher:error', f.raw);
  // second-user must not receive first-user's or its own messages on this connection
  const { c: watcher } = await signedInRaw({ id: 'second-user' });
  await h.sdk().sendToUser('second-user', 'for-second', {});
  await watcher.event('for-second');
  if (c.isOpen) {
    await c.ping();
    assert.equal(c.all('for-second').length, 0, 'connection got events of a user it failed to sign in as');
  }
});

// ---------------------------------------------------------------------------------------------
// Watchlist
// ---------------------------------------------------------------------------------------------

test('watchlist: initial online/offline status, then changes (pusher-js)', async () => {
  const bob = uniq('bob');
  const carol = uniq('carol');
  const bobClient = await signedInPusher({ id: bob });

  const alice = h.pusherClient({ user: { id: uniq('alice'), watchlist: [bob, carol] } });
  const online = collect(alice.user.watchlist, 'online');
  const offline = collect(alice.user.watchlist, 'offline');
  alice.signin();
  await online.waitForCount(1);
  assert.deepEqual(online.items[0], { name: 'online', user_ids: [bob] });
  await offline.waitForCount(1);
  assert.deepEqual(offline.items[0], { name: 'offline', user_ids: [carol] });

  // carol comes online (twice: only one online event), then leaves (offline only after the last)
  const room = `presence-${uniq('room')}`;
  const observer = await h.raw();
  await observer.subscribeOk(room, { presence: { user_id: 'observer' } });
  const carol1 = await signedInPusher({ id: carol }, { presence: () => ({ user_id: carol }) });
  await online.waitForCount(2);
  assert.deepEqual(online.items[1], { name: 'online', user_ids: [carol] });
  const carol2 = await signedInPusher({ id: carol });
  await new Promise((resolve, reject) => {
    const ch = carol1.subscribe(room);
    ch.bind('pusher:subscription_succeeded', resolve);
    ch.bind('pusher:subscription_error', reject);
  });
  await observer.event('pusher_internal:member_added', { channel: room });
  carol1.disconnect();
  // the server has processed carol1's disconnect once the presence observer sees it leave
  await observer.event('pusher_internal:member_removed', { channel: room });
  // bob goes offline: that must be the next offline event (carol still has carol2)
  bobClient.disconnect();
  await offline.waitForCount(2);
  assert.deepEqual(offline.items[1], { name: 'offline', user_ids: [bob] },
    `carol still has a connection: ${JSON.stringify(offline.items)}`);
  carol2.disconnect();
  await offline.waitForCount(3);
  assert.deepEqual(offline.items[2], { name: 'offline', user_ids: [carol] });
  assert.equal(offline.items.length, 3, JSON.stringify(offline.items));
  assert.equal(online.items.length, 2, JSON.stringify(online.items));
});

test('watchlist: raw frame shape', async () => {
  const target = uniq('target');
  await signedInRaw({ id: target });
  const { c } = await signedInRaw({ id: uniq('watcher'), watchlist: [target] });
  const f = await c.event('pusher_internal:watchlist_events');
  assert.equal(f.dataIsString, true, f.raw);
  assert.deepEqual(f.data, { events: [{ name: 'online', user_ids: [target] }] });
});

test('watchlist over 100 ids: pusher:error 4302 and only the first 100 are watched', async () => {
  const base = uniq('w');
  const ids = Array.from({ length: 101 }, (_, i) => `${base}-${i}`);
  const { c } = await signedInRaw({ id: uniq('big-watcher'), watchlist: ids });
  const err = await c.error(4302);
  assert.equal(typeof err.data.message, 'string');
  assert.ok(c.isOpen);
  // initial status covers at most the first 100
  await c.ping();
  const mentioned = new Set(c.all('pusher_internal:watchlist_events')
    .flatMap((m) => m.data.events.flatMap((e) => e.user_ids)));
  assert.ok(!mentioned.has(ids[100]), 'the 101st id was watched');
  // the 101st signs in: no event; then the 100th: online event
  await signedInRaw({ id: ids[100] }, { subscribe: false });
  await signedInRaw({ id: ids[99] }, { subscribe: false });
  const f = await c.next((m) => m.event === 'pusher_internal:watchlist_events'
    && m.data.events.some((e) => e.name === 'online' && e.user_ids.includes(ids[99])));
  assertNoneBefore(c, f, (m) => m.event === 'pusher_internal:watchlist_events'
    && m.data.events.some((e) => e.name === 'online' && e.user_ids.includes(ids[100])), 'the 101st id was watched');
});

// ---------------------------------------------------------------------------------------------
// Terminate
// ---------------------------------------------------------------------------------------------

test('terminateUserConnections closes all of the user\'s connections with 4009, others unaffected', async () => {
  const victim = uniq('victim');
  const bystander = uniq('bystander');
  const { c: v1 } = await signedInRaw({ id: victim });
  const { c: v2 } = await signedInRaw({ id: victim });
  const { c: b1 } = await signedInRaw({ id: bystander });
  // presence membership alone (no signin) is not affected
  const presenceOnly = await h.raw();
  await presenceOnly.subscribeOk(`presence-${uniq('room')}`, { presence: { user_id: victim } });
  const pjs = await signedInPusher({ id: victim });
  const pjsError = waitFor(pjs.connection, 'error', { filter: (e) => (e?.data?.code ?? e?.error?.data?.code) === 4009 });

  const res = await h.sdk().terminateUserConnections(victim);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});

  for (const v of [v1, v2]) {
    const closed = await withTimeout(v.closed, 5000, 'victim close');
    assert.equal(closed.code, 4009, v.dump());
  }
  await pjsError;
  await eventually(() => pjs.connection.state === 'disconnected', { label: 'pusher-js stays disconnected' });

  await b1.ping();
  await presenceOnly.ping();
  await h.sdk().sendToUser(bystander, 'still-there', {});
  await b1.event('still-there');

  // the user may connect and sign in again
  const { c: again } = await signedInRaw({ id: victim });
  await h.sdk().sendToUser(victim, 'welcome-back', {});
  await again.event('welcome-back');
});

test('terminateUserConnections and sendToUser for a user with no connections answer 200 {}', async () => {
  const res = await h.sdk().terminateUserConnections(uniq('nobody'));
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  const res2 = await h.sdk().sendToUser(uniq('nobody'), 'x', {});
  assert.equal(res2.status, 200);
});
