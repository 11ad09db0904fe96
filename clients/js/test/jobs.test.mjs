// Durable jobs through the Herald JS client against the real binary: submit as the signed-in user,
// updates on the user stream while a worker (signed HTTP from here) claims, reports and finishes,
// schema rejections, updates missed while offline arriving after the resume, and getJob.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald } from '../src/index.js';
import { uniq } from '../../../tests/node/harness.mjs';
import { heraldServers } from '../test-support.mjs';

const SCHEMA = {
  type: 'object',
  required: ['from'],
  properties: {
    from: { type: 'integer' },
    options: { type: 'object', properties: { format: { enum: ['csv', 'pdf'] } } },
  },
};

/** The app: one queue browsers may submit to, with a schema. */
const APP = {
  client_events_per_second: 100,
  queues: [{
    name: 'reports', client_submit: true, schema: JSON.stringify(SCHEMA), lease_secs: 30, max_attempts: 3, retry_backoff_secs: 1,
  }, {
    name: 'internal', // only the backend submits here
  }],
};

const server = heraldServers((app = {}) => ({ apps: [{ ...APP, ...app }] }));

/** A client that signs in as `user` when asked to. */
function client(h, user, options = {}) {
  const sdk = h.sdk();
  return new Herald(h.app.key, {
    url: `ws://${h.host}:${h.port}`,
    signin: async ({ socketId }) => sdk.authenticateUser(socketId, { id: user }),
    ...options,
  });
}

/** Connects, signs in and waits for the user stream. */
async function signedIn(h, user, options) {
  const herald = client(h, user, options).connect();
  const subscribed = once(herald.user, 'subscribed');
  herald.signin();
  await subscribed;
  return herald;
}

function once(emitter, event, timeout = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeout);
    const fn = (value) => { clearTimeout(timer); emitter.unbind(event, fn); resolve(value); };
    emitter.bind(event, fn);
  });
}

/** Polls `check` until it is truthy (bounded). */
async function until(check, label, timeout = 10000) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A worker on the signed HTTP API. */
function worker(h, queue = 'reports') {
  const post = async (path, body, expected = 200) => {
    const res = await h.http({ method: 'POST', path: `/apps/${h.app.id}${path}`, body });
    assert.equal(res.status, expected, `${path}: ${res.status} ${res.text}`);
    return res.json;
  };
  return {
    claim: async (waitSecs = 5) => (await post(`/queues/${queue}/claim`, { wait_secs: waitSecs })).job,
    progress: (job, progress) => post(`/jobs/${job.id}/progress`, { lease: job.lease, progress }),
    finish: (job, result) => post(`/jobs/${job.id}/finish`, { lease: job.lease, result }),
    get: async (id) => (await h.http({ method: 'GET', path: `/apps/${h.app.id}/jobs/${id}` })).json.job,
  };
}

test('submitJob files the job under the signed-in user; its updates arrive in order up to the result', { timeout: 20000 }, async () => {
  const h = await server();
  const ann = uniq('ann');
  const herald = await signedIn(h, ann);
  // Whatever the frame says about the user, the job is Ann's.
  const realSend = herald.send.bind(herald);
  herald.send = (frame) => realSend(frame.event === 'herald:job_submit'
    ? { ...frame, data: { ...frame.data, user_id: 'mallory' } } : frame);
  const updates = [];
  herald.bind('job_update', (job, meta) => updates.push({ job, serial: meta.serial }));
  const viaOnUpdate = [];

  const job = await herald.submitJob('reports', { from: 1, user_id: 'mallory' }, {
    onUpdate: (update) => viaOnUpdate.push(update.state),
  });
  assert.equal(job.state, 'queued');
  assert.equal(job.user_id, ann, 'the job belongs to the signed-in user, not to whom the data names');
  assert.equal(job.queue, 'reports');
  assert.deepEqual(job.payload, { from: 1, user_id: 'mallory' });
  assert.equal(job.lease, undefined, 'no lease token for the client');

  const w = worker(h);
  const claimed = await w.claim();
  assert.equal(claimed.id, job.id);
  assert.equal(claimed.user_id, ann);
  await w.progress(claimed, { pct: 50 });
  await w.finish(claimed, { rows: 3 });

  await until(() => updates.some((u) => u.job.state === 'succeeded'), 'the succeeded update');
  const mine = updates.filter((u) => u.job.id === job.id);
  assert.deepEqual(mine.map((u) => u.job.state), ['queued', 'running', 'running', 'succeeded']);
  assert.deepEqual(mine.map((u) => u.job.version), [1, 2, 3, 4]);
  assert.ok(mine.every((u) => u.job.user_id === ann));
  assert.deepEqual(mine[2].job.progress, { pct: 50 });
  assert.deepEqual(mine[3].job.result, { rows: 3 });
  assert.ok(mine.every((u, i) => i === 0 || u.serial === mine[i - 1].serial + 1), 'consecutive serials on the user stream');
  assert.deepEqual(viaOnUpdate, ['queued', 'running', 'running', 'succeeded']);
  herald.disconnect();
});

test('a payload that breaks the queue schema is rejected with the failing path', { timeout: 20000 }, async () => {
  const h = await server();
  const herald = await signedIn(h, uniq('bob'));
  await assert.rejects(herald.submitJob('reports', { from: 1, options: { format: 'gif' } }), (error) => {
    assert.match(error.reason, /\/options\/format/, error.reason);
    assert.equal(error.queue, 'reports');
    return true;
  });
  await assert.rejects(herald.submitJob('reports', { from: 'yesterday' }), (error) => {
    assert.match(error.reason, /\/from/, error.reason);
    assert.match(error.reason, /integer/, error.reason);
    return true;
  });
  await assert.rejects(herald.submitJob('reports', { options: {} }), (error) => {
    assert.match(error.reason, /from/, error.reason);
    return true;
  });
  await assert.rejects(herald.submitJob('internal', { from: 1 }), (error) => {
    assert.match(error.reason, /does not accept jobs from clients/, error.reason);
    return true;
  });
  const w = worker(h);
  const res = await h.http({ method: 'GET', path: `/apps/${h.app.id}/queues/reports` });
  assert.equal(res.json.counts.queued, 0, `nothing was filed: ${res.text}`);
  // A valid one still goes through on the same connection.
  const ok = await herald.submitJob('reports', { from: 2, options: { format: 'csv' } });
  assert.equal((await w.claim()).id, ok.id);
  herald.disconnect();
});

test('a connection that is not signed in is refused', { timeout: 20000 }, async () => {
  const h = await server();
  const herald = client(h, 'nobody').connect(); // never calls signin()
  await once(herald, 'connected');
  await assert.rejects(herald.submitJob('reports', { from: 1 }), (error) => {
    assert.match(error.reason, /sign in/);
    return true;
  });
  await assert.rejects(herald.getJob('j-anything'), (error) => {
    assert.match(error.reason, /sign in/);
    return true;
  });
  herald.disconnect();
});

test('a client offline while its job finishes gets the missed updates after it reconnects', { timeout: 30000 }, async () => {
  const h = await server();
  const RealWebSocket = globalThis.WebSocket;
  const network = { down: false };
  /** The client's network: while down, every connection attempt fails. */
  function GatedWebSocket(url) {
    if (!network.down) return new RealWebSocket(url);
    const dead = { close() {}, send() {} };
    setTimeout(() => dead.onclose?.({ code: 1006 }), 5);
    return dead;
  }
  const herald = await signedIn(h, uniq('carol'), {
    WebSocket: GatedWebSocket, transports: ['ws'], backoff: { base: 50, cap: 200 },
  });
  const signins = [];
  herald.user.bind('subscribed', (info) => signins.push(info));
  const job = await herald.submitJob('reports', { from: 3 });
  const seen = [];
  herald.watchJob(job.id, (update) => seen.push(update));
  await until(() => seen.length === 1, 'the queued state');
  assert.equal(seen[0].state, 'queued');

  network.down = true;
  herald.socket.close(4200); // the connection drops; reconnecting fails while the network is down
  await until(() => herald.state === 'unavailable', 'the client to notice');
  const w = worker(h);
  const claimed = await w.claim();
  await w.finish(claimed, { answer: 42 });
  assert.equal((await w.get(job.id)).state, 'succeeded');
  await new Promise((r) => setTimeout(r, 300)); // a few failed reconnects
  assert.notEqual(herald.state, 'connected');
  assert.deepEqual(seen.map((u) => u.state), ['queued'], 'nothing arrives while offline');

  network.down = false;
  await until(() => seen.some((u) => u.state === 'succeeded'), 'the succeeded update after the reconnect');
  assert.deepEqual(seen.map((u) => u.state), ['queued', 'running', 'succeeded']);
  assert.deepEqual(seen.at(-1).result, { answer: 42 });
  assert.equal(signins.at(-1).recovered, true, 'the user stream was resumed, not resynced');
  herald.disconnect();
});

test('when the user stream cannot be replayed, a watched job is fetched again', { timeout: 30000 }, async () => {
  const h = await server({ history_max_events: 2 }); // the user stream keeps only 2 events
  const herald = await signedIn(h, uniq('gus'), { transports: ['ws'] });
  const job = await herald.submitJob('reports', { from: 8 });
  const seen = [];
  herald.watchJob(job.id, (update) => seen.push(update));
  await until(() => seen.length === 1, 'the queued state');
  let resyncs = 0;
  herald.bind('resync', (channel) => { if (channel === herald.user) resyncs += 1; });

  herald.disconnect();
  const w = worker(h);
  const claimed = await w.claim();
  for (let pct = 25; pct <= 75; pct += 25) await w.progress(claimed, { pct });
  await w.finish(claimed, { rows: 8 }); // 5 updates missed: more than the history holds
  herald.connect();

  await until(() => seen.some((u) => u.state === 'succeeded'), 'the job after the resync');
  assert.equal(resyncs, 1);
  assert.deepEqual(seen.map((u) => u.state), ['queued', 'succeeded'], 'the current state, not a gap');
  assert.deepEqual(seen[1].result, { rows: 8 });
  assert.equal(seen[1].version, 6);
  herald.disconnect();
});

test('getJob returns the job as it is now, and only the user\'s own', { timeout: 20000 }, async () => {
  const h = await server();
  const dave = uniq('dave');
  const herald = await signedIn(h, dave);
  const job = await herald.submitJob('reports', { from: 4 });
  const w = worker(h);

  let current = await herald.getJob(job.id);
  assert.deepEqual({ id: current.id, state: current.state, user_id: current.user_id }, { id: job.id, state: 'queued', user_id: dave });
  assert.deepEqual(current.payload, { from: 4 });

  const claimed = await w.claim();
  await w.progress(claimed, { pct: 10 });
  current = await herald.getJob(job.id);
  assert.equal(current.state, 'running');
  assert.equal(current.attempts, 1);
  assert.deepEqual(current.progress, { pct: 10 });
  assert.equal(current.lease, undefined, 'the lease token stays with the worker');

  await w.finish(claimed, { url: '/reports/4.csv' });
  current = await herald.getJob(job.id);
  assert.equal(current.state, 'succeeded');
  assert.deepEqual(current.result, { url: '/reports/4.csv' });
  assert.deepEqual(current, await w.get(job.id), 'the same as the HTTP API shows');

  await assert.rejects(herald.getJob('no-such-job'), (error) => error.reason === 'no such job');
  const eve = await signedIn(h, uniq('eve'));
  await assert.rejects(eve.getJob(job.id), (error) => error.reason === 'no such job', 'another user cannot read it');
  eve.disconnect();
  herald.disconnect();
});

test('requests wait for the sign-in; unanswered ones time out or fail with the connection; idempotency keys make retries safe', { timeout: 30000 }, async () => {
  const h = await server();
  const RealWebSocket = globalThis.WebSocket;
  const network = { dropJobFrames: false };
  /** A network that loses job requests when told to. */
  function LossyWebSocket(url) {
    const ws = new RealWebSocket(url);
    const send = ws.send.bind(ws);
    ws.send = (text) => { if (!(network.dropJobFrames && text.includes('herald:job_'))) send(text); };
    return ws;
  }
  const herald = client(h, uniq('fay'), { WebSocket: LossyWebSocket, transports: ['ws'], backoff: { base: 50, cap: 200 } });
  // Asked before the connection exists: sent once connected and signed in.
  const early = herald.submitJob('reports', { from: 5 });
  herald.connect();
  herald.signin();
  assert.equal((await early).state, 'queued');

  network.dropJobFrames = true;
  const started = Date.now();
  await assert.rejects(herald.submitJob('reports', { from: 6 }, { timeout: 300 }), (error) => error.reason === 'timed out');
  assert.ok(Date.now() - started < 2000);

  const inFlight = herald.submitJob('reports', { from: 7 }, { idempotencyKey: 'report-7' });
  herald.socket.close(4200);
  await assert.rejects(inFlight, (error) => error.reason === 'connection closed');

  network.dropJobFrames = false;
  const first = await herald.submitJob('reports', { from: 7 }, { idempotencyKey: 'report-7' });
  const again = await herald.submitJob('reports', { from: 7 }, { idempotencyKey: 'report-7' });
  assert.equal(again.id, first.id, 'a repeated key answers with the job filed first');
  const res = await h.http({ method: 'GET', path: `/apps/${h.app.id}/queues/reports` });
  assert.equal(res.json.counts.queued, 2, `the early job and report-7, once: ${res.text}`);

  const pending = herald.getJob(first.id);
  herald.disconnect();
  await assert.rejects(pending, (error) => error.reason === 'disconnected');
});
