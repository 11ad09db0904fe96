// The Herald JS client in real Chromium: a page goes offline (Playwright's setOffline) while 50
// events are published, comes back, and shows all 50 in order with no duplicate. The same page with
// plain pusher-js shows what pusher-js misses (it has no resume). The client is loaded from the
// server itself, at /herald.js.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startHerald, uniq } from './harness.mjs';
import { PUSHER_WEB, launchChromium } from './chromium.mjs';

let h;
let app;
let browser;

before(async () => {
  h = await startHerald();
  app = http.createServer((req, res) => {
    if (req.url === '/pusher.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(readFileSync(PUSHER_WEB));
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end('<!doctype html><meta charset="utf-8"><script src="/pusher.js"></script><p>offline test</p>');
  });
  await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  app?.close();
  await h?.stop();
});

async function publish(channel, from, to) {
  for (let i = from; i < to; i += 1) await h.sdk().trigger(channel, 'n', { i });
}

/** Opens a page whose `window.seen` collects `n` events on `channel` through `kind` of client. */
async function page(kind, channel) {
  const context = await browser.newContext();
  const p = await context.newPage();
  await p.goto(`http://127.0.0.1:${app.address().port}/`);
  await p.evaluate(async ({ kind, key, port, channel }) => {
    window.seen = [];
    window.subscribed = 0;
    if (kind === 'herald') {
      const { Herald } = await import(`http://127.0.0.1:${port}/herald.js`);
      const client = new Herald(key, { url: `ws://127.0.0.1:${port}`, backoff: { base: 200, cap: 1000 } });
      const ch = client.subscribe(channel);
      ch.bind('subscribed', () => { window.subscribed += 1; });
      ch.bind('n', (data) => window.seen.push(data.i));
      client.connect();
      window.client = client;
    } else {
      const pusher = new window.Pusher(key, {
        wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'], cluster: 'mt1', disableStats: true,
      });
      const ch = pusher.subscribe(channel);
      ch.bind('pusher:subscription_succeeded', () => { window.subscribed += 1; });
      ch.bind('n', (data) => window.seen.push(data.i));
      window.client = pusher;
    }
  }, { kind, key: h.app.key, port: h.port, channel });
  await p.waitForFunction(() => window.subscribed === 1, null, { timeout: 10000 });
  return { page: p, context };
}

/** Takes the page offline until its connection is seen to drop, publishes, then brings it back. */
async function offlineWhilePublishing({ page: p, context }, channel) {
  await publish(channel, 0, 10);
  await p.waitForFunction(() => window.seen.length === 10, null, { timeout: 10000 });
  await context.setOffline(true);
  // An open WebSocket is not cut by offline emulation by itself; the client notices on its own
  // timers, so end it the way a dead network ends it: the socket closes without a close frame.
  await p.evaluate(() => {
    const ws = window.client.socket ?? window.client.connection?.connection?.transport?.socket;
    ws.close();
  });
  await publish(channel, 10, 60);
  await context.setOffline(false);
}

test('Chromium: the Herald client resumes after going offline: all 60 events, in order, once', { timeout: 60000 }, async () => {
  const channel = uniq('offline');
  const opened = await page('herald', channel);
  try {
    await offlineWhilePublishing(opened, channel);
    await opened.page.waitForFunction(() => window.seen.length >= 60, null, { timeout: 30000 });
    const seen = await opened.page.evaluate(() => window.seen);
    assert.deepEqual(seen, [...Array(60).keys()]);
    assert.equal(await opened.page.evaluate(() => window.subscribed), 2, 'resubscribed once, with resume');
  } finally {
    await opened.context.close();
  }
});

test('Chromium: plain pusher-js after going offline misses what was published meanwhile', { timeout: 60000 }, async () => {
  const channel = uniq('offline-pusher');
  const opened = await page('pusher', channel);
  try {
    await offlineWhilePublishing(opened, channel);
    await opened.page.waitForFunction(() => window.subscribed === 2, null, { timeout: 30000 });
    await publish(channel, 60, 61);
    await opened.page.waitForFunction(() => window.seen.includes(60), null, { timeout: 10000 });
    const seen = await opened.page.evaluate(() => window.seen);
    // Documented difference: pusher-js has no resume, so events 10..59 never arrive.
    assert.deepEqual(seen, [...Array(10).keys(), 60]);
  } finally {
    await opened.context.close();
  }
});

test('Chromium: the Herald client resumes across a server restart (durable history)', { timeout: 60000 }, async () => {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dataDir = mkdtempSync(path.join(tmpdir(), 'herald-restart-'));
  const first = await startHerald({ dataDir, args: ['--durable-history'] });
  const channel = uniq('restart');
  const context = await browser.newContext();
  const p = await context.newPage();
  let second;
  try {
    await p.goto(`http://127.0.0.1:${app.address().port}/`);
    await p.evaluate(async ({ key, port, channel }) => {
      window.seen = [];
      window.recovered = [];
      const { Herald } = await import(`http://127.0.0.1:${port}/herald.js`);
      const client = new Herald(key, { url: `ws://127.0.0.1:${port}`, backoff: { base: 200, cap: 1000 } });
      const ch = client.subscribe(channel, { onResync: () => window.recovered.push('resync') });
      ch.bind('subscribed', ({ recovered }) => window.recovered.push(recovered ?? 'first'));
      ch.bind('n', (data) => window.seen.push(data.i));
      client.connect();
    }, { key: first.app.key, port: first.port, channel });
    await p.waitForFunction(() => window.recovered.length === 1, null, { timeout: 10000 });
    for (let i = 0; i < 5; i += 1) await first.sdk().trigger(channel, 'n', { i });
    await p.waitForFunction(() => window.seen.length === 5, null, { timeout: 10000 });
    const port = first.port;
    await first.stop();
    second = await startHerald({ dataDir, args: ['--durable-history', '--bind', `127.0.0.1:${port}`] });
    for (let i = 5; i < 10; i += 1) await second.sdk().trigger(channel, 'n', { i });
    await p.waitForFunction(() => window.seen.length >= 10, null, { timeout: 20000 });
    assert.deepEqual(await p.evaluate(() => window.seen), [...Array(10).keys()]);
    assert.deepEqual(await p.evaluate(() => window.recovered), ['first', true], 'resumed, no resync');
  } finally {
    await context.close();
    await second?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
