// HTTP API through the official `pusher` server SDK (and raw signed requests for the error cases):
// trigger, triggerBatch, channel queries, users, request signing and input validation.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, uniq, assertNoneBefore, signedQuery, hmacHex, eventually,
} from './harness.mjs';

const MAIN = { id: '1', key: 'app-key', secret: 'app-secret' };
const OTHER = { id: '2', key: 'other-key', secret: 'other-secret' };
const DISABLED = { id: '3', key: 'disabled-key', secret: 'disabled-secret', enabled: false };

let h;
before(async () => { h = await startHerald({ apps: [MAIN, OTHER, DISABLED] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

/** Runs an SDK call expected to fail; returns the RequestError. */
async function sdkError(promiseFn) {
  try {
    await promiseFn();
  } catch (e) {
    if (e.status === undefined) throw e; // not an HTTP error (e.g. client-side validation)
    return e;
  }
  throw new Error('request unexpectedly succeeded');
}

function assertPlainError(res, status) {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
  assert.ok(res.text.length > 0 && res.text.length < 1000, `short message body expected: ${JSON.stringify(res.text)}`);
}

/** Allowed keys in a publish answer: `channels` (info) and Herald's `serials` extension. */
function assertPublishBody(json) {
  assert.equal(typeof json, 'object');
  for (const k of Object.keys(json)) assert.ok(['channels', 'serials', 'batch'].includes(k), `unexpected key ${k} in ${JSON.stringify(json)}`);
}

test('trigger to one channel answers 200 and delivers', async () => {
  const ch = uniq('pub');
  const c = await h.raw();
  await c.subscribeOk(ch);
  const res = await h.sdk().trigger(ch, 'hello', { a: 1 });
  assert.equal(res.status, 200);
  assertPublishBody(await res.json());
  const f = await c.event('hello', { channel: ch });
  assert.equal(f.msg.data, '{"a":1}');
});

test('trigger to several channels delivers once per channel', async () => {
  const chs = [uniq('m1'), uniq('m2'), uniq('m3')];
  const c = await h.raw();
  for (const ch of chs) await c.subscribeOk(ch);
  await h.sdk().trigger(chs, 'multi', 'x');
  for (const ch of chs) await c.event('multi', { channel: ch });
  await h.sdk().trigger(chs[0], 'barrier', 'b');
  await c.event('barrier', { channel: chs[0] });
  assert.equal(c.all('multi').length, 3);
});

test('socket_id excludes exactly that connection', async () => {
  const ch = uniq('excl');
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(ch);
  await b.subscribeOk(ch);
  const sdk = h.sdk();
  await sdk.trigger(ch, 'not-for-a', 'x', { socket_id: a.socketId });
  await b.event('not-for-a', { channel: ch });
  await sdk.trigger(ch, 'for-all', 'y');
  const fa = await a.event('for-all', { channel: ch });
  assertNoneBefore(a, fa, (m) => m.event === 'not-for-a', 'excluded socket received the event');
});

test('trigger with info returns user_count / subscription_count per channel', async () => {
  const pub = uniq('info-pub');
  const pres = `presence-${uniq('info')}`;
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(pub);
  await b.subscribeOk(pub);
  await a.subscribeOk(pres, { presence: { user_id: 'one' } });
  await b.subscribeOk(pres, { presence: { user_id: 'two' } });
  const c = await h.raw();
  await c.subscribeOk(pres, { presence: { user_id: 'two' } }); // second socket of "two"

  const res = await h.sdk().trigger([pub, pres], 'with-info', 'x', { info: 'user_count,subscription_count' });
  assert.equal(res.status, 200);
  const body = await res.json();
  assertPublishBody(body);
  assert.equal(body.channels[pub].subscription_count, 2, JSON.stringify(body));
  assert.equal(body.channels[pub].user_count, undefined, JSON.stringify(body));
  assert.equal(body.channels[pres].user_count, 2, JSON.stringify(body));
  assert.ok([undefined, 3].includes(body.channels[pres].subscription_count), JSON.stringify(body));
});

test('triggerBatch delivers every event, honours per-event socket_id and info', async () => {
  const ch1 = uniq('b1');
  const ch2 = uniq('b2');
  const a = await h.raw();
  const b = await h.raw();
  for (const x of [a, b]) {
    await x.subscribeOk(ch1);
    await x.subscribeOk(ch2);
  }
  const res = await h.sdk().triggerBatch([
    { channel: ch1, name: 'e1', data: { n: 1 } },
    { channel: ch2, name: 'e2', data: 'two', socket_id: a.socketId },
    { channel: ch1, name: 'e3', data: '3', info: 'subscription_count' },
  ]);
  assert.equal(res.status, 200);
  const body = await res.json();
  assertPublishBody(body);
  assert.ok(Array.isArray(body.batch), JSON.stringify(body));
  assert.equal(body.batch.length, 3, JSON.stringify(body));
  assert.equal(body.batch[2].subscription_count, 2, JSON.stringify(body));
  for (const x of [a, b]) {
    assert.equal((await x.event('e1', { channel: ch1 })).msg.data, '{"n":1}');
    await x.event('e3', { channel: ch1 });
  }
  await b.event('e2', { channel: ch2 });
  await h.sdk().trigger(ch2, 'barrier', 'b');
  const fa = await a.event('barrier', { channel: ch2 });
  assertNoneBefore(a, fa, (m) => m.event === 'e2', 'batch socket_id exclusion ignored');
});

// ---------------------------------------------------------------------------------------------
// Channel queries
// ---------------------------------------------------------------------------------------------

test('GET /channels lists occupied channels, filter_by_prefix and user_count', async () => {
  const tag = uniq('q').replace(/-/g, '');
  const pub = `${tag}-public`;
  const pres1 = `presence-${tag}-1`;
  const pres2 = `presence-${tag}-2`;
  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(pub);
  await a.subscribeOk(pres1, { presence: { user_id: 'u1' } });
  await b.subscribeOk(pres1, { presence: { user_id: 'u2' } });
  await b.subscribeOk(pres2, { presence: { user_id: 'u2' } });
  const sdk = h.sdk();

  const all = await (await sdk.get({ path: '/channels' })).json();
  assert.deepEqual(all.channels[pub], {});
  assert.ok(all.channels[pres1] && all.channels[pres2], JSON.stringify(all));

  const byPrefix = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: tag } })).json();
  assert.deepEqual(byPrefix, { channels: { [pub]: {} } });

  const presence = await (await sdk.get({
    path: '/channels', params: { filter_by_prefix: `presence-${tag}`, info: 'user_count' },
  })).json();
  assert.deepEqual(presence, { channels: { [pres1]: { user_count: 2 }, [pres2]: { user_count: 1 } } });

  // unoccupied channels disappear
  await b.close();
  await a.close();
  await eventually(async () => {
    const after = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: `presence-${tag}` } })).json();
    assert.deepEqual(after, { channels: {} });
    return true;
  }, { label: 'vacated channels to disappear' });

  const err = await sdkError(() => sdk.get({ path: '/channels', params: { info: 'user_count' } }));
  assert.equal(err.status, 400, err.body);
  const err2 = await sdkError(() => sdk.get({ path: '/channels', params: { filter_by_prefix: tag, info: 'user_count' } }));
  assert.equal(err2.status, 400, err2.body);
});

test('GET /channels/{name}: occupied, subscription_count, user_count', async () => {
  const pub = uniq('one');
  const pres = `presence-${uniq('one')}`;
  const sdk = h.sdk();
  const empty = await (await sdk.get({ path: `/channels/${pub}` })).json();
  assert.deepEqual(empty, { occupied: false });

  const a = await h.raw();
  const b = await h.raw();
  await a.subscribeOk(pub);
  await b.subscribeOk(pub);
  await a.subscribeOk(pres, { presence: { user_id: 'x' } });
  await b.subscribeOk(pres, { presence: { user_id: 'x' } });

  const pubInfo = await (await sdk.get({ path: `/channels/${pub}`, params: { info: 'subscription_count' } })).json();
  assert.deepEqual(pubInfo, { occupied: true, subscription_count: 2 });
  const presInfo = await (await sdk.get({ path: `/channels/${pres}`, params: { info: 'user_count' } })).json();
  assert.deepEqual(presInfo, { occupied: true, user_count: 1 });
  const plain = await (await sdk.get({ path: `/channels/${pres}` })).json();
  assert.deepEqual(plain, { occupied: true });

  const e1 = await sdkError(() => sdk.get({ path: `/channels/${pub}`, params: { info: 'user_count' } }));
  assert.equal(e1.status, 400, e1.body);
  const e2 = await sdkError(() => sdk.get({ path: `/channels/${pres}`, params: { info: 'subscription_count' } }));
  assert.equal(e2.status, 400, e2.body);
});

test('GET /channels/{name}/users: distinct users of a presence channel; 400 otherwise', async () => {
  const pres = `presence-${uniq('users')}`;
  const a = await h.raw();
  const b = await h.raw();
  const c = await h.raw();
  await a.subscribeOk(pres, { presence: { user_id: '1' } });
  await b.subscribeOk(pres, { presence: { user_id: '2' } });
  await c.subscribeOk(pres, { presence: { user_id: '2' } });
  const sdk = h.sdk();
  const body = await (await sdk.get({ path: `/channels/${pres}/users` })).json();
  assert.deepEqual(body.users.map((u) => u.id).sort(), ['1', '2']);
  assert.deepEqual(Object.keys(body), ['users']);
  for (const u of body.users) assert.deepEqual(Object.keys(u), ['id']);

  const e = await sdkError(() => sdk.get({ path: `/channels/${uniq('pub')}/users` }));
  assert.equal(e.status, 400, e.body);
  const p = await sdkError(() => sdk.get({ path: `/channels/private-${uniq('p')}/users` }));
  assert.equal(p.status, 400, p.body);
});

// ---------------------------------------------------------------------------------------------
// Authentication of API requests
// ---------------------------------------------------------------------------------------------

const eventBody = (ch = 'auth-test') => ({ name: 'e', channels: [ch], data: '{}' });

test('signature: a correct raw signed request is accepted (sanity for the cases below)', async () => {
  const res = await h.http({ method: 'POST', path: `/apps/${MAIN.id}/events`, body: eventBody() });
  assert.equal(res.status, 200, res.text);
  const old = await h.http({
    method: 'POST', path: `/apps/${MAIN.id}/events`, body: eventBody(), timestamp: Math.floor(Date.now() / 1000) - 500,
  });
  assert.equal(old.status, 200, `a 500 s old timestamp is within the window: ${old.text}`);
});

test('signature: wrong secret → 401 (SDK)', async () => {
  const bad = h.sdk({ ...MAIN, secret: 'not-the-secret' });
  const e = await sdkError(() => bad.trigger('x', 'y', {}));
  assert.equal(e.status, 401, e.body);
  const g = await sdkError(() => bad.get({ path: '/channels' }));
  assert.equal(g.status, 401, g.body);
});

test('signature: unknown auth_key, other app\'s key → 401', async () => {
  const r1 = await h.http({ method: 'POST', path: `/apps/${MAIN.id}/events`, body: eventBody(), key: 'unknown-key', secret: MAIN.secret });
  assertPlainError(r1, 401);
  const r2 = await h.http({ method: 'POST', path: `/apps/${MAIN.id}/events`, body: eventBody(), key: OTHER.key, secret: OTHER.secret });
  assertPlainError(r2, 401);
});

test('signature: stale and future auth_timestamp (> 600 s) → 401', async () => {
  const now = Math.floor(Date.now() / 1000);
  for (const ts of [now - 601, now - 3600, now + 601, 1353088179]) {
    const r = await h.http({ method: 'POST', path: `/apps/${MAIN.id}/events`, body: eventBody(), timestamp: ts });
    assertPlainError(r, 401);
    const g = await h.http({ path: `/apps/${MAIN.id}/channels`, timestamp: ts });
    assertPlainError(g, 401);
  }
});

test('signature: tampered body, missing body_md5, tampered query, wrong method, missing params → 401', async () => {
  const path = `/apps/${MAIN.id}/events`;
  const body = JSON.stringify(eventBody());
  const qs = signedQuery({ method: 'POST', path, body, key: MAIN.key, secret: MAIN.secret });
  const tampered = JSON.stringify(eventBody('other-channel'));
  assertPlainError(await h.http({ method: 'POST', path, body: tampered, rawQuery: qs }), 401);

  // body_md5 left out of query and signature
  const ts = Math.floor(Date.now() / 1000);
  const noMd5 = `auth_key=${MAIN.key}&auth_timestamp=${ts}&auth_version=1.0`;
  const sig = hmacHex(MAIN.secret, `POST\n${path}\n${noMd5}`);
  assertPlainError(await h.http({ method: 'POST', path, body, rawQuery: `${noMd5}&auth_signature=${sig}` }), 401);

  // an extra query param that was not signed
  assertPlainError(await h.http({ path: `/apps/${MAIN.id}/channels`, rawQuery: `${signedQuery({ method: 'GET', path: `/apps/${MAIN.id}/channels`, key: MAIN.key, secret: MAIN.secret })}&filter_by_prefix=presence-` }), 401);

  // signed as GET, sent as POST
  const getQs = signedQuery({ method: 'GET', path, body, key: MAIN.key, secret: MAIN.secret });
  assertPlainError(await h.http({ method: 'POST', path, body, rawQuery: getQs }), 401);

  // signed for another path
  const otherPathQs = signedQuery({ method: 'GET', path: `/apps/${MAIN.id}/channels/x`, key: MAIN.key, secret: MAIN.secret });
  assertPlainError(await h.http({ path: `/apps/${MAIN.id}/channels`, rawQuery: otherPathQs }), 401);

  // no auth at all, no signature
  assertPlainError(await h.http({ path: `/apps/${MAIN.id}/channels`, rawQuery: '' }), 401);
  const unsigned = signedQuery({ method: 'GET', path: `/apps/${MAIN.id}/channels`, key: MAIN.key, secret: MAIN.secret })
    .replace(/&auth_signature=[0-9a-f]+$/, '');
  assertPlainError(await h.http({ path: `/apps/${MAIN.id}/channels`, rawQuery: unsigned }), 401);
});

test('unknown app id → 404; disabled app → 403', async () => {
  const r = await h.http({ method: 'POST', path: '/apps/999/events', body: eventBody() });
  assertPlainError(r, 404);
  const g = await h.http({ path: '/apps/999/channels' });
  assertPlainError(g, 404);
  const d = await h.http({ app: DISABLED, method: 'POST', path: `/apps/${DISABLED.id}/events`, body: eventBody() });
  assertPlainError(d, 403);
  const e = await sdkError(() => h.sdk(DISABLED).trigger('x', 'y', {}));
  assert.equal(e.status, 403, e.body);
});

// ---------------------------------------------------------------------------------------------
// Input validation
// ---------------------------------------------------------------------------------------------

test('data over 10 KB → 413; exactly 10 KB is accepted', async () => {
  const sdk = h.sdk();
  const ok = await sdk.trigger(uniq('size'), 'big', 'x'.repeat(10240));
  assert.equal(ok.status, 200);
  const e = await sdkError(() => sdk.trigger(uniq('size'), 'big', 'x'.repeat(10241)));
  assert.equal(e.status, 413, e.body);
  const b = await sdkError(() => sdk.triggerBatch([{ channel: uniq('size'), name: 'big', data: 'y'.repeat(20000) }]));
  assert.equal(b.status, 413, b.body);
});

test('too many channels, too big batch → 400; the limits themselves are accepted', async () => {
  const sdk = h.sdk();
  const hundred = Array.from({ length: 100 }, (_, i) => `lim-${i}`);
  assert.equal((await sdk.trigger(hundred, 'e', 'x')).status, 200);
  const r = await h.http({
    method: 'POST', path: `/apps/${MAIN.id}/events`, body: { name: 'e', data: 'x', channels: [...hundred, 'lim-100'] },
  });
  assertPlainError(r, 400);

  const ten = Array.from({ length: 10 }, (_, i) => ({ channel: `bat-${i}`, name: 'e', data: 'x' }));
  assert.equal((await sdk.triggerBatch(ten)).status, 200);
  const eleven = [...ten, { channel: 'bat-10', name: 'e', data: 'x' }];
  const e = await sdkError(() => sdk.triggerBatch(eleven));
  assert.equal(e.status, 400, e.body);
});

test('malformed publish requests → 400', async () => {
  const path = `/apps/${MAIN.id}/events`;
  const bad = {
    'invalid JSON': '{"name":',
    'JSON array': '[]',
    'missing name': { data: 'x', channels: ['a'] },
    'missing channels': { name: 'e', data: 'x' },
    'missing data': { name: 'e', channels: ['a'] },
    'empty channels': { name: 'e', data: 'x', channels: [] },
    'invalid channel name': { name: 'e', data: 'x', channels: ['bad channel'] },
    'channel name too long': { name: 'e', data: 'x', channels: ['c'.repeat(201)] },
    'event name too long': { name: 'e'.repeat(201), data: 'x', channels: ['a'] },
    'malformed socket_id': { name: 'e', data: 'x', channels: ['a'], socket_id: 'not-a-socket' },
    'name is a number': { name: 5, data: 'x', channels: ['a'] },
  };
  for (const [label, body] of Object.entries(bad)) {
    const r = await h.http({ method: 'POST', path, body });
    assert.equal(r.status, 400, `${label}: ${r.status} ${r.text}`);
    assertPlainError(r, 400);
  }
  const batchPath = `/apps/${MAIN.id}/batch_events`;
  for (const body of ['nope', { batch: 'x' }, { batch: [{ name: 'e', data: 'x' }] }, {}]) {
    const r = await h.http({ method: 'POST', path: batchPath, body });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.status} ${r.text}`);
  }
});

test('unknown API route → 404', async () => {
  const r = await h.http({ path: `/apps/${MAIN.id}/no-such-thing` });
  assert.equal(r.status, 404, r.text);
});
