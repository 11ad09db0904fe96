// Types for herald-client (src/index.js).

export interface Position { epoch: string; serial: number }

export interface BackoffOptions {
  /** First retry is under this many ms (default 1000). */
  base?: number;
  /** Longest delay in ms (default 30000). */
  cap?: number;
  random?: () => number;
}

export function backoffDelay(attempt: number, options?: BackoffOptions): number;

export interface HeraldOptions {
  /** ws:// or wss:// base URL of Herald (default ws://127.0.0.1:6001). */
  url?: string;
  /** Signs private and presence subscriptions (usually by calling your backend). For
   *  `private-encrypted-` channels it also returns the channel's `shared_secret`. */
  authorize?: (request: { socketId: string; channel: string }) => Promise<{ auth: string; channel_data?: string; shared_secret?: string }>;
  /** tweetnacl (or anything with its `secretbox.open`), needed only for `private-encrypted-` channels. */
  nacl?: { secretbox: { open(box: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array | null } };
  /** Signs the user in (usually by calling your backend). */
  signin?: (request: { socketId: string }) => Promise<{ auth: string; user_data: string }>;
  backoff?: BackoffOptions;
  /** A WebSocket constructor, for runtimes without a global one. */
  WebSocket?: unknown;
  /** Transports to use, in order of preference (default ['ws', 'polling']): after two WebSocket
   *  attempts in a row fail before connecting, the client long-polls over HTTP instead. */
  transports?: Array<'ws' | 'polling'>;
  /** Give up on a handshake that has not completed after this many ms, and retry (default 10000). */
  connectTimeout?: number;
  /** How many action ids to remember for de-duplication (default 1000). */
  maxActionIds?: number;
  /** How long submitJob/getJob wait for Herald's answer, in ms (default 10000). */
  requestTimeout?: number;
}

export type Handler = (data: any, meta: { serial?: number; userId?: string }) => void;

export declare class Emitter {
  bind(event: string, fn: (...args: any[]) => void): this;
  unbind(event: string, fn?: (...args: any[]) => void): this;
  /** Alias of bind. */
  on(event: string, fn: (...args: any[]) => void): this;
  /** Alias of unbind. */
  off(event: string, fn?: (...args: any[]) => void): this;
}

export declare class Channel extends Emitter {
  readonly name: string;
  /** The last position seen: resumed from after every reconnect. */
  position: Position | null;
  subscribed: boolean;
  /** Presence members by user id. */
  members: Map<string, unknown>;
  onResync?: (channel: Channel) => void;
  /** Subscribed with `unread: true`. */
  readonly unread: boolean;
  /** The live copy, when the channel was opened with `Herald.feed()`. */
  readonly feed: Feed | null;
  /** Sends a client event; with `actionId`, the same action arriving later is not dispatched here. */
  trigger(event: string, data: object, options?: { actionId?: string }): boolean;
  /** 'unread': this channel's read state changed (see Herald's 'unread'). */
  bind(event: 'unread', fn: (state: ReadState) => void): this;
  bind(event: string, fn: (...args: any[]) => void): this;
}

export interface SubscribeOptions {
  onResync?: (channel: Channel) => void;
  position?: Position;
  /** Ask Herald for the channel's read state after subscribing (needs a sign-in; when signin()
   *  was called the subscribe waits for it). */
  unread?: boolean;
}

/** One item of a feed: `serial` is that of its last publish, edit or move. */
export interface FeedItem<Value = unknown> { id: string; value: Value; serial: number }

/** One change applied to a feed's copy. `index` is where the item is now (for 'retract': where it was). */
export type FeedChange<Value = unknown> =
  | { type: 'publish'; id: string; serial: number; index: number; after: string | null; value: Value; item: FeedItem<Value> }
  | { type: 'edit'; id: string; serial: number; index: number; value: Value; previous: Value; item: FeedItem<Value> }
  | { type: 'move'; id: string; serial: number; index: number; from: number; after: string | null; item: FeedItem<Value> }
  | { type: 'retract'; id: string; serial: number; index: number; previous: Value };

/**
 * A live local copy of a feed channel, made by `Herald.feed()`: a snapshot on every (re)subscribe,
 * then every change in serial order; a gap, a change that does not fit, or a snapshot older than the
 * subscription asks for a new snapshot and rebuilds.
 */
export declare class Feed<Value = unknown> extends Emitter {
  readonly name: string;
  readonly channel: Channel;
  /** The items in feed order; a new array after every change (items are replaced, never mutated). */
  readonly items: ReadonlyArray<FeedItem<Value>>;
  /** The serial of the last change in the copy (null before the first snapshot). */
  readonly position: Position | null;
  /** True once the first snapshot is in. */
  readonly ready: boolean;
  /** True while waiting for a snapshot (changes are kept until it comes). */
  readonly syncing: boolean;
  get(id: string): FeedItem<Value> | undefined;
  /** Unsubscribes the feed's channel. */
  close(): void;
  /** 'change': one change applied. */
  bind(event: 'change', fn: (change: FeedChange<Value>) => void): this;
  /** 'reset': the copy was replaced from a snapshot (the first one too, and after every reconnect). */
  bind(event: 'reset', fn: (state: { items: ReadonlyArray<FeedItem<Value>>; position: Position }) => void): this;
  /** 'ready': the first snapshot is in. */
  bind(event: 'ready', fn: (feed: Feed<Value>) => void): this;
  bind(event: string, fn: (...args: any[]) => void): this;
  on(event: 'change', fn: (change: FeedChange<Value>) => void): this;
  on(event: 'reset', fn: (state: { items: ReadonlyArray<FeedItem<Value>>; position: Position }) => void): this;
  on(event: 'ready', fn: (feed: Feed<Value>) => void): this;
  on(event: string, fn: (...args: any[]) => void): this;
}

/** A user's read state of a channel: read up to `cursor`; `unread` counted events after it. */
export interface ReadState { cursor: number; unread: number }

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'dead' | 'cancelled';

/** A durable job as users see it (times in unix ms; the worker's lease token is never shown). */
export interface Job<Payload = unknown, Result = unknown, Progress = unknown> {
  id: string;
  queue: string;
  state: JobState;
  priority: number;
  payload: Payload;
  user_id: string | null;
  attempts: number;
  max_attempts: number;
  run_at: number;
  lease_until: number | null;
  progress: Progress | null;
  result: Result | null;
  error: string | null;
  created_at: number;
  updated_at: number;
  /** 1 when submitted, +1 on every change: the client never hands you an older one after a newer. */
  version: number;
}

/** How submitJob/getJob reject. */
export interface HeraldJobError extends Error {
  name: 'HeraldJobError';
  /** Herald's reason (e.g. "payload does not match the queue's schema: /from: …", "no such job",
   *  "sign in before submitting jobs"), or 'timed out', 'connection closed', 'disconnected'. */
  reason: string;
  request_id?: string;
  /** The queue (for a refused submit) or job id (for a refused get), as Herald echoes them. */
  queue?: string;
  id?: string;
}

export interface SubmitJobOptions<Payload = unknown, Result = unknown> {
  /** A retry with the same key (e.g. after 'connection closed') cannot file the job twice: it
   *  resolves with the job first filed under the key. */
  idempotencyKey?: string;
  /** ms to wait for the answer (default: the client's requestTimeout). */
  timeout?: number;
  /** Every update of this job, from 'queued' until it is finished (succeeded, failed, dead, cancelled). */
  onUpdate?: (job: Job<Payload, Result>) => void;
}

export type State = 'initialized' | 'connecting' | 'connected' | 'unavailable' | 'failed' | 'disconnected';

/** A WebSocket look-alike over Herald's HTTP long-polling route. */
export declare class PollingSocket {
  constructor(httpUrl: string, key: string);
  send(text: string): void;
  close(): void;
}

export declare class Herald extends Emitter {
  constructor(key: string, options?: HeraldOptions);
  readonly state: State;
  readonly socketId: string | null;
  /** The transport in use: 'ws' or 'polling'. */
  readonly transport: 'ws' | 'polling';
  /** The user stream, after signin(). */
  readonly user: Channel;
  connect(): this;
  disconnect(): void;
  subscribe(name: string, options?: SubscribeOptions): Channel;
  unsubscribe(name: string): void;
  /** A live copy of a `feed-…` / `private-feed-…` channel; the same Feed if called again. */
  feed<Value = unknown>(name: string, options?: SubscribeOptions): Feed<Value>;
  signin(): void;
  /** The signed-in user's read state of `channel` as Herald last told it (from a subscribe with
   *  `unread: true` or a mark from any tab), or undefined. */
  unread(channel: string): ReadState | undefined;
  /** Marks `channel` read up to `serial` (default: the last serial seen on it) for the signed-in
   *  user; every connection of the user is told ('unread'). Sent once signed in, resent after a
   *  reconnect until confirmed. False when there is nothing to mark. */
  markRead(channel: string | Channel, serial?: number): boolean;
  /** Submits a job to a queue with `client_submit = true`, filed under the signed-in user (whatever
   *  the payload says). Sent once connected and signed in; resolves with the queued job, rejects
   *  with a HeraldJobError. */
  submitJob<Payload = unknown, Result = unknown>(queue: string, payload: Payload, options?: SubmitJobOptions<Payload, Result>): Promise<Job<Payload, Result>>;
  /** One of the signed-in user's own jobs as it is now; rejects with reason 'no such job' otherwise. */
  getJob<Payload = unknown, Result = unknown>(id: string, options?: { timeout?: number }): Promise<Job<Payload, Result>>;
  /** Calls back with the job's current state (fetched, unless `fetch: false`) and every later update,
   *  never an older version than one already given; survives reconnects, refetches after a resync.
   *  Returns a function that stops watching. */
  watchJob<Payload = unknown, Result = unknown>(id: string, callback: (job: Job<Payload, Result>) => void, options?: { fetch?: boolean }): () => void;
  /** 'job_update': every change of any of the signed-in user's jobs (from the user stream, resumed
   *  after reconnects, stale versions dropped). Other events: 'state_change', state names,
   *  'reconnecting', 'refused', 'resync', 'error'. */
  bind(event: 'job_update', fn: (job: Job, meta: { serial?: number }) => void): this;
  /** 'unread': a channel's read state changed (a subscribe with `unread: true`, or a mark by any of
   *  the user's connections or by the backend). */
  bind(event: 'unread', fn: (update: ReadState & { channel: string }) => void): this;
  bind(event: string, fn: (...args: any[]) => void): this;
  on(event: 'unread', fn: (update: ReadState & { channel: string }) => void): this;
  on(event: string, fn: (...args: any[]) => void): this;
}

export default Herald;
