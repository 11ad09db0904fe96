// Replays the golden wire fixtures in ../../fixtures/wire against the real binary, with the same
// matching rules as the Rust replayer (crates/herald/tests/e2e/fixtures.rs); see the README there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { REPO_ROOT, DEFAULT_TIMEOUT, startHerald, signedQuery, withTimeout } from './harness.mjs';

const DIR = path.join(REPO_ROOT, 'fixtures', 'wire');

function isSocketId(v) {
  return typeof v === 'string' && /^\d+\.\d+$/.test(v);
}

function parseJson(text) {
  try {
    const v = JSON.parse(text);
    return v !== null && typeof v === 'object' ? v : undefined;
  } catch {
    return undefined;
  }
}

export function matches(expected, actual, vars = {}) {
  if (expected === '<any>') return true;
  if (typeof expected === 'string' && expected.startsWith('<capture:')) {
    vars[expected.slice(9, -1)] = actual;
    return true;
  }
  if (expected === '<socket_id>') return isSocketId(actual);
  if (typeof expected === 'string' && typeof actual === 'string') {
    const e = parseJson(expected);
    const a = parseJson(actual);
    if (e !== undefined && a !== undefined) return matches(e, a, vars);
    return expected === actual;
  }
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && expected.length === actual.length
      && expected.every((e, i) => matches(e, actual[i], vars));
  }
  if (expected && typeof expected === 'object') {
    if (!actual || typeof actual !== 'object' || Array.isArray(actual)) return false;
    const keys = Object.keys(expected);
    return keys.length === Object.keys(actual).length
      && keys.every((k) => k in actual && matches(expected[k], actual[k], vars));
  }
  return expected === actual;
}

/** Replaces every "<var:NAME>" with the value captured under NAME. */
export function substitute(value, vars) {
  if (typeof value === 'string' && value.startsWith('<var:')) return vars[value.slice(5, -1)] ?? null;
  if (Array.isArray(value)) return value.map((v) => substitute(v, vars));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, vars)]));
  }
  return value;
}

/** A socket whose frames and close are read strictly in order. */
class OrderedSocket {
  constructor(url) {
    this.ws = new WebSocket(url);
    this.queue = [];
    this.waiting = null;
    this.closeCode = null;
    this.ws.on('message', (buf) => this.push({ frame: JSON.parse(buf.toString('utf8')) }));
    this.ws.on('close', (code) => { this.closeCode = code; this.push({ close: code }); });
    this.ws.on('error', () => {});
  }
  push(item) {
    if (this.waiting) { const w = this.waiting; this.waiting = null; w(item); } else this.queue.push(item);
  }
  take(label) {
    const item = this.queue.shift();
    if (item) return Promise.resolve(item);
    return withTimeout(new Promise((resolve) => { this.waiting = resolve; }), DEFAULT_TIMEOUT, label);
  }
  send(text) { this.ws.send(text); }
}

async function publish(herald, body) {
  const p = `/apps/${herald.app.id}/events`;
  const text = JSON.stringify(body);
  const qs = signedQuery({ method: 'POST', path: p, body: text, key: herald.app.key, secret: herald.app.secret });
  const res = await fetch(`http://127.0.0.1:${herald.port}${p}?${qs}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: text,
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

test('there are golden fixtures to replay', () => {
  assert.ok(files.length >= 5, `fixtures missing in ${DIR}`);
});

for (const file of files) {
  const fixture = JSON.parse(readFileSync(path.join(DIR, file), 'utf8'));
  test(`fixture ${file}: ${fixture.description}`, async () => {
    const herald = await startHerald();
    const clients = new Map();
    const vars = {};
    try {
      for (const [index, step] of fixture.steps.entries()) {
        const at = `${file} step ${index}`;
        if (step.publish) {
          const res = await publish(herald, substitute(step.publish, vars));
          assert.equal(res.status, step.status, at);
          if (step.response) {
            const expected = substitute(step.response, vars);
            assert.ok(matches(expected, res.body, vars),
              `${at}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(res.body)}`);
          }
          continue;
        }
        if (step.connect) {
          const key = step.connect.key ?? herald.app.key;
          const query = step.connect.query ?? 'protocol=7';
          clients.set(step.client, new OrderedSocket(`ws://127.0.0.1:${herald.port}/app/${key}?${query}`));
          continue;
        }
        const client = clients.get(step.client);
        if (step.send) {
          await new Promise((r) => (client.ws.readyState === WebSocket.OPEN ? r() : client.ws.once('open', r)));
          client.send(JSON.stringify(substitute(step.send, vars)));
        } else if (step.send_text !== undefined) {
          await new Promise((r) => (client.ws.readyState === WebSocket.OPEN ? r() : client.ws.once('open', r)));
          client.send(step.send_text);
        } else if (step.recv) {
          const item = await client.take(at);
          assert.ok(item.frame, `${at}: expected a frame, connection closed with ${item.close}`);
          const expected = substitute(step.recv, vars);
          assert.ok(matches(expected, item.frame, vars),
            `${at}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(item.frame)}`);
        } else if (step.closed !== undefined) {
          let item = await client.take(at);
          while (item.frame) item = await client.take(at);
          assert.equal(item.close, step.closed, at);
        } else {
          assert.fail(`${at}: unknown step ${JSON.stringify(step)}`);
        }
      }
    } finally {
      for (const c of clients.values()) c.ws.terminate();
      await herald.stop();
    }
  });
}
