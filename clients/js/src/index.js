// Herald's browser and Node client: the Pusher protocol plus what Herald adds. Every channel (and
// the user stream) resumes from the last serial it saw after any reconnect; when the server cannot
// replay what was missed it says so and the channel's `onResync` runs, so the app refetches instead
// of silently missing events. Reconnects back off with full jitter and obey Pusher's close codes.
// No build step and no runtime dependency: a plain ES module over the platform's WebSocket.

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
    this.emit(frame.event, payload, { serial: frame.serial, userId: frame.user_id });
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
 */
export class Herald extends Emitter {
  constructor(key, options = {}) {
    super();
    this.key = key;
    this.options = {
      url: 'ws://127.0.0.1:6001', backoff: {}, connectTimeout: 10000, transports: ['ws', 'polling'], ...options,
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
    socket?.close(1000);
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
    if (isRefusal(code)) {
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
