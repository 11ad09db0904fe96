// Graceful shutdown: SIGTERM closes every connection with 4200 (pusher-js: reconnect at once)
// and the process exits cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, waitFor, withTimeout, subscribed,
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
    // 4200 means "reconnect at once": pusher-js goes straight back to connecting. Stop it there
    // (one tick into the attempt): disconnecting at other moments of pusher-js's retry loop can
    // leave its strategy timers running and keep this process alive after the test.
    if (client.connection.state !== 'connecting') {
      await waitFor(client.connection, 'state_change', { filter: (st) => st.current === 'connecting' });
    }
    await new Promise((resolve) => { setImmediate(resolve); });
    client.disconnect();
    const exit = await withTimeout(h.exited, 15000, 'server exit');
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}\n${h.output()}`);
  } finally {
    await h.stop();
  }
});
