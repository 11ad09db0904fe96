// The operator console (/console) in real Chromium: the operator types the app's credentials, the
// page signs its own API calls in the browser, tails a channel live (events published by the
// official `pusher` SDK appear in order with their serials, and the filter hides the others),
// publishes through its form to a pusher-js subscriber, and its overview counts a new connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, uniq, pusherConnected, subscribed, waitFor } from './harness.mjs';
import { launchChromium } from './chromium.mjs';

let h;
let browser;
let page;
const errors = [];

before(async () => {
  h = await startHerald();
  browser = await launchChromium();
  page = await browser.newPage();
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (message) => {
    // Chromium asks for /favicon.ico on its own; the console has none.
    if (message.type() === 'error' && !message.location().url.endsWith('/favicon.ico')) {
      errors.push(`${message.text()} (${message.location().url})`);
    }
  });
  const response = await page.goto(`${h.httpBase}/console`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-security-policy'], /default-src 'none'/);
  await page.fill('#app-id', h.app.id);
  await page.fill('#app-key', h.app.key);
  await page.fill('#app-secret', h.app.secret);
  await page.click('#login-form button');
  await page.waitForFunction(() => document.getElementById('status').textContent.endsWith('signed in.'), null, { timeout: 5000 });
});

after(async () => {
  await browser?.close();
  await h?.stop();
});

/** The tail's visible rows as `event#serial`. */
const visibleRows = () => page.evaluate(() => [...document.querySelectorAll('#tail-rows tr')]
  .filter((tr) => !tr.hidden).map((tr) => `${tr.cells[2].textContent}#${tr.cells[3].textContent}`));

async function showsRows(expected) {
  try {
    await page.waitForFunction((want) => [...document.querySelectorAll('#tail-rows tr')].filter((tr) => !tr.hidden)
      .map((tr) => `${tr.cells[2].textContent}#${tr.cells[3].textContent}`).join(' ') === want, expected.join(' '), { timeout: 5000 });
  } catch (error) {
    throw new Error(`expected ${JSON.stringify(expected)}, page shows ${JSON.stringify(await visibleRows())}; errors: ${errors}`, { cause: error });
  }
}

test('Chromium console: the tail shows published events live, in order, with serials; the filter hides the rest', { timeout: 30000 }, async () => {
  const channel = `private-${uniq('tail')}`;
  await page.fill('#tail-channel', channel);
  await page.click('#tail-form button');
  await page.waitForFunction(() => document.getElementById('tail-status').textContent.startsWith('Tailing'), null, { timeout: 5000 });

  const sdk = h.sdk();
  for (const [i, name] of ['order-created', 'order-paid', 'order-created'].entries()) {
    const res = await sdk.trigger(channel, name, { i });
    assert.equal(res.status, 200);
  }
  await showsRows(['order-created#1', 'order-paid#2', 'order-created#3']);
  const data = await page.evaluate(() => [...document.querySelectorAll('#tail-rows tr')].map((tr) => tr.cells[4].textContent));
  assert.deepEqual(data.map((d) => JSON.parse(d).i), [0, 1, 2]);
  assert.ok(await page.evaluate((ch) => [...document.querySelectorAll('#tail-rows tr')].every((tr) => tr.cells[1].textContent === ch), channel));

  await page.fill('#tail-filter', 'paid');
  await showsRows(['order-paid#2']);
  await sdk.trigger(channel, 'order-shipped', {});
  await sdk.trigger(channel, 'order-paid', { again: true });
  await showsRows(['order-paid#2', 'order-paid#5']);
  await page.fill('#tail-filter', '');
  await showsRows(['order-created#1', 'order-paid#2', 'order-created#3', 'order-shipped#4', 'order-paid#5']);
  assert.deepEqual(errors, []);
});

test('Chromium console: the publish form reaches a pusher-js subscriber', { timeout: 30000 }, async () => {
  const channel = uniq('published');
  const client = h.pusherClient();
  await pusherConnected(client);
  const sub = client.subscribe(channel);
  await subscribed(client, channel);
  const got = waitFor(sub, 'from-console');

  await page.fill('#pub-channel', channel);
  await page.fill('#pub-event', 'from-console');
  await page.fill('#pub-data', '{"hello":"operator"}');
  await page.click('#publish-form button');
  assert.deepEqual(await got, { hello: 'operator' });
  await page.waitForFunction(() => document.getElementById('pub-result').textContent.startsWith('Published'), null, { timeout: 5000 });
  assert.deepEqual(errors, []);
});

test('Chromium console: the overview counts a new connection and shows presence members', { timeout: 30000 }, async () => {
  await page.waitForFunction(() => /^\d+$/.test(document.getElementById('stat-connections').textContent), null, { timeout: 5000 });
  const before = Number(await page.textContent('#stat-connections'));
  const room = `presence-${uniq('room')}`;
  const client = h.pusherClient({ presence: () => ({ user_id: 'ann', user_info: {} }) });
  await pusherConnected(client);
  client.subscribe(room);
  await subscribed(client, room);
  await page.waitForFunction((n) => Number(document.getElementById('stat-connections').textContent) > n, before, { timeout: 5000 });
  await page.waitForFunction((ch) => [...document.querySelectorAll('#channel-rows tr')]
    .some((tr) => tr.cells[0].textContent === ch && tr.cells[1].textContent === '1'), room, { timeout: 5000 });

  await page.fill('#presence-channel', room);
  await page.click('#presence-form button');
  await page.waitForFunction(() => [...document.querySelectorAll('#presence-members li')].map((li) => li.textContent).join() === 'ann', null, { timeout: 5000 });
  assert.deepEqual(errors, []);
});
