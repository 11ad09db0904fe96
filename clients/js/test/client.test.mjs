// The Herald JS client against the real binary: resume after a drop, resync when the server cannot
// replay, refusal codes, action-id de-duplication, and jittered reconnects after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { heraldServers } from '../test-support.mjs';
import { Herald, backoffDelay } from '../src/index.js';
import { uniq, channelAuth } from '../../../tests/node/harness.mjs';

const server = heraldServers();

function client(h, options = {}) {
  return new Herald(h.app.key, {
    url: `ws://${h.host}:${h.port}`,
    authorize: async ({ socketId, channel }) => ({ auth: channelAuth(h.app, socketId, channel) }),
    ...options,
  });
}

/** Resolves with the first emitted value of `event` on `emitter` (bind/unbind style). */
function once(emitter, event, timeout = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeout);
    const fn = (value) => { clearTimeout(timer); emitter.unbind(event, fn); resolve(value); };
    emitter.bind(event, fn);
  });
}

function collect(channel, event, count, timeout = 10000) {
  const seen = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`got ${seen.length} of ${count} ${event}: ${JSON.stringify(seen)}`)), timeout);
    channel.bind(event, (data, meta) => {
      seen.push({ data, serial: meta.serial });
      if (seen.length === count) { clearTimeout(timer); resolve(seen); }
    });
  });
}

test('backoff: full jitter, first retry under 1 s, capped at 30 s', () => {
  for (let i = 0; i < 1000; i += 1) assert.ok(backoffDelay(0) < 1000);
  assert.equal(backoffDelay(20, { random: () => 0.999999 }), 29999);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 4000);
  const samples = Array.from({ length: 2000 }, () => backoffDelay(2));
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  assert.ok(mean > 1700 && mean < 2300, `uniform over [0, 4000): mean ${mean}`);
});

test('a dropped connection resumes every channel from its last serial: all events, in order, once', async () => {
  const h = await server();
  const herald = client(h).connect();
  const channel = herald.subscribe(uniq('ticks'));
  await once(channel, 'subscribed');
  const all = collect(channel, 'tick', 20);
  for (let i = 0; i < 5; i += 1) await h.sdk().trigger(channel.name, 'tick', { i });
  herald.socket.close(4200); // as if the network dropped: the client reconnects by itself
  for (let i = 5; i < 20; i += 1) await h.sdk().trigger(channel.name, 'tick', { i });
  const seen = await all;
  assert.deepEqual(seen.map((e) => e.data.i), [...Array(20).keys()]);
  assert.deepEqual(seen.map((e) => e.serial), Array.from({ length: 20 }, (_, i) => i + 1));
  herald.disconnect();
});

test('when the server cannot replay, onResync runs instead of a silent gap', async () => {
  const h = await server({ apps: [{ history_max_events: 2 }] });
  const herald = client(h).connect();
  let resyncs = 0;
  const channel = herald.subscribe(uniq('state'), { onResync: () => { resyncs += 1; } });
  await once(channel, 'subscribed');
  herald.disconnect();
  for (let i = 0; i < 5; i += 1) await h.sdk().trigger(channel.name, 'change', { i });
  herald.connect();
  const again = await once(channel, 'subscribed');
  assert.equal(again.recovered, false);
  assert.equal(resyncs, 1);
  assert.equal(channel.position.serial, 5, 'the client continues from the server position');
  herald.disconnect();
});

test('refusal codes (4000–4099) stop reconnecting', async () => {
  const h = await server();
  const herald = new Herald('no-such-key', { url: `ws://${h.host}:${h.port}` }).connect();
  assert.equal(await once(herald, 'refused'), 4001);
  assert.equal(herald.state, 'failed');
});

test('an action the sender already applied is not dispatched to it again', { timeout: 20000 }, async () => {
  const h = await server();
  const a = client(h).connect();
  const b = client(h).connect();
  const name = `private-${uniq('doc')}`;
  const atA = a.subscribe(name);
  const atB = b.subscribe(name);
  await Promise.all([once(atA, 'subscribed'), once(atB, 'subscribed')]);
  const fromA = once(atB, 'client-edit');
  assert.ok(atA.trigger('client-edit', { text: 'hi' }, { actionId: 'act-1' }));
  assert.deepEqual(await fromA, { text: 'hi', action_id: 'act-1' });
  // The backend confirms the action to everyone; the sender must not apply it twice.
  const seenByA = [];
  const act2AtA = new Promise((resolve) => {
    atA.bind('edit-confirmed', (data) => {
      seenByA.push(data.action_id);
      if (data.action_id === 'act-2') resolve();
    });
  });
  const confirmedAtB = once(atB, 'edit-confirmed');
  await h.sdk().trigger(name, 'edit-confirmed', { action_id: 'act-1' });
  await h.sdk().trigger(name, 'edit-confirmed', { action_id: 'act-2' });
  assert.equal((await confirmedAtB).action_id, 'act-1');
  await act2AtA; // events arrive in serial order, so act-1 would have come first
  assert.deepEqual(seenByA, ['act-2']);
  a.disconnect();
  b.disconnect();
});

test('1,000 clients reconnecting after a restart spread over time', { timeout: 90000 }, async () => {
  const first = await server();
  const port = first.port;
  const clients = [];
  for (let i = 0; i < 1000; i += 1) clients.push(client(first).connect());
  await Promise.all(clients.map((c) => (c.state === 'connected' ? null : once(c, 'connected', 30000))));
  const arrivals = [];
  const restartedAt = Date.now();
  for (const c of clients) c.bind('connected', () => arrivals.push(Date.now() - restartedAt));
  await first.stop();
  await server({ args: ['--bind', `127.0.0.1:${port}`] });
  const deadline = Date.now() + 60000;
  while (arrivals.length < 1000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  for (const c of clients) c.disconnect();
  assert.equal(arrivals.length, 1000, 'every client came back');
  arrivals.sort((x, y) => x - y);
  const buckets = new Map();
  for (const t of arrivals) buckets.set(Math.floor(t / 100), (buckets.get(Math.floor(t / 100)) ?? 0) + 1);
  const busiest = Math.max(...buckets.values());
  const spread = arrivals[899] - arrivals[99];
  console.log(`reconnect arrivals: p10 ${arrivals[99]} ms, p50 ${arrivals[499]} ms, p90 ${arrivals[899]} ms, busiest 100 ms bucket ${busiest}`);
  assert.ok(busiest < 300, `no 100 ms window takes more than 30% of the clients (busiest: ${busiest})`);
  assert.ok(spread > 500, `arrivals spread over time (p10..p90: ${spread} ms)`);
});

test('when WebSockets fail, the client long-polls over HTTP and still resumes', { timeout: 30000 }, async () => {
  const h = await server();
  /** A network that refuses every WebSocket. */
  class BlockedWebSocket {
    constructor() { setTimeout(() => this.onclose?.({ code: 1006 }), 5); }
    close() {}
    send() {}
  }
  const herald = client(h, { WebSocket: BlockedWebSocket, backoff: { base: 50, cap: 200 } }).connect();
  const channel = herald.subscribe(`private-${uniq('poll')}`);
  await once(channel, 'subscribed', 10000);
  assert.equal(herald.transport, 'polling');
  const all = collect(channel, 'tick', 6);
  for (let i = 0; i < 3; i += 1) await h.sdk().trigger(channel.name, 'tick', { i });
  herald.socket.close(); // the long-poll session ends; the client reconnects (polling) and resumes
  for (let i = 3; i < 6; i += 1) await h.sdk().trigger(channel.name, 'tick', { i });
  const seen = await all;
  assert.deepEqual(seen.map((e) => e.data.i), [0, 1, 2, 3, 4, 5]);
  herald.disconnect();
});

test('private-encrypted channels are decrypted with the shared secret, which never reaches Herald', { timeout: 20000 }, async () => {
  const { createRequire } = await import('node:module');
  const require = createRequire(new URL('../../../tests/node/package.json', import.meta.url));
  const nacl = require('tweetnacl');
  const master = Buffer.alloc(32, 9).toString('base64');
  const h = await server();
  const sdk = h.sdk(h.app, { encryptionMasterKeyBase64: master });
  const sentToHerald = [];
  const herald = client(h, {
    nacl,
    authorize: async ({ socketId, channel }) => sdk.authorizeChannel(socketId, channel),
  }).connect();
  const realSend = herald.send.bind(herald);
  herald.send = (frame) => { sentToHerald.push(JSON.stringify(frame)); return realSend(frame); };
  const channel = herald.subscribe(`private-encrypted-${uniq('secret')}`);
  await once(channel, 'subscribed');
  const got = once(channel, 'note');
  await sdk.trigger(channel.name, 'note', { text: 'for your eyes only' });
  assert.deepEqual(await got, { text: 'for your eyes only' });
  assert.ok(sentToHerald.every((f) => !f.includes('shared_secret')), 'the shared secret is never sent');
  herald.disconnect();
});

test('sign-in delivers user events on client.user; presence members are tracked', { timeout: 20000 }, async () => {
  const h = await server();
  const sdk = h.sdk();
  const make = (id) => client(h, {
    signin: async ({ socketId }) => sdk.authenticateUser(socketId, { id }),
    authorize: async ({ socketId, channel }) => sdk.authorizeChannel(socketId, channel, { user_id: id, user_info: { name: id } }),
  }).connect();
  const ann = make('ann');
  const bob = make('bob');
  const signedIn = once(ann.user, 'subscribed');
  ann.signin();
  const room = `presence-${uniq('room')}`;
  const annRoom = ann.subscribe(room);
  await once(annRoom, 'subscribed');
  const added = once(annRoom, 'member_added');
  const bobRoom = bob.subscribe(room);
  await once(bobRoom, 'subscribed');
  assert.deepEqual(await added, { id: 'bob', info: { name: 'bob' } });
  assert.deepEqual([...bobRoom.members.keys()].sort(), ['ann', 'bob']);
  await signedIn;
  const note = once(ann.user, 'note');
  await sdk.sendToUser('ann', 'note', { hello: 'ann' });
  assert.deepEqual(await note, { hello: 'ann' });
  const removed = once(annRoom, 'member_removed');
  bob.disconnect();
  assert.deepEqual(await removed, { id: 'bob' });
  ann.disconnect();
});
