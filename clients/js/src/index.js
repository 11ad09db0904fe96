// Herald's browser and Node client: the Pusher protocol plus what Herald adds. Every channel (and
// the user stream) resumes from the last serial it saw after any reconnect; when the server cannot
// replay what was missed it says so and the channel's `onResync` runs, so the app refetches instead
// of silently missing events. Reconnects back off with full jitter and obey Pusher's close codes.
// Durable jobs are submitted and fetched over the same connection, and their updates ride the user
// stream, so they resume like any other event. No build step and no runtime dependency: a plain ES
// module over the platform's WebSocket.

/** Close codes that mean "do not reconnect unchanged" (Pusher's 4000–4099). */
const isRefusal = (code) => code >= 4000 && code < 4100;
/** "Reconnect after backing off" (4100–4199) and "reconnect now" (4200–4299). */
const isBackoff = (code) => code >= 4100 && code < 4200;
const isReconnectNow = (code) => code >= 4200 && code < 4300;

/**
 * Full-jitter exponential backoff: a uniformly random delay between 0 and
 * min(cap, base * 2^attempt). The first retry (attempt 0) is under `base` (1 s by default).
 */
export function backoffDelay(attempt, { base = 1000, cap = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * A WebSocket look-alike over Herald's long-polling route (`/pusher/app/{key}/.../xhr`), for
 * networks where WebSockets fail. Frames arrive as lines (`o`, `a[...]`, `h`, `c[code,reason]`);
 * sends are POSTed in order to `xhr_send`.
 */
export class PollingSocket {
  constructor(httpUrl, key) {
    const session = Array.from({ length: 8 }, () => Math.floor(Math.random() * 32).toString(32)).join('');
    this.base = `${httpUrl}/pusher/app/${encodeURIComponent(key)}/${Math.floor(Math.random() * 1000)}/${session}`;
    this.readyState = 0;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this.outgoing = Promise.resolve();
    this.poll();
  }

  async poll() {
    let query = '?protocol=7&client=herald-js';
    while (this.readyState < 2) {
      let text;
      try {
        const response = await fetch(`${this.base}/xhr${query}`, { method: 'POST' });
        if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
        text = await response.text();
      } catch {
        this.finish(1006);
        return;
      }
      query = '';
      for (const line of text.split('\n')) {
        const kind = line[0];
        const payload = line.slice(1);
        if (kind === 'o') this.readyState = 1;
        else if (kind === 'a') for (const message of JSON.parse(payload)) this.onmessage?.({ data: message });
        else if (kind === 'c') { this.finish(JSON.parse(payload)[0]); return; }
      }
    }
  }

  send(text) {
    const post = () => fetch(`${this.base}/xhr_send`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify([text]),
    }).then((response) => { if (response.status >= 300) throw new Error(`HTTP ${response.status}`); });
    this.outgoing = this.outgoing.then(post).catch(() => this.finish(1006));
  }

  close() {
    this.finish(1000);
  }

  finish(code) {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.onclose?.({ code });
  }
}

/** A bounded set of recently seen keys (oldest forgotten first). */
class RecentSet {
  constructor(max) { this.max = max; this.items = new Set(); }
  add(key) {
    this.items.delete(key);
    this.items.add(key);
    if (this.items.size > this.max) this.items.delete(this.items.values().next().value);
  }
  has(key) { return this.items.has(key); }
}

function base64Bytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/**
 * Opens a `private-encrypted-` event: `{nonce, ciphertext}` (base64) sealed with NaCl secretbox
 * under the channel's shared secret. `nacl` is tweetnacl (or any object with the same
 * `secretbox.open`), supplied by the app: this module carries no crypto of its own.
 */
function decrypt(nacl, sharedSecret, data) {
  const sealed = typeof data === 'string' ? JSON.parse(data) : data;
  const opened = nacl.secretbox.open(base64Bytes(sealed.ciphertext), base64Bytes(sealed.nonce), sharedSecret);
  if (!opened) throw new Error('cannot decrypt: wrong shared secret');
  return JSON.parse(new TextDecoder().decode(opened));
}

function parseData(data) {
  if (typeof data !== 'string') return data;
  try { return JSON.parse(data); } catch { return data; }
}

/** Job states after which nothing more happens (unless an operator requeues the job). */
const FINISHED = new Set(['succeeded', 'failed', 'dead', 'cancelled']);

/** An Error for a job request Herald refused or never answered; `reason` says why. */
function jobError(reason, details = {}) {
  const error = new Error(`herald job request failed: ${reason}`);
  error.name = 'HeraldJobError';
  return Object.assign(error, details, { reason });
}

class Emitter {
  constructor() { this.handlers = new Map(); }
  bind(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return this;
  }
  unbind(event, fn) {
    if (fn) this.handlers.get(event)?.delete(fn); else this.handlers.delete(event);
    return this;
  }
  emit(event, ...args) {
    for (const fn of [...(this.handlers.get(event) ?? [])]) fn(...args);
    for (const fn of [...(this.handlers.get('*') ?? [])]) fn(event, ...args);
  }
}

/** One subscribed channel: its events, its position, its presence members. */
export class Channel extends Emitter {
  constructor(client, name, options = {}) {
    super();
    this.client = client;
    this.name = name;
    this.onResync = options.onResync;
    this.position = options.position ?? null; // {epoch, serial}
    this.subscribed = false;
    this.members = new Map();
    /** For `private-encrypted-` channels: the key from the last authorization. */
    this.sharedSecret = null;
  }

  /** Sends a client event (private and presence channels). `actionId` marks it as applied here. */
  trigger(event, data, { actionId } = {}) {
    const payload = actionId === undefined ? data : { ...data, action_id: actionId };
    if (actionId !== undefined) this.client.applied.add(actionId);
    return this.client.send({ event, channel: this.name, data: payload });
  }

  /** @internal */
  handle(frame) {
    const data = parseData(frame.data);
    switch (frame.event) {
      case 'pusher_internal:subscription_succeeded': {
        this.subscribed = true;
        if (frame.position) {
          const resumed = frame.recovered === true;
          if (!resumed) this.position = { ...frame.position };
          if (frame.recovered === false) {
            this.onResync?.(this);
            this.client.emit('resync', this);
            if (this === this.client.user) this.client.refetchWatchedJobs();
          }
        }
        if (data?.presence) {
          this.members = new Map(Object.entries(data.presence.hash ?? {}));
        }
        this.emit('subscribed', { recovered: frame.recovered, position: this.position });
        return;
      }
      case 'pusher:subscription_error':
        this.emit('error', data);
        return;
      case 'pusher_internal:member_added':
        this.members.set(String(data.user_id), data.user_info ?? null);
        this.emit('member_added', { id: String(data.user_id), info: data.user_info ?? null });
        return;
      case 'pusher_internal:member_removed':
        this.members.delete(String(data.user_id));
        this.emit('member_removed', { id: String(data.user_id) });
        return;
      default:
        break;
    }
    if (typeof frame.serial === 'number') {
      if (this.position && frame.serial <= this.position.serial) return; // already seen
      if (this.position) this.position.serial = frame.serial;
    }
    let payload = data;
    if (this.name?.startsWith('private-encrypted-')) {
      try {
        payload = decrypt(this.client.options.nacl, this.sharedSecret, frame.data);
      } catch (error) {
        this.emit('error', { type: 'DecryptionError', error: String(error) });
        return;
      }
    }
    if (payload && typeof payload === 'object' && payload.action_id !== undefined && this.client.applied.has(payload.action_id)) {
      return; // this client already applied it when it sent it
    }
    const meta = { serial: frame.serial, userId: frame.user_id };
    if (this === this.client.user && frame.event === 'herald:job_update') this.client.jobUpdate(payload, meta);
    this.emit(frame.event, payload, meta);
  }

  /** @internal The pusher:subscribe data for (re)subscribing. */
  async subscribeData(socketId) {
    const data = { channel: this.name };
    if (/^(private-|presence-)/.test(this.name)) {
      if (!this.client.options.authorize) throw new Error(`authorize is required for ${this.name}`);
      const { auth, channel_data: channelData, shared_secret: sharedSecret } =
        await this.client.options.authorize({ socketId, channel: this.name });
      Object.assign(data, channelData === undefined ? { auth } : { auth, channel_data: channelData });
      if (this.name.startsWith('private-encrypted-')) {
        if (!this.client.options.nacl || !sharedSecret) {
          throw new Error('encrypted channels need the nacl option and a shared_secret from authorize');
        }
        this.sharedSecret = base64Bytes(sharedSecret); // kept here, never sent to Herald
      }
    }
    if (this.position) data.resume = { epoch: this.position.epoch, serial: this.position.serial };
    return data;
  }
}

/**
 * A connection to Herald.
 *
 * new Herald(key, { url: 'ws://127.0.0.1:6001', authorize, signin })
 *   authorize({socketId, channel}) -> {auth, channel_data?}   for private/presence channels
 *   signin({socketId}) -> {auth, user_data}                     for the user stream
 *
 * Jobs (after signin()): submitJob(queue, payload) and getJob(id) answer over the connection;
 * every change of the user's jobs arrives as the client's 'job_update' event and to watchJob().
 */
export class Herald extends Emitter {
  constructor(key, options = {}) {
    super();
    this.key = key;
    this.options = {
      url: 'ws://127.0.0.1:6001',
      backoff: {},
      connectTimeout: 10000,
      requestTimeout: 10000,
      transports: ['ws', 'polling'],
      ...options,
    };
    // WebSocket attempts that failed before the handshake completed, in a row.
    this.wsFailures = 0;
    this.channels = new Map();
    this.applied = new RecentSet(options.maxActionIds ?? 1000);
    this.user = new Channel(this, null);
    this.state = 'initialized';
    this.attempt = 0;
    this.socket = null;
    this.socketId = null;
    this.timer = null;
    // Job requests awaiting an answer, by request_id; watchers by job id; the newest version of
    // each recently updated job (updates published by different nodes can cross).
    this.requests = new Map();
    this.requestSeq = 0;
    this.jobWatchers = new Map();
    this.jobVersions = new Map();
  }

  connect() {
    if (this.socket || this.state === 'connecting') return this;
    this.setState('connecting');
    const socket = this.openSocket();
    this.socket = socket;
    socket.onmessage = (message) => this.onFrame(JSON.parse(message.data));
    socket.onclose = (event) => { if (this.socket === socket) this.onClose(event.code); };
    socket.onerror = () => {};
    // A handshake that neither completes nor fails (a half-open TCP connection during a restart)
    // must not leave the client waiting forever: give up on it and retry with backoff.
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (this.socket !== socket || this.state === 'connected') return;
      socket.onclose = null;
      try { socket.close(); } catch { /* already closing */ }
      this.onClose(1006);
    }, this.options.connectTimeout);
    return this;
  }

  /** WebSocket, unless it failed twice in a row before connecting and polling is allowed. */
  openSocket() {
    const { transports } = this.options;
    const polling = transports.includes('polling') && (!transports.includes('ws') || this.wsFailures >= 2);
    this.transport = polling ? 'polling' : 'ws';
    if (polling) return new PollingSocket(this.options.url.replace(/^ws/, 'http'), this.key);
    const WebSocketImpl = this.options.WebSocket ?? globalThis.WebSocket;
    return new WebSocketImpl(`${this.options.url}/app/${encodeURIComponent(this.key)}?protocol=7&client=herald-js&version=0.1.0`);
  }

  disconnect() {
    clearTimeout(this.timer);
    clearTimeout(this.connectTimer);
    this.setState('disconnected');
    const socket = this.socket;
    this.socket = null;
    this.user.subscribed = false;
    socket?.close(1000);
    this.failRequests('disconnected', () => true);
  }

  /** Subscribes; `onResync(channel)` runs when the server could not replay what was missed. */
  subscribe(name, options = {}) {
    let channel = this.channels.get(name);
    if (!channel) {
      channel = new Channel(this, name, options);
      this.channels.set(name, channel);
      if (this.state === 'connected') this.sendSubscribe(channel);
    }
    return channel;
  }

  unsubscribe(name) {
    if (this.channels.delete(name)) this.send({ event: 'pusher:unsubscribe', data: { channel: name } });
  }

  /** Signs in (needs the `signin` option); user events then arrive on `client.user`. */
  signin() {
    this.wantsSignin = true;
    if (this.state === 'connected') this.sendSignin();
  }

  /**
   * Submits a job to `queue` (one with `client_submit = true`), filed under the signed-in user.
   * Resolves with the job as stored (state 'queued'); rejects with an Error whose `reason` is
   * Herald's (schema failures name the failing path), or 'timed out' / 'connection closed' /
   * 'disconnected' when no answer came. Sent once connected and signed in (waiting, within the
   * timeout, if need be). With `idempotencyKey` a retry after a failure cannot file it twice: a
   * repeated key resolves with the job first filed under it. `onUpdate(job)` gets every update
   * of this job from 'queued' until it is finished.
   */
  submitJob(queue, payload, { idempotencyKey, timeout, onUpdate } = {}) {
    const data = { queue, payload };
    if (idempotencyKey !== undefined) data.idempotency_key = idempotencyKey;
    return this.request('herald:job_submit', data, { timeout, onUpdate });
  }

  /** One of the signed-in user's jobs, as it is now. Rejects (reason 'no such job') for others. */
  getJob(id, { timeout } = {}) {
    return this.request('herald:job_get', { id }, { timeout });
  }

  /**
   * Calls `callback(job)` with the job's current state (fetched with getJob, unless `fetch` is
   * false) and then with every update, never with an older version than one it already had.
   * Updates ride the user stream, so they survive reconnects; if the stream cannot be replayed
   * (resync) the job is fetched again. Returns a function that stops watching.
   */
  watchJob(id, callback, { fetch = true } = {}) {
    const watcher = { callback, version: 0, untilFinished: false };
    this.addWatcher(id, watcher);
    if (fetch) this.getJob(id).then((job) => this.deliver(watcher, job), () => {});
    return watcher.unwatch;
  }

  /** @internal */
  addWatcher(id, watcher) {
    let watchers = this.jobWatchers.get(id);
    if (!watchers) this.jobWatchers.set(id, (watchers = new Set()));
    watchers.add(watcher);
    watcher.unwatch = () => {
      watchers.delete(watcher);
      if (watchers.size === 0 && this.jobWatchers.get(id) === watchers) this.jobWatchers.delete(id);
    };
  }

  /** @internal */
  deliver(watcher, job) {
    if (typeof job?.version === 'number') {
      if (job.version <= watcher.version) return;
      watcher.version = job.version;
    }
    watcher.callback(job);
    if (watcher.untilFinished && FINISHED.has(job?.state)) watcher.unwatch();
  }

  /** @internal A `herald:job_update` on the user stream (already de-duplicated by serial). */
  jobUpdate(job, meta) {
    if (!job || typeof job !== 'object') return;
    if (typeof job.version === 'number') {
      const seen = this.jobVersions.get(job.id);
      if (seen !== undefined && job.version <= seen) return; // an older change that crossed a newer one
      this.jobVersions.delete(job.id);
      this.jobVersions.set(job.id, job.version);
      if (this.jobVersions.size > 1000) this.jobVersions.delete(this.jobVersions.keys().next().value);
    }
    this.emit('job_update', job, meta);
    for (const watcher of [...(this.jobWatchers.get(job.id) ?? [])]) this.deliver(watcher, job);
  }

  /** @internal After a resync of the user stream: what was missed is gone, so ask again. */
  refetchWatchedJobs() {
    for (const [id, watchers] of this.jobWatchers) {
      this.getJob(id).then((job) => { for (const watcher of [...watchers]) this.deliver(watcher, job); }, () => {});
    }
  }

  /** @internal Sends a job request once connected (and signed in, if asked to) and awaits its answer. */
  request(event, data, { timeout = this.options.requestTimeout, onUpdate } = {}) {
    this.requestSeq += 1;
    const requestId = `hj${this.requestSeq}`;
    return new Promise((resolve, reject) => {
      const request = { frame: { event, data: { ...data, request_id: requestId } }, resolve, reject, onUpdate, sent: false };
      request.timer = setTimeout(() => {
        this.requests.delete(requestId);
        reject(jobError('timed out', { request_id: requestId }));
      }, timeout);
      this.requests.set(requestId, request);
      this.flushRequests();
    });
  }

  /** @internal */
  flushRequests() {
    if (this.state !== 'connected' || (this.wantsSignin && !this.user.subscribed)) return;
    for (const request of this.requests.values()) {
      if (!request.sent) request.sent = this.send(request.frame);
    }
  }

  /** @internal Rejects the requests `which` selects: their answer will not come. */
  failRequests(reason, which) {
    for (const [requestId, request] of [...this.requests]) {
      if (!which(request)) continue;
      clearTimeout(request.timer);
      this.requests.delete(requestId);
      request.reject(jobError(reason, { request_id: requestId }));
    }
  }

  /** @internal herald:job_accepted, herald:job_state or herald:job_rejected. */
  answer(event, data) {
    const request = this.requests.get(data?.request_id);
    if (!request) return;
    clearTimeout(request.timer);
    this.requests.delete(data.request_id);
    if (event === 'herald:job_rejected') {
      request.reject(jobError(String(data.reason), data));
      return;
    }
    request.resolve(data.job);
    if (request.onUpdate) {
      // Watch before anything else is dispatched (the 'queued' update follows the acceptance), and
      // start from the job as accepted: for a repeated idempotency key it may be further along.
      const watcher = { callback: request.onUpdate, version: 0, untilFinished: true };
      this.addWatcher(data.job.id, watcher);
      this.deliver(watcher, data.job);
    }
  }

  send(frame) {
    if (!this.socket || this.state !== 'connected') return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  setState(state) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this.emit('state_change', { previous, current: state });
    this.emit(state);
  }

  onFrame(frame) {
    const data = parseData(frame.data);
    if (frame.event === 'pusher:connection_established') {
      clearTimeout(this.connectTimer);
      if (this.transport === 'ws') this.wsFailures = 0;
      this.socketId = data.socket_id;
      this.attempt = 0;
      this.setState('connected');
      for (const channel of this.channels.values()) this.sendSubscribe(channel);
      if (this.wantsSignin) this.sendSignin();
      this.flushRequests();
      return;
    }
    if (frame.event === 'pusher:ping') {
      this.send({ event: 'pusher:pong', data: {} });
      return;
    }
    if (frame.event === 'pusher:error') {
      this.emit('error', data);
      return;
    }
    if (frame.event === 'pusher:signin_success') {
      this.user.name = `#server-to-user-${JSON.parse(data.user_data).id}`;
      this.user.handle({ ...frame, event: 'pusher_internal:subscription_succeeded' });
      this.flushRequests();
      return;
    }
    if (frame.event === 'herald:job_accepted' || frame.event === 'herald:job_state' || frame.event === 'herald:job_rejected') {
      this.answer(frame.event, data);
      return;
    }
    if (frame.channel && frame.channel === this.user.name) {
      this.user.handle(frame);
      return;
    }
    this.channels.get(frame.channel)?.handle(frame);
  }

  async sendSubscribe(channel) {
    channel.subscribed = false;
    try {
      this.send({ event: 'pusher:subscribe', data: await channel.subscribeData(this.socketId) });
    } catch (error) {
      channel.emit('error', { type: 'AuthError', error: String(error) });
    }
  }

  async sendSignin() {
    const { auth, user_data: userData } = await this.options.signin({ socketId: this.socketId });
    const data = { auth, user_data: userData };
    if (this.user.position) data.resume = { ...this.user.position };
    this.send({ event: 'pusher:signin', data });
  }

  onClose(code) {
    this.socket = null;
    if (this.state === 'disconnected') return;
    if (this.transport === 'ws' && this.state === 'connecting') this.wsFailures += 1;
    for (const channel of this.channels.values()) channel.subscribed = false;
    this.user.subscribed = false;
    // A request already sent will not be answered on another connection (it may or may not have
    // been applied: retry a submit with the same idempotencyKey). Unsent ones wait to be sent.
    this.failRequests('connection closed', (request) => request.sent);
    if (isRefusal(code)) {
      this.failRequests('connection refused', () => true); // there will be no other connection
      this.setState('failed');
      this.emit('refused', code);
      return;
    }
    const backoff = this.options.backoff;
    const attempt = isReconnectNow(code) ? 0 : Math.max(this.attempt, isBackoff(code) ? 1 : 0);
    const delay = backoffDelay(attempt, backoff);
    this.attempt = attempt + 1;
    this.setState('unavailable');
    this.emit('reconnecting', { code, delay });
    this.timer = setTimeout(() => { this.state = 'unavailable'; this.connect(); }, delay);
  }
}

export default Herald;
