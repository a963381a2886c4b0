// app.js - midge's browser page: broker figures, an MQTT client, a topic tree and
// dashboard blocks, all over one MQTT connection (web/mqtt.js) to the broker that serves it.
//
// The connection goes to this page's own origin (ws://host:port/mqtt, wss:// over https)
// unless the query string says otherwise: ?host=H&port=P&path=/mqtt&tls=1&protocol=5 (4 =
// MQTT 3.1.1, the default; 5 = MQTT 5.0; 3 = MQTT 3.1). Nothing secret is stored: the
// password stays in memory; settings and blocks are kept in localStorage. With MQTT 5.0
// the page sends a Session Expiry Interval and User Properties, shows the properties of
// received messages and says every reason code in words.

import { MqttClient, topicMatches, utf8, reasonText, CONNACK_CODES, PACKET } from './mqtt.js';
import { $, el } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};

// ---------------------------------------------------------------------------------------
// Storage (localStorage may be unavailable, e.g. in private modes: then nothing persists)
// ---------------------------------------------------------------------------------------

const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem('midge.' + key);
      return v == null ? fallback : JSON.parse(v);
    } catch { return fallback; }
  },
  set(key, value) {
    try { localStorage.setItem('midge.' + key, JSON.stringify(value)); } catch { /* not persisted */ }
  },
};

// ---------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------

const nf = new Intl.NumberFormat('en-US');
function fmtCount(n) { return Number.isFinite(n) ? nf.format(n) : '–'; }
function fmtRate(n) { return Number.isFinite(n) ? (n >= 100 ? nf.format(Math.round(n)) : n.toFixed(1)) : '–'; }
function fmtBytes(n) {
  if (!Number.isFinite(n)) return '–';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(2) : String(n)) + ' ' + u[i];
}
function fmtUptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}
function fmtTime(t) { return new Date(t).toLocaleTimeString('en-GB', { hour12: false }); }

// MQTT 5 reason codes in Traditional Chinese, after the English words of reasonText().
const REASONS_ZH = {
  0x00: '成功', 0x01: '授予 QoS 1', 0x02: '授予 QoS 2', 0x04: '斷線並發布遺囑', 0x10: '沒有相符的訂閱者',
  0x11: '訂閱不存在', 0x18: '繼續驗證', 0x19: '重新驗證', 0x80: '未指明的錯誤', 0x81: '封包格式錯誤',
  0x82: '協定錯誤', 0x83: '實作特定錯誤', 0x84: '不支援的協定版本', 0x85: '客戶端識別碼無效',
  0x86: '使用者名稱或密碼錯誤', 0x87: '未授權', 0x88: '伺服器無法使用', 0x89: '伺服器忙碌', 0x8a: '已封鎖',
  0x8b: '伺服器關閉中', 0x8c: '驗證方法錯誤', 0x8d: '保持連線逾時', 0x8e: '工作階段被接管',
  0x8f: '主題篩選無效', 0x90: '主題名稱無效', 0x91: '封包識別碼使用中', 0x92: '找不到封包識別碼',
  0x93: '超過接收上限', 0x94: '主題別名無效', 0x95: '封包太大', 0x96: '訊息速率太高', 0x97: '超過配額',
  0x98: '管理操作', 0x99: '酬載格式無效', 0x9a: '不支援保留訊息', 0x9b: '不支援此 QoS',
  0x9c: '請改用其他伺服器', 0x9d: '伺服器已搬移', 0x9e: '不支援共享訂閱', 0x9f: '超過連線速率',
  0xa0: '超過最長連線時間', 0xa1: '不支援訂閱識別碼', 0xa2: '不支援萬用字元訂閱',
};
/** "0x87 not authorized 未授權", and the broker's reason string when it sent one. */
function reasonWords(code, why, type) {
  const zh = code === 0 && type === PACKET.DISCONNECT ? '正常斷線' : REASONS_ZH[code] ?? '';
  return `${reasonText(code, type)} ${zh}`.trim() + (why ? ` (${why})` : '');
}

/** Text for a payload: UTF-8 when it is printable text, else hex. Cut to max characters. */
function payloadText(bytes, max = 2000) {
  if (bytes.length === 0) return '';
  const head = bytes.length > max * 4 ? bytes.subarray(0, max * 4) : bytes;
  let text = utf8(head);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(text.slice(0, 512))) {
    text = Array.from(head.subarray(0, Math.ceil(max / 3)), (b) => b.toString(16).padStart(2, '0')).join(' ');
    return `[${fmtBytes(bytes.length)} binary] ${text}${bytes.length * 3 > max ? ' …' : ''}`;
  }
  if (text.length > max || head !== bytes) text = text.slice(0, max) + ` … [${fmtBytes(bytes.length)}]`;
  return text;
}

/**
 * A number from a payload: a plain number ("21.5"), a field of a form-encoded payload
 * ("field1=21.5&field2=60", ThingSpeak style) or of a JSON object. Without a field name the
 * first numeric field is used. NaN when there is none.
 */
function parseNumber(text, field) {
  const t = text.trim();
  if (!field && t !== '' && Number.isFinite(Number(t))) return Number(t);
  if (t.startsWith('{')) {
    try {
      const o = JSON.parse(t);
      const v = field ? o[field] : Object.values(o).find((x) => Number.isFinite(Number(x)));
      return v == null || v === '' ? NaN : Number(v);
    } catch { return NaN; }
  }
  if (t.includes('=')) {
    const params = new URLSearchParams(t);
    if (field) return params.has(field) && params.get(field).trim() !== '' ? Number(params.get(field)) : NaN;
    for (const v of params.values()) if (v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
    return NaN;
  }
  return field ? NaN : (t === '' ? NaN : Number(t));
}

// ---------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------

const form = $('#connect-form');
const statusEl = $('#status');
let client = null;
let wantConnected = false; // the user asked to be connected: reconnect after a drop
let retryDelay = 1000;
let retryTimer = null;
const activeSubs = new Map(); // filter -> granted QoS, for what this connection holds
let treeGranted = false;

function setStatus(text, cls) {
  statusEl.textContent = text;
  statusEl.className = 'pill ' + cls;
  document.body.dataset.state = cls;
}

function defaults() {
  const q = new URLSearchParams(location.search);
  const http = location.protocol === 'http:' || location.protocol === 'https:';
  const tls = q.has('tls') ? q.get('tls') === '1' : location.protocol === 'https:';
  return {
    host: q.get('host') || (http ? location.hostname : 'localhost'),
    port: q.get('port') || (http ? location.port || (tls ? '443' : '80') : '9001'),
    path: q.get('path') || '/mqtt',
    tls,
    protocol: ['3', '4', '5'].includes(q.get('protocol')) ? q.get('protocol') : null,
  };
}

/** MQTT 5.0 fields of the connection form show only when 5.0 is chosen. */
function showProtocolFields() {
  for (const l of form.querySelectorAll('[data-v5]')) l.hidden = form.protocol.value !== '5';
}

function initForm() {
  const d = defaults();
  const saved = store.get('connection', {});
  form.host.value = d.host;
  form.port.value = d.port;
  form.path.value = d.path;
  form.tls.checked = d.tls;
  form.protocol.value = d.protocol ?? String(saved.protocol ?? 4);
  form.sessionExpiry.value = saved.sessionExpiry ?? 0;
  showProtocolFields();
  form.clientId.value = saved.clientId || 'midge-web-' + Math.random().toString(36).slice(2, 8);
  form.username.value = saved.username || '';
  form.keepalive.value = saved.keepalive ?? 60;
  form.clean.checked = saved.clean ?? true;
  form.willTopic.value = saved.willTopic || '';
  form.willQos.value = saved.willQos ?? 0;
  form.willRetain.checked = !!saved.willRetain;
  form.willMessage.value = saved.willMessage || '';
}

function saveForm() {
  // The client id is kept only when it was typed for a persistent session.
  store.set('connection', {
    clientId: form.clean.checked ? undefined : form.clientId.value,
    username: form.username.value,
    keepalive: Number(form.keepalive.value),
    clean: form.clean.checked,
    protocol: Number(form.protocol.value),
    sessionExpiry: Number(form.sessionExpiry.value) || 0,
    willTopic: form.willTopic.value,
    willQos: Number(form.willQos.value),
    willRetain: form.willRetain.checked,
    willMessage: form.willMessage.value,
  });
}

function wsUrl() {
  let host = form.host.value.trim();
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`; // IPv6 literal
  let path = form.path.value.trim() || '/';
  if (!path.startsWith('/')) path = '/' + path;
  return `${form.tls.checked ? 'wss' : 'ws'}://${host}:${form.port.value}${path}`;
}

function currentUser() { return (client && client.options.username) || form.username.value.trim() || 'guest'; }
/** A block's topic with {user} replaced by the user name (or "guest" when anonymous). */
function resolveTopic(t) { return t.replaceAll('{user}', currentUser()); }

async function connect() {
  clearTimeout(retryTimer);
  if (client) { const old = client; client = null; old.end(); } // its close is not a drop
  saveForm();
  const url = wsUrl();
  $('#url').textContent = url;
  $('#connect-error').textContent = '';
  const opts = {
    clientId: form.clientId.value.trim(),
    username: form.username.value.trim() || undefined,
    password: form.password.value || undefined,
    keepalive: Number(form.keepalive.value) || 0,
    clean: form.clean.checked,
    protocolVersion: Number(form.protocol.value) || 4,
  };
  const v5 = opts.protocolVersion === 5;
  if (v5) opts.properties = { sessionExpiryInterval: Number(form.sessionExpiry.value) || undefined };
  if (form.willTopic.value.trim()) {
    opts.will = { topic: form.willTopic.value.trim(), payload: form.willMessage.value,
                  qos: Number(form.willQos.value), retain: form.willRetain.checked };
  }
  const c = new MqttClient(url, opts);
  client = c;
  wantConnected = true;
  setStatus('Connecting 連線中…', 'wait');
  $('#connect-btn').disabled = true;
  $('#disconnect-btn').disabled = false;
  c.on('message', onMessage);
  let said = null; // MQTT 5: the broker's DISCONNECT
  c.on('disconnect', (d) => { said = d; });
  c.on('close', (ev) => {
    if (client !== c) return;
    if (said) {
      // Some reasons are not cured by reconnecting: another connection has our client id,
      // we are banned, or sent to another server.
      if ([0x8a, 0x8e, 0x9c, 0x9d].includes(said.reasonCode)) wantConnected = false;
      onDisconnected(`Disconnected by the broker 代理人中斷連線: ${reasonWords(said.reasonCode, said.properties.reasonString, PACKET.DISCONNECT)}`);
    } else if (ev.error?.reasonCode) {
      onDisconnected(`${ev.error.message} · ${reasonWords(ev.error.reasonCode)}`); // we hung up, and told the broker why
    } else {
      onDisconnected(ev.error ? ev.error.message : `connection closed (${ev.code})`);
    }
  });
  try {
    await c.connect();
  } catch (e) {
    if (client !== c) return;
    client = null;
    const words = v5 ? reasonWords(e.code, e.reasonString) : `${CONNACK_CODES[e.code]} (${e.code})`;
    if (e.code === 4 || e.code === 5 || (v5 && (e.code === 0x86 || e.code === 0x87))) {
      // Refused: the broker wants (other) credentials. Ask, don't retry by ourselves.
      wantConnected = false;
      setStatus('Sign in 需要登入', 'off');
      $('#connect-btn').disabled = false;
      $('#disconnect-btn').disabled = true;
      $('#connect-error').textContent = words;
      askCredentials(words);
      return;
    }
    if (e.code) wantConnected = false; // other refusals are not cured by retrying
    onDisconnected(e.code ? `Refused 被拒: ${words}` : e.message);
    return;
  }
  retryDelay = 1000;
  $('#publish-v5').hidden = !c.v5;
  setStatus(c.v5 ? 'Connected 已連線 · 5.0' : 'Connected 已連線', 'on');
  renderBlocks(); // {user} in block topics follows the user name
  $('#connection-details').open = false;
  activeSubs.clear();
  renderSubs();
  await subscribeAll(c);
}

async function subscribeAll(c) {
  const jobs = [c.subscribe('$SYS/#', 0).catch(() => 0x80)];
  const tree = $('#tree-enabled').checked;
  jobs.push(tree ? c.subscribe('#', 0).catch(() => 0x80) : Promise.resolve(0x80));
  const [, hash] = await Promise.all(jobs);
  treeGranted = tree && hash < 0x80;
  for (const s of subscriptions) await subscribeOne(s);
  await subscribeBlocks();
}

/** Block topics need subscriptions of their own only when # was not granted. */
async function subscribeBlocks() {
  if (!client?.connected || treeGranted) return;
  for (const b of blocks) {
    const t = resolveTopic(b.topic);
    if (!activeSubs.has(t)) {
      try { activeSubs.set(t, await client.subscribe(t, 1)); } catch { /* not allowed */ }
    }
  }
}

function onDisconnected(reason) {
  $('#connect-btn').disabled = false;
  $('#disconnect-btn').disabled = !wantConnected;
  client = null;
  activeSubs.clear();
  renderSubs();
  if (wantConnected) {
    const s = Math.round(retryDelay / 1000);
    setStatus(`Reconnecting in ${s}s 重新連線…`, 'wait');
    $('#connect-error').textContent = reason;
    retryTimer = setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  } else {
    setStatus('Disconnected 未連線', 'off');
    if (reason) $('#connect-error').textContent = reason;
  }
}

function disconnect() {
  wantConnected = false;
  clearTimeout(retryTimer);
  const c = client;
  client = null;
  c?.end();
  onDisconnected('');
  $('#connection-details').open = true;
}

function askCredentials(why) {
  const dlg = $('#auth-dialog');
  const f = $('#auth-form');
  f.username.value = form.username.value;
  f.password.value = '';
  $('#auth-reason').textContent = form.username.value
    ? 'Wrong user name or password. 使用者名稱或密碼錯誤。'
    : 'This broker needs a user name and password. 此代理人需要使用者名稱和密碼。';
  $('#auth-code').textContent = why;
  dlg.onclose = () => {
    if (dlg.returnValue !== 'ok') return;
    form.username.value = f.username.value;
    form.password.value = f.password.value;
    f.password.value = '';
    connect();
  };
  dlg.returnValue = '';
  if (!dlg.open) dlg.showModal();
}

form.addEventListener('submit', (ev) => { ev.preventDefault(); connect(); });
form.protocol.addEventListener('change', showProtocolFields);
$('#disconnect-btn').addEventListener('click', disconnect);

// ---------------------------------------------------------------------------------------
// Incoming messages: one dispatcher for figures, tree, log and blocks
// ---------------------------------------------------------------------------------------

function onMessage(topic, payload, info) {
  if (topic.startsWith('$SYS/')) onSys(topic, payload);
  const text = payloadText(payload, 400);
  (topic.startsWith('$') ? sysTree : tree).update(topic, payload, text, info);
  logMessage(topic, payload, info);
  for (const b of blocks) if (resolveTopic(b.topic) === topic) b.view?.update(payload, info);
}

// ---------------------------------------------------------------------------------------
// Broker figures ($SYS)
// ---------------------------------------------------------------------------------------

const figs = {};
for (const f of document.querySelectorAll('[data-fig]')) {
  figs[f.dataset.fig] = { v: $('.v', f), line: $('polyline', f), hist: [] };
}
const sysNum = {};     // last integer value per $SYS topic suffix
const counterSeen = {}; // for rates computed from counters: {value, time}
const haveRateTopic = { in: false, out: false };

function setFig(name, text, num) {
  const f = figs[name];
  if (!f) return;
  f.v.textContent = text;
  if (f.line && Number.isFinite(num)) {
    f.hist.push(num);
    if (f.hist.length > 60) f.hist.shift();
    const max = Math.max(1, ...f.hist);
    const n = f.hist.length;
    f.line.setAttribute('points', f.hist.map((v, i) => `${n === 1 ? 100 : (i * 100) / (n - 1)},${19 - (v / max) * 18}`).join(' '));
  }
}

function counterRate(key, value, fig) {
  const now = performance.now();
  const prev = counterSeen[key];
  counterSeen[key] = { value, time: now };
  if (prev && now > prev.time && value >= prev.value) setFig(fig, fmtRate(((value - prev.value) * 1000) / (now - prev.time)), ((value - prev.value) * 1000) / (now - prev.time));
}

function onSys(topic, payload) {
  const key = topic.slice('$SYS/broker/'.length);
  const text = utf8(payload).trim();
  const n = Number(text);
  sysNum[key] = n;
  switch (key) {
    case 'version': $('#sys-version').textContent = text; break;
    case 'uptime': $('#sys-uptime').textContent = '· up ' + fmtUptime(parseInt(text, 10) || 0); break;
    case 'clients/connected': setFig('clients', fmtCount(n)); break;
    case 'sessions/count': setFig('sessions', fmtCount(n)); break;
    case 'clients/total': if (!('sessions/count' in sysNum)) setFig('sessions', fmtCount(n)); break;
    case 'publish/rate/received': haveRateTopic.in = true; setFig('inRate', fmtRate(n), n); break;
    case 'publish/rate/sent': haveRateTopic.out = true; setFig('outRate', fmtRate(n), n); break;
    case 'publish/messages/received':
      setFig('inTotal', fmtCount(n));
      if (!haveRateTopic.in) counterRate(key, n, 'inRate');
      break;
    case 'publish/messages/sent':
      setFig('outTotal', fmtCount(n));
      if (!haveRateTopic.out) counterRate(key, n, 'outRate');
      break;
    case 'subscriptions/count': setFig('subscriptions', fmtCount(n)); break;
    case 'retained messages/count': setFig('retained', fmtCount(n)); break;
    case 'bytes/received': setFig('bytesIn', fmtBytes(n)); break;
    case 'bytes/sent': setFig('bytesOut', fmtBytes(n)); break;
    case 'messages/queued': setFig('queued', fmtCount(n)); break;
    case 'publish/messages/dropped': setFig('dropped', fmtCount(n)); break;
    default:
      if (key.startsWith('bridge/')) onBridge(key.slice(7), n);
      break;
  }
}

// Bridges: one row per $SYS/broker/bridge/NAME/..., created when its first figure arrives.
const bridgeRows = new Map();
const BRIDGE_COLS = ['connected', 'messages/sent', 'messages/received', 'queued', 'dropped', 'reconnects'];
function onBridge(rest, n) {
  const col = BRIDGE_COLS.findIndex((c) => rest.endsWith('/' + c));
  if (col < 0) return;
  const name = rest.slice(0, rest.length - BRIDGE_COLS[col].length - 1);
  let row = bridgeRows.get(name);
  if (!row) {
    // Each figure carries its column's heading, which a phone shows above it (style.css).
    const heads = [...document.querySelectorAll('#bridges thead th')].map((th) => th.textContent);
    row = el('tr', { 'data-bridge': name }, el('td', { class: 'mono', text: name }),
      ...BRIDGE_COLS.map((_, i) => el('td', { text: '–', 'data-label': heads[i + 1] })));
    bridgeRows.set(name, row);
    $('#bridges tbody').append(row);
    $('#bridges').hidden = false;
  }
  const cell = row.children[col + 1];
  if (col === 0) {
    cell.textContent = n ? 'connected 已連線' : 'down 未連線';
    cell.className = n ? 'ok' : 'error';
  } else {
    cell.textContent = fmtCount(n);
  }
}

// ---------------------------------------------------------------------------------------
// Subscriptions and the message log (HiveMQ browser client style)
// ---------------------------------------------------------------------------------------

const COLORS = ['#0e7c86', '#d9480f', '#5f3dc4', '#2b8a3e', '#c2255c', '#1971c2', '#e67700', '#495057'];
let subscriptions = store.get('subscriptions', []); // [{filter, qos, color, id}]
// MQTT 5 Subscription Identifiers: one per subscription of the list, kept with it, so that
// a message shows which of them it came through.
for (const [i, s] of subscriptions.entries()) s.id ??= i + 1;
const nextSubId = () => Math.max(0, ...subscriptions.map((s) => s.id)) + 1;

async function subscribeOne(s) {
  if (!client?.connected) return;
  // Marked before the SUBACK: the retained messages right behind it belong in the log.
  if (!activeSubs.has(s.filter)) activeSubs.set(s.filter, s.qos);
  try {
    const opts = client.v5 ? { qos: s.qos, properties: { subscriptionIdentifier: s.id } } : s.qos;
    const g = await client.subscribe(s.filter, opts);
    activeSubs.set(s.filter, g);
  } catch (e) {
    activeSubs.set(s.filter, 0x80);
    $('#connect-error').textContent = e.message;
  }
  renderSubs();
}

function renderSubs() {
  const ul = $('#sub-list');
  ul.replaceChildren(...subscriptions.map((s) => {
    const g = activeSubs.get(s.filter);
    const refused = g >= 0x80;
    // MQTT 5 says why in its reason code ("0x87 not authorized"); 3.1.1 only that it refused.
    const state = g === undefined ? 'not active 未啟用' : !refused ? `QoS ${g}`
      : client?.v5 ? reasonWords(g) : 'refused 被拒';
    return el('li', { style: `--c:${s.color}`, 'data-filter': s.filter },
      el('span', { class: 'f', text: s.filter }),
      client?.v5 ? el('span', { class: 'badge muted', title: 'Subscription Identifier 訂閱識別碼', text: `id ${s.id}` }) : '',
      el('span', { class: refused ? 'badge bad' : 'badge', text: state }),
      el('button', { class: 'small-btn', type: 'button', title: 'Unsubscribe 取消訂閱', text: '✕',
        onclick: () => unsubscribe(s.filter) }));
  }));
}

async function unsubscribe(filter) {
  subscriptions = subscriptions.filter((s) => s.filter !== filter);
  store.set('subscriptions', subscriptions);
  activeSubs.delete(filter);
  renderSubs();
  // The broker keeps delivering what # still covers, but the log shows only subscribed topics.
  if (!client?.connected) return;
  await client.unsubscribe(filter).catch(() => {});
  // The page's own subscriptions share the broker's (one per filter): take them back.
  if (filter === '$SYS/#') await client.subscribe('$SYS/#', 0).catch(() => {});
  if (filter === '#' && $('#tree-enabled').checked) treeGranted = (await client.subscribe('#', 0).catch(() => 0x80)) < 0x80;
}

$('#subscribe-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const filter = f.filter.value.trim();
  const qos = Number(f.qos.value);
  if (!filter) return;
  let s = subscriptions.find((x) => x.filter === filter);
  if (s) s.qos = qos;
  else {
    s = { filter, qos, color: COLORS[subscriptions.length % COLORS.length], id: nextSubId() };
    subscriptions.push(s);
  }
  store.set('subscriptions', subscriptions);
  renderSubs();
  await subscribeOne(s);
});

/** Same bytes (a retained message sent again for an overlapping subscription). */
function sameBytes(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

let msgCount = 0;
const MAX_LOG = 200;
const lastRetained = new Map(); // topic -> payload of the last retained message logged
function logMessage(topic, payload, info) {
  // Only subscriptions this connection holds (or is asking for) show in the log.
  const s = subscriptions.find((x) => topicMatches(x.filter, topic) && activeSubs.has(x.filter) && !(activeSubs.get(x.filter) >= 0x80));
  if (!s) return;
  if (info.retain) {
    if (sameBytes(lastRetained.get(topic), payload)) return;
    lastRetained.set(topic, payload);
  } else lastRetained.delete(topic);
  msgCount++;
  const log = $('#msg-log');
  const li = el('li', { style: `--c:${s.color}`, 'data-topic': topic },
    el('div', { class: 'h' },
      el('span', { class: 't', text: topic }),
      el('span', { text: fmtTime(Date.now()) }),
      el('span', { text: `QoS ${info.qos}` }),
      info.retain ? el('span', { class: 'badge', text: 'retained 保留' }) : '',
      payload.length > 1000 ? el('span', { text: fmtBytes(payload.length) }) : ''),
    messageProps(info.properties),
    el('div', { class: 'p', text: payloadText(payload, 1000) }));
  log.prepend(li);
  while (log.childElementCount > MAX_LOG) log.lastElementChild.remove();
  $('#msg-empty').hidden = true;
  $('#msg-count').textContent = `(${nf.format(msgCount)})`;
}
/** MQTT 5: a message's User Properties, Content Type and Subscription Identifiers. */
function messageProps(p) {
  if (!p) return '';
  const items = [];
  if (p.subscriptionIdentifier) {
    const names = p.subscriptionIdentifier.map((id) => subscriptions.find((s) => s.id === id)?.filter ?? `#${id}`);
    items.push(el('span', { class: 'sid', title: names.join(', '), text: `sub id ${p.subscriptionIdentifier.join(', ')}` }));
  }
  if (p.contentType != null) items.push(el('span', { class: 'ct', text: `Content-Type: ${p.contentType}` }));
  for (const [k, v] of p.userProperties ?? []) items.push(el('span', { class: 'up', 'data-key': k }, el('b', { text: k }), `: ${v}`));
  return items.length ? el('div', { class: 'props' }, ...items) : '';
}

$('#msg-clear').addEventListener('click', () => {
  $('#msg-log').replaceChildren();
  msgCount = 0;
  $('#msg-count').textContent = '';
  $('#msg-empty').hidden = false;
});

// Publish
const pubForm = $('#publish-form');
pubForm.topic.value = store.get('publishTopic', '');
pubForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = $('#publish-result');
  const topic = pubForm.topic.value.trim();
  store.set('publishTopic', topic);
  if (!client?.connected) { out.textContent = 'Not connected 未連線'; return; }
  out.textContent = 'Sending 傳送中…';
  out.classList.remove('error');
  const qos = Number(pubForm.qos.value);
  const opts = { qos, retain: pubForm.retain.checked };
  if (client.v5) {
    const userProperties = [...$('#prop-rows').children]
      .map((row) => [row.querySelector('[name="propKey"]').value, row.querySelector('[name="propValue"]').value])
      .filter(([k, v]) => k !== '' || v !== '');
    opts.properties = { userProperties, contentType: pubForm.contentType.value || undefined };
  }
  try {
    const ack = await client.publish(topic, pubForm.message.value, opts);
    // MQTT 5: the PUBACK's or PUBREC's reason code, e.g. 0x10 when nobody subscribed.
    const rc = ack?.reasonCode ? ` · ${reasonWords(ack.reasonCode, ack.properties?.reasonString)}` : '';
    out.textContent = `Published ✓ 已出版 ${fmtTime(Date.now())}${rc}`;
  } catch (e) {
    out.classList.add('error');
    out.textContent = e.reasonCode ? `✗ ${reasonWords(e.reasonCode, e.reasonString)}` : e.message;
  }
});

/** One key/value row of User Properties in the publish form. */
function addPropRow(key = '', value = '') {
  const row = el('div', { class: 'kv' },
    el('input', { name: 'propKey', value: key, placeholder: 'key 名稱', 'aria-label': 'User Property name 屬性名稱', autocapitalize: 'off', spellcheck: 'false' }),
    el('input', { name: 'propValue', value, placeholder: 'value 值', 'aria-label': 'User Property value 屬性值', autocapitalize: 'off', spellcheck: 'false' }),
    el('button', { type: 'button', class: 'small-btn', title: 'Remove 移除', text: '✕', onclick: () => row.remove() }));
  $('#prop-rows').append(row);
  return row;
}
$('#prop-add').addEventListener('click', () => addPropRow().firstChild.focus());

// ---------------------------------------------------------------------------------------
// Topic tree (MQTT Explorer style). DOM updates are batched into animation frames.
// ---------------------------------------------------------------------------------------

class TopicTree {
  constructor(ul, countEl) {
    this.root = { children: new Map(), ul, depth: -1 };
    this.nodes = new Map(); // full topic -> node
    this.dirty = new Set();
    this.countEl = countEl;
    this.filter = '';
    this.frame = 0;
  }

  node(topic) {
    let n = this.nodes.get(topic);
    if (n) return n;
    const levels = topic.split('/');
    let parent = this.root;
    let full = '';
    levels.forEach((name, i) => {
      full = i ? `${full}/${name}` : name;
      let c = parent.children.get(name);
      if (!c) {
        c = this._create(parent, name, full, i);
        parent.children.set(name, c);
        this.nodes.set(full, c);
      }
      parent = c;
    });
    return parent;
  }

  _create(parent, name, full, depth) {
    const n = { name, full, depth, children: new Map(), payload: null, text: '', count: 0, retain: false, qos: 0, time: 0 };
    n.row = el('div', { class: 'row', role: 'treeitem' },
      el('span', { class: 'tw' }), el('span', { class: 'name', text: name === '' ? '(empty)' : name }));
    n.valEl = el('span', { class: 'val' });
    n.cntEl = el('span', { class: 'cnt' });
    n.row.append(n.valEl, n.cntEl);
    n.li = el('li', { 'data-topic': full }, n.row);
    n.row.addEventListener('click', (ev) => {
      if (n.children.size && (ev.target.classList.contains('tw') || n.payload === null)) {
        n.li.classList.toggle('collapsed');
      } else this.select(n);
    });
    if (!parent.ul) {
      parent.ul = el('ul', { role: 'group' });
      parent.li.append(parent.ul);
      parent.li.classList.add('has-kids');
    }
    // Keep siblings sorted by name.
    const after = [...parent.children.values()].filter((s) => s.name > name).sort((a, b) => (a.name < b.name ? -1 : 1))[0];
    parent.ul.insertBefore(n.li, after ? after.li : null);
    if (this.filter) n.li.hidden = !this._visible(n);
    return n;
  }

  update(topic, payload, text, info) {
    const n = this.node(topic);
    // A retained copy of the value already shown (overlapping subscriptions) is no news.
    if (info.retain && n.retain && sameBytes(n.payload, payload)) return;
    n.payload = payload;
    n.text = text;
    n.count++;
    n.retain = info.retain;
    n.qos = info.qos;
    n.props = info.properties;
    n.time = Date.now();
    this.dirty.add(n);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    for (const n of this.dirty) {
      n.valEl.textContent = n.text === '' && n.payload?.length === 0 ? '(empty)' : n.text.slice(0, 200);
      n.cntEl.textContent = n.count > 1 ? `${nf.format(n.count)} msgs` : n.retain ? 'retained' : '';
      n.row.classList.remove('flash');
      void n.row.offsetWidth; // restart the animation
      n.row.classList.add('flash');
      if (this.filter && !n.li.hidden !== this._visible(n)) this.applyFilter(this.filter);
      if (this.selected === n) this.select(n);
    }
    this.dirty.clear();
    if (this.countEl) this.countEl.textContent = `(${nf.format([...this.nodes.values()].filter((x) => x.payload).length)} topics 個主題)`;
  }

  select(n) {
    this.selected = n;
    const d = $('#topic-detail');
    d.hidden = false;
    const p = n.props ?? {};
    const props = [p.contentType != null ? `Content-Type: ${p.contentType}` : '', ...(p.userProperties ?? []).map(([k, v]) => `${k}: ${v}`)]
      .filter(Boolean).map((x) => x + '\n').join('');
    d.textContent = `${n.full}\nQoS ${n.qos}${n.retain ? ' · retained 保留' : ''} · ${n.count} msgs · ${fmtTime(n.time)} · ${fmtBytes(n.payload?.length ?? 0)}\n${props}\n${n.payload ? payloadText(n.payload, 20000) : ''}`;
    if (!n.full.startsWith('$')) pubForm.topic.value = n.full;
  }

  _visible(n) {
    if (n.full.toLowerCase().includes(this.filter)) return true;
    for (const c of n.children.values()) if (this._visible(c)) return true;
    return false;
  }

  applyFilter(text) {
    this.filter = text.trim().toLowerCase();
    for (const n of this.nodes.values()) n.li.hidden = this.filter ? !this._visible(n) : false;
  }

  setCollapsed(collapsed) {
    for (const n of this.nodes.values()) if (n.children.size) n.li.classList.toggle('collapsed', collapsed);
  }
}

const tree = new TopicTree($('#tree'), $('#topic-count'));
const sysTree = new TopicTree($('#sys-tree'));
tree.root.ul = $('#tree');
sysTree.root.ul = $('#sys-tree');
$('#topic-filter').addEventListener('input', (ev) => tree.applyFilter(ev.target.value));
$('#tree-collapse').addEventListener('click', () => tree.setCollapsed(true));
$('#tree-expand').addEventListener('click', () => tree.setCollapsed(false));
$('#tree-enabled').checked = store.get('treeEnabled', true);
$('#tree-enabled').addEventListener('change', async (ev) => {
  store.set('treeEnabled', ev.target.checked);
  if (!client?.connected) return;
  if (ev.target.checked) {
    treeGranted = (await client.subscribe('#', 0).catch(() => 0x80)) < 0x80;
  } else {
    await client.unsubscribe('#').catch(() => {});
    treeGranted = false;
    for (const s of subscriptions) await subscribeOne(s); // still wanted after # is gone
    await subscribeBlocks();
  }
});

// ---------------------------------------------------------------------------------------
// Dashboard blocks (Adafruit IO style), saved in localStorage
// ---------------------------------------------------------------------------------------

const DEFAULT_BLOCKS = [
  { id: 'led', type: 'toggle', title: 'RED LED', topic: '{user}/feeds/lights', on: 'ON', off: 'OFF', qos: 1, retain: true },
  { id: 'temp', type: 'gauge', title: 'Temperature 溫度', topic: '{user}/feeds/temperature', field: '', unit: '°C', min: 0, max: 50 },
  { id: 'temp-chart', type: 'chart', title: 'Temperature 溫度', topic: '{user}/feeds/temperature', field: '', unit: '°C' },
];
let blocks = store.get('blocks', null) ?? structuredClone(DEFAULT_BLOCKS);
let editing = null; // id of the block being edited

function saveBlocks() {
  store.set('blocks', blocks.map(({ view, ...b }) => b)); // eslint-disable-line no-unused-vars
}

function renderBlocks() {
  const box = $('#blocks');
  box.replaceChildren();
  for (const b of blocks) {
    const topic = resolveTopic(b.topic);
    const card = el('div', { class: `block ${b.type}`, 'data-block': b.id, 'data-type': b.type, 'data-topic': topic },
      el('header', {},
        el('span', { class: 'title', text: b.title || topic }),
        el('span', { class: 'tools' },
          el('button', { type: 'button', title: 'Edit 編輯', text: '✎', onclick: () => editBlock(b) }),
          el('button', { type: 'button', title: 'Remove 移除', text: '✕', onclick: () => removeBlock(b) }))),
      el('div', { class: 'topic', text: topic }));
    const body = el('div', { class: 'body' });
    card.append(body);
    b.view = VIEWS[b.type](b, body, topic);
    // Show the last value already known (e.g. a retained one) at once.
    const n = tree.nodes.get(topic);
    if (n?.payload) b.view.update(n.payload, { retain: n.retain });
    box.append(card);
  }
}

const VIEWS = {
  toggle(b, body, topic) {
    const state = el('span', { class: 'state', text: '–' });
    const sw = el('button', { class: 'switch', type: 'button', role: 'switch', 'aria-checked': 'false', 'aria-label': b.title || topic });
    let current = null;
    const show = (v, pending) => {
      current = v;
      sw.setAttribute('aria-checked', String(v === b.on));
      sw.classList.toggle('pending', !!pending);
      state.textContent = v ?? '–';
      sw.dataset.state = v ?? '';
    };
    sw.addEventListener('click', async () => {
      if (!client?.connected) { state.textContent = 'Not connected 未連線'; return; }
      const next = current === b.on ? b.off : b.on;
      show(next, true);
      try {
        await client.publish(topic, next, { qos: Number(b.qos ?? 1), retain: b.retain !== false });
        sw.classList.remove('pending');
      } catch (e) { state.textContent = e.message; }
    });
    body.append(sw, state);
    return { update(payload) { show(utf8(payload).trim()); } };
  },

  gauge(b, body) {
    const g = svg('svg', { class: 'gauge-svg', viewBox: '0 0 120 72' });
    g.append(
      svg('path', { class: 'track', d: 'M10 62 A50 50 0 0 1 110 62', fill: 'none', 'stroke-width': 11, pathLength: 100 }),
      svg('path', { class: 'bar', d: 'M10 62 A50 50 0 0 1 110 62', fill: 'none', 'stroke-width': 11, pathLength: 100, 'stroke-dasharray': '0 100' }));
    const val = svg('text', { x: 60, y: 58 });
    val.textContent = '–';
    const lo = svg('text', { class: 'lim', x: 10, y: 71 });
    const hi = svg('text', { class: 'lim', x: 110, y: 71 });
    lo.textContent = b.min; hi.textContent = b.max;
    g.append(val, lo, hi);
    body.append(g);
    return {
      update(payload) {
        const v = parseNumber(utf8(payload), b.field);
        if (!Number.isFinite(v)) return;
        const f = Math.max(0, Math.min(1, (v - Number(b.min)) / ((Number(b.max) - Number(b.min)) || 1)));
        g.querySelector('.bar').setAttribute('stroke-dasharray', `${f * 100} 100`);
        val.textContent = `${+v.toFixed(2)}${b.unit ? ' ' + b.unit : ''}`;
        g.dataset.value = v;
      },
    };
  },

  chart(b, body) {
    const points = [];
    const big = el('div', { class: 'big', text: '–' });
    const c = svg('svg', { class: 'chart-svg', viewBox: '0 0 300 100', preserveAspectRatio: 'none' });
    for (const y of [0, 50, 100]) c.append(svg('line', { class: 'grid', x1: 0, x2: 300, y1: y, y2: y }));
    const line = svg('polyline', { points: '' });
    const dot = svg('path', { class: 'dot', d: '' }); // zero-length, round caps: stays a circle
    c.append(line, dot);
    const legend = el('div', { class: 'chart-legend' }, el('span'), el('span'));
    body.append(big, c, legend);
    return {
      update(payload) {
        const v = parseNumber(utf8(payload), b.field);
        if (!Number.isFinite(v)) return;
        points.push({ t: Date.now(), v });
        if (points.length > 120) points.shift();
        // Scaled to the data, with a little room above and below.
        const vs = points.map((p) => p.v);
        const min = Math.min(...vs), max = Math.max(...vs);
        const pad = (max - min) * 0.1 || Math.abs(max) * 0.05 || 1;
        const lo = min - pad, hi = max + pad;
        const n = points.length;
        const xy = points.map((p, i) => [n === 1 ? 300 : (i * 300) / (n - 1), 100 - ((p.v - lo) / (hi - lo)) * 100]);
        line.setAttribute('points', xy.map((p) => p.join(',')).join(' '));
        dot.setAttribute('d', `M${xy[n - 1][0]} ${xy[n - 1][1]}h0`);
        big.textContent = `${+v.toFixed(2)}${b.unit ? ' ' + b.unit : ''}`;
        legend.firstChild.textContent = `${fmtTime(points[0].t)} · min ${+min.toFixed(2)} · max ${+max.toFixed(2)}`;
        legend.lastChild.textContent = `${n} pts`;
        c.dataset.count = n;
      },
    };
  },

  text(b, body) {
    const big = el('div', { class: 'big', text: '–' });
    body.append(big);
    return { update(payload) { big.textContent = payloadText(payload, 200); } };
  },
};

const blockForm = $('#block-form');
function showTypeFields() {
  for (const l of blockForm.querySelectorAll('[data-for]')) l.hidden = !l.dataset.for.split(' ').includes(blockForm.type.value);
}
blockForm.type.addEventListener('change', showTypeFields);
showTypeFields();

function editBlock(b) {
  editing = b.id;
  for (const k of ['type', 'title', 'topic', 'on', 'off', 'field', 'unit', 'min', 'max', 'qos']) {
    if (b[k] !== undefined && blockForm[k]) blockForm[k].value = b[k];
  }
  blockForm.retain.checked = b.retain !== false;
  showTypeFields();
  $('#block-editor').open = true;
  blockForm.title.focus();
}

function removeBlock(b) {
  if (!confirm(`Remove block "${b.title || b.topic}"? 移除此區塊？`)) return;
  blocks = blocks.filter((x) => x !== b);
  saveBlocks();
  renderBlocks();
}

blockForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = blockForm;
  const b = {
    id: editing || 'b' + Date.now().toString(36),
    type: f.type.value, title: f.title.value.trim(), topic: f.topic.value.trim(),
  };
  if (b.type === 'toggle') Object.assign(b, { on: f.on.value || 'ON', off: f.off.value || 'OFF', qos: Number(f.qos.value), retain: f.retain.checked });
  if (b.type === 'gauge' || b.type === 'chart') Object.assign(b, { field: f.field.value.trim(), unit: f.unit.value.trim() });
  if (b.type === 'gauge') Object.assign(b, { min: Number(f.min.value), max: Number(f.max.value) });
  const i = blocks.findIndex((x) => x.id === editing);
  if (i >= 0) blocks[i] = b; else blocks.push(b);
  editing = null;
  f.reset();
  showTypeFields();
  $('#block-editor').open = false;
  saveBlocks();
  renderBlocks();
  await subscribeBlocks();
});
$('#block-cancel').addEventListener('click', () => {
  editing = null;
  blockForm.reset();
  showTypeFields();
  $('#block-editor').open = false;
});

// ---------------------------------------------------------------------------------------
// Start: connect at once, anonymously unless a user name is remembered (the password is
// asked for when the broker refuses).
// ---------------------------------------------------------------------------------------

initForm();
renderSubs();
renderBlocks();
// Topics resolve {user} with the user name: re-render the blocks when it changes.
form.username.addEventListener('change', renderBlocks);
$('#msg-empty').hidden = false;
window.midge = { get client() { return client; }, tree, blocks: () => blocks }; // for the console and tests
connect();
