// Connection life cycle: handshake, ping/pong, fatal close codes (4001, 4003, 4004, 4007, 4009,
// 4201) and what pusher-js makes of them.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, pusherConnected, waitFor, eventually, subscribed, withTimeout,
} from './harness.mjs';

const MAIN = { id: '1', key: 'app-key', secret: 'app-secret' };
const DISABLED = { id: '2', key: 'disabled-key', secret: 'disabled-secret', enabled: false };
const QUOTA = { id: '3', key: 'quota-key', secret: 'quota-secret', max_connections: 2 };
const AUTHREQ = { id: '4', key: 'authreq-key', secret: 'authreq-secret', require_auth_within_secs: 1 };

let h;
before(async () => { h = await startHerald({ apps: [MAIN, DISABLED, QUOTA, AUTHREQ] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

test('connection_established has a double-encoded {socket_id, activity_timeout:120}', async () => {
  const c = await h.raw();
  const f = c.established;
  assert.equal(f.event, 'pusher:connection_established');
  assert.equal(f.dataIsString, true, `data must be a JSON string: ${f.raw}`);
  assert.equal(f.msg.channel, undefined);
  assert.deepEqual(Object.keys(f.data).sort(), ['activity_timeout', 'socket_id']);
  assert.match(f.data.socket_id, /^\d+\.\d+$/);
  assert.equal(f.data.activity_timeout, 120);
  // connection_established is the first frame
  assert.equal(c.frames[0], f);
});

test('socket ids are unique per connection', async () => {
  const clients = await Promise.all([1, 2, 3, 4, 5].map(() => h.raw()));
  const ids = new Set(clients.map((c) => c.socketId));
  assert.equal(ids.size, 5);
});

test('pusher:ping is answered with pusher:pong', async () => {
  const c = await h.raw();
  c.send({ event: 'pusher:ping', data: {} });
  const pong = await c.event('pusher:pong');
  assert.equal(pong.msg.channel, undefined);
  if (pong.msg.data !== undefined) assert.deepEqual(pong.data, {});
  assert.ok(c.isOpen);
});

test('WebSocket-level ping frames are answered', async () => {
  const c = await h.raw();
  const pong = waitFor(c.ws, 'pong', { all: true });
  c.ws.ping(Buffer.from('hello'));
  const [payload] = await pong;
  assert.equal(payload.toString(), 'hello');
});

test('unknown query parameters are ignored (pusher-js sends flash=false and more)', async () => {
  const c = await h.raw({ query: 'protocol=7&client=js&version=8.6.0&flash=false&foo=bar&t=123' });
  assert.match(c.socketId, /^\d+\.\d+$/);
});

test('pusher-js connects and reports the socket id', async () => {
  const client = h.pusherClient();
  const socketId = await pusherConnected(client);
  assert.match(socketId, /^\d+\.\d+$/);
  assert.equal(client.connection.state, 'connected');
});

test('unknown app key: pusher:error 4001 then close 4001', async () => {
  const c = await h.raw({ key: 'no-such-key', established: false });
  const closed = await withTimeout(c.closed, 5000, 'close');
  assert.equal(closed.code, 4001, `close frame: ${JSON.stringify(closed)} frames: ${c.dump()}`);
  const err = c.all('pusher:error');
  assert.equal(err.length, 1, `expected one pusher:error before the close, got ${c.dump()}`);
  assert.equal(err[0].data.code, 4001);
  assert.equal(typeof err[0].data.message, 'string');
  assert.equal(c.all('pusher:connection_established').length, 0);
});

test('pusher-js sees 4001 for an unknown key and does not retry', async () => {
  const client = h.pusherClient({ app: { ...MAIN, key: 'no-such-key' } });
  const err = await waitFor(client.connection, 'error', {
    filter: (e) => (e?.data?.code ?? e?.error?.data?.code) === 4001,
  });
  assert.ok(err);
  await eventually(() => ['disconnected', 'failed'].includes(client.connection.state), { label: 'pusher-js gives up' });
});

test('disabled app: close 4003', async () => {
  const c = await h.raw({ app: DISABLED, established: false });
  const closed = await withTimeout(c.closed, 5000, 'close');
  assert.equal(closed.code, 4003, c.dump());
  assert.equal(c.all('pusher:connection_established').length, 0);
});

test('protocol=3 is refused with 4007', async () => {
  const c = await h.raw({ query: 'protocol=3&client=js&version=2.0.0', established: false });
  const closed = await withTimeout(c.closed, 5000, 'close');
  assert.equal(closed.code, 4007, c.dump());
  assert.equal(c.all('pusher:connection_established').length, 0);
});

test('protocol=4 and protocol=8 are refused with 4007; a non-numeric protocol with 4006', async () => {
  for (const [query, code] of [['protocol=4', 4007], ['protocol=8', 4007], ['protocol=abc', 4006]]) {
    const c = await h.raw({ query, established: false });
    const closed = await withTimeout(c.closed, 5000, `close for ${query}`);
    assert.equal(closed.code, code, `${query}: ${c.dump()}`);
    assert.equal(c.all('pusher:connection_established').length, 0);
  }
});

test('a missing protocol parameter is treated as protocol 7 (lenient, like Soketi/Sockudo)', async () => {
  const c = await h.raw({ query: 'client=js&version=8.6.0' });
  assert.match(c.socketId, /^\d+\.\d+$/);
});

test('protocol 5, 6 and 7 are accepted', async () => {
  for (const v of [5, 6, 7]) {
    const c = await h.raw({ query: `protocol=${v}&client=js&version=8.6.0` });
    assert.match(c.socketId, /^\d+\.\d+$/, `protocol ${v}`);
  }
});

test('connection quota: the connection over max_connections is closed with 4004, capacity is freed on close', async () => {
  const a = await h.raw({ app: QUOTA });
  const b = await h.raw({ app: QUOTA });
  const c = await h.raw({ app: QUOTA, established: false });
  const closed = await withTimeout(c.closed, 5000, 'close of the 3rd connection');
  assert.equal(closed.code, 4004, c.dump());
  assert.equal(c.all('pusher:connection_established').length, 0);
  // the first two are unaffected
  await a.ping();
  await b.ping();
  // other apps are not limited by this app's quota
  await h.raw();
  // after one leaves, a new connection fits again (the server may notice the close a little later)
  await a.close();
  const d = await eventually(async () => {
    const x = await h.raw({ app: QUOTA, established: false });
    const first = await Promise.race([
      x.next('pusher:connection_established').then(() => 'ok'),
      x.closed.then((i) => `closed ${i.code}`),
    ]);
    if (first === 'ok') return x;
    return null;
  }, { label: 'a connection to fit after another left' });
  assert.ok(d.isOpen);
});

test('require_auth_within_secs: idle connection closed with 4009, authorized ones stay', async () => {
  // Connected first: one subscribes to a private channel, one signs in. Their deadlines pass first.
  const priv = await h.raw({ app: AUTHREQ });
  await priv.subscribeOk('private-authreq');
  const signedIn = await h.raw({ app: AUTHREQ });
  signedIn.signin({ id: 'authreq-user' });
  await signedIn.event('pusher:signin_success');
  const publicOnly = await h.raw({ app: AUTHREQ });
  await publicOnly.subscribeOk('a-public-channel');
  const idle = await h.raw({ app: AUTHREQ });

  const idleClosed = await withTimeout(idle.closed, 10000, 'idle connection to be closed');
  assert.equal(idleClosed.code, 4009, idle.dump());
  const publicClosed = await withTimeout(publicOnly.closed, 10000, 'public-only connection to be closed');
  assert.equal(publicClosed.code, 4009, publicOnly.dump());

  // the authorized connections were opened before, so their deadline has passed too
  await priv.ping();
  await signedIn.ping();
  assert.ok(priv.isOpen && signedIn.isOpen);

  // apps without the setting keep idle connections
  const other = await h.raw();
  assert.ok(other.isOpen);
});

test('pusher-js reconnect meaning: after 4009 from require_auth, pusher-js does not reconnect', async () => {
  const client = h.pusherClient({ app: AUTHREQ });
  await pusherConnected(client);
  const err = await waitFor(client.connection, 'error', {
    timeout: 10000,
    filter: (e) => (e?.data?.code ?? e?.error?.data?.code) === 4009,
  });
  assert.ok(err);
  await eventually(() => client.connection.state === 'disconnected', { label: 'pusher-js disconnected' });
});

test('a client that stays subscribed keeps working after idle connections were dropped', async () => {
  const client = await h.connectedPusher();
  const ch = await subscribed(client, 'still-here');
  const got = waitFor(ch, 'ping-event');
  await h.sdk().trigger('still-here', 'ping-event', { ok: true });
  assert.deepEqual(await got, { ok: true });
});

test('pong timeout: a connection that does not answer the server ping is closed with 4201', async () => {
  const h2 = await startHerald({ server: { activity_timeout_secs: 1, pong_timeout_secs: 1 } });
  try {
    // A responsive client: answers pusher:ping with pusher:pong (and WS pings automatically).
    const alive = await h2.raw();
    assert.equal(alive.established.data.activity_timeout, 1);
    let answered = 0;
    alive.ws.on('message', (buf) => {
      try {
        if (JSON.parse(buf.toString()).event === 'pusher:ping') {
          answered += 1;
          alive.send({ event: 'pusher:pong', data: {} });
        }
      } catch { /* ignore */ }
    });
    // A dead client: never answers (not even WS-level pings).
    const dead = await h2.raw({ autoPong: false });
    const closed = await withTimeout(dead.closed, 15000, 'the silent connection to be closed');
    assert.equal(closed.code, 4201, dead.dump());
    assert.ok(dead.all('pusher:ping').length + dead.wsPings >= 1, 'the server pinged before giving up');
    await alive.ping();
    assert.ok(alive.isOpen, 'the responsive connection is still open');
    assert.ok(answered + alive.wsPings >= 1, 'the responsive connection was pinged too');
  } finally {
    await h2.stop();
  }
});
