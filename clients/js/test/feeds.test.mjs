// Feeds through the Herald JS client against the real binary: a backend changes a feed over the
// signed HTTP routes and the client's copy follows it exactly: from the snapshot, through writes
// racing with the subscribe, changes held back before the snapshot, a lost event (gap), a stale
// snapshot, and a reconnect. Frames are held back, dropped or added at the client's frame entry
// point (`onFrame`), so each rule is exercised on purpose rather than by luck.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { heraldServers, gatedWebSocket } from '../test-support.mjs';
import { Herald } from '../src/index.js';
import { uniq, channelAuth, waitFor, collect, withTimeout } from '../../../tests/node/harness.mjs';

const server = heraldServers();

function client(h, options = {}) {
  return new Herald(h.app.key, {
    url: `ws://${h.host}:${h.port}`,
    authorize: async ({ socketId, channel }) => ({ auth: channelAuth(h.app, socketId, channel) }),
    ...options,
  });
}

/** Records what the client sends. */
function recordSends(herald) {
  const sent = [];
  const realSend = herald.send.bind(herald);
  herald.send = (frame) => { sent.push(frame); return realSend(frame); };
  return sent;
}

/** Puts `through(frame, deliver)` between the socket and the client: it may hold, drop or add frames. */
function interceptFrames(herald, through) {
  const deliver = herald.onFrame.bind(herald);
  herald.onFrame = (frame) => through(frame, deliver);
  return deliver;
}

/** Resolves once the feed's copy is at `serial` or past it. */
function reached(feed, serial, timeout = 5000) {
  if (feed.ready && !feed.syncing && feed.position.serial >= serial) return Promise.resolve(feed);
  const done = () => feed.ready && !feed.syncing && feed.position.serial >= serial;
  return Promise.race([
    waitFor(feed, 'change', { timeout, filter: done }),
    waitFor(feed, 'reset', { timeout, filter: done }),
  ]).then(() => feed);
}

/** The copy equals the backend's feed: same items (id, value, serial), same order, same position. */
async function assertExact(feed, backend, label = 'copy') {
  const state = await backend.state();
  await reached(feed, state.position.serial);
  assert.deepEqual(feed.position, state.position, `${label}: position`);
  assert.deepEqual(feed.items, state.items.map(({ id, value, serial }) => ({ id, value, serial })), `${label}: items`);
  for (const item of state.items) assert.deepEqual(feed.get(item.id), item, `${label}: get(${item.id})`);
  return state;
}

test('a feed starts from its snapshot, then follows every publish, edit, move and retract', { timeout: 20000 }, async () => {
  const h = await server();
  const name = uniq('feed-tasks');
  const backend = h.feedBackend(name);
  await backend.publish('t1', { title: 'Ship', done: false });
  await backend.publish('t2', { title: 'Test' });

  const herald = client(h).connect();
  const sent = recordSends(herald);
  const feed = herald.feed(name);
  assert.equal(herald.feed(name), feed, 'one Feed per channel');
  const ready = await waitFor(feed, 'ready');
  assert.equal(ready, feed);
  assert.deepEqual(sent.find((f) => f.event === 'pusher:subscribe').data, { channel: name, snapshot: true });
  assert.deepEqual(feed.items.map((i) => i.id), ['t1', 't2']);
  await assertExact(feed, backend, 'snapshot');

  const changes = collect(feed, 'change');
  await backend.publish('t3', { title: 'Docs' }, { after: 't1' });
  await backend.publish('t0', { title: 'Plan' }, { index: 0 });
  await backend.publish('t4', { title: 'Release' }); // last
  await backend.edit('t1', { done: true }, { merge: true });
  await backend.edit('t2', { title: 'Test more' });
  await backend.move('t0', { after: 't3' });
  await backend.move('t4', { index: 0 });
  await backend.move('t2', { before: 't4' });
  await backend.retract('t3');
  const final = await assertExact(feed, backend, 'after the changes');
  const seen = (await changes.waitForCount(9)).map((c) => [c.type, c.id]);
  assert.deepEqual(seen, [
    ['publish', 't3'], ['publish', 't0'], ['publish', 't4'], ['edit', 't1'], ['edit', 't2'],
    ['move', 't0'], ['move', 't4'], ['move', 't2'], ['retract', 't3'],
  ]);
  assert.deepEqual(feed.items.map((i) => i.id), ['t2', 't4', 't1', 't0']);
  assert.deepEqual(feed.get('t1').value, { title: 'Ship', done: true }, 'a merge edit arrives as the whole value');
  assert.equal(feed.get('t3'), undefined);
  const [publishT3, , , mergeT1, , moveT0, , , retractT3] = changes.items;
  assert.deepEqual({ after: publishT3.after, index: publishT3.index }, { after: 't1', index: 1 });
  assert.deepEqual(mergeT1.previous, { title: 'Ship', done: false });
  assert.deepEqual({ from: moveT0.from, after: moveT0.after }, { from: 0, after: 't3' });
  assert.deepEqual(retractT3.previous, { title: 'Docs' });
  assert.deepEqual(changes.items.map((c) => c.serial), changes.items.map((_, i) => final.position.serial - 8 + i));
  assert.equal(sent.filter((f) => f.event === 'herald:feed_snapshot_request').length, 0, 'no gap, no extra snapshot');
  herald.disconnect();
});

test('writes racing with subscribes: every copy ends exact', { timeout: 30000 }, async () => {
  const h = await server();
  const name = uniq('feed-race');
  const backend = h.feedBackend(name);
  for (let i = 0; i < 5; i += 1) await backend.publish(`seed${i}`, { n: i });
  // Three writers, each a chain of publishes, edits, moves and retracts, while clients subscribe.
  const writer = async (w) => {
    for (let i = 0; i < 12; i += 1) {
      const id = `w${w}-${i}`;
      await backend.publish(id, { w, i }, i % 2 ? { index: 0 } : {});
      if (i % 3 === 0) await backend.edit(id, { edited: true }, { merge: true });
      if (i % 4 === 1) await backend.move(id, { after: `seed${i % 5}` });
      if (i % 5 === 2) await backend.retract(id);
    }
  };
  const clients = [];
  const subscribing = (async () => {
    for (let c = 0; c < 6; c += 1) {
      const herald = client(h).connect();
      clients.push(herald);
      herald.feed(name);
      await waitFor(herald, 'connected');
    }
  })();
  await Promise.all([writer(0), writer(1), writer(2), subscribing]);
  for (const herald of clients) await assertExact(herald.feed(name), backend, `client ${clients.indexOf(herald)}`);
  for (const herald of clients) herald.disconnect();
});

test('changes that arrive before the snapshot are kept: those at or below its serial dropped, the rest applied in order', { timeout: 20000 }, async () => {
  const h = await server();
  const name = uniq('feed-early');
  const backend = h.feedBackend(name);
  await backend.publish('a', 1);
  await backend.publish('b', 2); // serial 2

  const herald = client(h).connect();
  let held;
  const snapshotArrived = new Promise((resolve) => { held = resolve; });
  let passedFour;
  const fourPassed = new Promise((resolve) => { passedFour = resolve; });
  const deliver = interceptFrames(herald, (frame, pass) => {
    if (frame.channel === name && frame.event === 'herald:feed_snapshot') return held(frame); // held back
    pass(frame);
    if (frame.channel === name && frame.serial === 4) passedFour();
    return undefined;
  });
  const feed = herald.feed(name);
  const changes = collect(feed, 'change');
  const snapshot = await snapshotArrived;
  assert.equal(JSON.parse(snapshot.data).position.serial, 2);

  // Two live changes overtake the held snapshot...
  await backend.publish('c', 3, { after: 'b' }); // serial 3
  await backend.edit('a', 10); // serial 4
  await withTimeout(fourPassed, 5000, 'serial 4 to reach the client');
  // ...and so do changes at or below the snapshot's serial, as when a write lands between the
  // subscription and the snapshot's read (here made up, so they would show if applied).
  deliver({ event: 'herald:feed_publish', channel: name, data: JSON.stringify({ id: 'ghost', value: 0, after: null }), serial: 2 });
  deliver({ event: 'herald:feed_retract', channel: name, data: JSON.stringify({ id: 'a' }), serial: 1 });
  assert.equal(feed.ready, false);
  assert.deepEqual(feed.items, [], 'nothing applied before the snapshot');
  assert.equal(changes.items.length, 0);

  deliver(snapshot);
  assert.equal(feed.ready, true);
  assert.deepEqual(changes.items.map((c) => [c.type, c.id, c.serial]), [['publish', 'c', 3], ['edit', 'a', 4]]);
  assert.deepEqual(feed.items.map((i) => [i.id, i.value]), [['a', 10], ['b', 2], ['c', 3]]);
  await assertExact(feed, backend);
  herald.disconnect();
});

test('a lost change (a gap in the serials) asks for a new snapshot and rebuilds the copy', { timeout: 20000 }, async () => {
  const h = await server();
  const name = uniq('feed-gap');
  const backend = h.feedBackend(name);
  await backend.publish('a', 1);

  const herald = client(h).connect();
  const sent = recordSends(herald);
  const feed = herald.feed(name);
  await waitFor(feed, 'ready');
  let dropped = null;
  interceptFrames(herald, (frame, pass) => {
    if (frame.channel === name && frame.serial === 2 && !dropped) { dropped = frame; return undefined; } // lost
    return pass(frame);
  });
  const resets = collect(feed, 'reset');
  const changes = collect(feed, 'change');
  await backend.publish('b', 2); // serial 2: lost on the way
  await backend.publish('c', 3); // serial 3: the client sees the gap
  await resets.waitForCount(1);
  assert.ok(dropped, 'serial 2 was dropped');
  assert.equal(sent.filter((f) => f.event === 'herald:feed_snapshot_request').length, 1);
  assert.deepEqual(sent.find((f) => f.event === 'herald:feed_snapshot_request').data, { channel: name });
  assert.deepEqual(changes.items.map((c) => c.serial), [], 'nothing applied across the gap');
  await assertExact(feed, backend, 'rebuilt');
  assert.deepEqual(feed.items.map((i) => i.id), ['a', 'b', 'c']);
  await backend.edit('b', 20); // and live changes carry on
  await assertExact(feed, backend, 'after the rebuild');
  assert.deepEqual(changes.items.map((c) => [c.type, c.id]), [['edit', 'b']]);
  herald.disconnect();
});

test('a snapshot older than the subscription position is asked for again', { timeout: 20000 }, async () => {
  const h = await server();
  const name = uniq('feed-stale');
  const backend = h.feedBackend(name);
  await backend.publish('a', 1);
  await backend.publish('b', 2);

  const herald = client(h).connect();
  const sent = recordSends(herald);
  let subscribedAt = null;
  let staled = 0;
  interceptFrames(herald, (frame, pass) => {
    if (frame.channel === name && frame.event === 'pusher_internal:subscription_succeeded') subscribedAt = frame.position;
    if (frame.channel === name && frame.event === 'herald:feed_snapshot' && staled === 0) {
      // As read from a node still catching up with the engine: behind the subscription.
      staled += 1;
      const data = JSON.parse(frame.data);
      data.position.serial = subscribedAt.serial - 1;
      data.items = data.items.slice(0, 1);
      return pass({ ...frame, data: JSON.stringify(data) });
    }
    return pass(frame);
  });
  const feed = herald.feed(name);
  const resets = collect(feed, 'reset');
  await waitFor(feed, 'ready');
  assert.equal(subscribedAt.serial, 2);
  assert.equal(staled, 1);
  assert.equal(sent.filter((f) => f.event === 'herald:feed_snapshot_request').length, 1);
  assert.equal(resets.items.length, 1, 'the stale snapshot was not applied');
  await assertExact(feed, backend);
  herald.disconnect();
});

test('after a reconnect the feed subscribes with a snapshot again and catches up', { timeout: 30000 }, async () => {
  const h = await server();
  const name = uniq('feed-reconnect');
  const backend = h.feedBackend(name);
  for (const id of ['a', 'b', 'c']) await backend.publish(id, { id });
  const { network, WebSocket: GatedWebSocket } = gatedWebSocket();
  const herald = client(h, { WebSocket: GatedWebSocket, transports: ['ws'], backoff: { base: 50, cap: 200 } }).connect();
  const sent = recordSends(herald);
  const feed = herald.feed(name);
  await waitFor(feed, 'ready');
  await assertExact(feed, backend, 'before');

  network.down = true;
  herald.socket.close(4200);
  await waitFor(herald, 'reconnecting');
  await backend.edit('a', { id: 'a', v: 2 });
  await backend.retract('b');
  await backend.publish('d', { id: 'd' }, { index: 0 });
  await backend.move('c', { index: 0 });
  assert.deepEqual(feed.items.map((i) => i.id), ['a', 'b', 'c'], 'the copy waits, unchanged, while offline');

  const reset = waitFor(feed, 'reset', { timeout: 10000 });
  network.down = false;
  const { items } = await reset;
  assert.deepEqual(items.map((i) => i.id), ['c', 'd', 'a']);
  await assertExact(feed, backend, 'after the reconnect');
  const subscribes = sent.filter((f) => f.event === 'pusher:subscribe').map((f) => f.data);
  const expected = { channel: name, snapshot: true };
  assert.deepEqual(subscribes, [expected, expected], 'the first subscribe and one resubscribe: with a snapshot, no resume');
  herald.disconnect();
});

test('private feeds are signed like private channels; a channel subscribed before feed() gets its snapshot too', { timeout: 20000 }, async () => {
  const h = await server();
  const name = `private-${uniq('feed-secret')}`;
  const backend = h.feedBackend(name);
  await backend.publish('x', { secret: true });
  const herald = client(h).connect();
  const feed = herald.feed(name);
  await waitFor(feed, 'ready');
  await assertExact(feed, backend, 'private feed');
  await backend.edit('x', { secret: false });
  await assertExact(feed, backend, 'private feed, live');

  const other = uniq('feed-later');
  const laterBackend = h.feedBackend(other);
  await laterBackend.publish('y', 1);
  const sent = recordSends(herald);
  await waitFor(herald.subscribe(other), 'subscribed');
  const late = herald.feed(other);
  await waitFor(late, 'ready');
  assert.equal(sent.filter((f) => f.event === 'herald:feed_snapshot_request').length, 1);
  await assertExact(late, laterBackend, 'feed() after subscribe()');
  herald.disconnect();
});
