// Minimal browser globals so that pusher-js's *web* builds (e.g. `pusher-js/with-encryption`)
// load and run in Node. Import this module before requiring a web build; only the WebSocket
// transport is used (enabledTransports: ['ws']), so the DOM stubs are never really exercised.
import WebSocket from 'ws';

globalThis.self ??= globalThis;
globalThis.window ??= globalThis;
// Node 20 has a global WebSocket only with --experimental-websocket; fall back to `ws`.
globalThis.WebSocket ??= WebSocket;
globalThis.navigator ??= { onLine: true, userAgent: 'node' };
globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};
globalThis.document ??= {
  body: {},
  location: { protocol: 'http:' },
  getElementsByTagName: () => [],
  createElement: () => ({}),
};
