// Feeds and read cursors with the Herald JS client in real Chromium: a small task-list page (served
// here, as an app would serve it, loading the client from Herald at /herald.js) renders a feed and
// an unread badge. A backend publishes, edits, moves and retracts tasks over the signed HTTP routes
// and every open page shows each change; a mark-read in one page updates the badge in a second
// page of the same user within 100 ms, and not in another user's page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startHerald, uniq } from './harness.mjs';
import { launchChromium } from './chromium.mjs';

let h;
let app;
let browser;

/** The app's page: a task list from the feed, and the unread count of a room with a mark-read button. */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>Tasks</title>
<h1>Tasks</h1>
<ol id="tasks"></ol>
<p>Unread in the room: <b id="unread">…</b> <button id="mark">Mark read</button></p>
<script type="module">
  const params = new URLSearchParams(location.search);
  const { Herald } = await import(params.get('herald') + '/herald.js');
  const post = (path) => async (fields) => (await fetch(path, { method: 'POST', body: new URLSearchParams(fields) })).json();
  const herald = new Herald(params.get('key'), {
    url: params.get('herald').replace(/^http/, 'ws'),
    authorize: ({ socketId, channel }) => post('/auth')({ socket_id: socketId, channel_name: channel }),
    signin: ({ socketId }) => post('/signin')({ socket_id: socketId, user: params.get('user') }),
  });
  herald.connect();
  herald.signin();

  const list = document.getElementById('tasks');
  const feed = herald.feed(params.get('feed'));
  const render = () => list.replaceChildren(...feed.items.map(({ id, value }) => {
    const li = document.createElement('li');
    li.dataset.id = id;
    li.textContent = value.title + (value.done ? ' (done)' : '');
    return li;
  }));
  feed.on('reset', render);
  feed.on('change', render);

  const room = params.get('room');
  const badge = document.getElementById('unread');
  window.unreadLog = [];
  herald.subscribe(room, { unread: true });
  herald.on('unread', ({ channel, unread }) => {
    if (channel !== room) return;
    badge.textContent = String(unread);
    window.unreadLog.push({ unread, at: performance.timeOrigin + performance.now() });
  });
  document.getElementById('mark').onclick = () => {
    window.markedAt = performance.timeOrigin + performance.now();
    herald.markRead(room);
  };
  window.herald = herald;
</script>`;

before(async () => {
  h = await startHerald();
  const sdk = h.sdk();
  app = http.createServer((req, res) => {
    if (req.method === 'POST' && (req.url === '/auth' || req.url === '/signin')) {
      let body = '';
      req.on('data', (c) => { body += c; });
      return req.on('end', () => {
        const form = new URLSearchParams(body);
        // A real app takes the user from its session; this page says who it is.
        const answer = req.url === '/auth'
          ? sdk.authorizeChannel(form.get('socket_id'), form.get('channel_name'))
          : sdk.authenticateUser(form.get('socket_id'), { id: form.get('user') });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer));
      });
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end(PAGE);
  });
  await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  app?.close();
  await h?.stop();
});

/** Opens the page as `user` (each in its own browser context, like separate tabs' storage). */
async function openPage(user, feed, room) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  const query = new URLSearchParams({ herald: h.httpBase, key: h.app.key, user, feed, room });
  await page.goto(`http://127.0.0.1:${app.address().port}/?${query}`);
  return { page, context, errors };
}

/** Waits until the page's task list reads `expected` (titles in order). */
async function shows(opened, expected) {
  try {
    await opened.page.waitForFunction((want) => [...document.querySelectorAll('#tasks li')]
      .map((li) => li.textContent).join(' | ') === want, expected.join(' | '), { timeout: 5000 });
  } catch (error) {
    const got = await opened.page.evaluate(() => [...document.querySelectorAll('#tasks li')].map((li) => li.textContent));
    throw new Error(`expected ${JSON.stringify(expected)}, page shows ${JSON.stringify(got)}; page errors: ${opened.errors}`, { cause: error });
  }
}

async function badge(opened, expected) {
  await opened.page.waitForFunction((want) => document.getElementById('unread').textContent === want, String(expected), { timeout: 5000 });
}

async function publishCounted(room, count) {
  for (let i = 0; i < count; i += 1) {
    const res = await h.http({
      method: 'POST', path: `/apps/${h.app.id}/events`,
      body: { name: 'message', channels: [room], data: JSON.stringify({ i }), count_unread: true },
    });
    assert.equal(res.status, 200, res.text);
  }
}

test('Chromium: a task list follows a feed live in two pages as the backend changes it', { timeout: 60000 }, async () => {
  const feed = `private-${uniq('feed-tasks')}`;
  const room = uniq('room');
  const backend = h.feedBackend(feed);
  await backend.publish('t1', { title: 'Write the spec' });
  await backend.publish('t2', { title: 'Build it' });
  const pages = [await openPage(uniq('ann'), feed, room), await openPage(uniq('bob'), feed, room)];
  try {
    for (const p of pages) await shows(p, ['Write the spec', 'Build it']);

    await backend.publish('t3', { title: 'Ship it' });
    for (const p of pages) await shows(p, ['Write the spec', 'Build it', 'Ship it']);
    await backend.edit('t1', { done: true }, { merge: true });
    for (const p of pages) await shows(p, ['Write the spec (done)', 'Build it', 'Ship it']);
    await backend.move('t3', { index: 0 });
    for (const p of pages) await shows(p, ['Ship it', 'Write the spec (done)', 'Build it']);
    await backend.retract('t1');
    for (const p of pages) await shows(p, ['Ship it', 'Build it']);
    await backend.publish('t4', { title: 'Celebrate' }, { after: 't3' });
    for (const p of pages) await shows(p, ['Ship it', 'Celebrate', 'Build it']);
    for (const p of pages) assert.deepEqual(p.errors, []);
  } finally {
    for (const p of pages) await p.context.close();
  }
});

test('Chromium: a mark-read in one page updates the unread count in the same user\'s other page within 100 ms, not another user\'s', { timeout: 60000 }, async () => {
  const feed = uniq('feed-tasks');
  const room = uniq('room');
  await h.feedBackend(feed).publish('t1', { title: 'Read the room' });
  await publishCounted(room, 3);
  const ann = uniq('ann');
  const annA = await openPage(ann, feed, room);
  const annB = await openPage(ann, feed, room);
  const bob = await openPage(uniq('bob'), feed, room);
  try {
    for (const p of [annA, annB, bob]) await badge(p, 3);

    await annA.page.click('#mark');
    await badge(annB, 0);
    await badge(annA, 0);
    const markedAt = await annA.page.evaluate(() => window.markedAt);
    const seenAt = await annB.page.evaluate(() => window.unreadLog.find((u) => u.unread === 0).at);
    const latency = seenAt - markedAt;
    console.log(`mark-read in one page reached the other page in ${latency.toFixed(1)} ms`);
    assert.ok(latency >= 0 && latency < 100, `within 100 ms (took ${latency.toFixed(1)} ms)`);

    // Bob marks one of his own: his page then shows his count, and Ann's mark (out before Bob's
    // was sent, so queued first had it been sent to him) never reached it.
    await bob.page.evaluate(() => window.herald.markRead(new URLSearchParams(location.search).get('room'), 1));
    await badge(bob, 2);
    assert.deepEqual(await bob.page.evaluate(() => window.unreadLog.map((u) => u.unread)), [3, 2]);
    assert.deepEqual(await annB.page.evaluate(() => window.unreadLog.map((u) => u.unread)), [3, 0]);
    for (const p of [annA, annB, bob]) assert.deepEqual(p.errors, []);
  } finally {
    for (const p of [annA, annB, bob]) await p.context.close();
  }
});
