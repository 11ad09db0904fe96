// Graceful shutdown: SIGTERM closes every connection with 4200 (pusher-js: reconnect at once)
// and the process exits cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, pusherConnected, waitFor, withTimeout, subscribed,
} from './harness.mjs';

test('SIGTERM: connections are closed with 4200 and the server exits 0', async () => {
  const h = await startHerald();
  try {
    const a = await h.raw();
    const b = await h.raw();
    await b.subscribeOk('some-channel');
    await b.subscribeOk('private-some-channel');
    const client = await h.connectedPusher();
    await subscribed(client, 'pjs-channel');
    const pjsError = waitFor(client.connection, 'error', {
      timeout: 10000,
      filter: (e) => (e?.data?.code ?? e?.error?.data?.code) === 4200,
    });

    h.signal('SIGTERM');
    for (const c of [a, b]) {
      const closed = await withTimeout(c.closed, 10000, 'close on shutdown');
      assert.equal(closed.code, 4200, c.dump());
    }
    await pjsError;
    const exit = await withTimeout(h.exited, 15000, 'server exit');
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}\n${h.output()}`);
    client.disconnect();
  } finally {
    await h.stop();
  }
});
