// The Herald operator console. Plain DOM, no dependencies. The app secret never leaves this page:
// API requests carry Pusher signatures (HMAC-SHA256 via WebCrypto, MD5 of the body below) and the
// live tail subscribes over /app/{key} with a channel signature made here.
'use strict';

const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
let creds = null;
let refresher = null;
let tail = null;

/** MD5 of a byte array, as hex: Pusher's body_md5 (WebCrypto has no MD5). */
function md5(bytes) {
  const K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32));
  const S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
  const blocks = ((bytes.length + 8) >>> 6) + 1;
  const m = new Uint32Array(blocks * 16);
  bytes.forEach((b, i) => { m[i >> 2] |= b << ((i % 4) * 8); });
  m[bytes.length >> 2] |= 0x80 << ((bytes.length % 4) * 8);
  m[blocks * 16 - 2] = (bytes.length * 8) >>> 0;
  m[blocks * 16 - 1] = Math.floor(bytes.length / 0x20000000);
  const h = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  for (let j = 0; j < m.length; j += 16) {
    let [a, b, c, d] = h;
    for (let i = 0; i < 64; i++) {
      const r = i >> 4;
      const f = [(b & c) | (~b & d), (d & b) | (~d & c), b ^ c ^ d, c ^ (b | ~d)][r];
      const g = [i, 5 * i + 1, 3 * i + 5, 7 * i][r] % 16;
      const x = (a + f + K[i] + m[j + g]) | 0;
      const s = S[r * 4 + (i % 4)];
      [a, d, c] = [d, c, b];
      b = (b + ((x << s) | (x >>> (32 - s)))) | 0;
    }
    h.forEach((v, k) => { h[k] = (v + [a, b, c, d][k]) | 0; });
  }
  return hex(h.flatMap((w) => [0, 8, 16, 24].map((s) => (w >>> s) & 255)));
}

async function hmacHex(secret, message) {
  const key = await crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return hex(new Uint8Array(await crypto.subtle.sign('HMAC', key, enc.encode(message))));
}

/** A signed API request (Pusher's scheme: METHOD\npath\nsorted query); JSON answer or an Error. */
async function api(method, path, params = {}, body) {
  const query = { ...params, auth_key: creds.key, auth_timestamp: String(Math.floor(Date.now() / 1000)), auth_version: '1.0' };
  if (body !== undefined) query.body_md5 = md5(enc.encode(body));
  const keys = Object.keys(query).sort();
  const signature = await hmacHex(creds.secret, `${method}\n${path}\n${keys.map((k) => `${k}=${query[k]}`).join('&')}`);
  const search = [...keys, 'auth_signature']
    .map((k) => `${k}=${encodeURIComponent(k === 'auth_signature' ? signature : query[k])}`).join('&');
  const response = await fetch(`${path}?${search}`, {
    method, body, headers: body === undefined ? {} : { 'content-type': 'application/json' },
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${response.status}: ${text.trim()}`);
  return JSON.parse(text);
}

const appPath = (rest) => `/apps/${encodeURIComponent(creds.id)}${rest}`;
const channelPath = (name, rest = '') => appPath(`/channels/${encodeURIComponent(name)}${rest}`);

function show(id, text, isError = false) {
  $(id).textContent = text;
  $(id).classList.toggle('error', isError);
}

// ---- Overview: gauges from /metrics (if served), channels from the signed API -----------------

async function gauges() {
  const response = await fetch('/metrics');
  if (!response.ok) return null;
  const wanted = `{app="${creds.id.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"}`;
  const values = {};
  for (const line of (await response.text()).split('\n')) {
    const [series, value] = line.split(' ');
    if (series?.endsWith(wanted)) values[series.slice(0, -wanted.length)] = value;
  }
  return values;
}

async function refreshOverview() {
  try {
    const [values, { channels }] = await Promise.all([gauges(), api('GET', appPath('/channels'))]);
    const names = Object.keys(channels).sort();
    show('overview-note', values ? '' : 'GET /metrics is off ([server] metrics = false): only channels are shown.');
    $('stat-connections').textContent = values?.herald_connections ?? '–';
    $('stat-channels').textContent = values?.herald_channels ?? String(names.length);
    $('stat-subscriptions').textContent = values?.herald_subscriptions ?? '–';
    $('stat-presence').textContent = values?.herald_presence_members ?? '–';
    const rows = await Promise.all(names.slice(0, 50).map(async (name) => {
      const info = name.startsWith('presence-') ? 'user_count' : 'subscription_count';
      const answer = await api('GET', channelPath(name), { info }).catch(() => ({}));
      return row([name, String(answer[info] ?? '')]);
    }));
    $('channel-rows').replaceChildren(...rows);
    show('status', `App ${creds.id}: signed in.`);
  } catch (error) {
    show('status', `App ${creds.id}: ${error.message}`, true);
  }
}

function row(cells) {
  const tr = document.createElement('tr');
  tr.append(...cells.map((text) => Object.assign(document.createElement('td'), { textContent: text })));
  return tr;
}

async function showMembers(event) {
  event.preventDefault();
  try {
    const { users } = await api('GET', channelPath($('presence-channel').value, '/users'));
    $('presence-members').replaceChildren(...users.map(({ id }) => Object.assign(document.createElement('li'), { textContent: id })));
    if (users.length === 0) $('presence-members').textContent = 'No members.';
  } catch (error) {
    $('presence-members').textContent = error.message;
  }
}

// ---- Live tail: a Pusher client of our own ------------------------------------------------------

function startTail(event) {
  event.preventDefault();
  tail?.close();
  const channel = $('tail-channel').value;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/app/${encodeURIComponent(creds.key)}?protocol=7&client=herald-console&version=1.0`);
  tail = socket;
  $('tail-rows').replaceChildren();
  show('tail-status', `Connecting to ${channel}…`);
  socket.onmessage = async ({ data }) => {
    const frame = JSON.parse(data);
    if (frame.event === 'pusher:connection_established') {
      socket.send(JSON.stringify({ event: 'pusher:subscribe', data: await subscription(channel, JSON.parse(frame.data).socket_id) }));
    } else if (frame.event === 'pusher:ping') {
      socket.send(JSON.stringify({ event: 'pusher:pong', data: {} }));
    } else if (frame.event === 'pusher_internal:subscription_succeeded') {
      show('tail-status', `Tailing ${channel}.`);
    } else if (frame.event === 'pusher:error' || frame.event === 'pusher:subscription_error') {
      show('tail-status', `${frame.event}: ${JSON.stringify(frame.data)}`, true);
    } else if (!frame.event.startsWith('pusher')) {
      addEvent(frame);
    }
  };
  socket.onclose = ({ code }) => { if (tail === socket) show('tail-status', `Closed (${code}).`, code !== 1000); };
}

/** The subscribe message's data: signed here for private- and presence- channels. */
async function subscription(channel, socketId) {
  if (!/^(private|presence)-/.test(channel)) return { channel };
  const channelData = channel.startsWith('presence-') ? JSON.stringify({ user_id: 'herald-console' }) : undefined;
  const message = [socketId, channel, channelData].filter((part) => part !== undefined).join(':');
  const auth = `${creds.key}:${await hmacHex(creds.secret, message)}`;
  return channelData === undefined ? { channel, auth } : { channel, auth, channel_data: channelData };
}

function addEvent(frame) {
  const data = typeof frame.data === 'string' ? frame.data : JSON.stringify(frame.data);
  const tr = row([new Date().toLocaleTimeString(), frame.channel ?? '', frame.event, String(frame.serial ?? ''), data ?? '']);
  tr.dataset.event = frame.event;
  tr.hidden = !frame.event.includes($('tail-filter').value);
  const rows = $('tail-rows');
  rows.append(tr);
  while (rows.children.length > 500) rows.firstElementChild.remove();
}

function applyFilter() {
  const filter = $('tail-filter').value;
  for (const tr of $('tail-rows').children) tr.hidden = !tr.dataset.event.includes(filter);
}

// ---- Publish, queues, dead letters ---------------------------------------------------------------

async function publish(event) {
  event.preventDefault();
  const body = JSON.stringify({ name: $('pub-event').value, channel: $('pub-channel').value, data: $('pub-data').value });
  try {
    const answer = await api('POST', appPath('/events'), {}, body);
    show('pub-result', `Published: ${JSON.stringify(answer)}`);
  } catch (error) {
    show('pub-result', error.message, true);
  }
}

async function showQueue(event) {
  event.preventDefault();
  const queue = $('queue-name').value;
  try {
    show('queue-result', JSON.stringify(await api('GET', appPath(`/queues/${encodeURIComponent(queue)}`)), null, 2));
  } catch (error) {
    show('queue-result', error.message, true);
  }
}

async function showDeadLetters(event) {
  event.preventDefault();
  try {
    show('dead-result', JSON.stringify(await api('GET', appPath('/webhooks/dead_letters'), { limit: '50' }), null, 2));
  } catch (error) {
    show('dead-result', error.message, true);
  }
}

function signIn(event) {
  event.preventDefault();
  if (!globalThis.crypto?.subtle) {
    show('status', 'This page needs WebCrypto: open it over HTTPS or from localhost.', true);
    return;
  }
  creds = { id: $('app-id').value, key: $('app-key').value, secret: $('app-secret').value };
  $('panels').hidden = false;
  clearInterval(refresher);
  refreshOverview();
  refresher = setInterval(refreshOverview, 1000);
}

$('login-form').addEventListener('submit', signIn);
$('presence-form').addEventListener('submit', showMembers);
$('tail-form').addEventListener('submit', startTail);
$('tail-filter').addEventListener('input', applyFilter);
$('publish-form').addEventListener('submit', publish);
$('queue-form').addEventListener('submit', showQueue);
$('dead-form').addEventListener('submit', showDeadLetters);
// Exposed for tests and the curious: the MD5 used for body_md5.
globalThis.heraldConsole = { md5 };
