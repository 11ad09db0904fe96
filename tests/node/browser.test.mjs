// pusher-js 8 in real Chromium (Debian's, driven by playwright-core) against the real binary:
// pages on every transport (WebSocket, xhr_streaming, xhr_polling) subscribe, receive server events
// and exchange client events with each other. The pages and an auth endpoint are served by a small
// app server here, on another port than Herald, as a real app would (so CORS is exercised too).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { startHerald, uniq } from './harness.mjs';
import { PUSHER_WEB, launchChromium } from './chromium.mjs';

let h;
let app;
let appUrl;
let browser;

/** The app's own server: the page, pusher-js, and the channel-auth endpoint signing with the SDK. */
function startAppServer() {
  const sdk = h.sdk();
  const server = http.createServer((req, res) => {
    if (req.url === '/pusher.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(readFileSync(PUSHER_WEB));
    }
    if (req.url === '/auth' && req.method === 'POST') {
      let body = '';
      req.on('data', (c) => { body += c; });
      return req.on('end', () => {
        const form = new URLSearchParams(body);
        const auth = sdk.authorizeChannel(form.get('socket_id'), form.get('channel_name'));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(auth));
      });
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end('<!doctype html><meta charset="utf-8"><script src="/pusher.js"></script><p>herald test page</p>');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

before(async () => {
  h = await startHerald({ server: { http_session_timeout_secs: 2 } });
  app = await startAppServer();
  appUrl = `http://127.0.0.1:${app.address().port}/`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  app?.close();
  await h?.stop();
});

/** A page with a pusher-js client on `transport`, subscribed to `channel`, recording events. */
async function openPage(transport, channel) {
  const page = await browser.newPage();
  await page.goto(appUrl);
  await page.evaluate(({ key, port, transport, channel }) => new Promise((resolve, reject) => {
    window.received = [];
    const pusher = new window.Pusher(key, {
      wsHost: '127.0.0.1', wsPort: port, httpHost: '127.0.0.1', httpPort: port, forceTLS: false,
      enabledTransports: [transport], cluster: 'mt1', disableStats: true,
      channelAuthorization: { endpoint: '/auth', transport: 'ajax' },
    });
    window.pusher = pusher;
    const ch = pusher.subscribe(channel);
    window.channel = ch;
    ch.bind_global((event, data) => { if (!event.startsWith('pusher:')) window.received.push({ event, data }); });
    ch.bind('pusher:subscription_succeeded', () => resolve(pusher.connection.connection.transport.name));
    ch.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
    setTimeout(() => reject(new Error('no subscription within 10 s')), 10000);
  }), { key: h.app.key, port: h.port, transport, channel });
  return page;
}

async function waitForEvent(page, event) {
  await page.waitForFunction((name) => window.received.some((e) => e.event === name), event, { timeout: 10000 });
  return page.evaluate((name) => window.received.find((e) => e.event === name).data, event);
}

for (const transport of ['ws', 'xhr_streaming', 'xhr_polling']) {
  test(`Chromium, pusher-js over ${transport}: receives server events`, async () => {
    const channel = uniq('browser');
    const page = await openPage(transport, channel);
    try {
      await h.sdk().trigger(channel, 'news', { transport });
      assert.deepEqual(await waitForEvent(page, 'news'), { transport });
    } finally {
      await page.close();
    }
  });
}

test('Chromium: a WebSocket page and an xhr_polling page exchange client events', async () => {
  const channel = `private-${uniq('pages')}`;
  const wsPage = await openPage('ws', channel);
  const pollPage = await openPage('xhr_polling', channel);
  try {
    assert.ok(await wsPage.evaluate(() => window.channel.trigger('client-hello', { from: 'ws' })));
    assert.deepEqual(await waitForEvent(pollPage, 'client-hello'), { from: 'ws' });
    assert.ok(await pollPage.evaluate(() => window.channel.trigger('client-reply', { from: 'polling' })));
    assert.deepEqual(await waitForEvent(wsPage, 'client-reply'), { from: 'polling' });
  } finally {
    await wsPage.close();
    await pollPage.close();
  }
});

test('Chromium: an xhr_streaming page and a WebSocket page exchange client events', async () => {
  const channel = `private-${uniq('stream')}`;
  const streamPage = await openPage('xhr_streaming', channel);
  const wsPage = await openPage('ws', channel);
  try {
    assert.ok(await streamPage.evaluate(() => window.channel.trigger('client-ping', { n: 1 })));
    assert.deepEqual(await waitForEvent(wsPage, 'client-ping'), { n: 1 });
    assert.ok(await wsPage.evaluate(() => window.channel.trigger('client-pong', { n: 2 })));
    assert.deepEqual(await waitForEvent(streamPage, 'client-pong'), { n: 2 });
  } finally {
    await streamPage.close();
    await wsPage.close();
  }
});
