// pusher-js's HTTP fallback transports (xhr_streaming, xhr_polling) against the real binary:
// a client that cannot use WebSockets is still a full client (server events, private and presence
// channels, client events both ways with a WebSocket client).
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, pusherConnected, subscribed, waitFor, uniq, withTimeout } from './harness.mjs';

let h;
// Sessions left without a receive request close after 1 s here (default 10 s), so that a
// pusher-js client that disconnects over HTTP leaves presence quickly.
before(async () => { h = await startHerald({ server: { http_session_timeout_secs: 1 } }); });
afterEach(async () => { await h.closeClients(); });
after(async () => { await h.stop(); });

function httpOnly(transport, extra = {}) {
  return h.pusherClient({
    ...extra,
    options: { enabledTransports: [transport], httpHost: h.host, httpPort: h.port, httpPath: '/pusher' },
  });
}

for (const transport of ['xhr_streaming', 'xhr_polling']) {
  test(`${transport}: connects, subscribes and receives server events`, async () => {
    const client = httpOnly(transport);
    await pusherConnected(client);
    assert.equal(client.connection.connection.transport.name ?? transport, transport);
    const channel = uniq('fallback');
    const ch = client.subscribe(channel);
    await subscribed(client, channel);
    const got = waitFor(ch, 'hello');
    await h.sdk().trigger(channel, 'hello', { n: 1 });
    assert.deepEqual(await got, { n: 1 });
  });

  test(`${transport}: exchanges client events with a WebSocket client on a private channel`, async () => {
    const channel = `private-${uniq('mix')}`;
    const viaHttp = httpOnly(transport);
    const viaWs = h.pusherClient();
    await Promise.all([pusherConnected(viaHttp), pusherConnected(viaWs)]);
    const httpChannel = viaHttp.subscribe(channel);
    const wsChannel = viaWs.subscribe(channel);
    await Promise.all([subscribed(viaHttp, channel), subscribed(viaWs, channel)]);
    const atWs = waitFor(wsChannel, 'client-from-http');
    assert.ok(httpChannel.trigger('client-from-http', { via: transport }));
    assert.deepEqual(await atWs, { via: transport });
    const atHttp = waitFor(httpChannel, 'client-from-ws');
    assert.ok(wsChannel.trigger('client-from-ws', { via: 'ws' }));
    assert.deepEqual(await atHttp, { via: 'ws' });
  });

  test(`${transport}: presence members across transports`, async () => {
    const channel = `presence-${uniq('room')}`;
    const viaHttp = httpOnly(transport, { presence: () => ({ user_id: 'http-user', user_info: { t: transport } }) });
    const viaWs = h.pusherClient({ presence: () => ({ user_id: 'ws-user' }) });
    const wsChannel = viaWs.subscribe(channel);
    await subscribed(viaWs, channel);
    const added = waitFor(wsChannel, 'pusher:member_added');
    viaHttp.subscribe(channel);
    const member = await added;
    assert.equal(member.id, 'http-user');
    assert.deepEqual(member.info, { t: transport });
    const removed = waitFor(wsChannel, 'pusher:member_removed');
    viaHttp.disconnect();
    assert.equal((await removed).id, 'http-user');
  });
}

async function post(path, body) {
  const res = await fetch(`http://${h.host}:${h.port}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body,
  });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

test('raw framing: o once per session, then frames in a[...], and xhr_send feeds the session', async () => {
  const base = `/pusher/app/${h.app.key}/123/${uniq('s').replace(/[^a-z0-9]/gi, '').slice(0, 20)}`;
  const open = await post(`${base}/xhr?protocol=7`);
  assert.equal(open.status, 200);
  assert.equal(open.text, 'o\n');
  const established = await post(`${base}/xhr`);
  assert.match(established.text, /^a\[".*pusher:connection_established.*"\]\n$/);
  const frames = JSON.parse(established.text.slice(1));
  assert.equal(JSON.parse(frames[0]).event, 'pusher:connection_established');
  const sent = await post(`${base}/xhr_send`, JSON.stringify([JSON.stringify({ event: 'pusher:ping', data: {} })]));
  assert.equal(sent.status, 204);
  const pong = await post(`${base}/xhr`);
  assert.equal(JSON.parse(JSON.parse(pong.text.slice(1))[0]).event, 'pusher:pong');
  assert.equal(pong.headers.get('access-control-allow-origin'), '*');
});

test('raw framing: refusals are close frames; unknown sessions and bad bodies get HTTP errors', async () => {
  const unknownKey = await post('/pusher/app/no-such-key/1/abc/xhr_streaming?protocol=7');
  assert.equal(unknownKey.text, 'c[4001,"App key not found"]\n');
  const oldProtocol = await post(`/pusher/app/${h.app.key}/1/abcd/xhr?protocol=3`);
  assert.equal(oldProtocol.text, 'c[4007,"Unsupported protocol version"]\n');
  assert.equal((await post(`/pusher/app/${h.app.key}/1/nosuchsession/xhr_send`, '[]')).status, 404);
  const base = `/pusher/app/${h.app.key}/7/${Date.now().toString(36)}`;
  await post(`${base}/xhr`);
  assert.equal((await post(`${base}/xhr_send`, '{"not":"an array"}')).status, 400);
  assert.equal((await post(`/pusher/app/${h.app.key}/7/bad!id/xhr`)).status, 400);
  const preflight = await fetch(`http://${h.host}:${h.port}${base}/xhr_send`, {
    method: 'OPTIONS', headers: { origin: 'http://example.test', 'access-control-request-method': 'POST' },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get('access-control-allow-origin'), 'http://example.test');
});

test('a malformed frame over xhr_send gets pusher:error 4303 and the session keeps working', async () => {
  const base = `/pusher/app/${h.app.key}/9/${Date.now().toString(36)}x`;
  await post(`${base}/xhr`);
  await post(`${base}/xhr`);
  await post(`${base}/xhr_send`, JSON.stringify(['not json', JSON.stringify({ event: 'pusher:ping', data: {} })]));
  const reply = await withTimeout(post(`${base}/xhr`), 5000, 'poll');
  const events = JSON.parse(reply.text.slice(1)).map((f) => JSON.parse(f));
  assert.equal(events[0].event, 'pusher:error');
  assert.equal(JSON.parse(events[0].data).code, 4303);
  assert.equal(events[1].event, 'pusher:pong');
});
