// Team chat page: one Herald connection per tab carries every topic of every group the user
// follows, their direct messages and their own user stream (mentions, read cursors). Messages are
// posted to the app backend, which parses, stores and publishes them; this page only renders the
// node list it gets, with DOM APIs (textContent), never as HTML.
const params = new URLSearchParams(location.search);
const user = params.get('user');
const $ = (id) => document.getElementById(id);

/** Backend calls: the demo user rides along as a header (no passwords: it is a demo). */
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  };
  const res = await fetch(path, { ...init, headers: { ...init.headers, 'x-demo-user': user ?? '' } });
  const json = await res.json();
  if (!res.ok) throw new Error(json.error ?? `HTTP ${res.status}`);
  return json;
}
const form = (path) => async (fields) => {
  const res = await fetch(path, { method: 'POST', body: new URLSearchParams({ ...fields, user }) });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
  return res.json();
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  node.append(...children); // strings become text nodes
  return node;
}

/** Only http(s) and same-origin paths become links or images; anything else stays text. */
function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch { return null; }
}

/** The backend's node list as DOM nodes. Every string goes in as text, never as markup. */
function renderNodes(nodes) {
  const out = [];
  for (const node of nodes ?? []) {
    if (node.type === 'mention') {
      const href = safeUrl(node.href);
      out.push(href ? el('a', { class: 'mention', href, dataset: { user: node.user } }, `@${node.name}`) : `@${node.name}`);
    } else if (node.type === 'link') {
      const href = safeUrl(node.href);
      out.push(href ? el('a', { href, target: '_blank', rel: 'noopener noreferrer' }, node.text) : node.text);
    } else if (node.type === 'image') {
      const src = safeUrl(node.src);
      out.push(src ? el('a', { href: src, target: '_blank', rel: 'noopener noreferrer' },
        el('img', { class: 'inline', src, alt: node.alt ?? '' })) : node.src);
    } else {
      out.push(String(node.text ?? ''));
    }
  }
  return out;
}

if (!user) {
  $('title').textContent = 'Who are you?';
  $('messages').append(el('li', { class: 'empty' }, 'A demo without passwords: pick ',
    el('a', { href: '?user=ann' }, 'ann'), ', ', el('a', { href: '?user=bob' }, 'bob'), ' or ', el('a', { href: '?user=cy' }, 'cy'), '.'));
  throw new Error('no user');
}

const me = await api('/api/me');
const { Herald } = await import(`${me.herald.url}/herald.js`);
document.title = `${me.name} · Team chat`;
$('me').textContent = me.name;

// WebSocket first; after two failed WebSocket attempts the client long-polls over HTTP.
// ?transport=polling forces the fallback (as a proxy that breaks WebSockets would).
const transports = params.get('transport') === 'polling' ? ['polling'] : ['ws', 'polling'];
const herald = new Herald(me.herald.key, {
  url: me.herald.url.replace(/^http/, 'ws'),
  transports,
  nacl: window.nacl, // opens direct messages (private-encrypted-): the key never reaches Herald
  authorize: ({ socketId, channel }) => form('/auth')({ socket_id: socketId, channel_name: channel }),
  signin: ({ socketId }) => form('/signin')({ socket_id: socketId }),
});

// ---- what the page knows ------------------------------------------------------------------

/** Sidebar entries by channel: topics and DMs. */
const entries = new Map();
for (const group of me.groups) {
  for (const topic of group.topics) {
    entries.set(topic.channel, { kind: 'topic', channel: topic.channel, id: topic.id, title: `${group.name} › ${topic.name}`, label: topic.name, group: group.name });
  }
}
for (const dm of me.dms) entries.set(dm.channel, { kind: 'dm', channel: dm.channel, peer: dm.peer, title: `Direct: ${dm.name} (end-to-end encrypted)`, label: dm.name });

/** Messages by channel (Map id -> message), filled by the backend's list and by live events. */
const messages = new Map();
/** Messages sent from this tab and not yet confirmed, by action id. */
const pending = new Map();
/**
 * Unread counts. Herald reports {cursor, unread} on subscribe and whenever the cursor moves (in
 * any tab); between reports each live message past the report counts one more.
 */
const reads = new Map(); // channel -> {unread, head}
const liveCounted = new Map(); // channel -> Set of serials of messages after the report
/** Who is typing where: channel -> Map user -> expiry (ms). */
const typing = new Map();
let mentionsNew = 0;
let view = null;

// ---- sidebar --------------------------------------------------------------------------------

function navLink(hash, label, key) {
  const badge = el('span', { class: 'badge', dataset: { count: '0' } });
  return el('a', { href: `#${hash}`, dataset: { nav: key } }, el('span', {}, ...[label].flat()), badge);
}
function buildNav() {
  const nav = $('nav');
  nav.replaceChildren();
  nav.append(navLink('mentions', '@ Mentions', 'mentions'));
  for (const group of me.groups) {
    nav.append(el('h2', {}, group.name));
    for (const topic of group.topics) nav.append(navLink(`topic=${topic.id}`, `# ${topic.name}`, topic.channel));
  }
  nav.append(el('h2', {}, 'Direct messages'));
  for (const dm of me.dms) nav.append(navLink(`dm=${dm.peer}`, [`${dm.name} `, el('small', { class: 'tag', title: 'end-to-end encrypted' }, 'e2e')], dm.channel));
}

function unreadCount(channel) {
  const r = reads.get(channel);
  if (!r) return 0;
  let extra = 0;
  for (const serial of liveCounted.get(channel) ?? []) if (serial > r.head) extra += 1;
  return r.unread + extra;
}
function setBadge(key, count) {
  const link = document.querySelector(`[data-nav="${CSS.escape(key)}"]`);
  if (!link) return;
  const badge = link.querySelector('.badge');
  badge.dataset.count = String(count);
  badge.textContent = count ? String(count) : '';
  link.classList.toggle('has-unread', count > 0);
}
function renderBadges() {
  for (const channel of entries.keys()) setBadge(channel, unreadCount(channel));
  setBadge('mentions', mentionsNew);
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', view !== null && a.dataset.nav === (view.kind === 'mentions' ? 'mentions' : view.channel));
  }
}

// ---- the open view --------------------------------------------------------------------------

function messageItem(message, { where } = {}) {
  const li = el('li', { dataset: { id: String(message.id ?? ''), author: message.author ?? '' } });
  if (message.action_id) li.dataset.actionId = message.action_id;
  li.append(el('span', { class: 'who' }, message.name ?? message.author ?? '?'));
  if (where) li.append(el('span', { class: 'where' }, where));
  if (message.ts) li.append(el('time', { datetime: new Date(message.ts * 1000).toISOString() }, new Date(message.ts * 1000).toLocaleTimeString()));
  li.append(el('div', { class: 'body' }, ...renderNodes(message.nodes)));
  return li;
}

function renderMessages() {
  const list = $('messages');
  if (!view) return;
  if (view.kind === 'mentions') return; // rendered by openMentions
  const stored = [...(messages.get(view.channel)?.values() ?? [])].sort((a, b) => a.id - b.id);
  const items = stored.map((m) => messageItem(m));
  for (const p of pending.values()) {
    if (p.channel !== view.channel) continue;
    const li = messageItem({ author: user, name: me.name, nodes: [{ type: 'text', text: p.text }], action_id: p.actionId });
    li.classList.add('pending');
    items.push(li);
  }
  if (!items.length) items.push(el('li', { class: 'empty' }, 'No messages yet.'));
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
  list.replaceChildren(...items);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderTyping() {
  const now = Date.now();
  const who = [];
  for (const [id, until] of typing.get(view?.channel) ?? []) if (until > now && id !== user) who.push(me.users[id] ?? id);
  $('typing').textContent = who.length ? `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…` : '';
}
setInterval(renderTyping, 500);

function renderHere() {
  const channel = view && view.kind === 'topic' ? herald.channels.get(view.channel) : null;
  const names = channel ? [...channel.members.keys()].map((id) => me.users[id] ?? id).sort() : [];
  $('here').textContent = names.length ? `here: ${names.join(', ')}` : '';
}

function addMessage(channel, message) {
  if (!messages.has(channel)) messages.set(channel, new Map());
  messages.get(channel).set(message.id, message);
  if (message.action_id) pending.delete(message.action_id);
  typing.get(channel)?.delete(message.author);
}

/** Marks the open channel read (every tab of this user clears its badge). */
function readOpenView() {
  if (view && view.channel && document.visibilityState !== 'hidden') herald.markRead(view.channel);
}
document.addEventListener('visibilitychange', readOpenView);

async function openChannel(entry) {
  view = entry;
  $('title').textContent = entry.title;
  $('composer').hidden = false;
  $('text').placeholder = entry.kind === 'dm' ? `Message ${entry.label} (end-to-end encrypted)` : 'Message (try @bob, a link, an image URL)';
  renderBadges();
  renderMessages();
  renderTyping();
  renderHere();
  readOpenView();
  const path = entry.kind === 'topic' ? `/api/topics/${encodeURIComponent(entry.id)}/messages` : `/api/dms/${encodeURIComponent(entry.peer)}/messages`;
  const { messages: list } = await api(path);
  for (const m of list) addMessage(entry.channel, m);
  if (view === entry) renderMessages();
}

async function openMentions() {
  view = { kind: 'mentions' };
  mentionsNew = 0;
  $('title').textContent = 'Mentions of you';
  $('composer').hidden = true;
  $('typing').textContent = '';
  $('here').textContent = '';
  renderBadges();
  const { mentions } = await api('/api/mentions');
  if (view.kind !== 'mentions') return;
  const items = mentions.map((m) => messageItem(m, { where: `in ${entries.get(m.channel)?.title ?? m.channel}` }));
  $('messages').replaceChildren(...(items.length ? items : [el('li', { class: 'empty' }, 'Nobody has mentioned you yet.')]));
}

function route() {
  const hash = location.hash.slice(1);
  if (hash === 'mentions') return openMentions();
  const [kind, id] = hash.split('=');
  for (const entry of entries.values()) {
    if ((kind === 'topic' && entry.id === id) || (kind === 'dm' && entry.peer === id)) return openChannel(entry);
  }
  const first = entries.values().next().value;
  return openChannel(first);
}
window.addEventListener('hashchange', route);

// ---- live -----------------------------------------------------------------------------------

function onMessage(channel, message, serial) {
  addMessage(channel, message);
  if (typeof serial === 'number' && serial > (reads.get(channel)?.head ?? Infinity)) {
    if (!liveCounted.has(channel)) liveCounted.set(channel, new Set());
    liveCounted.get(channel).add(serial);
  }
  if (view?.channel === channel) {
    renderMessages();
    readOpenView();
  }
  renderBadges();
}

for (const entry of entries.values()) {
  const channel = herald.subscribe(entry.channel, {
    unread: true,
    onResync: () => { if (view?.channel === entry.channel) openChannel(entry); }, // history lost: refetch
  });
  channel.bind('message', (message, { serial }) => onMessage(entry.channel, message, serial));
  channel.bind('subscribed', () => { if (view?.channel === entry.channel) { readOpenView(); renderHere(); } });
  channel.bind('error', (error) => console.warn(entry.channel, error));
  if (entry.kind === 'topic') {
    // Typing: a client event straight to the other members (Herald stamps the sender's user id).
    channel.bind('client-typing', (data, { userId }) => {
      if (!userId) return;
      if (!typing.has(entry.channel)) typing.set(entry.channel, new Map());
      typing.get(entry.channel).set(userId, data?.typing ? Date.now() + 3000 : 0);
      $('typing').dataset.lastActionId = data?.action_id ?? ''; // each signal carries its action id
      if (view?.channel === entry.channel) renderTyping();
    });
    channel.bind('member_added', renderHere);
    channel.bind('member_removed', renderHere);
  }
}

herald.on('unread', ({ channel, cursor, unread }) => {
  const head = Math.max(cursor, herald.channels.get(channel)?.position?.serial ?? 0);
  reads.set(channel, { unread, head });
  const live = liveCounted.get(channel);
  if (live) for (const s of [...live]) if (s <= head) live.delete(s);
  if (unread > 0 && view?.channel === channel) readOpenView();
  renderBadges();
});

herald.user.bind('mention', (message) => {
  mentionsNew += 1;
  if (view?.kind === 'mentions') openMentions();
  else renderBadges();
});

herald.bind('state_change', ({ current }) => {
  $('status').textContent = current === 'connected' ? `live via ${herald.transport === 'polling' ? 'HTTP long-polling' : 'WebSocket'}` : current;
  document.body.dataset.state = current;
  document.body.dataset.transport = herald.transport ?? '';
});

let lastTyping = 0;
$('text').addEventListener('input', () => {
  if (view?.kind !== 'topic' || !$('text').value || Date.now() - lastTyping < 1500) return;
  lastTyping = Date.now();
  const actionId = `typing-${user}-${crypto.randomUUID?.() ?? Math.random().toString(36).slice(2)}`;
  herald.channels.get(view.channel)?.trigger('client-typing', { typing: true }, { actionId });
});

$('composer').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('text').value.trim();
  if (!text || !view?.channel) return;
  const target = view;
  $('text').value = '';
  lastTyping = 0;
  // Shown at once as pending; the backend's confirmation carries the same action id and replaces it.
  const actionId = `msg-${user}-${crypto.randomUUID?.() ?? Math.random().toString(36).slice(2)}`;
  pending.set(actionId, { actionId, channel: target.channel, text });
  renderMessages();
  try {
    const { message } = target.kind === 'topic'
      ? await api('/api/messages', { topic: target.id, text, action_id: actionId })
      : await api(`/api/dms/${encodeURIComponent(target.peer)}`, { text, action_id: actionId });
    addMessage(target.channel, message);
    if (typeof message.serial === 'number' && view === target) herald.markRead(target.channel, message.serial);
  } catch (error) {
    pending.delete(actionId);
    alert(`Not sent: ${error.message}`);
  }
  if (view === target) renderMessages();
});

buildNav();
herald.connect();
herald.signin();
await route();
window.chat = { herald, reads, messages, user };
document.body.dataset.ready = 'true';
