// Test harness for the Herald end-to-end conformance suite.
//
// Starts the real `herald` binary on a loopback port with a config file written for the test
// file, and gives the tests: pusher-js clients (auth signed by the official `pusher` server SDK),
// server SDK clients, raw WebSocket clients for exact-frame assertions, a raw signed-HTTP helper
// and small "await an event with a timeout" helpers.
//
// Nothing here sleeps to synchronise: every wait is for an event, bounded by a timeout.

import { spawn } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
// The Node build of pusher-js. It bundles tweetnacl and supports private-encrypted- channels
// (the `pusher-js/with-encryption` entry point is the *web* build and cannot load in Node).
export const PusherJS = require('pusher-js');
export const PusherServer = require('pusher');

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '../..');
export const HERALD_BIN = process.env.HERALD_BIN
  ? path.resolve(process.env.HERALD_BIN)
  : path.resolve(HERE, '../../target/release/herald');

export const DEFAULT_TIMEOUT = Number(process.env.HERALD_TEST_TIMEOUT_MS || 5000);
const LISTEN_RE = /listening on http:\/\/([0-9.]+):(\d+)/;

// ---------------------------------------------------------------------------------------------
// Small async helpers
// ---------------------------------------------------------------------------------------------

/** Rejects with a descriptive error if `promise` has not settled within `ms`. */
export function withTimeout(promise, ms = DEFAULT_TIMEOUT, label = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Waits for `event` on anything with bind/unbind (pusher-js channels, connections, user,
 * watchlist) or on/off (EventEmitter, ws). Resolves with the listener's first argument, or with
 * all arguments as an array when `all` is set. `filter(...args)` may reject uninteresting ones.
 */
export function waitFor(target, event, { timeout = DEFAULT_TIMEOUT, filter, all = false } = {}) {
  const useBind = typeof target.bind === 'function' && typeof target.unbind === 'function'
    && !(typeof target.on === 'function');
  let handler;
  const p = new Promise((resolve) => {
    handler = (...args) => {
      if (filter && !filter(...args)) return;
      resolve(all ? args : args[0]);
    };
    if (useBind) target.bind(event, handler);
    else target.on(event, handler);
  });
  return withTimeout(p, timeout, `event '${event}'`).finally(() => {
    if (useBind) target.unbind(event, handler);
    else target.off(event, handler);
  });
}

/**
 * Records every occurrence of `event` on a bindable target. `.items` holds the first listener
 * argument of each call (or `{data, metadata}` with `withMeta`); `.waitForCount(n)` awaits n.
 */
export function collect(target, event, { withMeta = false } = {}) {
  const items = [];
  const waiters = [];
  const handler = (data, metadata) => {
    items.push(withMeta ? { data, metadata } : data);
    for (const w of [...waiters]) {
      if (items.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(items);
      }
    }
  };
  if (typeof target.bind === 'function' && typeof target.unbind === 'function') target.bind(event, handler);
  else target.on(event, handler);
  return {
    items,
    waitForCount(n, timeout = DEFAULT_TIMEOUT) {
      if (items.length >= n) return Promise.resolve(items);
      return withTimeout(new Promise((resolve) => waiters.push({ n, resolve })), timeout,
        `${n} x '${event}' (got ${items.length})`);
    },
    stop() {
      if (typeof target.unbind === 'function') target.unbind(event, handler);
      else target.off(event, handler);
    },
  };
}

/** Polls `check` (sync or async, truthy = done) until it succeeds or `timeout` passes. */
export async function eventually(check, { timeout = DEFAULT_TIMEOUT, interval = 50, label = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${label}${lastErr ? `: ${lastErr.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

export function uniq(prefix = 'ch') {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

// ---------------------------------------------------------------------------------------------
// Signatures (our own implementation, checked against Pusher's published vectors in a test)
// ---------------------------------------------------------------------------------------------

export function hmacHex(secret, str) {
  return createHmac('sha256', secret).update(str).digest('hex');
}

export function channelAuth(app, socketId, channel, channelData) {
  const str = channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
  return `${app.key}:${hmacHex(app.secret, str)}`;
}

export function userAuth(app, socketId, userData) {
  return `${app.key}:${hmacHex(app.secret, `${socketId}::user::${userData}`)}`;
}

/**
 * Builds the signed query string for an HTTP API request (Pusher "auth_version 1.0").
 * `timestamp` may be overridden to produce stale requests.
 */
export function signedQuery({ method, path: reqPath, params = {}, body, key, secret, timestamp }) {
  const all = {
    auth_key: key,
    auth_timestamp: String(timestamp ?? Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    ...params,
  };
  if (body !== undefined && body !== '') all.body_md5 = createHash('md5').update(body).digest('hex');
  const keys = Object.keys(all).sort();
  const toSign = keys.map((k) => `${k.toLowerCase()}=${all[k]}`).join('&');
  const sig = hmacHex(secret, `${method.toUpperCase()}\n${reqPath}\n${toSign}`);
  const qs = keys.map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(all[k])}`).join('&');
  return `${qs}&auth_signature=${sig}`;
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

export const APP_DEFAULTS = Object.freeze({
  id: '1',
  key: 'app-key',
  secret: 'app-secret',
  enabled: true,
  client_events: true,
  user_signin: true,
  max_connections: 0,
  max_payload_bytes: 10240,
  max_channel_name_len: 200,
  max_event_name_len: 200,
  max_channels_per_connection: 100,
  max_event_channels: 100,
  max_batch_events: 10,
  max_presence_members: 100,
  max_presence_user_info_bytes: 1024,
  max_presence_user_id_len: 128,
  client_events_per_second: 10,
  max_watchlist_size: 100,
  require_auth_within_secs: 0,
  cache_ttl_secs: 1800,
});

export const SERVER_DEFAULTS = Object.freeze({
  bind: '127.0.0.1:0',
  activity_timeout_secs: 120,
  pong_timeout_secs: 30,
});

function tomlValue(v) {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  throw new Error(`unsupported TOML value ${v}`);
}

export function toToml({ server, apps }) {
  const lines = ['[server]'];
  for (const [k, v] of Object.entries(server)) lines.push(`${k} = ${tomlValue(v)}`);
  for (const app of apps) {
    lines.push('', '[[apps]]');
    const tables = [];
    for (const [k, v] of Object.entries(app)) {
      if (k === 'encryptionMasterKeyBase64') continue; // SDK-side only, never given to the server
      // An array of objects is an array of sub-tables, e.g. queues: [{name}] -> [[apps.queues]].
      if (Array.isArray(v) && v.length > 0 && v.every((t) => t && typeof t === 'object' && !Array.isArray(t))) {
        tables.push([k, v]);
        continue;
      }
      lines.push(`${k} = ${tomlValue(v)}`);
    }
    for (const [k, entries] of tables) {
      for (const entry of entries) {
        lines.push(`[[apps.${k}]]`);
        for (const [ek, ev] of Object.entries(entry)) lines.push(`${ek} = ${tomlValue(ev)}`);
      }
    }
  }
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

const liveChildren = new Set();
process.on('exit', () => {
  for (const child of liveChildren) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Starts herald. `apps` entries are merged over APP_DEFAULTS; `server` over SERVER_DEFAULTS.
 * Returns a Herald handle; call `await herald.stop()` in an `after` hook.
 */
export async function startHerald({
  apps = [{}], cliApps = [], server = {}, args = [], env = {}, startTimeout = 20000, dataDir: keptDataDir,
} = {}) {
  if (!existsSync(HERALD_BIN)) {
    throw new Error(`herald binary not found at ${HERALD_BIN} (set HERALD_BIN)`);
  }
  const fullApps = apps.map((a) => ({ ...APP_DEFAULTS, ...a }));
  // Apps given on the command line as --app ID:KEY:SECRET (they get the per-app defaults).
  for (const a of cliApps) {
    args = [...args, '--app', `${a.id}:${a.key}:${a.secret}`];
  }
  const allApps = [...fullApps, ...cliApps.map((a) => ({ ...APP_DEFAULTS, ...a }))];
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-e2e-'));
  // A caller may pass its own data directory, to restart a server on the same durable state.
  const dataDir = keptDataDir ?? path.join(dir, 'data');
  const configPath = path.join(dir, 'herald.toml');
  writeFileSync(configPath, toToml({ server: { ...SERVER_DEFAULTS, ...server }, apps: fullApps }));

  const child = spawn(HERALD_BIN,
    ['serve', ...(args.includes('--bind') ? [] : ['--bind', '127.0.0.1:0']), '--data-dir', dataDir, '--config', configPath, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  liveChildren.add(child);
  const herald = new Herald(child, allApps, dir);

  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(
      `herald did not print "listening on http://HOST:PORT" within ${startTimeout} ms. Output:\n${herald.output()}`)),
    startTimeout);
    const onLine = (line) => {
      const m = LISTEN_RE.exec(line);
      if (m) {
        clearTimeout(timer);
        herald.off('line', onLine);
        resolve(Number(m[2]));
      }
    };
    herald.on('line', onLine);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`herald exited early (code ${code}, signal ${signal}). Output:\n${herald.output()}`));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  }).catch(async (err) => {
    await herald.stop();
    throw err;
  });
  herald.port = port;
  return herald;
}

class Herald {
  constructor(child, apps, dir) {
    this.child = child;
    this.pid = child.pid;
    this.apps = apps;
    this.app = apps[0];
    this.dir = dir;
    this.host = '127.0.0.1';
    this.port = 0;
    this.lines = [];
    this.listeners = new Set();
    this.clients = new Set();
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      liveChildren.delete(child);
      resolve({ code, signal });
    }));
    for (const stream of [child.stdout, child.stderr]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          this.lines.push(line);
          if (this.lines.length > 2000) this.lines.shift();
          for (const l of [...this.listeners]) l(line);
        }
      });
    }
  }

  on(_e, fn) { this.listeners.add(fn); }
  off(_e, fn) { this.listeners.delete(fn); }
  output() { return this.lines.join('\n'); }

  get httpBase() { return `http://${this.host}:${this.port}`; }

  appById(id) {
    const app = this.apps.find((a) => a.id === id);
    if (!app) throw new Error(`no app ${id}`);
    return app;
  }

  /** Official server SDK client for an app (default: the first one). */
  sdk(app = this.app, extra = {}) {
    return new PusherServer({
      appId: app.id,
      key: app.key,
      secret: app.secret,
      host: this.host,
      port: String(this.port),
      useTLS: false,
      ...(app.encryptionMasterKeyBase64 ? { encryptionMasterKeyBase64: app.encryptionMasterKeyBase64 } : {}),
      ...extra,
    });
  }

  /** The pusher-js options used by pusherClient (also handy for Laravel Echo). */
  pusherOptions({ app = this.app, presence, user, authorize, options = {} } = {}) {
    const sdk = this.sdk(app);
    return {
      key: app.key,
      wsHost: this.host,
      wsPort: this.port,
      wssPort: this.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      cluster: 'mt1',
      disableStats: true,
      channelAuthorization: {
        customHandler: authorize || (({ socketId, channelName }, cb) => {
          try {
            if (channelName.startsWith('presence-')) {
              if (!presence) throw new Error(`no presence data for ${channelName}`);
              cb(null, sdk.authorizeChannel(socketId, channelName, presence(channelName)));
            } else {
              cb(null, sdk.authorizeChannel(socketId, channelName));
            }
          } catch (e) {
            cb(e, null);
          }
        }),
      },
      userAuthentication: {
        customHandler: ({ socketId }, cb) => {
          try {
            if (!user) throw new Error('no user data for signin');
            cb(null, sdk.authenticateUser(socketId, user));
          } catch (e) {
            cb(e, null);
          }
        },
      },
      ...options,
    };
  }

  /** Registers a client (anything with disconnect()) for cleanup by closeClients(). */
  track(client) {
    this.clients.add(client);
    return client;
  }

  /**
   * pusher-js client. Channel authorization and user authentication are custom handlers signing
   * with the `pusher` SDK. Options:
   *   app          which app (default first)
   *   presence     (channelName) => ({user_id, user_info}) for presence channels
   *   user         user data object for pusher.signin() ({id, user_info?, watchlist?})
   *   authorize    replace the channel authorization handler entirely
   *   Pusher       a different pusher-js constructor
   *   options      extra pusher-js options
   */
  pusherClient({ app = this.app, presence, user, authorize, Pusher = PusherJS, options = {} } = {}) {
    const client = new Pusher(app.key, this.pusherOptions({ app, presence, user, authorize, options }));
    // Remember the underlying sockets: pusher-js's bundled faye-websocket arms a 30 s close timer
    // when pusher-js closes a socket the server already closed (after a 4xxx "refused" code), which
    // would keep this test process alive for 30 s after the tests. closeClients() unrefs it.
    client.__sockets = new Set();
    client.connection.bind('connected', () => {
      const sock = client.connection.connection?.transport?.socket;
      if (sock) client.__sockets.add(sock);
    });
    this.clients.add(client);
    return client;
  }

  /** A pusher-js client that has reached the `connected` state. */
  async connectedPusher(opts) {
    const client = this.pusherClient(opts);
    await pusherConnected(client);
    return client;
  }

  /** Raw WebSocket client (see RawClient). Waits for connection_established unless told not to. */
  async raw({ app = this.app, key, query, established = true, autoPong = true, timeout } = {}) {
    const c = await RawClient.open(this, {
      key: key ?? app.key, app, query, established, autoPong, timeout,
    });
    this.clients.add(c);
    return c;
  }

  /** Raw, signed HTTP request to the API. Returns {status, text, json}. */
  async http({ method = 'GET', path: reqPath, params = {}, body, app = this.app, key, secret, timestamp, rawQuery, headers = {} }) {
    const bodyStr = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
    const qs = rawQuery ?? signedQuery({
      method, path: reqPath, params, body: bodyStr, key: key ?? app.key, secret: secret ?? app.secret, timestamp,
    });
    const res = await fetch(`${this.httpBase}${reqPath}?${qs}`, {
      method,
      body: bodyStr,
      headers: bodyStr !== undefined ? { 'content-type': 'application/json', ...headers } : headers,
    });
    const text = await res.text();
    let json;
    try { json = JSON.parse(text); } catch { /* plain text */ }
    return { status: res.status, text, json, headers: res.headers };
  }

  /**
   * A backend changing the feed `channel` over the signed feed routes. Each call asserts the
   * status (any 2xx unless told) and returns the answer's JSON; `state()` is `GET /feeds/{channel}`.
   */
  feedBackend(channel, { app = this.app } = {}) {
    const base = `/apps/${app.id}/feeds/${channel}`;
    const call = async (method, reqPath, body, expected) => {
      const res = await this.http({ method, path: `${base}${reqPath}`, body, app });
      if (expected === undefined ? res.status < 200 || res.status > 299 : res.status !== expected) {
        throw new Error(`${method} ${base}${reqPath} ${JSON.stringify(body ?? null)}: expected ${expected ?? '2xx'}, got ${res.status} ${res.text}`);
      }
      return res.json ?? res.text;
    };
    const item = (id) => `/items/${encodeURIComponent(id)}`;
    return {
      /** `place`: {index} | {before} | {after} (none: last). */
      publish: (id, value, place = {}) => call('POST', '/items', { ...(id === undefined ? {} : { id }), value, ...place }),
      edit: (id, value, { merge } = {}) => call('POST', `${item(id)}/edit`, merge === undefined ? { value } : { value, merge }),
      move: (id, place) => call('POST', `${item(id)}/move`, place),
      retract: (id) => call('POST', `${item(id)}/retract`, {}),
      get: (id, expected) => call('GET', item(id), undefined, expected),
      state: () => call('GET', ''),
      call,
    };
  }

  /** Disconnects every client created through this handle. Call from afterEach. */
  async closeClients() {
    const closing = [];
    for (const c of this.clients) {
      if (c instanceof RawClient) closing.push(c.close());
      else {
        try { c.disconnect(); } catch { /* ignore */ }
        for (const sock of c.__sockets || []) sock._closeTimer?.unref?.();
      }
    }
    this.clients.clear();
    await Promise.allSettled(closing);
  }

  /** Sends `signal` to the server process (by its PID). */
  signal(sig) {
    if (this.child.exitCode === null && this.child.signalCode === null) process.kill(this.pid, sig);
  }

  async stop() {
    await this.closeClients();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      try { process.kill(this.pid, 'SIGTERM'); } catch { /* gone */ }
      const exited = await Promise.race([
        this.exited.then(() => true),
        new Promise((r) => setTimeout(() => r(false), 5000).unref()),
      ]);
      if (!exited) {
        try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
        await this.exited;
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Resolves when a pusher-js client reaches `connected`; rejects on failed/unavailable. */
export function pusherConnected(client, timeout = DEFAULT_TIMEOUT) {
  if (client.connection.state === 'connected') return Promise.resolve(client.connection.socket_id);
  let handler;
  const p = new Promise((resolve, reject) => {
    handler = ({ current }) => {
      if (current === 'connected') resolve(client.connection.socket_id);
      else if (current === 'failed' || current === 'unavailable') reject(new Error(`pusher-js state ${current}`));
    };
    client.connection.bind('state_change', handler);
  });
  return withTimeout(p, timeout, 'pusher-js connected').finally(() => client.connection.unbind('state_change', handler));
}

/** Subscribes a pusher-js client and awaits pusher:subscription_succeeded (rejects on error). */
export async function subscribed(client, name, timeout = DEFAULT_TIMEOUT) {
  const channel = client.subscribe(name);
  if (channel.subscribed) return channel;
  let ok; let err;
  const p = new Promise((resolve, reject) => {
    ok = () => resolve(channel);
    err = (e) => reject(new Error(`subscription_error on ${name}: ${JSON.stringify(e)}`));
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', err);
  });
  return withTimeout(p, timeout, `subscription to ${name}`).finally(() => {
    channel.unbind('pusher:subscription_succeeded', ok);
    channel.unbind('pusher:subscription_error', err);
  });
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket client
// ---------------------------------------------------------------------------------------------

/** Decodes a server frame: `data` is parsed a second time when it is a JSON string. */
export function decodeFrame(raw) {
  const msg = JSON.parse(raw);
  let data = msg.data;
  if (typeof data === 'string') {
    try { data = JSON.parse(data); } catch { /* plain string */ }
  }
  return { raw, msg, event: msg.event, channel: msg.channel, data, dataIsString: typeof msg.data === 'string' };
}

export class RawClient {
  static open(herald, { key, app, query, established, autoPong, timeout = DEFAULT_TIMEOUT }) {
    const qs = query ?? 'protocol=7&client=js&version=8.6.0&flash=false';
    const url = `ws://${herald.host}:${herald.port}/app/${encodeURIComponent(key)}${qs ? `?${qs}` : ''}`;
    const ws = new WebSocket(url, { autoPong });
    const client = new RawClient(ws, app);
    const opened = new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    });
    return withTimeout(opened, timeout, `websocket open ${url}`).then(async () => {
      if (established) {
        const f = await client.next((m) => m.event === 'pusher:connection_established', { timeout, label: 'connection_established' });
        client.socketId = f.data.socket_id;
        client.established = f;
      }
      return client;
    });
  }

  constructor(ws, app) {
    this.ws = ws;
    this.app = app;
    this.frames = [];
    this.taken = new Set();
    this.waiters = [];
    this.wsPings = 0;
    this.closeInfo = null;
    this.ignore = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        for (const w of [...this.waiters]) w.onClose(this.closeInfo);
      });
    });
    ws.on('error', () => { /* surfaced through close */ });
    ws.on('ping', () => { this.wsPings += 1; });
    ws.on('message', (buf, isBinary) => {
      const raw = buf.toString('utf8');
      if (this.ignore && this.ignore(raw)) return; // e.g. bulk traffic counted elsewhere
      let frame;
      try {
        frame = decodeFrame(raw);
      } catch {
        frame = { raw, msg: null, event: undefined, channel: undefined, data: undefined, invalid: true, isBinary };
      }
      this.frames.push(frame);
      const idx = this.frames.length - 1;
      for (const w of [...this.waiters]) {
        if (!this.taken.has(idx) && w.pred(frame)) {
          this.taken.add(idx);
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(frame);
        }
      }
    });
  }

  get isOpen() { return this.ws.readyState === WebSocket.OPEN; }

  send(obj) { this.ws.send(JSON.stringify(obj)); }
  sendRaw(data, opts) { this.ws.send(data, opts); }

  /**
   * The first not-yet-consumed frame matching `pred` (already received or future). Rejects on
   * timeout or when the socket closes first.
   */
  next(pred, { timeout = DEFAULT_TIMEOUT, label = 'frame' } = {}) {
    const p = typeof pred === 'string' ? ((m) => m.event === pred) : pred;
    for (let i = 0; i < this.frames.length; i += 1) {
      if (!this.taken.has(i) && p(this.frames[i])) {
        this.taken.add(i);
        return Promise.resolve(this.frames[i]);
      }
    }
    const lbl = typeof pred === 'string' ? pred : label;
    let waiter;
    const promise = new Promise((resolve, reject) => {
      waiter = {
        pred: p,
        resolve,
        onClose: (info) => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new Error(`socket closed (${info.code} ${info.reason}) while waiting for ${lbl}; frames: ${this.dump()}`));
        },
      };
      if (this.closeInfo) waiter.onClose(this.closeInfo);
      else this.waiters.push(waiter);
    });
    return withTimeout(promise, timeout, `${lbl}; frames so far: ${this.dump()}`).catch((e) => {
      const i = this.waiters.indexOf(waiter);
      if (i >= 0) this.waiters.splice(i, 1);
      throw e;
    });
  }

  /** Next frame for event name (and channel, if given). */
  event(name, { channel, timeout } = {}) {
    return this.next((m) => m.event === name && (channel === undefined || m.channel === channel),
      { timeout, label: `${name}${channel ? ` on ${channel}` : ''}` });
  }

  /** Next pusher:error frame with the given code. */
  error(code, { timeout } = {}) {
    return this.next((m) => m.event === 'pusher:error' && m.data && m.data.code === code,
      { timeout, label: `pusher:error ${code}` });
  }

  /** All frames received so far matching pred (consumed or not). */
  all(pred) {
    const p = typeof pred === 'string' ? ((m) => m.event === pred) : pred;
    return this.frames.filter(p);
  }

  dump(max = 12) {
    const tail = this.frames.slice(-max).map((f) => f.raw.length > 300 ? `${f.raw.slice(0, 300)}…` : f.raw);
    return `[${tail.join(', ')}]${this.closeInfo ? ` closed ${this.closeInfo.code}` : ''}`;
  }

  /** Application-level ping; resolves when the matching pong arrives. A round trip barrier. */
  async ping(timeout) {
    this.send({ event: 'pusher:ping', data: {} });
    return this.event('pusher:pong', { timeout });
  }

  /** Sends pusher:subscribe with a correct signature for the channel type. */
  subscribe(channel, { auth, channel_data: channelData, presence, extra = {} } = {}) {
    const data = { channel, ...extra };
    let cd = channelData;
    if (cd === undefined && presence !== undefined) cd = JSON.stringify(presence);
    if (cd !== undefined) data.channel_data = cd;
    if (auth !== undefined) data.auth = auth;
    else if (/^(private-|presence-)/.test(channel)) data.auth = channelAuth(this.app, this.socketId, channel, cd);
    this.send({ event: 'pusher:subscribe', data });
  }

  /** Subscribes and awaits subscription_succeeded (rejects with the frames on error). */
  async subscribeOk(channel, opts = {}) {
    this.subscribe(channel, opts);
    const f = await this.next((m) => (m.event === 'pusher_internal:subscription_succeeded' || m.event === 'pusher:subscription_error')
      && m.channel === channel, { label: `subscription result for ${channel}`, timeout: opts.timeout });
    if (f.event !== 'pusher_internal:subscription_succeeded') throw new Error(`subscription to ${channel} failed: ${f.raw}`);
    return f;
  }

  /** Subscribes and awaits subscription_error (rejects if it succeeds). */
  async subscribeErr(channel, opts = {}) {
    this.subscribe(channel, opts);
    const f = await this.next((m) => (m.event === 'pusher_internal:subscription_succeeded' || m.event === 'pusher:subscription_error')
      && m.channel === channel, { label: `subscription result for ${channel}`, timeout: opts.timeout });
    if (f.event !== 'pusher:subscription_error') throw new Error(`subscription to ${channel} unexpectedly succeeded: ${f.raw}`);
    return f;
  }

  /** Signs in with a correct signature. */
  signin(userData, { auth } = {}) {
    const ud = typeof userData === 'string' ? userData : JSON.stringify(userData);
    this.send({ event: 'pusher:signin', data: { user_data: ud, auth: auth ?? userAuth(this.app, this.socketId, ud) } });
  }

  async close() {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    if (this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
      return;
    }
    this.ws.close(1000);
    const closed = await Promise.race([this.closed.then(() => true), new Promise((r) => setTimeout(() => r(false), 1000).unref())]);
    if (!closed) this.ws.terminate();
  }
}

/** Deterministically assert a frame did NOT arrive before a barrier frame. */
export function assertNoneBefore(client, barrierFrame, pred, message) {
  const idx = client.frames.indexOf(barrierFrame);
  const before = client.frames.slice(0, idx < 0 ? client.frames.length : idx).filter(pred);
  if (before.length) {
    throw new Error(`${message}: ${before.map((f) => f.raw).join(', ')}`);
  }
}
