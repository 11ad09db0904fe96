// The live task list page. Every member's list is a Herald feed (private-feed-tasks-<member>),
// followed with the Herald JS client's herald.feed(): a snapshot, then every change, live. The page
// never changes a feed itself: each change the user asks for is a job (herald.submitJob) that
// Herald validates against the queue's JSON Schema and files under the signed-in user, and that
// worker.py applies. Job updates come back on the user's stream and show in #status.

const config = await (await fetch('/config.json')).json();
const params = new URLSearchParams(location.search);
const me = params.get('user');
const $ = (selector, root = document) => root.querySelector(selector);
const status = $('#status');

if (!config.team.includes(me)) {
  // A demo without passwords: pick who you are.
  $('#me').textContent = 'nobody';
  $('#add').hidden = true;
  $('#lists').innerHTML = `<p>Open the page as a team member: ${config.team
    .map((m) => `<a href="?user=${m}">${m}</a>`).join(' · ')}</p>`;
  throw new Error('no user');
}
$('#me').textContent = me;
document.title = `${me} · Team tasks`;

const { Herald } = await import(`${config.herald}/herald.js`);
// The backend signs; a real one would take the user from its session, not from the page.
const post = (path) => async (fields) => {
  const response = await fetch(path, { method: 'POST', body: new URLSearchParams({ ...fields, user: me }) });
  if (!response.ok) throw new Error(`${path}: ${(await response.json()).error}`);
  return response.json();
};
const herald = new Herald(config.key, {
  url: config.herald.replace(/^http/, 'ws'),
  authorize: ({ socketId, channel }) => post('/auth')({ socket_id: socketId, channel_name: channel }),
  signin: ({ socketId }) => post('/signin')({ socket_id: socketId }),
});
herald.bind('state_change', ({ current }) => {
  $('#conn').textContent = current;
  $('#conn').className = `conn ${current}`;
});
herald.connect();
herald.signin();

// --- Showing what happened to the user's jobs -------------------------------------------------

/** Every job update this page saw (tests read it): {id, state, error}. */
window.jobLog = [];

function describe(payload) {
  const task = payload?.task && titles.get(payload.task);
  const what = payload?.fields?.title ?? task ?? payload?.task ?? '';
  return `${payload?.op ?? 'change'} ${what ? `“${what}”` : ''}`.trim();
}

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

// All of this user's jobs, wherever they were submitted (this tab, another tab, a script).
herald.bind('job_update', (job) => {
  window.jobLog.push({ id: job.id, state: job.state, error: job.error ?? null, user_id: job.user_id });
  const what = describe(job.payload);
  if (job.state === 'queued' || job.state === 'running') setStatus('pending', `${what}: ${job.state}…`);
  else if (job.state === 'succeeded') setStatus('ok', `${what}: done`);
  else if (job.state === 'failed' || job.state === 'dead') setStatus('error', `${what} refused: ${job.error}`);
  else setStatus('error', `${what}: ${job.state}`);
});

/** Asks for a change: a job in the `tasks` queue. Herald refuses a payload outside the schema. */
async function submit(payload) {
  setStatus('pending', `${describe(payload)}: sending…`);
  try {
    return await herald.submitJob('tasks', payload, { idempotencyKey: crypto.randomUUID() });
  } catch (error) {
    setStatus('error', `${describe(payload)} refused by Herald: ${error.reason}`);
    throw error;
  }
}
window.tasks = { submit, herald };
window.herald = herald;

// --- The lists ----------------------------------------------------------------------------------

const feeds = new Map();
const titles = new Map(); // task id -> title, also after a task is gone (for the status line)
const editing = { member: null, id: null };

function button(label, title, onclick, className) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.title = title;
  b.className = className;
  b.onclick = onclick;
  return b;
}

function row(member, item, index, items) {
  const mine = member === me;
  const { id, value } = item;
  titles.set(id, value.title);
  const li = document.createElement('li');
  li.className = `task${value.done ? ' done' : ''}`;
  li.dataset.id = id;
  const check = document.createElement('input');
  check.type = 'checkbox';
  check.className = 'check';
  check.checked = Boolean(value.done);
  check.disabled = !mine;
  check.onchange = () => submit({ op: 'edit', list: me, task: id, fields: { done: check.checked } }).catch(() => render(member));
  const body = document.createElement('div');
  body.className = 'body';
  li.append(check, body);
  if (mine && editing.id === id) {
    const title = Object.assign(document.createElement('input'), { className: 'edit-title', value: value.title });
    const notes = Object.assign(document.createElement('input'), { className: 'edit-notes', value: value.notes ?? '', placeholder: 'notes' });
    const save = button('Save', 'Save', async () => {
      editing.id = null;
      render(member);
      await submit({ op: 'edit', list: me, task: id, fields: { title: title.value, notes: notes.value } }).catch(() => {});
    }, 'save');
    const cancel = button('Cancel', 'Cancel', () => { editing.id = null; render(member); }, 'cancel');
    body.append(title, notes, save, cancel);
    return li;
  }
  const title = Object.assign(document.createElement('div'), { className: 'title', textContent: value.title });
  body.append(title);
  if (value.notes) body.append(Object.assign(document.createElement('div'), { className: 'notes', textContent: value.notes }));
  body.append(Object.assign(document.createElement('div'), { className: 'by', textContent: `edited by ${value.edited_by}` }));
  if (mine) {
    const tools = document.createElement('div');
    tools.className = 'tools';
    const before = items[index - 1];
    const after = items[index + 1];
    const up = button('↑', 'Move up', () => submit({ op: 'move', list: me, task: id, to: { before: before.id } }).catch(() => {}), 'up');
    const down = button('↓', 'Move down', () => submit({ op: 'move', list: me, task: id, to: { after: after.id } }).catch(() => {}), 'down');
    up.disabled = !before;
    down.disabled = !after;
    const edit = button('✎', 'Edit', () => { editing.id = id; render(member); li.ownerDocument.querySelector(`[data-id="${id}"] .edit-title`)?.focus(); }, 'edit');
    const remove = button('✕', 'Delete', () => submit({ op: 'retract', list: me, task: id }).catch(() => {}), 'retract');
    tools.append(up, down, edit, remove);
    li.append(tools);
  }
  return li;
}

function render(member, changedId) {
  const feed = feeds.get(member);
  const section = document.getElementById(`list-${member}`);
  const list = $('ol', section);
  list.replaceChildren(...feed.items.map((item, i, items) => row(member, item, i, items)));
  if (feed.items.length === 0) list.replaceChildren(Object.assign(document.createElement('li'), { className: 'empty', textContent: 'Nothing here' }));
  $('.count', section).textContent = `${feed.items.filter((i) => !i.value.done).length} open`;
  section.dataset.ready = String(feed.ready);
  if (changedId) list.querySelector(`[data-id="${CSS.escape(changedId)}"]`)?.classList.add('flash');
}

// Your own list first, then the others in team order.
for (const member of [me, ...config.team.filter((m) => m !== me)]) {
  const section = document.createElement('section');
  section.className = `list${member === me ? ' mine' : ''}`;
  section.id = `list-${member}`;
  section.dataset.member = member;
  section.innerHTML = `<h2><span class="name"></span><span class="count"></span></h2><ol><li class="empty">Loading…</li></ol>`;
  $('.name', section).textContent = member === me ? `${member} (you)` : member;
  $('#lists').append(section);
  const feed = herald.feed(config.feed_prefix + member);
  feeds.set(member, feed);
  feed.on('reset', () => render(member));
  feed.on('change', (change) => render(member, change.type === 'retract' ? null : change.id));
}

$('#add').onsubmit = async (event) => {
  event.preventDefault();
  const input = $('#new-title');
  const title = input.value.trim();
  if (!title) return;
  input.value = '';
  await submit({ op: 'add', list: me, fields: { title } }).catch(() => { input.value = title; });
};
