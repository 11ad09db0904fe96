// A subscriber that stops reading is disconnected with 4100 (over capacity / too slow) instead of
// buffering without bound, and healthy subscribers keep receiving everything in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, withTimeout, uniq } from './harness.mjs';

const BATCHES = Number(process.env.HERALD_SLOW_BATCHES || 300); // x 10 events x ~9 KB ≈ 27 MB

test('a connection that does not read is closed with 4100; others are unaffected', { timeout: 120000 }, async () => {
  const h = await startHerald();
  try {
    const ch = uniq('firehose');
    const slow = await h.raw();
    const healthy = await h.raw();
    await slow.subscribeOk(ch);
    await healthy.subscribeOk(ch);
    let healthyCount = 0;
    let lastSeq = -1;
    let outOfOrder = 0;
    let expected = Infinity;
    let allReceived;
    const healthyDone = new Promise((resolve) => { allReceived = resolve; });
    const bulk = (raw) => raw.includes('"seq-');
    healthy.ignore = bulk; // counted here, not kept in the frame log
    slow.ignore = bulk;
    healthy.ws.on('message', (buf) => {
      const m = /"seq-(\d+)"/.exec(buf.toString());
      if (m) {
        const n = Number(m[1]);
        if (n !== lastSeq + 1) outOfOrder += 1;
        lastSeq = n;
        healthyCount += 1;
        if (healthyCount >= expected) allReceived();
      }
    });

    slow.ws._socket.pause(); // stop reading: TCP backpressure builds up towards the server

    const sdk = h.sdk();
    const payload = 'p'.repeat(9000);
    let seq = 0;
    for (let i = 0; i < BATCHES; i += 1) {
      const batch = [];
      for (let j = 0; j < 10; j += 1) {
        batch.push({ channel: ch, name: `seq-${seq}`, data: payload });
        seq += 1;
      }
      await sdk.triggerBatch(batch);
    }
    // the healthy subscriber gets everything, in order
    expected = seq;
    if (healthyCount >= expected) allReceived();
    await withTimeout(healthyDone, 60000, `healthy subscriber to receive ${seq} events`);
    assert.equal(outOfOrder, 0);

    // drain the slow socket: its stream must end with a 4100 close
    slow.ws._socket.resume();
    const closed = await withTimeout(slow.closed, 30000, 'the slow connection to be closed');
    assert.equal(closed.code, 4100, `close ${JSON.stringify(closed)}`);
    await healthy.ping();
  } finally {
    await h.stop();
  }
});
