// Herald's browser and Node client: the Pusher protocol plus what Herald adds. Every channel (and
// the user stream) resumes from the last serial it saw after any reconnect; when the server cannot
// replay what was missed it says so and the channel's `onResync` runs, so the app refetches instead
// of silently missing events. Reconnects back off with full jitter and obey Pusher's close codes.
// Durable jobs are submitted and fetched over the same connection, and their updates ride the user
// stream, so they resume like any other event. Feeds are kept as live local copies (a snapshot, then
// every change in serial order, rebuilt from a new snapshot on a gap), and read cursors and unread
// counts follow the user across tabs. No build step and no runtime dependency: a plain ES module
// over the platform's WebSocket (one file, because Herald serves this very file at /herald.js).

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
  /** Aliases of bind/unbind, for EventEmitter habits. */
  on(event, fn) { return this.bind(event, fn); }
  off(event, fn) { return this.unbind(event, fn); }
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
    /** Subscribe with `"unread": true` (the read state arrives once signed in). */
    this.unread = options.unread === true;
    /** The Feed kept from this channel's events, if `Herald.feed()` made one. */
    this.feed = null;
  }

  /** Sends a client event (private and presence channels). `actionId` marks it as applied here. */
  trigger(event, data, { actionId } = {}) {
    const payload = actionId === undefined ? data : { ...data, action_id: actionId };
    if (actionId !== undefined) this.client.applied.add(actionId);
    return this.client.send({ event, channel: this.name, data: payload });
  }

  /** @internal */
  handle(frame) {
    if (this.feed?.handle(frame)) return;
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
        this.feed?.subscribed(frame, this.snapshotAsked);
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
    if (this === this.client.user && frame.event === 'herald:read') this.client.readState(payload?.channel, payload);
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
    // A feed is rebuilt from the snapshot every (re)subscribe brings, so it does not resume: the
    // replayed events would all be at or below the snapshot's serial, and dropped.
    if (this.feed) data.snapshot = true;
    else if (this.position) data.resume = { epoch: this.position.epoch, serial: this.position.serial };
    if (this.unread) data.unread = true;
    return data;
  }
}

/** The four changes a feed channel carries, by event name. */
const FEED_CHANGES = {
  'herald:feed_publish': 'publish',
  'herald:feed_edit': 'edit',
  'herald:feed_move': 'move',
  'herald:feed_retract': 'retract',
};

/**
 * A live local copy of a feed channel (`feed-…`, `private-feed-…`): `items` ({id, value, serial},
 * in feed order) as of `position`. Made by `Herald.feed()`. Every subscribe asks for a snapshot;
 * changes that arrive before it are kept, those at or below its serial dropped, the rest applied in
 * order, so the copy is exact however writers race with the subscribe. A gap in the serials, a
 * change that does not fit the copy, or a snapshot older than the subscription asks for a new
 * snapshot and rebuilds. Backends change feeds over HTTP; this only follows them.
 *
 * Events: 'ready' (the first snapshot is in), 'reset' (the copy was replaced from a snapshot: also
 * the first time), 'change' (one change applied: {type, id, serial, index, …}).
 */
export class Feed extends Emitter {
  constructor(channel) {
    super();
    this.channel = channel;
    this.name = channel.name;
    /** The items in feed order; a new array after every change (items are replaced, not mutated). */
    this.items = [];
    this.byId = new Map();
    /** {epoch, serial}: the serial of the last change in the copy. */
    this.position = null;
    /** True once the first snapshot is in. */
    this.ready = false;
    /** True while waiting for a snapshot (changes are kept until it comes). */
    this.syncing = true;
    this.buffer = [];
    // The position the subscription started at: a snapshot below it is stale.
    this.floor = null;
  }

  /** The item with `id`, or undefined. */
  get(id) {
    return this.byId.get(id);
  }

  /** Stops following the feed (unsubscribes its channel). */
  close() {
    this.channel.client.unsubscribe(this.name);
  }

  /** @internal A subscribe asking for a snapshot is about to be sent. */
  begin() {
    this.syncing = true;
    this.buffer = [];
    this.floor = null;
  }

  /** @internal subscription_succeeded: `asked` says whether that subscribe asked for a snapshot. */
  subscribed(frame, asked) {
    this.floor = frame.position ? { ...frame.position } : null;
    // A subscribe sent before this channel became a feed, or the server telling us (unasked) that
    // it lost track of the channel: either way no snapshot is on its way yet.
    if (!asked || !this.syncing) this.resync();
  }

  /** @internal Asks for a fresh snapshot; changes are kept until it comes. */
  resync() {
    this.syncing = true;
    this.channel.client.send({ event: 'herald:feed_snapshot_request', data: { channel: this.name } });
  }

  /** @internal Takes the snapshot and the feed's changes; false for any other frame. */
  handle(frame) {
    if (frame.event === 'herald:feed_snapshot') {
      this.snapshot(parseData(frame.data));
      return true;
    }
    const type = FEED_CHANGES[frame.event];
    if (!type) return false;
    const change = { ...parseData(frame.data), type, serial: frame.serial };
    if (this.syncing) this.buffer.push(change);
    else this.advance(change);
    return true;
  }

  /** @internal */
  snapshot(data) {
    const { items = [], position } = data ?? {};
    if (!position) return;
    const { floor } = this;
    if (floor && floor.epoch === position.epoch && position.serial < floor.serial) {
      this.resync(); // read from a node still catching up: ask again
      return;
    }
    const current = this.position;
    if (!this.syncing && current && current.epoch === position.epoch && position.serial <= current.serial) {
      return; // an extra answer: the copy is already as new
    }
    this.items = items.map(({ id, value, serial }) => ({ id, value, serial }));
    this.byId = new Map(this.items.map((item) => [item.id, item]));
    this.setPosition(position.epoch, position.serial);
    const later = this.buffer.filter((change) => change.serial > position.serial).sort((a, b) => a.serial - b.serial);
    this.buffer = [];
    this.syncing = false;
    const first = !this.ready;
    this.ready = true;
    this.emit('reset', { items: this.items, position: { ...this.position } });
    if (first) this.emit('ready', this);
    for (const change of later) {
      if (this.syncing) this.buffer.push(change);
      else this.advance(change);
    }
  }

  /** @internal Applies the next change in serial order, or asks for a snapshot on a gap. */
  advance(change) {
    const next = this.position.serial + 1;
    if (change.serial < next) return; // already in the copy
    if (change.serial === next && this.apply(change)) return;
    this.buffer.push(change);
    this.resync();
  }

  /** @internal Applies one change to the copy; false if it does not fit (the copy is then unchanged). */
  apply(change) {
    const { type, id, serial } = change;
    const items = this.items.slice();
    const at = items.findIndex((item) => item.id === id);
    let detail;
    if (type === 'publish') {
      if (at !== -1) return false;
      const item = { id, value: change.value, serial };
      const index = placeAfter(items, change.after ?? null, item);
      if (index < 0) return false;
      this.byId.set(id, item);
      detail = { type, id, serial, index, after: change.after ?? null, value: item.value, item };
    } else if (at === -1) {
      return false;
    } else if (type === 'edit') {
      const previous = items[at];
      const item = { id, value: change.value, serial };
      items[at] = item;
      this.byId.set(id, item);
      detail = { type, id, serial, index: at, value: item.value, previous: previous.value, item };
    } else if (type === 'move') {
      const [moved] = items.splice(at, 1);
      const item = { ...moved, serial };
      const index = placeAfter(items, change.after ?? null, item);
      if (index < 0) return false;
      this.byId.set(id, item);
      detail = { type, id, serial, index, from: at, after: change.after ?? null, item };
    } else {
      const [removed] = items.splice(at, 1);
      this.byId.delete(id);
      detail = { type, id, serial, index: at, previous: removed.value };
    }
    this.items = items;
    this.setPosition(this.position.epoch, serial);
    this.emit('change', detail);
    return true;
  }

  /** @internal The channel remembers the position too (markRead() defaults to it). */
  setPosition(epoch, serial) {
    this.position = { epoch, serial };
    this.channel.position = { epoch, serial };
  }
}

/** Inserts `item` right after the item `after` (null: first); the index, or -1 if `after` is unknown. */
function placeAfter(items, after, item) {
  const index = after === null ? 0 : items.findIndex((other) => other.id === after) + 1;
  if (index === 0 && after !== null) return -1;
  items.splice(index, 0, item);
  return index;
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
 *
 * Feeds: feed(name) keeps a live copy of a feed channel. Read cursors (after signin()):
 * markRead(channel, serial), unread(channel), and the 'unread' event, the same in every tab.
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
    // Read state by channel ({cursor, unread}, as Herald last told), and marks not yet confirmed
    // by a herald:read ({serial, sent}).
    this.reads = new Map();
    this.marks = new Map();
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
    for (const mark of this.marks.values()) mark.sent = false;
    socket?.close(1000);
    this.failRequests('disconnected', () => true);
  }

  /**
   * Subscribes; `onResync(channel)` runs when the server could not replay what was missed. With
   * `unread: true` Herald sends the channel's read state after subscribing (signed-in connections
   * only: when signin() was called, the subscribe waits for the sign-in).
   */
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

  /**
   * A live copy of the feed channel `name` (`feed-…` or `private-feed-…`), subscribed with a
   * snapshot and kept exact from then on, also across reconnects (each brings a fresh snapshot).
   * Calling it again returns the same Feed. `options` are subscribe()'s (e.g. `unread: true`).
   */
  feed(name, options = {}) {
    let channel = this.channels.get(name);
    if (channel?.feed) return channel.feed;
    const existed = Boolean(channel);
    if (!channel) {
      channel = new Channel(this, name, options);
      this.channels.set(name, channel);
    }
    channel.feed = new Feed(channel);
    if (!existed) {
      if (this.state === 'connected') this.sendSubscribe(channel);
    } else if (channel.subscribed) {
      channel.feed.resync(); // subscribed earlier without a snapshot
    }
    return channel.feed;
  }

  /** The signed-in user's read state of `channel` as Herald last told it, or undefined. */
  unread(channel) {
    const state = this.reads.get(channel);
    return state && { ...state };
  }

  /**
   * Marks `channel` read up to `serial` (default: the last serial this client saw on it) for the
   * signed-in user. Herald moves the cursor forward only and tells every connection of the user
   * ('unread' event). Sent once connected and signed in; resent after a reconnect until Herald
   * confirms it. Returns false when there is nothing to mark.
   */
  markRead(channel, serial) {
    const name = typeof channel === 'string' ? channel : channel.name;
    const upTo = serial ?? this.channels.get(name)?.position?.serial;
    if (typeof upTo !== 'number' || upTo <= (this.reads.get(name)?.cursor ?? 0)) return false;
    if (upTo > (this.marks.get(name)?.serial ?? 0)) this.marks.set(name, { serial: upTo, sent: false });
    this.flushMarks();
    return true;
  }

  /** @internal */
  flushMarks() {
    if (this.state !== 'connected' || !this.user.subscribed) return;
    for (const [channel, mark] of this.marks) {
      if (!mark.sent) mark.sent = this.send({ event: 'herald:mark_read', data: { channel, serial: mark.serial } });
    }
  }

  /**
   * @internal A channel's read state, from herald:unread (after a subscribe) or herald:read (on the
   * user stream, whoever moved the cursor). A cursor never goes back: an older answer is ignored.
   */
  readState(channel, state) {
    const { cursor, unread } = state ?? {};
    if (typeof channel !== 'string' || typeof cursor !== 'number') return;
    if (cursor < (this.reads.get(channel)?.cursor ?? 0)) return;
    this.reads.set(channel, { cursor, unread });
    if (cursor >= (this.marks.get(channel)?.serial ?? Infinity)) this.marks.delete(channel);
    this.channels.get(channel)?.emit('unread', { cursor, unread });
    this.emit('unread', { channel, cursor, unread });
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
      // Channels that want their read state and were not subscribed signed in: (re)subscribe now.
      for (const channel of this.channels.values()) {
        if (channel.unread && !channel.unreadAsked) this.sendSubscribe(channel);
      }
      this.flushRequests();
      this.flushMarks();
      return;
    }
    if (frame.event === 'herald:unread') {
      this.readState(frame.channel, data);
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
    // The read state comes only to a signed-in subscribe: wait for the sign-in under way.
    channel.unreadAsked = this.user.subscribed;
    if (channel.unread && this.wantsSignin && !this.user.subscribed) return;
    channel.subscribed = false;
    channel.feed?.begin();
    try {
      const data = await channel.subscribeData(this.socketId);
      channel.snapshotAsked = data.snapshot === true;
      this.send({ event: 'pusher:subscribe', data });
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
    for (const mark of this.marks.values()) mark.sent = false; // unconfirmed: send again
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
