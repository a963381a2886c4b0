// admin.js - the page's admin view: the broker's admin API (/api/v1/, docs/admin.md) after an
// admin_user logs in. A live, sortable, filterable clients table with a kick button and a
// detail panel (offline sessions too), a retained-messages browser whose delete first shows
// how many messages the filter matches, and a publish form. The credentials stay in this
// page's memory only (never stored); every request says X-Requested-With so a wrong
// password never opens the browser's own login box, and comes from this page's origin, the
// only one the API accepts changes from.

import { $, el } from './dom.js';

const API = '/api/v1';

let auth = null; // "Basic ..." while logged in
let who = '';
let liveTimer = null;
let clientsCursor = null;
let clientRows = []; // the clients shown (data objects)
let sortKey = 'client_id';
let sortDir = 1;
let selectedId = null;
let retainedCursor = null;

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** One API request; resolves to the JSON answer, or throws ApiError with the API's sentence. */
async function api(method, path, body) {
  const headers = { 'X-Requested-With': 'midge-page', Accept: 'application/json' };
  if (auth) headers.Authorization = auth;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(API + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit', cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `the broker did not answer (${e.message})`);
  }
  let j = null;
  try { j = await r.json(); } catch { /* not JSON */ }
  if (!r.ok) throw new ApiError(r.status, j?.message || `HTTP ${r.status}`);
  return j;
}

/** HTTP Basic credentials of a UTF-8 user name and password. */
function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return 'Basic ' + btoa(bin);
}

const q = (params) => {
  const s = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null)).toString();
  return s ? `?${s}` : '';
};

function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return d.toLocaleString('en-GB', { hour12: false });
}

function fmtBytes(n) {
  const u = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
}

// ---------------------------------------------------------------------------------------
// Opening, logging in and out
// ---------------------------------------------------------------------------------------

function show(open) {
  $('#admin').hidden = !open;
  if (open) $('#admin').scrollIntoView({ block: 'start' });
  if (!open) stopLive();
  else if (auth) startLive();
}

function setLoggedIn(user) {
  who = user;
  $('#admin-login').hidden = !!user;
  $('#admin-main').hidden = !user;
  $('#admin-logout').hidden = !user;
  $('#admin-who').textContent = user ? `logged in as ${user} 已登入` : '';
  document.body.dataset.admin = user ? 'on' : 'off';
}

async function login(ev) {
  ev.preventDefault();
  const f = ev.target;
  const user = f.user.value.trim();
  const err = $('#admin-login-error');
  err.textContent = '';
  auth = basic(user, f.password.value);
  try {
    await api('GET', '/broker');
  } catch (e) {
    auth = null;
    err.textContent = e.message;
    return;
  }
  f.password.value = '';
  setLoggedIn(user);
  selectTab('clients');
}

function logout() {
  auth = null;
  stopLive();
  setLoggedIn('');
  $('#admin-clients tbody').replaceChildren();
  $('#admin-retained tbody').replaceChildren();
  $('#admin-detail').hidden = true;
}

/** A request failed: a lost login goes back to the form, anything else is shown where asked. */
function failed(e, where) {
  if (e.status === 401 || e.status === 403) {
    logout();
    $('#admin-login-error').textContent = e.message;
    return;
  }
  if (where) where.textContent = e.message;
}

function selectTab(name) {
  for (const t of document.querySelectorAll('#admin .tabs [role=tab]')) {
    t.setAttribute('aria-selected', String(t.dataset.tab === name));
  }
  for (const p of document.querySelectorAll('#admin [data-panel]')) p.hidden = p.dataset.panel !== name;
  if (name === 'clients') { loadClients(); startLive(); } else stopLive();
  if (name === 'retained') loadRetained();
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

function clientQuery(cursor) {
  return q({ limit: 200, prefix: $('#admin-client-filter').value, connected: $('#admin-client-state').value, cursor });
}

async function loadClients(more = false) {
  const status = $('#admin-client-count');
  try {
    const j = await api('GET', '/clients' + clientQuery(more ? clientsCursor : null));
    clientRows = more ? clientRows.concat(j.data) : j.data;
    clientsCursor = j.meta.hasnext ? j.meta.cursor : null;
    $('#admin-clients-more').hidden = !clientsCursor;
    status.textContent = `${j.meta.count} session${j.meta.count === 1 ? '' : 's'} 個工作階段` +
      (clientsCursor ? `, ${clientRows.length} shown 已顯示` : '');
    renderClients();
    if (selectedId && !clientRows.some((c) => c.client_id === selectedId)) $('#admin-detail').hidden = true;
  } catch (e) {
    failed(e, status);
  }
}

function renderClients() {
  const rows = [...clientRows].sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    if (x === y) return a.client_id < b.client_id ? -1 : 1;
    if (x == null) return 1;
    if (y == null) return -1;
    return (x < y ? -1 : 1) * sortDir;
  });
  for (const th of document.querySelectorAll('#admin-clients th[data-sort]')) {
    th.setAttribute('aria-sort', th.dataset.sort === sortKey ? (sortDir > 0 ? 'ascending' : 'descending') : 'none');
  }
  const tbody = $('#admin-clients tbody');
  tbody.replaceChildren(...rows.map((c) => {
    const kick = el('button', { type: 'button', class: 'small-btn danger', 'data-kick': '',
      title: c.connected ? 'Disconnect (its will is published) 中斷連線' : 'Remove the offline session 移除離線工作階段',
      text: c.connected ? 'Kick 踢除' : 'Remove 移除' });
    kick.addEventListener('click', (ev) => { ev.stopPropagation(); kickClick(kick, c); });
    const tr = el('tr', { 'data-client': c.client_id, class: [c.connected ? '' : 'offline', c.client_id === selectedId ? 'selected' : ''].join(' ').trim() || null },
      el('td', { class: 'mono', text: c.client_id, title: c.client_id }),
      el('td', {}, el('span', { class: `state${c.connected ? ' on' : ''}`, text: c.connected ? 'online' : 'offline' })),
      el('td', { class: 'mono opt', text: c.address ?? '–' }),
      el('td', { class: 'opt', text: c.username ?? '–' }),
      el('td', { class: 'opt', text: c.protocol ?? '–' }),
      el('td', { class: 'num opt2', text: String(c.messages_in) }),
      el('td', { class: 'num opt2', text: String(c.messages_out) }),
      el('td', { class: 'num opt', text: String(c.queued) }),
      el('td', { class: 'num opt', text: String(c.dropped) }),
      el('td', {}, kick));
    tr.addEventListener('click', () => showDetail(c.client_id));
    return tr;
  }));
}

/** Two clicks: the first arms the button for three seconds, the second acts. */
async function kickClick(btn, c) {
  if (!btn.classList.contains('armed')) {
    btn.classList.add('armed');
    btn.dataset.text = btn.textContent;
    btn.textContent = 'Sure? 確定?';
    setTimeout(() => { if (btn.isConnected && btn.classList.contains('armed')) { btn.classList.remove('armed'); btn.textContent = btn.dataset.text; } }, 3000);
    return;
  }
  btn.disabled = true;
  const id = encodeURIComponent(c.client_id);
  try {
    await api('DELETE', `/clients/${id}` + (c.connected ? '' : '?discard_session=1'));
    clientRows = clientRows.filter((x) => x.client_id !== c.client_id);
    renderClients();
    if (selectedId === c.client_id) $('#admin-detail').hidden = true;
    setTimeout(() => loadClients(), 300);
  } catch (e) {
    failed(e, $('#admin-client-count'));
    btn.disabled = false;
  }
}

async function showDetail(id) {
  selectedId = id;
  renderClients();
  const panel = $('#admin-detail');
  try {
    const { data: d } = await api('GET', `/clients/${encodeURIComponent(id)}`);
    $('#admin-detail-id').textContent = d.client_id;
    const fields = [
      ['State 狀態', d.connected ? `connected since ${fmtTime(d.connected_at)}` : `offline since ${fmtTime(d.disconnected_at)}`],
      ['Address 位址', d.address ?? '–'], ['Listener 監聽', d.listener ?? '–'], ['User 使用者', d.username ?? '–'],
      ['Protocol 協定', d.protocol ? `MQTT ${d.protocol}` : '–'], ['Keepalive', d.keepalive != null ? `${d.keepalive} s` : '–'],
      ['Session 工作階段', d.clean_session ? 'ends with the connection' : d.session_expiry == null ? 'never expires' : `expires ${d.session_expiry} s after disconnect`],
      ['Messages in/out 收/送', `${d.messages_in} / ${d.messages_out}`], ['Bytes in/out', `${fmtBytes(d.bytes_in)} / ${fmtBytes(d.bytes_out)}`],
      ['In flight 傳送中', `${d.inflight} (${fmtBytes(d.inflight_bytes)})`], ['Queued 佇列', `${d.queued} (${fmtBytes(d.queued_bytes)})`],
      ['Dropped 丟棄', String(d.dropped)], ['Will 遺囑', d.will_topic ? d.will_topic + (d.will_delayed ? ' (delayed)' : '') : '–'],
      ['Bridge', d.bridge ? 'yes' : 'no'],
    ];
    $('#admin-detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    $('#admin-detail-subs').replaceChildren(...(d.subscriptions.length ? d.subscriptions.map((s) => el('li', {
      text: `${s.filter}  QoS ${s.qos}${s.no_local ? ', no local' : ''}${s.retain_as_published ? ', retain as published' : ''}${s.subscription_id ? `, id ${s.subscription_id}` : ''}`,
    })) : [el('li', { class: 'muted', text: 'none 無' })]));
    panel.hidden = false;
  } catch (e) {
    failed(e, $('#admin-client-count'));
  }
}

function startLive() {
  stopLive();
  if (!$('#admin-live').checked || $('#admin').hidden || !auth) return;
  liveTimer = setInterval(() => {
    if (document.visibilityState === 'visible' && !$('[data-panel="clients"]').hidden) loadClients();
  }, 2000);
}

function stopLive() {
  if (liveTimer) clearInterval(liveTimer);
  liveTimer = null;
}

// ---------------------------------------------------------------------------------------
// Retained messages
// ---------------------------------------------------------------------------------------

function retainedFilter() { return $('#admin-retained-form').filter.value.trim() || '#'; }

async function loadRetained(more = false) {
  const status = $('#admin-retained-status');
  try {
    const j = await api('GET', '/retained' + q({ filter: retainedFilter(), limit: 100, cursor: more ? retainedCursor : null }));
    retainedCursor = j.meta.hasnext ? j.meta.cursor : null;
    $('#admin-retained-more').hidden = !retainedCursor;
    const rows = j.data.map((m) => el('tr', { 'data-topic': m.topic },
      el('td', { class: 'mono', text: m.topic, title: m.topic }),
      el('td', { class: 'num', text: fmtBytes(m.size) }),
      el('td', { class: 'num', text: String(m.qos) }),
      el('td', { class: 'opt', text: fmtTime(m.stored_at) }),
      el('td', { class: 'mono', text: !m.readable ? '(not readable by your ACL)' : m.payload != null ? m.payload + (m.truncated ? ' …' : '') : `[binary] ${m.payload_base64}` })));
    const tbody = $('#admin-retained tbody');
    if (more) tbody.append(...rows); else tbody.replaceChildren(...rows);
    status.textContent = j.meta.count != null ? `${j.meta.count} retained 則保留訊息` : `${tbody.children.length} shown 已顯示${retainedCursor ? ' (more 更多)' : ''}`;
  } catch (e) {
    failed(e, status);
  }
}

/** Delete: the dry run's count first, then the confirmation. */
async function deleteAsk() {
  const status = $('#admin-retained-status');
  const filter = retainedFilter();
  try {
    const j = await api('DELETE', '/retained' + q({ filter, dry_run: 1 }));
    const box = $('#admin-confirm');
    box.dataset.filter = filter;
    $('#admin-confirm-text').textContent = `${j.matched} retained message${j.matched === 1 ? '' : 's'} match ${filter} — delete? ${j.matched} 則符合，確定刪除？`;
    $('#admin-confirm-yes').disabled = j.matched === 0;
    box.hidden = false;
  } catch (e) {
    failed(e, status);
  }
}

async function deleteConfirm() {
  const box = $('#admin-confirm');
  const filter = box.dataset.filter;
  box.hidden = true;
  const status = $('#admin-retained-status');
  let total = 0;
  try {
    for (;;) { // one request deletes at most 10,000
      const j = await api('DELETE', '/retained' + q({ filter }));
      total += j.deleted;
      if (!j.remaining || !j.deleted) break;
    }
    await loadRetained();
    status.textContent = `Deleted ${total} retained message${total === 1 ? '' : 's'} under ${filter} 已刪除 ${total} 則`;
  } catch (e) {
    failed(e, status);
  }
}

// ---------------------------------------------------------------------------------------
// Publish
// ---------------------------------------------------------------------------------------

async function publish(ev) {
  ev.preventDefault();
  const f = ev.target;
  const out = $('#admin-publish-result');
  out.className = '';
  try {
    const j = await api('POST', '/publish', { topic: f.topic.value, payload: f.payload.value, qos: Number(f.qos.value), retain: f.retain.checked });
    out.textContent = `Published to ${j.topic}: ${j.delivered} receiver${j.delivered === 1 ? '' : 's'} 已送達 ${j.delivered}`;
  } catch (e) {
    out.className = 'error';
    failed(e, out);
  }
}

// ---------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------

$('#admin-open').addEventListener('click', () => show($('#admin').hidden));
$('#admin-close').addEventListener('click', () => show(false));
$('#admin-login').addEventListener('submit', login);
$('#admin-logout').addEventListener('click', logout);
for (const t of document.querySelectorAll('#admin .tabs [role=tab]')) t.addEventListener('click', () => selectTab(t.dataset.tab));
for (const th of document.querySelectorAll('#admin-clients th[data-sort]')) {
  th.addEventListener('click', () => {
    if (sortKey === th.dataset.sort) sortDir = -sortDir; else { sortKey = th.dataset.sort; sortDir = 1; }
    renderClients();
  });
}
let filterTimer = null;
$('#admin-client-filter').addEventListener('input', () => { clearTimeout(filterTimer); filterTimer = setTimeout(() => loadClients(), 250); });
$('#admin-client-state').addEventListener('change', () => loadClients());
$('#admin-live').addEventListener('change', startLive);
$('#admin-clients-more').addEventListener('click', () => loadClients(true));
$('#admin-detail-close').addEventListener('click', () => { $('#admin-detail').hidden = true; selectedId = null; renderClients(); });
$('#admin-retained-form').addEventListener('submit', (ev) => { ev.preventDefault(); $('#admin-confirm').hidden = true; loadRetained(); });
$('#admin-retained-delete').addEventListener('click', deleteAsk);
$('#admin-confirm-yes').addEventListener('click', deleteConfirm);
$('#admin-confirm-no').addEventListener('click', () => { $('#admin-confirm').hidden = true; });
$('#admin-retained-more').addEventListener('click', () => loadRetained(true));
$('#admin-publish').addEventListener('submit', publish);
if (new URLSearchParams(location.search).has('admin')) show(true);
setLoggedIn('');
