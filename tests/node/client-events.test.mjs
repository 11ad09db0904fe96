// Client events: client- names on private/presence channels, not echoed, user_id on presence,
// 10/s rate limit (4301), rejections (4306).
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, subscribed, waitFor, uniq, assertNoneBefore, collect,
} from './harness.mjs';

const MAIN = { id: '1', key: 'app-key', secret: 'app-secret', encryptionMasterKeyBase64: Buffer.alloc(32, 7).toString('base64') };
const NOCLIENT = { id: '2', key: 'noclient-key', secret: 'noclient-secret', client_events: false };

let h;
before(async () => { h = await startHerald({ apps: [MAIN, NOCLIENT] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

function assertPusherError(f, code) {
  assert.equal(f.event, 'pusher:error', f.raw);
  assert.equal(f.data.code, code, f.raw);
  assert.equal(typeof f.data.message, 'string', f.raw);
}

/** Publishes a barrier over HTTP and waits until `clients` have received it; returns the frames. */
async function barrier(app, channel, clients) {
  const name = uniq('barrier');
  await h.sdk(app).trigger(channel, name, 'b');
  return Promise.all(clients.map((c) => c.event(name, { channel })));
}

test('private: client event reaches the other subscribers and is not echoed to the sender', async () => {
  const ch = `private-${uniq('chat')}`;
  const a = await h.raw();
  const b = await h.raw();
  const c = await h.raw();
  for (const x of [a, b, c]) await x.subscribeOk(ch);

  a.send({ event: 'client-typing', channel: ch, data: { who: 'a', n: 1 } });
  for (const x of [b, c]) {
    const f = await x.event('client-typing', { channel: ch });
    assert.deepEqual(f.data, { who: 'a', n: 1 });
    assert.equal(f.msg.user_id, undefined, 'no user_id on private channels');
  }
  const [ba] = await barrier(MAIN, ch, [a]);
  assertNoneBefore(a, ba, (m) => m.event === 'client-typing', 'client event echoed to its sender');
  assert.equal(a.all('pusher:error').length, 0, a.dump());
});

test('client event with string data is relayed', async () => {
  const ch = `private-${uniq('chat')}`;
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(ch);
  await b.subscribeOk(ch);
  a.send({ event: 'client-str', channel: ch, data: 'just text' });
  const f = await b.event('client-str', { channel: ch });
  assert.equal(f.data, 'just text');
});

test('pusher-js: channel.trigger reaches the other client, not the sender', async () => {
  const ch = `private-${uniq('chat')}`;
  const alice = await h.connectedPusher();
  const bob = await h.connectedPusher();
  const aCh = await subscribed(alice, ch);
  const bCh = await subscribed(bob, ch);
  const echoed = collect(aCh, 'client-message');
  const got = waitFor(bCh, 'client-message');
  assert.equal(aCh.trigger('client-message', { text: 'hi bob' }), true);
  assert.deepEqual(await got, { text: 'hi bob' });
  const barrierSeen = waitFor(aCh, 'barrier');
  await h.sdk().trigger(ch, 'barrier', {});
  await barrierSeen;
  assert.equal(echoed.items.length, 0, 'sender received its own client event');
});

test('presence: receivers get the sender user_id (raw frame and pusher-js metadata)', async () => {
  const ch = `presence-${uniq('room')}`;
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(ch, { presence: { user_id: 'sender-1', user_info: {} } });
  await b.subscribeOk(ch, { presence: { user_id: 'receiver-1' } });
  a.send({ event: 'client-move', channel: ch, data: { x: 3 } });
  const f = await b.event('client-move', { channel: ch });
  assert.equal(f.msg.user_id, 'sender-1', f.raw);
  assert.deepEqual(f.data, { x: 3 });

  // a forged user_id in the frame is not trusted
  a.send({ event: 'client-move', channel: ch, data: { x: 4 }, user_id: 'receiver-1' });
  const g = await b.next((m) => m.event === 'client-move' && m.data.x === 4);
  assert.equal(g.msg.user_id, 'sender-1', g.raw);

  const alice = await h.connectedPusher({ presence: () => ({ user_id: 'alice', user_info: { n: 'A' } }) });
  const bob = await h.connectedPusher({ presence: () => ({ user_id: 'bob', user_info: { n: 'B' } }) });
  const aCh = await subscribed(alice, ch);
  const bCh = await subscribed(bob, ch);
  const got = waitFor(bCh, 'client-wave', { all: true });
  aCh.trigger('client-wave', { hello: true });
  const [data, metadata] = await got;
  assert.deepEqual(data, { hello: true });
  assert.equal(metadata.user_id, 'alice');
});

test('rate limit: over 10 client events/s gets pusher:error 4301, connection stays open', async () => {
  const ch = `private-${uniq('burst')}`;
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(ch);
  await b.subscribeOk(ch);
  const N = 25;
  for (let i = 0; i < N; i += 1) a.send({ event: 'client-burst', channel: ch, data: { i } });
  const err = await a.error(4301);
  assertPusherError(err, 4301);
  await a.ping();
  assert.ok(a.isOpen, 'connection must stay open after 4301');
  // barrier: everything the sender sent before its ping has been handled
  await barrier(MAIN, ch, [b]);
  const delivered = b.all('client-burst').length;
  const rejected = a.all((m) => m.event === 'pusher:error' && m.data.code === 4301).length;
  assert.ok(delivered >= 10, `at least 10 of the burst are delivered (got ${delivered})`);
  assert.ok(delivered <= 20, `a burst of ${N} is limited (got ${delivered} delivered)`);
  assert.ok(rejected >= 1, 'at least one 4301');
  assert.ok(delivered + rejected <= N);
  // a different connection is not limited by a's budget
  const c = await h.raw();
  await c.subscribeOk(ch);
  c.send({ event: 'client-other', channel: ch, data: {} });
  await b.event('client-other', { channel: ch });
  await c.ping();
  assert.equal(c.all('pusher:error').length, 0, c.dump());
});

test('rejected client events get pusher:error 4306 and are not relayed', async () => {
  const pub = uniq('public');
  const priv = `private-${uniq('p')}`;
  const enc = `private-encrypted-${uniq('e')}`;
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(pub);
  await b.subscribeOk(pub);
  await b.subscribeOk(priv); // a is NOT subscribed to priv
  // encrypted channel: both subscribed
  await a.subscribeOk(enc);
  await b.subscribeOk(enc);

  a.send({ event: 'client-public', channel: pub, data: {} });
  assertPusherError(await a.error(4306), 4306);
  a.send({ event: 'client-notsub', channel: priv, data: {} });
  assertPusherError(await a.error(4306), 4306);
  a.send({ event: 'client-enc', channel: enc, data: { nonce: 'x', ciphertext: 'y' } });
  assertPusherError(await a.error(4306), 4306);
  assert.ok(a.isOpen);
  await a.ping();

  const [bPub] = await barrier(MAIN, pub, [b]);
  const [bPriv] = await barrier(MAIN, priv, [b]);
  const [bEnc] = await barrier(MAIN, enc, [b]);
  for (const f of [bPub, bPriv, bEnc]) {
    assertNoneBefore(b, f, (m) => m.event?.startsWith('client-'), 'rejected client event was relayed');
  }
});

test('client events on an app with client_events = false get 4306', async () => {
  const ch = `private-${uniq('p')}`;
  const a = await h.raw({ app: NOCLIENT });
  const b = await h.raw({ app: NOCLIENT });
  await a.subscribeOk(ch);
  await b.subscribeOk(ch);
  a.send({ event: 'client-nope', channel: ch, data: {} });
  assertPusherError(await a.error(4306), 4306);
  const [bf] = await barrier(NOCLIENT, ch, [b]);
  assertNoneBefore(b, bf, (m) => m.event === 'client-nope', 'client event relayed while disabled');
});

test('a non-client, non-pusher event from a client is refused and not relayed', async () => {
  const ch = `private-${uniq('p')}`;
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(ch);
  await b.subscribeOk(ch);
  a.send({ event: 'server-looking-event', channel: ch, data: {} });
  const err = await a.next((m) => m.event === 'pusher:error');
  assert.ok([4304, 4306].includes(err.data.code), `4304 or 4306 expected: ${err.raw}`);
  const [bf] = await barrier(MAIN, ch, [b]);
  assertNoneBefore(b, bf, (m) => m.event === 'server-looking-event', 'non-client event relayed');
});
