// End-to-end encrypted channels (private-encrypted-): the server SDK encrypts with the master key,
// the hub relays opaque {nonce, ciphertext}, pusher-js decrypts with the shared_secret that the
// auth handler returned (and that pusher-js never sends to the hub).
//
// Two pusher-js builds are exercised: `pusher-js/with-encryption` (the web build the docs name,
// run in Node with a few browser globals, see web-globals.mjs) and the Node build (`pusher-js`),
// which bundles the same encryption support.
import './web-globals.mjs';
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import nacl from 'tweetnacl';
import {
  startHerald, subscribed, waitFor, uniq, withTimeout, PusherJS,
} from './harness.mjs';

const require = createRequire(import.meta.url);
const PusherWithEncryption = require('pusher-js/with-encryption');

const MASTER = randomBytes(32);
const APP = { id: '1', key: 'app-key', secret: 'app-secret', encryptionMasterKeyBase64: MASTER.toString('base64') };

let h;
before(async () => { h = await startHerald({ apps: [APP] }); });
after(async () => { await h?.stop(); });
afterEach(async () => { await h.closeClients(); });

function channelKey(channel, master = MASTER) {
  return createHash('sha256').update(Buffer.concat([Buffer.from(channel), master])).digest();
}

function decrypt(channel, payload) {
  const box = nacl.secretbox.open(
    Buffer.from(payload.ciphertext, 'base64'), Buffer.from(payload.nonce, 'base64'), channelKey(channel),
  );
  assert.ok(box, 'payload decrypts with the per-channel key');
  return JSON.parse(Buffer.from(box).toString('utf8'));
}

for (const [label, Pusher] of [['pusher-js/with-encryption (web build)', PusherWithEncryption], ['pusher-js (node build)', PusherJS]]) {
  test(`${label}: receives and decrypts an event from the server SDK`, async () => {
    const ch = `private-encrypted-${uniq('vault')}`;
    const seenAuth = [];
    const sdk = h.sdk();
    const client = h.pusherClient({
      Pusher,
      authorize: ({ socketId, channelName }, cb) => {
        const auth = sdk.authorizeChannel(socketId, channelName);
        seenAuth.push({ ...auth }); // pusher-js deletes shared_secret from the object it gets
        cb(null, auth);
      },
    });
    const channel = await subscribed(client, ch);
    assert.equal(typeof seenAuth[0].shared_secret, 'string', 'the SDK handed out a shared_secret');
    const got = waitFor(channel, 'top-secret');
    await sdk.trigger(ch, 'top-secret', { pin: '1234', list: [1, 2, 3] });
    assert.deepEqual(await got, { pin: '1234', list: [1, 2, 3] });

    // triggerBatch encrypts per event as well
    const got2 = waitFor(channel, 'batched-secret');
    await sdk.triggerBatch([{ channel: ch, name: 'batched-secret', data: { n: 2 } }]);
    assert.deepEqual(await got2, { n: 2 });
  });
}

test('the hub relays ciphertext only; it decrypts with SHA-256(channel || master key)', async () => {
  const ch = `private-encrypted-${uniq('vault')}`;
  const raw = await h.raw();
  const ok = await raw.subscribeOk(ch);
  assert.equal(ok.channel, ch);
  await h.sdk().trigger(ch, 'opaque', { card: '4111-1111' });
  const f = await raw.event('opaque', { channel: ch });
  assert.equal(typeof f.msg.data, 'string');
  assert.ok(!f.raw.includes('4111'), `plaintext leaked: ${f.raw}`);
  assert.deepEqual(Object.keys(f.data).sort(), ['ciphertext', 'nonce']);
  assert.deepEqual(decrypt(ch, f.data), { card: '4111-1111' });
});

test('the subscribe frame carries no shared_secret; a subscribe that does is still accepted', async () => {
  const ch = `private-encrypted-${uniq('vault')}`;
  const raw = await h.raw();
  // pusher-js strips shared_secret; a sloppy client that forwards it should not break anything
  await raw.subscribeOk(ch, { extra: { shared_secret: Buffer.alloc(32).toString('base64') } });
});

test('encrypted channels need a valid private signature', async () => {
  const ch = `private-encrypted-${uniq('vault')}`;
  const raw = await h.raw();
  const f = await raw.subscribeErr(ch, { auth: `${APP.key}:${'0'.repeat(64)}` });
  assert.equal(f.data.type, 'AuthError');
  assert.equal(f.data.status, 401);
});

test('two receivers decrypt the same event; a receiver with the wrong key does not emit it', async () => {
  const ch = `private-encrypted-${uniq('vault')}`;
  const a = await h.connectedPusher({ Pusher: PusherWithEncryption });
  const b = await h.connectedPusher();
  const sdk = h.sdk();
  const wrong = h.sdk(APP, { encryptionMasterKeyBase64: randomBytes(32).toString('base64') });
  let cAuthCalls = 0;
  let refetched;
  const cRefetched = new Promise((resolve) => { refetched = resolve; });
  const c = await h.connectedPusher({
    authorize: ({ socketId, channelName }, cb) => {
      cAuthCalls += 1;
      cb(null, wrong.authorizeChannel(socketId, channelName));
      if (cAuthCalls === 2) refetched();
    },
  });
  const aCh = await subscribed(a, ch);
  const bCh = await subscribed(b, ch);
  const cCh = await subscribed(c, ch);
  let cGot = 0;
  cCh.bind('msg', () => { cGot += 1; });
  const ga = waitFor(aCh, 'msg');
  const gb = waitFor(bCh, 'msg');
  await sdk.trigger(ch, 'msg', 'a string payload');
  assert.equal(await ga, 'a string payload');
  assert.equal(await gb, 'a string payload');
  // c cannot decrypt: pusher-js re-fetches the key once (a second auth call), fails again and
  // drops the event. That all happens synchronously in its message handler.
  await withTimeout(cRefetched, 5000, 'the wrong-key client to re-fetch its key');
  assert.equal(cGot, 0);
});

test('private-encrypted-cache-: the replayed last event decrypts', async () => {
  const ch = `private-encrypted-cache-${uniq('vault')}`;
  await h.sdk().trigger(ch, 'cached-secret', { v: 'last' });
  const client = await h.connectedPusher({ Pusher: PusherWithEncryption });
  const channel = client.subscribe(ch);
  const got = waitFor(channel, 'cached-secret');
  assert.deepEqual(await got, { v: 'last' });
});
