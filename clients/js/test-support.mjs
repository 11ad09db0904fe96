// What the client tests share: real Herald servers stopped after the file's tests, and a WebSocket
// whose "network" a test can take down, so that reconnects happen on purpose.
import { after } from 'node:test';
import { startHerald } from '../../tests/node/harness.mjs';

/** Returns `server(opts)`, which starts a Herald (harness options) stopped once the file ends. */
export function heraldServers(defaults = (opts) => opts) {
  const servers = [];
  after(async () => { for (const s of servers) await s.stop(); });
  return async (opts) => {
    const h = await startHerald(defaults(opts));
    servers.push(h);
    return h;
  };
}

/** `{ network, WebSocket }`: while `network.down`, every connection attempt fails (close 1006). */
export function gatedWebSocket() {
  const RealWebSocket = globalThis.WebSocket;
  const network = { down: false };
  function WebSocket(url) {
    if (!network.down) return new RealWebSocket(url);
    const dead = { close() {}, send() {} };
    setTimeout(() => dead.onclose?.({ code: 1006 }), 5);
    return dead;
  }
  return { network, WebSocket };
}
