// harness.mjs - shared helpers for midge's WebSocket tests (node --test).
//
// startBroker() runs the real binary (MIDGE_BIN, default build/midge) on two ephemeral
// loopback listeners, one `protocol websockets` and one plain MQTT (TCP), and reads their
// ports from the "listening on 127.0.0.1:PORT" log lines. The WebSocket listener serves
// the browser page at /. With { tls: true } a third one, `protocol websockets` with a
// certificate (wss://), made for the run by `openssl` with a CA of its own.
//
// Environment:
//   MIDGE_BIN            broker binary under test
//   MIDGE_SANITIZE=ON    slower timeouts (sanitizer builds)
//   MIDGE_ARTIFACTS      where screenshots and logs go (default: $TMPDIR/midge-ws-artifacts)
//   MIDGE_WS_REFERENCE=mosquitto
//                        run Mosquitto 2.0 (/usr/sbin/mosquitto) instead of midge and serve
//                        web/ from a small static server in this process; the page is then
//                        opened as http://127.0.0.1:S/?port=<mosquitto's WebSocket port>.
//                        A development aid to tell midge bugs from test bugs.
//   MIDGE_WS_VERBOSE=1   copy the broker's log to stderr as it comes
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import mqtt from 'mqtt';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const REFERENCE = process.env.MIDGE_WS_REFERENCE || '';
export const MIDGE_BIN = process.env.MIDGE_BIN || path.join(ROOT, 'build', 'midge');
export const SLOW = /^(on|1|true|yes)$/i.test(process.env.MIDGE_SANITIZE || '') ? 3 : 1;
export const TIMEOUT = 5000 * SLOW;
export const ARTIFACTS = process.env.MIDGE_ARTIFACTS || path.join(os.tmpdir(), 'midge-ws-artifacts');

const SANITIZER_MARKERS = ['AddressSanitizer', 'LeakSanitizer', 'runtime error:'];

// mosquitto_sub processes still running: Broker.stop() ends them, so a test that failed
// before its own stop() reports instead of leaving node waiting on a reconnecting child.
const children = new Set();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls cond() until it returns something truthy; returns that or throws after timeout.
 *  what (a string, or an async function giving one) describes the condition. */
export async function waitFor(cond, what, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${typeof what === 'function' ? await what() : what}`);
    }
    await sleep(20);
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago (for a listener that must keep its
 *  port across a restart). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A Mosquitto-format password file line: user:$6$salt$sha512(password+salt). */
export function passwdLine(user, password) {
  const salt = crypto.randomBytes(12);
  const hash = crypto.createHash('sha512').update(password).update(salt).digest();
  return `${user}:$6$${salt.toString('base64')}$${hash.toString('base64')}`;
}

const MIME = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml', '.ico': 'image/x-icon' };

/** Reference mode only: serves web/ the way midge does (index.html at /, files at /<name>). */
function staticServer() {
  const dir = path.join(ROOT, 'web');
  const server = http.createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\/+/, '') || 'index.html';
    const file = path.join(dir, path.basename(name));
    if (!fs.existsSync(file)) { res.writeHead(404).end('not found\n'); return; }
    res.writeHead(200, { 'Content-Type': MIME[path.extname(file)] || 'application/octet-stream' });
    res.end(fs.readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

class Broker {
  constructor() {
    this.lines = [];
    this.waiters = new Set();
    this.exited = null;
  }

  _spawn(cmd, args) {
    this.cmd = [cmd, ...args].join(' ');
    const env = { ...process.env };
    env.ASAN_OPTIONS ??= 'detect_leaks=1:abort_on_error=0';
    this.proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.exitPromise = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exited = { code, signal };
        this._notify();
        resolve(this.exited);
      });
    });
    this.proc.on('error', (e) => { this.lines.push(`spawn error: ${e.message}`); this._notify(); });
    for (const s of [this.proc.stdout, this.proc.stderr]) {
      let buf = '';
      s.setEncoding('utf8');
      s.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          this.lines.push(line);
          if (process.env.MIDGE_WS_VERBOSE) process.stderr.write(`[broker] ${line}\n`);
        }
        this._notify();
      });
    }
  }

  _notify() { for (const w of this.waiters) w(); }

  log() { return this.lines.join('\n'); }

  /** Waits for a log line matching re (from line index since); returns the match. */
  waitLog(re, timeout = TIMEOUT, since = 0) {
    return new Promise((resolve, reject) => {
      let i = since;
      const check = () => {
        for (; i < this.lines.length; i++) {
          const m = re.exec(this.lines[i]);
          if (m) { done(); resolve(m); return; }
        }
        if (this.exited) { done(); reject(new Error(`broker exited (${JSON.stringify(this.exited)}) before a log line matching ${re}; log:\n${this.log()}`)); }
      };
      const timer = setTimeout(() => { done(); reject(new Error(`no log line matching ${re} within ${timeout} ms; log:\n${this.log()}`)); }, timeout);
      const done = () => { clearTimeout(timer); this.waiters.delete(check); };
      this.waiters.add(check);
      check();
    });
  }

  /** SIGTERM, wait; the broker must exit 0 within 10 s with no sanitizer report. */
  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    for (const c of children) c.kill('SIGTERM');
    if (this.server) await new Promise((r) => this.server.close(r));
    if (!this.exited) this.proc.kill('SIGTERM');
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), 10000 * SLOW);
    const { code, signal } = await this.exitPromise;
    clearTimeout(killer);
    fs.rmSync(this.dir, { recursive: true, force: true });
    const text = this.log();
    for (const m of SANITIZER_MARKERS) {
      if (text.includes(m)) throw new Error(`sanitizer report in broker output:\n${text}`);
    }
    if (code !== 0) throw new Error(`broker exited with ${code ?? signal}; log:\n${text}`);
  }
}

function openssl(dir, args) {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 60000 });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
}

/** A CA and a server certificate for 127.0.0.1 / localhost in dir; returns the paths. */
export function makeCerts(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '30',
    '-subj', '/CN=midge ws test CA', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(dir, ['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']);
  fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  openssl(dir, ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', '1001',
    '-days', '30', '-out', 'server.crt', '-extfile', 'server.ext']);
  return { ca: path.join(dir, 'ca.crt'), cert: path.join(dir, 'server.crt'), key: path.join(dir, 'server.key') };
}

/**
 * Starts a broker. Options: conf (extra config lines), anonymous (default true),
 * sysInterval (seconds, default 1), users ({name: password}: writes a password file),
 * tls (also a wss:// listener).
 * Returns the Broker with .ws (WebSocket port), .tcp (MQTT port), .pageUrl, .wsUrl(path),
 * and with tls .wss (its port), .wssUrl(path) and .tlsOptions (the CA, for MQTT.js or ws).
 */
export async function startBroker({ conf = [], anonymous = true, sysInterval = 1, users = null, tls = false } = {}) {
  const b = new Broker();
  b.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'midge-ws-'));
  const common = [`allow_anonymous ${anonymous ? 'true' : 'false'}`, `sys_interval ${sysInterval}`];
  if (users) {
    const pw = path.join(b.dir, 'passwd');
    fs.writeFileSync(pw, Object.entries(users).map(([u, p]) => passwdLine(u, p)).join('\n') + '\n', { mode: 0o600 });
    common.push(`password_file ${pw}`);
  }
  const confPath = path.join(b.dir, 'broker.conf');
  if (REFERENCE) {
    if (REFERENCE !== 'mosquitto') throw new Error(`MIDGE_WS_REFERENCE=${REFERENCE}: only "mosquitto" is known`);
    const [ws, tcp] = [await freePort(), await freePort()];
    fs.writeFileSync(confPath, [`listener ${ws} 127.0.0.1`, 'protocol websockets', `listener ${tcp} 127.0.0.1`,
      // As root Mosquitto would switch to user mosquitto, who cannot read our temp files.
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      ...common, ...conf].join('\n') + '\n');
    b._spawn('/usr/sbin/mosquitto', ['-c', confPath, '-v']);
    await b.waitLog(new RegExp(`Opening websockets listen socket on port ${ws}`), 10000);
    await b.waitLog(new RegExp(`Opening ipv4 listen socket on port ${tcp}`), 10000);
    b.ws = ws;
    b.tcp = tcp;
    b.server = await staticServer();
    b.pageUrl = `http://127.0.0.1:${b.server.address().port}/?host=127.0.0.1&port=${ws}`;
  } else {
    if (!fs.existsSync(MIDGE_BIN)) throw new Error(`broker binary ${MIDGE_BIN} not found (set MIDGE_BIN)`);
    const wss = [];
    if (tls) {
      const c = makeCerts(b.dir);
      wss.push('listener 0 127.0.0.1', 'protocol websockets', `cafile ${c.ca}`, `certfile ${c.cert}`, `keyfile ${c.key}`);
      b.tlsOptions = { ca: fs.readFileSync(c.ca) };
    }
    fs.writeFileSync(confPath, ['listener 0 127.0.0.1', 'protocol websockets', ...wss, 'listener 0 127.0.0.1',
      ...common, ...conf].join('\n') + '\n');
    b._spawn(MIDGE_BIN, ['-c', confPath, '-v']);
    // One "listening on 127.0.0.1:PORT (KIND)" line per listener: "websockets",
    // "websockets over tls" or "mqtt".
    const re = /listening on 127\.0\.0\.1:(\d+) \(([^)]*)\)/;
    const ports = {};
    for (let since = 0, n = 0; n < (tls ? 3 : 2); n++) {
      const m = await b.waitLog(re, 10000 * SLOW, since);
      since = b.lines.findIndex((l, i) => i >= since && re.test(l)) + 1;
      ports[m[2]] = Number(m[1]);
    }
    b.ws = ports.websockets;
    b.tcp = ports.mqtt;
    b.wss = ports['websockets over tls'];
    b.pageUrl = `http://127.0.0.1:${b.ws}/`;
  }
  b.wsUrl = (p = '/mqtt') => `ws://127.0.0.1:${b.ws}${p}`;
  b.wssUrl = (p = '/mqtt') => `wss://127.0.0.1:${b.wss}${p}`;
  return b;
}

// ---------------------------------------------------------------------------------------
// MQTT.js
// ---------------------------------------------------------------------------------------

let idCounter = 0;
export const uid = (prefix = 'c') => `${prefix}-${process.pid}-${++idCounter}`;

/**
 * Connects an MQTT.js client and resolves once CONNACK arrived (client.connack is the
 * packet). Every received message is kept in client.received ({topic, payload Buffer, qos,
 * retain, properties (MQTT 5)}); client.waitMessages(n, filter) waits for n of them. Errors
 * after CONNACK are kept in client.errors.
 */
export function mqttConnect(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { clientId: uid('mqttjs'), reconnectPeriod: 0, connectTimeout: TIMEOUT, ...opts });
    c.received = [];
    c.on('message', (topic, payload, packet) => c.received.push({ topic, payload, qos: packet.qos, retain: packet.retain, properties: packet.properties }));
    c.waitMessages = (n, pred = () => true, timeout = TIMEOUT) =>
      waitFor(() => { const m = c.received.filter(pred); return m.length >= n && m; }, `${n} message(s) on ${c.options.clientId}`, timeout);
    // Only until CONNACK: later errors are kept in client.errors for the test to look at.
    c.errors = [];
    c.on('error', (e) => c.errors.push(e));
    const onError = (e) => { c.end(true); reject(e); };
    const onClose = () => reject(new Error('closed before CONNACK'));
    c.once('connect', (connack) => {
      c.connack = connack;
      c.removeListener('error', onError);
      c.removeListener('close', onClose);
      resolve(c);
    });
    c.once('error', onError);
    c.once('close', onClose);
  });
}

export const subscribe = (c, filter, qos = 0) => new Promise((resolve, reject) =>
  c.subscribe(filter, { qos }, (err, granted) => (err ? reject(err) : resolve(granted[0].qos))));

export const publish = (c, topic, payload, opts = {}) => new Promise((resolve, reject) =>
  c.publish(topic, payload, opts, (err) => (err ? reject(err) : resolve())));

export const end = (c) => new Promise((resolve) => c.end(false, {}, resolve));

// ---------------------------------------------------------------------------------------
// mosquitto_sub / mosquitto_pub over TCP
// ---------------------------------------------------------------------------------------

/**
 * mosquitto_sub -v on the TCP listener. .lines holds "topic payload" lines; ready resolves
 * once the SUBACK came back (from -d's debug output).
 */
export function tcpSubscriber(port, topic, { qos = 1, extra = [] } = {}) {
  // stdbuf: mosquitto_sub's stdout is a pipe here, and -d's lines must come out at once.
  const p = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-h', '127.0.0.1', '-p', String(port), '-t', topic, '-q', String(qos),
    '-v', '-d', '-i', uid('sub'), ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  const s = { proc: p, lines: [], debug: [], stderr: '' };
  let buf = '';
  p.stdout.setEncoding('utf8');
  p.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      (/^(Client \S+ (sending|received) |Subscribed \(mid)/.test(line) ? s.debug : s.lines).push(line);
    }
  });
  p.stderr.on('data', (d) => { s.stderr += d; });
  s.ready = waitFor(() => s.debug.some((l) => l.includes('received SUBACK')), 'mosquitto_sub SUBACK');
  s.waitLines = (n, timeout = TIMEOUT) => waitFor(() => s.lines.length >= n && s.lines, `${n} line(s) from mosquitto_sub; got ${JSON.stringify(s.lines)} ${s.stderr}`, timeout);
  children.add(p);
  p.on('exit', () => children.delete(p));
  s.stop = () => { if (p.exitCode === null) p.kill('SIGTERM'); };
  return s;
}

/** mosquitto_pub over TCP; args e.g. ['-t', 'a/b', '-m', 'x', '-q', '1', '-r']. */
export function tcpPublish(port, args) {
  const r = spawnSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-i', uid('pub'), ...args],
    { encoding: 'utf8', timeout: TIMEOUT * 2 });
  if (r.status !== 0) throw new Error(`mosquitto_pub ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
}
