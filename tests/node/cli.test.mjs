// Apps given on the command line (--app ID:KEY:SECRET, repeatable) with the per-app defaults:
// client events and user sign-in enabled, Pusher's limits.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, subscribed, waitFor, uniq } from './harness.mjs';

const A = { id: '7', key: 'cli-key-a', secret: 'cli-secret-a' };
const B = { id: '8', key: 'cli-key-b', secret: 'cli-secret-b' };

let h;
before(async () => { h = await startHerald({ apps: [], cliApps: [A, B] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

test('--app apps accept connections and API calls, each with its own credentials', async () => {
  for (const app of [A, B]) {
    const client = await h.connectedPusher({ app });
    const ch = await subscribed(client, `private-${uniq('cli')}`);
    const got = waitFor(ch, 'hello');
    await h.sdk(app).trigger(ch.name, 'hello', { app: app.id });
    assert.deepEqual(await got, { app: app.id });
  }
  // A's key does not sign for B
  const r = await h.http({ method: 'POST', path: `/apps/${B.id}/events`, body: { name: 'e', channels: ['x'], data: '' }, key: A.key, secret: A.secret });
  assert.equal(r.status, 401, r.text);
  // the development app is not served once apps are configured
  const dev = await h.raw({ key: 'herald-dev-key', established: false });
  const closed = await dev.closed;
  assert.equal(closed.code, 4001);
});

test('--app defaults: client events, sign-in and the 10 KB limit', async () => {
  const ch = `private-${uniq('cli')}`;
  const a = await h.raw({ app: A });
  const b = await h.raw({ app: A });
  await a.subscribeOk(ch);
  await b.subscribeOk(ch);
  a.send({ event: 'client-x', channel: ch, data: {} });
  await b.event('client-x', { channel: ch });
  a.signin({ id: 'cli-user' });
  await a.event('pusher:signin_success');
  const big = await h.http({ app: A, method: 'POST', path: `/apps/${A.id}/events`, body: { name: 'e', channels: [ch], data: 'x'.repeat(10241) } });
  assert.equal(big.status, 413, big.text);
  assert.equal(a.established.data.activity_timeout, 120);
});
