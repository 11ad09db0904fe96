// Laravel Echo (pusher broadcaster) on top of pusher-js against Herald: public and private events,
// Laravel's event-name namespacing, presence here/joining/leaving, whispers and toOthers().
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import Echo from 'laravel-echo';
import {
  startHerald, pusherConnected, withTimeout, uniq, PusherJS,
} from './harness.mjs';

const MAIN = { id: '1', key: 'app-key', secret: 'app-secret' };

let h;
before(async () => { h = await startHerald({ apps: [MAIN] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

/** Echo on an existing pusher-js instance (`client` option). */
async function echoWithClient(opts = {}) {
  const client = h.pusherClient(opts);
  const echo = new Echo({ broadcaster: 'pusher', client, withoutInterceptors: true });
  await pusherConnected(client);
  return echo;
}

/** Echo constructing pusher-js itself from its options (`Pusher` option + pusher options). */
async function echoWithOptions(opts = {}) {
  const echo = new Echo({
    broadcaster: 'pusher',
    Pusher: PusherJS,
    withoutInterceptors: true,
    ...h.pusherOptions(opts),
  });
  h.track(echo.connector.pusher);
  await pusherConnected(echo.connector.pusher);
  return echo;
}

/** Resolves when an Echo channel is subscribed; rejects on a subscription error. */
function echoSubscribed(channel) {
  if (channel.subscription.subscribed) return Promise.resolve();
  return withTimeout(new Promise((resolve, reject) => {
    channel.subscribed(resolve);
    channel.error((e) => reject(new Error(`subscription error: ${JSON.stringify(e)}`)));
  }), 5000, 'echo subscription');
}

function nextEcho(channel, event) {
  return withTimeout(new Promise((resolve) => channel.listen(event, resolve)), 5000, `echo event ${event}`);
}

for (const [label, make] of [['client option', echoWithClient], ['Pusher + options', echoWithOptions]]) {
  test(`Echo (${label}): public channel, namespaced and dotted event names`, async () => {
    const echo = await make();
    const name = uniq('orders');
    const channel = echo.channel(name);
    await echoSubscribed(channel);
    const namespaced = nextEcho(channel, 'OrderShipped');
    const dotted = nextEcho(channel, '.order.created');
    const sdk = h.sdk();
    await sdk.trigger(name, 'App\\Events\\OrderShipped', { order: { id: 1 } });
    await sdk.trigger(name, 'order.created', { id: 2 });
    assert.deepEqual(await namespaced, { order: { id: 1 } });
    assert.deepEqual(await dotted, { id: 2 });
  });

  test(`Echo (${label}): private channel`, async () => {
    const echo = await make();
    const name = uniq('user');
    const channel = echo.private(name);
    await echoSubscribed(channel);
    const got = nextEcho(channel, '.secret.updated');
    await h.sdk().trigger(`private-${name}`, 'secret.updated', { ok: true });
    assert.deepEqual(await got, { ok: true });
  });
}

test('Echo: private channel with a bad signature reports the error', async () => {
  const echo = await echoWithClient({ authorize: (_p, cb) => cb(null, { auth: `${MAIN.key}:${'b'.repeat(64)}` }) });
  const channel = echo.private(uniq('denied'));
  const err = await withTimeout(new Promise((resolve) => channel.error(resolve)), 5000, 'echo error');
  assert.equal(err.status, 401);
});

test('Echo: presence here / joining / leaving and whispers', async () => {
  const room = uniq('chat');
  const alice = await echoWithClient({ presence: () => ({ user_id: 'alice', user_info: { name: 'Alice' } }) });
  const bob = await echoWithClient({ presence: () => ({ user_id: 'bob', user_info: { name: 'Bob' } }) });

  const aChan = alice.join(room);
  const hereAlice = withTimeout(new Promise((resolve) => aChan.here(resolve)), 5000, 'here (alice)');
  assert.deepEqual(await hereAlice, [{ name: 'Alice' }]);

  const joining = withTimeout(new Promise((resolve) => aChan.joining(resolve)), 5000, 'joining');
  const bChan = bob.join(room);
  const hereBob = withTimeout(new Promise((resolve) => bChan.here(resolve)), 5000, 'here (bob)');
  const members = await hereBob;
  assert.deepEqual(members.map((m) => m.name).sort(), ['Alice', 'Bob']);
  assert.deepEqual(await joining, { name: 'Bob' });

  const whisper = withTimeout(new Promise((resolve) => bChan.listenForWhisper('typing', resolve)), 5000, 'whisper');
  aChan.whisper('typing', { name: 'Alice' });
  assert.deepEqual(await whisper, { name: 'Alice' });

  const leaving = withTimeout(new Promise((resolve) => aChan.leaving(resolve)), 5000, 'leaving');
  bob.leave(room);
  assert.deepEqual(await leaving, { name: 'Bob' });
});

test('Echo: socketId() + X-Socket-ID style exclusion (Laravel toOthers)', async () => {
  const me = await echoWithClient();
  const other = await echoWithClient();
  const name = uniq('others');
  const mine = me.channel(name);
  const theirs = other.channel(name);
  await echoSubscribed(mine);
  await echoSubscribed(theirs);
  const socketId = me.socketId();
  assert.match(socketId, /^\d+\.\d+$/);
  let mineGot = 0;
  mine.listen('.saved', () => { mineGot += 1; });
  const theirsGot = nextEcho(theirs, '.saved');
  await h.sdk().trigger(name, 'saved', { id: 1 }, { socket_id: socketId });
  await theirsGot;
  const barrier = nextEcho(mine, '.barrier');
  await h.sdk().trigger(name, 'barrier', {});
  await barrier;
  assert.equal(mineGot, 0, 'the excluded socket received the event');
});
