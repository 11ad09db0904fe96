// The query runner example (examples/query-runner) end to end in real Chromium: the real herald
// binary with the example's herald.toml (a 2 s lease instead of 15 s, so that a dead worker's job
// comes back quickly), the example's backend (server.py) and worker (worker.py, 12 monthly steps of
// 0.4 s), all on free loopback ports, and the example's page.
//
//  1. Submit: the page shows the query queued, then running with its progress, then the result.
//  2. Close the page mid-job; the job finishes while no page is open; a page opened later (same
//     browser storage) shows the result.
//  3. kill -9 the worker mid-job: the lease runs out, a new worker claims the job again (attempt 2)
//     and finishes it; the open page shows the result.
//  4. Restart Herald mid-job (SIGTERM, then the same data_dir and port): the job is not lost, the
//     page reconnects by itself and shows the result.
// The screenshots in examples/query-runner/screenshots are taken here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { HERALD_BIN, REPO_ROOT, eventually, signedQuery } from './harness.mjs';
import { launchChromium } from './chromium.mjs';
import { startProcess, stopAll, stopProcess } from './processes.mjs';

const EXAMPLE = path.join(REPO_ROOT, 'examples/query-runner');
const SHOTS = path.join(EXAMPLE, 'screenshots');
const APP = { id: '1', key: 'query-runner-key', secret: 'query-runner-secret' };
const STEP_SECS = '0.4'; // 12 steps: ~5 s a job
const LEASE_SECS = 2;
const WAIT = 20000; // the longest any one state may take to show

let dir;
let herald;
let heraldPort;
let backend;
let appUrl;
let worker;
let browser;
let context;

const heraldUrl = () => `http://127.0.0.1:${heraldPort}`;

async function startHeraldAt(bind) {
  const proc = startProcess('herald', HERALD_BIN, ['serve', '--config', path.join(dir, 'herald.toml'),
    '--bind', bind, '--data-dir', path.join(dir, 'herald-data')], { ready: /listening on http:\/\/[0-9.]+:(\d+)/ });
  const m = await proc.ready;
  return { proc, port: Number(m[1]) };
}

function startWorker() {
  return startProcess('worker', 'python3', [path.join(EXAMPLE, 'worker.py'), '--step-secs', STEP_SECS,
    '--db', path.join(dir, 'sales.sqlite3')], { env: backendEnv(), ready: /^ready$/ });
}

function backendEnv() {
  return { HERALD_URL: heraldUrl(), HERALD_APP_ID: APP.id, HERALD_APP_KEY: APP.key, HERALD_APP_SECRET: APP.secret };
}

/** Signed GET /apps/1/jobs/{id}: the job as Herald has it. */
async function apiJob(id) {
  const reqPath = `/apps/${APP.id}/jobs/${id}`;
  const res = await fetch(`${heraldUrl()}${reqPath}?${signedQuery({ method: 'GET', path: reqPath, key: APP.key, secret: APP.secret })}`);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  const body = JSON.parse(text);
  return body.job ?? body;
}

function diagnostics(opened) {
  const tail = (p) => (p ? p.lines.slice(-25).join('\n') : '(not running)');
  return `page errors: ${JSON.stringify(opened?.errors ?? [])}\n--- worker:\n${tail(worker)}\n--- herald:\n${tail(herald)}\n--- backend:\n${tail(backend)}`;
}

async function openPage(user = 'ann') {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
  await page.goto(`${appUrl}/?user=${user}`);
  const opened = { page, errors };
  await waitPage(opened, () => document.getElementById('conn')?.dataset.state === 'connected', undefined, 'connected');
  return opened;
}

/** page.waitForFunction with the page's errors and the processes' logs on failure. */
async function waitPage(opened, fn, arg, label, timeout = WAIT) {
  try {
    return await opened.page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (error) {
    const shown = await opened.page.evaluate(() => [...document.querySelectorAll('li.job')]
      .map((li) => `${li.dataset.id} ${li.dataset.state} ${li.dataset.pct}% attempts ${li.dataset.attempts}`)).catch(() => []);
    throw new Error(`waiting for ${label}: ${error.message}\njobs shown: ${JSON.stringify(shown)}\n${diagnostics(opened)}`);
  }
}

/** Picks a preset, presses Run, and returns the new job's id once it is listed. */
async function submit(opened, label) {
  const known = await opened.page.evaluate(() => [...document.querySelectorAll('li.job')].map((li) => li.dataset.id));
  await opened.page.selectOption('#preset', { label });
  await opened.page.click('#run');
  const handle = await waitPage(opened, (ids) => [...document.querySelectorAll('li.job')]
    .find((li) => !ids.includes(li.dataset.id))?.dataset.id, known, `a new job for "${label}"`);
  return handle.jsonValue();
}

const jobIs = (opened, id, state, label = state) => waitPage(opened, ([jobId, want]) =>
  document.querySelector(`li.job[data-id="${jobId}"]`)?.dataset.state === want, [id, state], `job ${id} ${label}`);

const runningAtLeast = (opened, id, pct) => waitPage(opened, ([jobId, min]) => {
  const li = document.querySelector(`li.job[data-id="${jobId}"]`);
  return li?.dataset.state === 'running' && Number(li.dataset.pct) >= min;
}, [id, pct], `job ${id} running at ${pct}% or more`);

/** The result table the page shows for a job: [header, ...rows] as text. */
const shownTable = (opened, id) => opened.page.evaluate((jobId) => [...document.querySelectorAll(`li.job[data-id="${jobId}"] .result tr`)]
  .map((tr) => [...tr.cells].map((c) => c.textContent)), id);

function expectedTable(job) {
  return [job.result.columns, ...job.result.rows.map((row) => row.map((v) => (v === null ? 'NULL' : String(v))))];
}

const shot = (opened, name) => opened.page.screenshot({ path: path.join(SHOTS, name), fullPage: true });

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'query-runner-'));
  mkdirSync(SHOTS, { recursive: true });
  // The example's own config, with a short lease so that a dead worker's job is back in 2 s.
  const config = readFileSync(path.join(EXAMPLE, 'herald.toml'), 'utf8');
  const testConfig = config.replace(/^lease_secs = \d+/m, `lease_secs = ${LEASE_SECS}`);
  assert.notEqual(testConfig, config, 'herald.toml sets lease_secs');
  writeFileSync(path.join(dir, 'herald.toml'), testConfig);

  ({ proc: herald, port: heraldPort } = await startHeraldAt('127.0.0.1:0'));
  backend = startProcess('backend', 'python3', [path.join(EXAMPLE, 'server.py'), '--port', '0'],
    { env: backendEnv(), ready: /listening on (http:\/\/[0-9.]+:\d+)/ });
  appUrl = (await backend.ready)[1];
  worker = startWorker();
  await worker.ready;
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 900, height: 900 } });
});

after(async () => {
  await context?.close().catch(() => {});
  await browser?.close().catch(() => {});
  await stopAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('query runner: a submitted query shows queued, running with progress, then its result', { timeout: 60000 }, async () => {
  const opened = await openPage();
  try {
    const id = await submit(opened, 'Revenue by region');
    await runningAtLeast(opened, id, 40);
    await shot(opened, 'running.png');
    await jobIs(opened, id, 'succeeded');

    const log = await opened.page.evaluate((jobId) => window.queryRunner.jobLog.filter((u) => u.id === jobId), id);
    const states = log.map((u) => u.state);
    assert.equal(states[0], 'queued', `first shown as queued: ${JSON.stringify(log)}`);
    assert.ok(states.indexOf('running') > 0, `then running: ${JSON.stringify(log)}`);
    assert.equal(states.at(-1), 'succeeded');
    const pcts = log.filter((u) => u.state === 'running' && u.pct !== null).map((u) => u.pct);
    assert.ok(pcts.length >= 5 && pcts.some((p) => p > 0 && p < 100), `live progress: ${JSON.stringify(pcts)}`);
    assert.deepEqual(pcts, [...pcts].sort((a, b) => a - b), 'progress only goes up');

    const job = await apiJob(id);
    assert.equal(job.state, 'succeeded');
    assert.equal(job.user_id, 'ann', 'filed under the signed-in user');
    assert.deepEqual(job.result.columns, ['region', 'orders', 'revenue']);
    assert.equal(job.result.rows.length, 5);
    assert.deepEqual(await shownTable(opened, id), expectedTable(job));

    // A query the worker refuses (not read-only) fails for good, with the reason shown.
    await opened.page.selectOption('#preset', { label: 'Custom query' });
    await opened.page.fill('#sql', 'DELETE FROM sales');
    const known = await opened.page.evaluate(() => [...window.queryRunner.jobs.keys()]);
    await opened.page.click('#run');
    const bad = await (await waitPage(opened, (ids) => [...document.querySelectorAll('li.job')]
      .find((li) => !ids.includes(li.dataset.id))?.dataset.id, known, 'the custom job')).jsonValue();
    await jobIs(opened, bad, 'failed');
    assert.match(await opened.page.textContent(`li.job[data-id="${bad}"] .error`), /only SELECT queries/);
    assert.deepEqual(opened.errors, []);
  } finally {
    await opened.page.close();
  }
});

test('query runner: close the page mid-job, reopen it later: the result is shown', { timeout: 60000 }, async () => {
  const first = await openPage();
  const id = await submit(first, 'Top 5 products');
  await runningAtLeast(first, id, 20);
  assert.deepEqual(first.errors, []);
  await first.page.close();

  // No page is open while the worker finishes the job.
  const job = await eventually(async () => {
    const j = await apiJob(id);
    return j.state === 'succeeded' && j;
  }, { timeout: WAIT, interval: 200, label: `job ${id} to finish with no page open` });

  const reopened = await openPage();
  try {
    await jobIs(reopened, id, 'succeeded', 'shown as done after reopening');
    assert.deepEqual(await shownTable(reopened, id), expectedTable(job));
    const log = await reopened.page.evaluate((jobId) => window.queryRunner.jobLog.filter((u) => u.id === jobId), id);
    assert.ok(log.every((u) => u.state === 'succeeded'), `the reopened page only ever saw the finished job: ${JSON.stringify(log)}`);
    await shot(reopened, 'reopened.png');
    assert.deepEqual(reopened.errors, []);
  } finally {
    await reopened.page.close();
  }
});

test('query runner: the worker is killed (-9) mid-job; a new worker finishes the job', { timeout: 60000 }, async () => {
  const opened = await openPage();
  try {
    const id = await submit(opened, 'Revenue by month');
    await runningAtLeast(opened, id, 25);
    process.kill(worker.pid, 'SIGKILL');
    await worker.exited;
    assert.equal((await apiJob(id)).state, 'running', 'the killed worker still held the job');

    worker = startWorker();
    await worker.ready;
    // The lease runs out, the job goes back to the queue, the new worker claims it (attempt 2).
    await jobIs(opened, id, 'succeeded', 'finished by the new worker');
    const job = await apiJob(id);
    assert.equal(job.attempts, 2, 'claimed a second time');
    assert.equal(job.result.rows.length, 12);
    assert.equal(await opened.page.getAttribute(`li.job[data-id="${id}"]`, 'data-attempts'), '2');
    assert.deepEqual(await shownTable(opened, id), expectedTable(job));
    const log = await opened.page.evaluate((jobId) => window.queryRunner.jobLog.filter((u) => u.id === jobId), id);
    assert.ok(log.some((u) => u.state === 'running' && u.attempts === 2), `seen running again: ${JSON.stringify(log)}`);
    await shot(opened, 'after-worker-restart.png');
    console.log(`worker killed: the page saw ${log.map((u) => `${u.state}${u.pct === null ? '' : ` ${u.pct}%`} (attempt ${u.attempts})`).join(', ')}`);
    assert.deepEqual(opened.errors, []);
  } finally {
    await opened.page.close();
  }
});

test('query runner: Herald restarts mid-job; the job is not lost and the page shows its result', { timeout: 60000 }, async () => {
  const opened = await openPage();
  try {
    const id = await submit(opened, 'Largest orders');
    await runningAtLeast(opened, id, 25);

    const exit = await stopProcess(herald, 'SIGTERM', 15000);
    assert.equal(exit.signal, null, `herald exited by itself on SIGTERM (code ${exit.code})`);
    await waitPage(opened, () => document.getElementById('conn').dataset.state !== 'connected', undefined, 'the page to notice');
    ({ proc: herald } = await startHeraldAt(`127.0.0.1:${heraldPort}`));

    await waitPage(opened, () => document.getElementById('conn').dataset.state === 'connected', undefined, 'the page to reconnect');
    await jobIs(opened, id, 'succeeded', 'finished after the restart');
    const job = await apiJob(id);
    assert.equal(job.result.rows.length, 10);
    assert.deepEqual(await shownTable(opened, id), expectedTable(job));
    await shot(opened, 'after-herald-restart.png');
    const log = await opened.page.evaluate((jobId) => window.queryRunner.jobLog.filter((u) => u.id === jobId), id);
    console.log(`Herald restart: job ${id} finished on attempt ${job.attempts}; the page saw ${log.map((u) => `${u.state}${u.pct === null ? '' : ` ${u.pct}%`}`).join(', ')}`);

    // Every job of this run is still there, finished, on the restarted Herald.
    const all = await opened.page.evaluate(() => [...document.querySelectorAll('li.job')].map((li) => li.dataset.state));
    assert.deepEqual(all.filter((s) => s !== 'succeeded'), ['failed'], `states shown: ${JSON.stringify(all)}`);
    assert.deepEqual(opened.errors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED/.test(e)), []);
  } finally {
    await opened.page.close();
  }
});
