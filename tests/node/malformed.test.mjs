// Malformed and oversized frames: non-fatal pusher:error codes (Herald extension 4303-4305), the
// offending connection stays open and other clients on the same channel are unaffected.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, uniq, withTimeout } from './harness.mjs';

const MAIN = { id: '1', key: 'app-key', secret: 'app-secret' };

let h;
before(async () => { h = await startHerald({ apps: [MAIN] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

function assertPusherError(f, code) {
  assert.equal(f.event, 'pusher:error', f.raw);
  assert.equal(f.data.code, code, f.raw);
  assert.equal(typeof f.data.message, 'string', f.raw);
  assert.ok(f.data.message.length > 0);
}

/** A channel with a bad client and a healthy watcher, both subscribed. */
async function setup() {
  const ch = `private-${uniq('mal')}`;
  const bad = await h.raw();
  const watcher = await h.raw();
  await bad.subscribeOk(ch);
  await watcher.subscribeOk(ch);
  let n = 0;
  const stillWorks = async ({ badToo = true } = {}) => {
    n += 1;
    const name = `alive-${n}`;
    await h.sdk().trigger(ch, name, String(n));
    await watcher.event(name, { channel: ch });
    if (badToo) await bad.event(name, { channel: ch });
  };
  return { ch, bad, watcher, stillWorks };
}

test('invalid JSON → 4303, connection stays open, others keep receiving', async () => {
  const { bad, stillWorks } = await setup();
  bad.sendRaw('{"event": "pusher:ping", ');
  assertPusherError(await bad.error(4303), 4303);
  await bad.ping();
  await stillWorks();
});

test('JSON that is not an object → 4303', async () => {
  const { bad, stillWorks } = await setup();
  for (const frame of ['[]', '42', '"pusher:ping"', 'null', 'true', '[{"event":"pusher:ping"}]']) {
    bad.sendRaw(frame);
    const f = await bad.next((m) => m.event === 'pusher:error', { label: `error for ${frame}` });
    assertPusherError(f, 4303);
  }
  await stillWorks();
});

test('missing or mistyped fields → 4303', async () => {
  const { bad, stillWorks } = await setup();
  const frames = [
    {},
    { data: {} },
    { event: 5, data: {} },
    { event: null },
    { event: 'pusher:subscribe' },
    { event: 'pusher:subscribe', data: {} },
    { event: 'pusher:subscribe', data: { channel: 5 } },
    { event: 'pusher:unsubscribe', data: {} },
  ];
  for (const frame of frames) {
    bad.send(frame);
    const f = await bad.next((m) => m.event === 'pusher:error', { label: `error for ${JSON.stringify(frame)}` });
    assertPusherError(f, 4303);
  }
  assert.ok(bad.isOpen);
  // a client event without a channel: malformed (4303) or rejected (4306), never fatal
  bad.send({ event: 'client-x', data: {} });
  const f = await bad.next((m) => m.event === 'pusher:error');
  assert.ok([4303, 4306].includes(f.data.code), f.raw);
  await stillWorks();
});

test('unknown pusher: event → 4304', async () => {
  const { bad, stillWorks } = await setup();
  bad.send({ event: 'pusher:does_not_exist', data: {} });
  assertPusherError(await bad.error(4304), 4304);
  bad.send({ event: 'pusher_internal:subscription_succeeded', channel: 'x', data: '{}' });
  const f = await bad.next((m) => m.event === 'pusher:error');
  assert.ok([4304, 4303].includes(f.data.code), f.raw);
  await stillWorks();
});

test('client event data over 10 KB → 4305 and not relayed', async () => {
  const { ch, bad, watcher, stillWorks } = await setup();
  bad.send({ event: 'client-huge', channel: ch, data: { blob: 'x'.repeat(20 * 1024) } });
  assertPusherError(await bad.error(4305), 4305);
  await stillWorks();
  assert.equal(watcher.all('client-huge').length, 0);
  // a client event just under the limit still goes through
  bad.send({ event: 'client-small', channel: ch, data: { blob: 'y'.repeat(9 * 1024) } });
  await watcher.event('client-small', { channel: ch });
});

test('a very large frame (1 MB) does not disturb other clients', async () => {
  const { ch, bad, stillWorks } = await setup();
  bad.send({ event: 'client-enormous', channel: ch, data: 'z'.repeat(1024 * 1024) });
  // Either a non-fatal 4305 (connection stays) or the WebSocket layer refuses the frame with 1009
  // (docs/protocol.md: a frame far over the cap may reset the TCP connection, seen as 1006).
  const outcome = await Promise.race([
    bad.error(4305).then((f) => ({ error: f })),
    bad.closed.then((info) => ({ closed: info })),
  ]);
  if (outcome.closed) assert.ok([1009, 1006].includes(outcome.closed.code), bad.dump());
  await stillWorks({ badToo: !outcome.closed });
});

test('binary frames are rejected without disturbing others', async () => {
  const { bad, stillWorks } = await setup();
  bad.sendRaw(Buffer.from([0xde, 0xad, 0xbe, 0xef]), { binary: true });
  const outcome = await Promise.race([
    bad.next((m) => m.event === 'pusher:error').then((f) => ({ error: f })),
    bad.closed.then((info) => ({ closed: info })),
  ]);
  if (outcome.closed) assert.ok([1003, 1007].includes(outcome.closed.code), bad.dump());
  else assertPusherError(outcome.error, 4303);
  await stillWorks({ badToo: !outcome.closed });
});

test('a stream of bad frames keeps the connection usable', async () => {
  const { bad, stillWorks } = await setup();
  for (let i = 0; i < 5; i += 1) bad.sendRaw(`garbage ${i}`);
  for (let i = 0; i < 5; i += 1) assertPusherError(await bad.error(4303), 4303);
  const pong = await withTimeout(bad.ping(), 5000, 'pong');
  assert.ok(pong);
  await stillWorks();
  const ch2 = uniq('after-garbage');
  await bad.subscribeOk(ch2);
});
