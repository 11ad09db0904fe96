// The live task list reference app (examples/tasks) end to end in real Chromium: the herald binary
// with the example's own herald.toml, its Python backend (server.py, seeding demo tasks) and worker
// (worker.py), and two pages signed in as two team members. Adding, editing, checking, moving and
// retracting in Ann's page goes through jobs and shows in Bob's page; a job that claims to be Bob
// (or targets Bob's list) cannot change Bob's list; a payload with a field outside the whitelist
// is refused by Herald at submit and changes nothing. The test also takes the README's screenshots.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { HERALD_BIN, REPO_ROOT, signedQuery } from './harness.mjs';
import { launchChromium } from './chromium.mjs';
import { startProcess, stopAll } from './processes.mjs';

const EXAMPLE = path.join(REPO_ROOT, 'examples/tasks');
const SHOTS = path.join(EXAMPLE, 'screenshots');
const APP = { id: '1', key: 'herald-dev-key', secret: 'herald-dev-secret' }; // herald.toml's app
const WAIT = 10000;

let dir;
let heraldUrl;
let appUrl;
let browser;

/** A signed request to Herald's HTTP API. */
async function api(method, reqPath, body) {
  const full = `/apps/${APP.id}${reqPath}`;
  const text = body === undefined ? undefined : JSON.stringify(body);
  const qs = signedQuery({ method, path: full, body: text, key: APP.key, secret: APP.secret });
  const res = await fetch(`${heraldUrl}${full}?${qs}`, {
    method, body: text, headers: text ? { 'content-type': 'application/json' } : {},
  });
  const raw = await res.text();
  return { status: res.status, json: raw ? JSON.parse(raw) : null };
}

const feedItems = async (member) => (await api('GET', `/feeds/private-feed-tasks-${member}`)).json.items;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'herald-tasks-'));
  const herald = startProcess('herald', HERALD_BIN, [
    'serve', '--config', path.join(EXAMPLE, 'herald.toml'), '--bind', '127.0.0.1:0', '--data-dir', path.join(dir, 'data'),
  ], { cwd: REPO_ROOT, ready: /listening on (http:\/\/[0-9.]+:\d+)/, timeout: WAIT });
  [, heraldUrl] = await herald.ready;
  const env = { HERALD_URL: heraldUrl, HERALD_APP_ID: APP.id, HERALD_APP_KEY: APP.key, HERALD_APP_SECRET: APP.secret, PYTHONUNBUFFERED: '1' };
  const worker = startProcess('worker', 'python3', [path.join(EXAMPLE, 'worker.py')],
    { cwd: REPO_ROOT, env, ready: /claiming from queue/, timeout: WAIT });
  await worker.ready;
  const server = startProcess('server', 'python3', [path.join(EXAMPLE, 'server.py'), '--port', '0', '--seed'],
    { cwd: REPO_ROOT, env, ready: /tasks app on (http:\/\/[0-9.]+:\d+)\//, timeout: WAIT });
  [, appUrl] = await server.ready;
  browser = await launchChromium();
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await stopAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const pages = {};

async function openPage(user) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 420 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await page.goto(`${appUrl}/?user=${user}`);
  return { page, context, errors, user };
}

/** What a page shows of `member`'s list: [{id, title, done, notes, by}] in order. */
const read = (opened, member) => opened.page.evaluate((m) => [...document.querySelectorAll(`#list-${m} li.task`)]
  .map((li) => ({
    id: li.dataset.id,
    title: li.querySelector('.title')?.textContent,
    done: li.classList.contains('done'),
    notes: li.querySelector('.notes')?.textContent ?? '',
    by: li.querySelector('.by')?.textContent,
  })), member);

/** Waits until the page shows `member`'s list as `titles` (a title ending in ' ✓' is done). */
async function shows(opened, member, titles) {
  const want = titles.join(' | ');
  try {
    await opened.page.waitForFunction(([m, w]) => [...document.querySelectorAll(`#list-${m} li.task`)]
      .map((li) => li.querySelector('.title').textContent + (li.classList.contains('done') ? ' ✓' : ''))
      .join(' | ') === w, [member, want], { timeout: WAIT });
  } catch (error) {
    const got = (await read(opened, member)).map((t) => t.title + (t.done ? ' ✓' : ''));
    const status = await opened.page.textContent('#status');
    throw new Error(`${opened.user}'s page: expected ${member}'s list ${JSON.stringify(titles)}, it shows ${JSON.stringify(got)}; status "${status}"; page errors: ${opened.errors}`, { cause: error });
  }
}

/** Waits until the page's status line is in `state` and contains `text`. */
async function statusIs(opened, state, text) {
  try {
    await opened.page.waitForFunction(([s, t]) => {
      const el = document.getElementById('status');
      return el.dataset.state === s && el.textContent.includes(t);
    }, [state, text], { timeout: WAIT });
  } catch (error) {
    const got = await opened.page.evaluate(() => `${document.getElementById('status').dataset.state}: ${document.getElementById('status').textContent}`);
    throw new Error(`${opened.user}'s page: expected status ${state} with "${text}", got "${got}"`, { cause: error });
  }
}

/** Waits until the page heard that job `id` ended; resolves with {state, error}. */
async function jobEnds(opened, id) {
  const handle = await opened.page.waitForFunction((j) => window.jobLog.find((u) => u.id === j
    && ['succeeded', 'failed', 'dead', 'cancelled'].includes(u.state)), id, { timeout: WAIT });
  const { state, error } = await handle.jsonValue();
  return { state, error };
}

const task = (opened, member, title) => opened.page.locator(`#list-${member} li.task`, { hasText: title });

test('two pages: add, edit, done, move and retract in Ann\'s page show live in Bob\'s', { timeout: 60000 }, async () => {
  pages.ann = await openPage('ann');
  pages.bob = await openPage('bob');
  const annSeed = ['Write the release notes', "Review Bob's pull request"];
  const bobSeed = ['Fix the login bug', 'Update dependencies'];
  for (const p of [pages.ann, pages.bob]) {
    await shows(p, 'ann', annSeed);
    await shows(p, 'bob', bobSeed);
    await shows(p, 'cai', ['Plan the team offsite']);
  }
  const { ann, bob } = pages;
  // Bob's page offers no controls on Ann's list (the worker would refuse them anyway).
  assert.equal(await bob.page.locator('#list-ann button').count(), 0);

  // Add: a job; the worker publishes to Ann's feed; both pages show it.
  await ann.page.fill('#new-title', 'Book the venue');
  await ann.page.click('#add-button');
  await statusIs(ann, 'ok', 'add “Book the venue”: done');
  for (const p of [ann, bob]) await shows(p, 'ann', [...annSeed, 'Book the venue']);

  // Edit title and notes (a merge: the other fields stay), stamped with the editor by the worker.
  await task(ann, 'ann', 'Book the venue').locator('button.edit').click();
  await ann.page.fill('#list-ann input.edit-title', 'Book the venue for Friday');
  await ann.page.fill('#list-ann input.edit-notes', 'room for 12');
  await ann.page.click('#list-ann button.save');
  for (const p of [ann, bob]) await shows(p, 'ann', [...annSeed, 'Book the venue for Friday']);
  const edited = (await read(bob, 'ann')).find((t) => t.title === 'Book the venue for Friday');
  assert.equal(edited.notes, 'room for 12');
  assert.equal(edited.by, 'edited by ann');

  // Done.
  await task(ann, 'ann', 'Write the release notes').locator('input.check').check();
  for (const p of [ann, bob]) await shows(p, 'ann', ['Write the release notes ✓', "Review Bob's pull request", 'Book the venue for Friday']);

  // Move up twice: to the top, for everyone.
  await task(ann, 'ann', 'Book the venue for Friday').locator('button.up').click();
  for (const p of [ann, bob]) await shows(p, 'ann', ['Write the release notes ✓', 'Book the venue for Friday', "Review Bob's pull request"]);
  await task(ann, 'ann', 'Book the venue for Friday').locator('button.up').click();
  for (const p of [ann, bob]) await shows(p, 'ann', ['Book the venue for Friday', 'Write the release notes ✓', "Review Bob's pull request"]);

  // Retract.
  await task(ann, 'ann', "Review Bob's pull request").locator('button.retract').click();
  for (const p of [ann, bob]) await shows(p, 'ann', ['Book the venue for Friday', 'Write the release notes ✓']);
  await statusIs(ann, 'ok', "retract “Review Bob's pull request”: done");

  // A page opened (or reloaded) now starts from the current state: the snapshot.
  await bob.page.reload();
  await shows(bob, 'ann', ['Book the venue for Friday', 'Write the release notes ✓']);
  await shows(bob, 'bob', bobSeed);

  // Herald's own copy agrees with the pages.
  assert.deepEqual((await feedItems('ann')).map((i) => i.value.title), ['Book the venue for Friday', 'Write the release notes']);
  await ann.page.screenshot({ path: path.join(SHOTS, 'ann.png') });
  await bob.page.screenshot({ path: path.join(SHOTS, 'bob.png') });
  for (const p of [ann, bob]) assert.deepEqual(p.errors, []);
});

test('a job claiming another user\'s id cannot change that user\'s list', { timeout: 60000 }, async () => {
  const { ann, bob } = pages;
  const bobBefore = await feedItems('bob');
  const target = bobBefore[0].id;

  // 1. A raw herald:job_submit frame that says user_id "bob": Herald files the job under Ann (the
  //    connection's signed-in user); the worker, going by that, refuses to touch Bob's list.
  const forged = await ann.page.evaluate((id) => window.herald.request('herald:job_submit', {
    queue: 'tasks', user_id: 'bob', payload: { op: 'edit', list: 'bob', task: id, fields: { title: 'Hacked by ann' } },
  }), target);
  assert.equal(forged.user_id, 'ann', 'Herald files the job under the signed-in user');
  assert.deepEqual(await jobEnds(ann, forged.id), { state: 'failed', error: "ann cannot change bob's list: only its owner can" });
  await statusIs(ann, 'error', "edit “Hacked by ann” refused: ann cannot change bob's list: only its owner can");
  const stored = await api('GET', `/jobs/${forged.id}`);
  assert.equal(stored.json.job?.user_id ?? stored.json.user_id, 'ann');
  await ann.page.screenshot({ path: path.join(SHOTS, 'forged-refused.png') });

  // 2. The page's own submit path, retracting one of Bob's tasks: refused the same way.
  const retract = await ann.page.evaluate((id) => window.tasks.submit({ op: 'retract', list: 'bob', task: id }), target);
  assert.deepEqual(await jobEnds(ann, retract.id), { state: 'failed', error: "ann cannot change bob's list: only its owner can" });

  // 3. One of Bob's task ids named as a task of Ann's own list: not in her list, refused.
  const sneaky = await ann.page.evaluate((id) => window.tasks.submit({ op: 'edit', list: 'ann', task: id, fields: { done: true } }), target);
  const ended = await jobEnds(ann, sneaky.id);
  assert.equal(ended.state, 'failed');
  assert.match(ended.error, new RegExp(`^no task '${target}' in ann's list`));
  await statusIs(ann, 'error', `no task '${target}' in ann's list`);

  // Nothing changed for Bob: Herald's copy and both pages. (Each refusal came after the worker
  // decided, so a change, had there been one, would already be in the feed.)
  assert.deepEqual(await feedItems('bob'), bobBefore);
  for (const p of [ann, bob]) await shows(p, 'bob', ['Fix the login bug', 'Update dependencies']);
  // Bob's page heard nothing of Ann's jobs (they are on Ann's user stream only).
  assert.deepEqual(await bob.page.evaluate(() => window.jobLog), []);
  for (const p of [ann, bob]) assert.deepEqual(p.errors, []);
});

test('a payload outside the schema\'s whitelist is refused at submit and changes nothing', { timeout: 60000 }, async () => {
  const { ann, bob } = pages;
  const annBefore = await feedItems('ann');
  const target = annBefore[0].id;
  const counts = async () => (await api('GET', '/queues/tasks')).json;
  const queueBefore = await counts();

  const refusals = [
    // An identity in the payload.
    { payload: { op: 'edit', list: 'ann', task: target, fields: { done: true }, user_id: 'bob' }, path: '/' },
    // An op that is not add/edit/move/retract.
    { payload: { op: 'delete_all', list: 'ann' }, path: '/op' },
    // Server-side fields are not editable either.
    { payload: { op: 'edit', list: 'ann', task: target, fields: { edited_by: 'bob' } }, path: '/fields' },
    // A field that is not title/done/notes (last: the screenshot shows it).
    { payload: { op: 'edit', list: 'ann', task: target, fields: { title: 'Mine now', owner: 'bob' } }, path: '/fields' },
  ];
  for (const { payload, path: where } of refusals) {
    const reason = await ann.page.evaluate((p) => window.tasks.submit(p).then(() => 'accepted', (e) => e.reason), payload);
    assert.match(reason, /payload does not match the queue's schema/, JSON.stringify(payload));
    assert.ok(reason.includes(`${where}:`), `${reason} names ${where}`);
    await statusIs(ann, 'error', 'refused by Herald: payload does not match the queue\'s schema');
  }
  // Nothing was queued, nothing changed.
  assert.deepEqual(await counts(), queueBefore);
  assert.deepEqual(await feedItems('ann'), annBefore);
  for (const p of [ann, bob]) await shows(p, 'ann', ['Book the venue for Friday', 'Write the release notes ✓']);
  await ann.page.screenshot({ path: path.join(SHOTS, 'schema-refused.png') });
  for (const p of [ann, bob]) assert.deepEqual(p.errors, []);
  for (const p of [ann, bob]) await p.context.close();
});
