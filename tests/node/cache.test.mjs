// Cache channels (cache-, private-cache-, presence-cache-): the last event is replayed to a new
// subscriber right after subscription_succeeded, or pusher:cache_miss is sent.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, waitFor, uniq, assertNoneBefore, eventually,
} from './harness.mjs';

const MAIN = { id: '1', key: 'app-key', secret: 'app-secret' };
const SHORT = { id: '2', key: 'short-key', secret: 'short-secret', cache_ttl_secs: 1 };

let h;
before(async () => { h = await startHerald({ apps: [MAIN, SHORT] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

const KINDS = [
  ['cache-', {}],
  ['private-cache-', {}],
  ['presence-cache-', { presence: { user_id: 'cache-user' } }],
];

/** Index of a frame in the client's log (for ordering assertions). */
const at = (c, f) => c.frames.indexOf(f);

for (const [prefix, subOpts] of KINDS) {
  test(`${prefix}: empty cache gives pusher:cache_miss right after subscription_succeeded`, async () => {
    const ch = `${prefix}${uniq('miss')}`;
    const c = await h.raw();
    const ok = await c.subscribeOk(ch, subOpts);
    const miss = await c.event('pusher:cache_miss', { channel: ch });
    assert.equal(miss.channel, ch);
    assert.ok(miss.msg.data === undefined || miss.msg.data === '{}' || miss.msg.data === '' || miss.msg.data === null
      || (typeof miss.msg.data === 'object' && Object.keys(miss.msg.data).length === 0), miss.raw);
    assert.equal(at(c, miss), at(c, ok) + 1, `cache_miss must directly follow subscription_succeeded: ${c.dump()}`);
  });

  test(`${prefix}: the last event is replayed once to a new subscriber only`, async () => {
    const ch = `${prefix}${uniq('hit')}`;
    const sdk = h.sdk();
    const old = await h.raw();
    await old.subscribeOk(ch, prefix.startsWith('presence') ? { presence: { user_id: 'old-user' } } : {});
    await old.event('pusher:cache_miss', { channel: ch });

    await sdk.trigger(ch, 'state', '{"v":1}');
    await sdk.trigger(ch, 'state', '{"v":2}');
    await old.next((m) => m.event === 'state' && m.data.v === 2);

    const c = await h.raw();
    const ok = await c.subscribeOk(ch, subOpts);
    const replay = await c.event('state', { channel: ch });
    assert.equal(replay.msg.data, '{"v":2}', 'the latest event is replayed, verbatim');
    assert.ok(at(c, replay) > at(c, ok), 'replay comes after subscription_succeeded');
    // presence: member_added for others may not interleave wrongly, but the replay is the first channel event
    const between = c.frames.slice(at(c, ok) + 1, at(c, replay)).filter((m) => m.channel === ch && !m.event.startsWith('pusher_internal:'));
    assert.deepEqual(between.map((m) => m.raw), [], 'the cached event is the first event on the channel');

    await sdk.trigger(ch, 'state', '{"v":3}');
    const live = await c.next((m) => m.event === 'state' && m.data.v === 3);
    assertNoneBefore(c, live, (m) => m.event === 'pusher:cache_miss', 'cache_miss despite a cached event');
    assert.equal(c.all((m) => m.event === 'state').length, 2, `one replay + one live event: ${c.dump()}`);
    // the existing subscriber did not get a replay
    const oldLive = await old.next((m) => m.event === 'state' && m.data.v === 3);
    assert.equal(old.all((m) => m.event === 'state' && m.data.v === 2).length, 1, 'no replay to existing subscribers');
    assert.ok(oldLive);
  });
}

test('pusher-js: pusher:cache_miss event and a replayed event', async () => {
  const ch = `cache-${uniq('js')}`;
  const client = await h.connectedPusher();
  const channel = client.subscribe(ch);
  await waitFor(channel, 'pusher:cache_miss');

  await h.sdk().trigger(ch, 'price', { eur: 10 });
  const other = await h.connectedPusher();
  const ch2 = other.subscribe(ch);
  assert.deepEqual(await waitFor(ch2, 'price'), { eur: 10 });
});

test('HTTP info=cache reports the cached event and its ttl', async () => {
  const ch = `cache-${uniq('info')}`;
  const empty = await h.http({ path: `/apps/${MAIN.id}/channels/${ch}`, params: { info: 'cache' } });
  assert.equal(empty.status, 200, empty.text);
  assert.equal(empty.json.occupied, false);
  assert.ok(empty.json.cache === null || empty.json.cache === undefined, empty.text);

  await h.sdk().trigger(ch, 'snap', '{"x":1}');
  const res = await h.http({ path: `/apps/${MAIN.id}/channels/${ch}`, params: { info: 'cache' } });
  assert.equal(res.status, 200, res.text);
  const { cache } = res.json;
  assert.ok(cache && typeof cache === 'object', res.text);
  assert.equal(cache.data, '{"x":1}', `cache.data holds the event data verbatim: ${res.text}`);
  assert.equal(cache.event, 'snap', `cache.event names the cached event (Herald): ${res.text}`);
  assert.equal(typeof cache.ttl, 'number', res.text);
  assert.ok(cache.ttl > 0 && cache.ttl <= 1800, res.text);
  // info=cache only applies to cache channels
  const notCache = await h.http({ path: `/apps/${MAIN.id}/channels/${uniq('plain')}`, params: { info: 'cache' } });
  assert.equal(notCache.status, 400, notCache.text);
});

test('client events are not cached', async () => {
  const ch = `private-cache-${uniq('client')}`;
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(ch);
  await b.subscribeOk(ch);
  a.send({ event: 'client-x', channel: ch, data: { not: 'cached' } });
  await b.event('client-x', { channel: ch });
  const c = await h.raw();
  await c.subscribeOk(ch);
  await c.event('pusher:cache_miss', { channel: ch });
  assert.equal(c.all('client-x').length, 0);
});

test('batch events fill the cache too', async () => {
  const ch = `cache-${uniq('batch')}`;
  await h.sdk().triggerBatch([
    { channel: ch, name: 'b', data: '1' },
    { channel: ch, name: 'b', data: '2' },
  ]);
  const c = await h.raw();
  await c.subscribeOk(ch);
  const f = await c.event('b', { channel: ch });
  assert.equal(f.msg.data, '2');
});

test('the cached event expires after cache_ttl_secs', async () => {
  const ch = `cache-${uniq('ttl')}`;
  await h.sdk(SHORT).trigger(ch, 'ephemeral', 'e');
  const c = await h.raw({ app: SHORT });
  await c.subscribeOk(ch);
  await c.event('ephemeral', { channel: ch });
  // poll the HTTP API until the cache entry is gone (TTL is 1 s)
  await eventually(async () => {
    const r = await h.http({ app: SHORT, path: `/apps/${SHORT.id}/channels/${ch}`, params: { info: 'cache' } });
    return r.status === 200 && (r.json.cache === null || r.json.cache === undefined);
  }, { timeout: 5000, interval: 200, label: 'cache entry to expire' });
  const d = await h.raw({ app: SHORT });
  await d.subscribeOk(ch);
  await d.event('pusher:cache_miss', { channel: ch });
  assert.equal(d.all('ephemeral').length, 0);
});
