// The query runner page: submit a SQL query as a Herald job, follow it live, find it again later.
//
// - Submitting uses the Herald JS client's submitJob over the page's own connection: Herald files
//   the job under the user this connection signed in as (the backend's /signin decides who that is).
// - Every change of this user's jobs arrives as 'job_update' on the user stream (queued, running,
//   each progress report, succeeded with the result, failed, a lease that ran out...).
// - The ids of submitted jobs are kept in localStorage; on load each is watched (watchJob: its
//   state now, then every change), so a query that finished while the page was closed shows its
//   result, and one still running carries on live.
const params = new URLSearchParams(location.search);
const user = params.get('user') || 'ann';
const config = await (await fetch('/config')).json();
const { Herald } = await import(`${config.herald_url}/herald.js`);

const PRESETS = [
  ['Revenue by region', 'SELECT region, COUNT(*) AS orders, ROUND(SUM(amount), 2) AS revenue\nFROM sales GROUP BY region ORDER BY revenue DESC'],
  ['Top 5 products', 'SELECT product, SUM(quantity) AS units, ROUND(SUM(amount), 2) AS revenue\nFROM sales GROUP BY product ORDER BY revenue DESC LIMIT 5'],
  ['Revenue by month', 'SELECT month, COUNT(*) AS orders, ROUND(SUM(amount), 2) AS revenue\nFROM sales GROUP BY month ORDER BY month'],
  ['Largest orders', 'SELECT day, region, product, quantity, amount\nFROM sales ORDER BY amount DESC, id LIMIT 10'],
];
const STORE_KEY = `query-runner:jobs:${user}`;
const KEEP = 20; // jobs remembered per user in this browser
const FINISHED = new Set(['succeeded', 'failed', 'dead', 'cancelled']);
const $ = (id) => document.getElementById(id);

/** id -> {id, title, sql, job (latest version seen, or null), gone} */
const jobs = new Map();
/** Every update applied, in order: for the curious (and the tests). */
const jobLog = [];
window.queryRunner = { jobs, jobLog, user };

$('user').textContent = user;

// ---- Herald ------------------------------------------------------------------------------------
const herald = new Herald(config.key, {
  url: config.herald_url.replace(/^http/, 'ws'),
  signin: async ({ socketId }) => {
    const res = await fetch('/signin', { method: 'POST', body: new URLSearchParams({ socket_id: socketId, user }) });
    if (!res.ok) throw new Error(`sign-in refused: HTTP ${res.status}`);
    return res.json();
  },
});
window.queryRunner.herald = herald;
herald.on('state_change', ({ current }) => {
  $('conn').dataset.state = current;
  $('conn').textContent = current;
});
herald.on('job_update', (job) => apply(job)); // all of this user's jobs, from any tab or device
herald.connect();
herald.signin();

// ---- localStorage ------------------------------------------------------------------------------
function loadSaved() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY) || '[]');
    return Array.isArray(saved) ? saved.filter((s) => s && typeof s.id === 'string') : [];
  } catch {
    return [];
  }
}
function save() {
  const list = [...jobs.values()].filter((j) => !j.gone).sort(byNewest).slice(0, KEEP)
    .map(({ id, title, sql, at }) => ({ id, title, sql, at }));
  localStorage.setItem(STORE_KEY, JSON.stringify(list));
}
const createdAt = (j) => j.job?.created_at ?? j.at ?? 0;
const byNewest = (a, b) => createdAt(b) - createdAt(a);

/** Follows a job: its state now (getJob), then every update; again after an unreplayable gap. */
function watch(id) {
  herald.watchJob(id, apply, { fetch: false });
  herald.getJob(id).then(apply, (error) => {
    const entry = jobs.get(id);
    if (entry && error?.reason === 'no such job') { // removed after retain_finished_secs
      entry.gone = true;
      save();
      render(entry);
    }
  });
}

for (const saved of loadSaved()) {
  jobs.set(saved.id, { ...saved, job: null, gone: false });
  watch(saved.id);
}
renderAll();

// ---- Updates -----------------------------------------------------------------------------------
function apply(job) {
  if (!job || job.queue !== config.queue) return;
  let entry = jobs.get(job.id);
  if (!entry) { // submitted in another tab, or this page's submit answer is still on its way
    entry = { id: job.id, title: job.payload?.title || 'Query', sql: job.payload?.sql || '', at: job.created_at, job: null, gone: false };
    jobs.set(job.id, entry);
    save();
  }
  if (entry.job && job.version <= entry.job.version) return; // older than what is shown
  entry.job = job;
  jobLog.push({ id: job.id, state: job.state, pct: job.progress?.pct ?? null, attempts: job.attempts, version: job.version });
  render(entry);
}

// ---- Submitting --------------------------------------------------------------------------------
for (const [title, sql] of [...PRESETS, ['Custom query', '']]) {
  $('preset').append(new Option(title, sql));
}
$('sql').value = PRESETS[0][1];
$('preset').onchange = () => { $('sql').value = $('preset').value; $('sql').focus(); };

$('run-form').onsubmit = async (event) => {
  event.preventDefault();
  const sql = $('sql').value.trim();
  const preset = $('preset').selectedOptions[0];
  const title = preset && preset.value.trim() === sql ? preset.text : 'Custom query';
  $('submit-error').textContent = '';
  if (!sql) { $('submit-error').textContent = 'Type a query first.'; return; }
  $('run').disabled = true;
  const idempotencyKey = crypto.randomUUID(); // the same key on a retry: never filed twice
  try {
    for (let attempt = 1; ; attempt += 1) {
      try {
        const job = await herald.submitJob(config.queue, { sql, title }, { idempotencyKey });
        const entry = jobs.get(job.id) ?? { id: job.id, title, sql, at: job.created_at, job: null, gone: false };
        jobs.set(job.id, entry);
        apply(job);
        save();
        watch(job.id);
        renderAll();
        return;
      } catch (error) {
        const unsure = ['connection closed', 'timed out', 'disconnected'].includes(error?.reason);
        if (!unsure || attempt >= 3) throw error;
      }
    }
  } catch (error) {
    $('submit-error').textContent = `Not submitted: ${error?.reason || error?.message || error}`;
  } finally {
    $('run').disabled = false;
  }
};

// ---- Rendering ---------------------------------------------------------------------------------
function renderAll() {
  const list = $('jobs');
  const entries = [...jobs.values()].sort(byNewest);
  for (const entry of entries) render(entry);
  list.replaceChildren(...entries.map((e) => e.el));
  $('empty').hidden = entries.length > 0;
}

function render(entry) {
  if (!entry.el) {
    entry.el = $('job-template').content.firstElementChild.cloneNode(true);
    entry.el.dataset.id = entry.id;
    if (!$('jobs').contains(entry.el)) queueMicrotask(renderAll);
  }
  const el = entry.el;
  const job = entry.job;
  const state = entry.gone ? 'gone' : job?.state ?? 'loading';
  // (Herald keeps the last attempt's progress when a job goes back to the queue: shown from the
  // next report of the new attempt on.)
  const pct = state === 'succeeded' ? 100 : state === 'running' ? job?.progress?.pct ?? 0 : 0;
  el.dataset.state = state;
  el.dataset.pct = String(pct);
  el.dataset.attempts = String(job?.attempts ?? 0);
  el.querySelector('.title').textContent = entry.title;
  el.querySelector('.sql').textContent = entry.sql;
  const label = {
    loading: 'loading…', gone: 'no longer kept by Herald',
    queued: job?.attempts > 0 ? 'queued again (its worker stopped)' : 'queued', running: 'running',
    succeeded: 'done', failed: 'failed', dead: 'failed (out of attempts)', cancelled: 'cancelled',
  }[state] ?? state;
  const stateEl = el.querySelector('.state');
  stateEl.textContent = label;
  stateEl.className = `state ${state}`;
  el.querySelector('.attempts').textContent = job && job.attempts > 1 ? `attempt ${job.attempts}` : '';
  const bar = el.querySelector('progress');
  bar.value = pct;
  bar.hidden = FINISHED.has(state) && state !== 'succeeded';
  const progress = job?.progress;
  el.querySelector('.pct').textContent = state === 'running'
    ? `${pct}%${progress?.steps ? ` · month ${progress.step} of ${progress.steps}, ${progress.rows} row(s) so far` : ''}`
    : state === 'succeeded' ? '100%' : '';
  el.querySelector('.error').textContent = job?.error ? String(job.error) : '';
  const result = el.querySelector('.result');
  if (state === 'succeeded' && job.result && !result.firstChild) result.append(table(job.result));
}

function table({ columns = [], rows = [], row_count: count, truncated }) {
  const t = document.createElement('table');
  const head = t.createTHead().insertRow();
  for (const c of columns) head.append(Object.assign(document.createElement('th'), { textContent: c }));
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const v of row) {
      const td = tr.insertCell();
      td.textContent = v === null ? 'NULL' : String(v);
      if (typeof v === 'number') td.className = 'num';
    }
  }
  const caption = t.createCaption();
  caption.textContent = `${count} row${count === 1 ? '' : 's'}${truncated ? ` (first ${rows.length} shown)` : ''}`;
  return t;
}
