// Read cursors and unread counts through the Herald JS client against the real binary: the count a
// signed-in subscribe brings, a mark in one tab reaching every tab of the same user (and no other
// user), marks made offline, the user stream's resume, and marks made by the backend over HTTP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { heraldServers, gatedWebSocket } from '../test-support.mjs';
import { Herald } from '../src/index.js';
import { uniq, waitFor, collect } from '../../../tests/node/harness.mjs';

const server = heraldServers();

/** A client that signs in as `user` when asked to. */
function client(h, user, options = {}) {
  const sdk = h.sdk();
  return new Herald(h.app.key, {
    url: `ws://${h.host}:${h.port}`,
    signin: async ({ socketId }) => sdk.authenticateUser(socketId, { id: user }),
    authorize: async ({ socketId, channel }) => sdk.authorizeChannel(socketId, channel),
    ...options,
  });
}

/** A signed-in tab of `user` subscribed to `channel` with `unread: true`, and the state it got. */
async function tab(h, user, channel, options) {
  const herald = client(h, user, options).connect();
  herald.signin();
  const state = waitFor(herald, 'unread', { filter: (u) => u.channel === channel });
  herald.subscribe(channel, { unread: true });
  const updates = collect(herald, 'unread');
  return { herald, first: await state, updates };
}

/** Publishes `count` events on `channel` through the events API; returns their serials. */
async function publish(h, channel, count, { countUnread = true } = {}) {
  const serials = [];
  for (let i = 0; i < count; i += 1) {
    const body = { name: 'message', channels: [channel], data: JSON.stringify({ i }) };
    if (countUnread) body.count_unread = true;
    const res = await h.http({ method: 'POST', path: `/apps/${h.app.id}/events`, body });
    assert.equal(res.status, 200, res.text);
    serials.push(res.json.serials[channel]);
  }
  return serials;
}

/** Resolves with the next 'unread' update of `channel` at `cursor`. */
function cursorAt(herald, channel, cursor, timeout = 5000) {
  const state = herald.unread(channel);
  if (state && state.cursor === cursor) return Promise.resolve({ channel, ...state });
  return waitFor(herald, 'unread', { timeout, filter: (u) => u.channel === channel && u.cursor === cursor });
}

test('a mark in one tab updates every tab of the same user, and no other user', { timeout: 20000 }, async () => {
  const h = await server();
  const room = uniq('room');
  const [s1, s2] = await publish(h, room, 3);
  const ann = uniq('ann');
  const bob = uniq('bob');
  const ann1 = await tab(h, ann, room);
  const ann2 = await tab(h, ann, room);
  const bob1 = await tab(h, bob, room);
  for (const t of [ann1, ann2, bob1]) assert.deepEqual(t.first, { channel: room, cursor: 0, unread: 3 });
  assert.deepEqual(ann1.herald.unread(room), { cursor: 0, unread: 3 });

  const atAnn2 = cursorAt(ann2.herald, room, s2);
  const atAnn1 = cursorAt(ann1.herald, room, s2);
  const channelUpdate = waitFor(ann2.herald.channels.get(room), 'unread');
  assert.equal(ann1.herald.markRead(room, s2), true);
  assert.deepEqual(await atAnn2, { channel: room, cursor: s2, unread: 1 }, 'the other tab');
  assert.deepEqual(await atAnn1, { channel: room, cursor: s2, unread: 1 }, 'the tab that marked');
  assert.deepEqual(await channelUpdate, { cursor: s2, unread: 1 }, "also on the channel's own 'unread'");
  assert.deepEqual(ann2.herald.unread(room), { cursor: s2, unread: 1 });

  // Bob marks his own: his stream then carries his read, and nothing of Ann's came before it
  // (Ann's mark was out before Bob's was sent, so it would have been queued first).
  const bobOwn = cursorAt(bob1.herald, room, s1);
  bob1.herald.markRead(room, s1);
  assert.deepEqual(await bobOwn, { channel: room, cursor: s1, unread: 2 });
  assert.deepEqual(bob1.updates.items, [{ channel: room, cursor: 0, unread: 3 }, { channel: room, cursor: s1, unread: 2 }],
    "his subscribe's count, then his own mark: nothing from Ann's");
  assert.deepEqual(ann2.herald.unread(room), { cursor: s2, unread: 1 }, "Bob's mark is not Ann's");
  for (const t of [ann1, ann2, bob1]) t.herald.disconnect();
});

test('an unread subscribe waits for the sign-in under way; a later signin() asks again', { timeout: 20000 }, async () => {
  const h = await server();
  const room = uniq('room');
  await publish(h, room, 2);
  const cy = uniq('cy');

  // signin() before the connection is up: one subscribe, sent after the sign-in, with unread.
  const first = client(h, cy);
  const sent = [];
  const realSend = first.send.bind(first);
  first.send = (frame) => { sent.push(frame); return realSend(frame); };
  first.connect();
  first.signin();
  first.subscribe(room, { unread: true });
  assert.deepEqual(await waitFor(first, 'unread'), { channel: room, cursor: 0, unread: 2 });
  const order = sent.map((f) => f.event).filter((e) => e === 'pusher:signin' || e === 'pusher:subscribe');
  assert.deepEqual(order, ['pusher:signin', 'pusher:subscribe']);
  assert.deepEqual(sent.find((f) => f.event === 'pusher:subscribe').data, { channel: room, unread: true });

  // Subscribed first, signed in later: the channel is subscribed again, signed in, for its count.
  const later = client(h, cy).connect();
  const channel = later.subscribe(room, { unread: true });
  await waitFor(channel, 'subscribed');
  assert.equal(later.unread(room), undefined, 'not signed in: no read state');
  const state = waitFor(later, 'unread');
  later.signin();
  assert.deepEqual(await state, { channel: room, cursor: 0, unread: 2 });
  first.disconnect();
  later.disconnect();
});

test('markRead defaults to the last serial seen, only moves forward; only counted events count', { timeout: 20000 }, async () => {
  const h = await server();
  const room = uniq('room');
  const dee = uniq('dee');
  const one = await tab(h, dee, room);
  assert.deepEqual(one.first, { channel: room, cursor: 0, unread: 0 });
  const messages = collect(one.herald.channels.get(room), 'message');
  const counted = await publish(h, room, 2);
  const [plain] = await publish(h, room, 1, { countUnread: false });
  const [last] = await publish(h, room, 1);
  await messages.waitForCount(4);
  assert.ok(plain > counted[1] && last > plain);

  const two = await tab(h, dee, room); // another tab, opened now
  assert.deepEqual(two.first, { channel: room, cursor: 0, unread: 3 }, 'the uncounted event is not unread');

  const caughtUp = cursorAt(two.herald, room, last);
  assert.equal(one.herald.markRead(room), true, 'up to the last serial this tab saw');
  assert.deepEqual(await caughtUp, { channel: room, cursor: last, unread: 0 });
  await cursorAt(one.herald, room, last);
  const sent = [];
  const realSend = one.herald.send.bind(one.herald);
  one.herald.send = (frame) => { sent.push(frame); return realSend(frame); };
  assert.equal(one.herald.markRead(room, counted[0]), false, 'behind the cursor: nothing to mark');
  assert.equal(one.herald.markRead(room, last), false, 'at the cursor: nothing to mark');
  assert.deepEqual(sent, []);
  one.herald.disconnect();
  two.herald.disconnect();
});

test('a tab that was offline gets the marks made meanwhile and sends its own once back', { timeout: 30000 }, async () => {
  const h = await server();
  const room = uniq('room');
  const [, s2, s3] = await publish(h, room, 4);
  const eve = uniq('eve');
  const { network, WebSocket: GatedWebSocket } = gatedWebSocket();
  const online = await tab(h, eve, room);
  const offline = await tab(h, eve, room, { WebSocket: GatedWebSocket, transports: ['ws'], backoff: { base: 50, cap: 200 } });
  const resumes = collect(offline.herald.user, 'subscribed');

  network.down = true;
  offline.herald.socket.close(4200);
  await waitFor(offline.herald, 'reconnecting');
  online.herald.markRead(room, s2);
  await cursorAt(online.herald, room, s2);
  assert.equal(offline.herald.markRead(room, s3), true, 'kept until it can be sent');
  assert.deepEqual(offline.herald.unread(room), { cursor: 0, unread: 4 }, 'nothing new while offline');

  const bothAtS3 = Promise.all([cursorAt(online.herald, room, s3, 10000), cursorAt(offline.herald, room, s3, 10000)]);
  network.down = false;
  await bothAtS3;
  assert.deepEqual(offline.herald.unread(room), { cursor: s3, unread: 1 });
  assert.deepEqual(online.herald.unread(room), { cursor: s3, unread: 1 });
  assert.equal(resumes.items.at(-1).recovered, true, 'the user stream resumed');
  assert.ok(offline.updates.items.some((u) => u.cursor === s2), "the other tab's mark reached it after the reconnect");
  assert.equal(offline.herald.marks.size, 0, 'the offline mark was confirmed');
  online.herald.disconnect();
  offline.herald.disconnect();
});

test('a backend mark over HTTP reaches the user\'s tabs; the HTTP unread answer agrees', { timeout: 20000 }, async () => {
  const h = await server();
  const room = uniq('room');
  const other = uniq('room');
  const [, s2] = await publish(h, room, 3);
  await publish(h, other, 2);
  const fay = uniq('fay');
  const t = await tab(h, fay, room);

  const moved = cursorAt(t.herald, room, s2);
  const res = await h.http({ method: 'POST', path: `/apps/${h.app.id}/users/${fay}/read`, body: { channel: room, serial: s2 } });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json, { channel: room, cursor: s2, unread: 1, moved: true });
  assert.deepEqual(await moved, { channel: room, cursor: s2, unread: 1 });

  const again = await h.http({ method: 'POST', path: `/apps/${h.app.id}/users/${fay}/read`, body: { channel: room, serial: 1 } });
  assert.deepEqual(again.json, { channel: room, cursor: s2, unread: 1, moved: false }, 'a cursor never goes back');

  const counts = await h.http({ method: 'POST', path: `/apps/${h.app.id}/users/${fay}/unread`, body: { channels: [room, other] } });
  assert.equal(counts.status, 200, counts.text);
  assert.deepEqual(counts.json, { channels: { [room]: { cursor: s2, unread: 1 }, [other]: { cursor: 0, unread: 2 } } });
  assert.deepEqual(t.herald.unread(room), counts.json.channels[room]);
  t.herald.disconnect();
});
