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
}

export type Handler = (data: any, meta: { serial?: number; userId?: string }) => void;

export declare class Emitter {
  bind(event: string, fn: (...args: any[]) => void): this;
  unbind(event: string, fn?: (...args: any[]) => void): this;
}

export declare class Channel extends Emitter {
  readonly name: string;
  /** The last position seen: resumed from after every reconnect. */
  position: Position | null;
  subscribed: boolean;
  /** Presence members by user id. */
  members: Map<string, unknown>;
  onResync?: (channel: Channel) => void;
  /** Sends a client event; with `actionId`, the same action arriving later is not dispatched here. */
  trigger(event: string, data: object, options?: { actionId?: string }): boolean;
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
  subscribe(name: string, options?: { onResync?: (channel: Channel) => void; position?: Position }): Channel;
  unsubscribe(name: string): void;
  signin(): void;
}

export default Herald;
