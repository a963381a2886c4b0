// mqtt.js - a small MQTT 3.1.1 client over WebSocket, for midge's browser page.
//
// No dependencies: it runs in any browser and, given a WebSocket class such as the `ws`
// package's (option `WebSocket`), in Node. One MQTT connection per MqttClient object:
//
//   import { MqttClient } from './mqtt.js';
//   const c = new MqttClient('ws://broker:9001/mqtt', { clientId: 'me', keepalive: 60 });
//   c.on('message', (topic, payload, packet) => console.log(topic, utf8(payload)));
//   await c.connect();                       // resolves on CONNACK 0; rejects otherwise
//   await c.subscribe('sensors/#', 1);       // resolves to the granted QoS (0x80 = refused)
//   await c.publish('a/b', 'hello', { qos: 2, retain: true }); // resolves when acknowledged
//   c.end();                                 // DISCONNECT, then close
//
// Events (c.on(name, fn)): 'connect' (connack), 'message' (topic, payload Uint8Array,
// packet {qos, retain, dup, id}), 'close' ({code, reason, error}), 'error' (Error),
// 'packet' (type name, packet) for every packet received (handy for logs and tests).
//
// The protocol, section by section of the MQTT 3.1.1 specification:
//   2.2.3  remaining length: 1-4 bytes of 7 bits, least significant first.
//   1.5.3  strings: 2-byte big-endian length, then UTF-8.
//   3.1    CONNECT: protocol "MQTT" level 4 ("MQIsdp" level 3 with protocolVersion 3),
//          flags user/pass/will retain/will QoS/will/clean session, keep alive, payload.
//   3.3-7  PUBLISH and its QoS 1 (PUBACK) and QoS 2 (PUBREC, PUBREL, PUBCOMP) handshakes,
//          in both directions. Incoming QoS 2 messages are delivered once, on PUBLISH; the
//          packet id is remembered until PUBREL so that a DUP resend is not delivered again.
//   3.8-11 SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK.
//   3.12   PINGREQ when nothing was sent for keepalive seconds; the connection is closed
//          when the PINGRESP does not come within another keepalive period.
// A WebSocket message may hold part of a packet or several packets (MQTT over WebSocket,
// section 6): received bytes are buffered and cut into packets by their length.

export const PACKET = Object.freeze({
  CONNECT: 1, CONNACK: 2, PUBLISH: 3, PUBACK: 4, PUBREC: 5, PUBREL: 6, PUBCOMP: 7,
  SUBSCRIBE: 8, SUBACK: 9, UNSUBSCRIBE: 10, UNSUBACK: 11, PINGREQ: 12, PINGRESP: 13,
  DISCONNECT: 14,
});
const NAMES = Object.fromEntries(Object.entries(PACKET).map(([k, v]) => [v, k]));

/** CONNACK return codes (3.2.2.3). */
export const CONNACK_CODES = Object.freeze({
  0: 'accepted',
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized (check the user name and password or key)',
});

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8');

/** Bytes of a string (UTF-8), an ArrayBuffer, a typed array, or null (empty). */
export function toBytes(v) {
  if (v == null) return new Uint8Array(0);
  if (typeof v === 'string') return encoder.encode(v);
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return encoder.encode(String(v));
}

/** UTF-8 text of bytes (invalid sequences become U+FFFD). */
export function utf8(bytes) {
  return decoder.decode(bytes);
}

/** True when filter (with + and #) matches topic (4.7). $-topics need a $-prefixed filter. */
export function topicMatches(filter, topic) {
  if (topic.startsWith('$') && !filter.startsWith('$')) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/** A growable byte writer. */
class Writer {
  constructor() { this.parts = []; this.length = 0; }
  byte(b) { this.bytes(Uint8Array.of(b)); return this; }
  u16(n) { this.bytes(Uint8Array.of(n >> 8, n & 0xff)); return this; }
  bytes(u8) { this.parts.push(u8); this.length += u8.length; return this; }
  /** 2-byte length prefix, then the bytes (strings as UTF-8). */
  field(v) {
    const b = toBytes(v);
    if (b.length > 0xffff) throw new RangeError('string or field longer than 65535 bytes');
    return this.u16(b.length).bytes(b);
  }
  concat() {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    return out;
  }
}

function remainingLength(n) {
  if (n > 268435455) throw new RangeError('packet too large for MQTT (256 MB)');
  const out = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    out.push(d);
  } while (n > 0);
  return Uint8Array.from(out);
}

/** A whole packet: fixed header byte, remaining length, body. */
function packet(first, body) {
  const len = remainingLength(body.length);
  const out = new Uint8Array(1 + len.length + body.length);
  out[0] = first;
  out.set(len, 1);
  out.set(body, 1 + len.length);
  return out;
}

function validateTopic(topic, isFilter) {
  if (typeof topic !== 'string' || topic.length === 0) throw new TypeError('empty topic');
  if (topic.includes('\u0000')) throw new TypeError('topic contains U+0000');
  if (!isFilter && /[+#]/.test(topic)) throw new TypeError('wildcards (+ #) are not allowed in a topic name');
  if (isFilter) {
    const levels = topic.split('/');
    levels.forEach((l, i) => {
      if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) throw new TypeError('# must be the whole last level');
      if (l.includes('+') && l !== '+') throw new TypeError('+ must be a whole level');
    });
  }
}

export function encodeConnect(o) {
  const v3 = o.protocolVersion === 3;
  const w = new Writer();
  w.field(v3 ? 'MQIsdp' : 'MQTT').byte(v3 ? 3 : 4);
  let flags = 0;
  if (o.clean !== false) flags |= 0x02;
  if (o.will && o.will.topic) {
    flags |= 0x04 | ((o.will.qos & 3) << 3);
    if (o.will.retain) flags |= 0x20;
  }
  const hasUser = o.username != null && o.username !== '';
  const hasPass = hasUser && o.password != null && o.password !== '';
  if (hasUser) flags |= 0x80;
  if (hasPass) flags |= 0x40;
  w.byte(flags).u16(o.keepalive ?? 60);
  w.field(o.clientId ?? '');
  if (flags & 0x04) w.field(o.will.topic).field(o.will.payload);
  if (hasUser) w.field(o.username);
  if (hasPass) w.field(o.password);
  return packet(PACKET.CONNECT << 4, w.concat());
}

export function encodePublish(topic, payload, { qos = 0, retain = false, dup = false, id = 0 } = {}) {
  const t = toBytes(topic);
  const p = toBytes(payload);
  const body = new Uint8Array(2 + t.length + (qos ? 2 : 0) + p.length);
  body[0] = t.length >> 8; body[1] = t.length & 0xff;
  body.set(t, 2);
  let o = 2 + t.length;
  if (qos) { body[o] = id >> 8; body[o + 1] = id & 0xff; o += 2; }
  body.set(p, o);
  const first = (PACKET.PUBLISH << 4) | (dup ? 8 : 0) | ((qos & 3) << 1) | (retain ? 1 : 0);
  return packet(first, body);
}

function encodeAck(type, id, flags = 0) {
  return packet((type << 4) | flags, Uint8Array.of(id >> 8, id & 0xff));
}

export function encodeSubscribe(id, subs) {
  const w = new Writer().u16(id);
  for (const [filter, qos] of subs) w.field(filter).byte(qos & 3);
  return packet((PACKET.SUBSCRIBE << 4) | 2, w.concat());
}

export function encodeUnsubscribe(id, filters) {
  const w = new Writer().u16(id);
  for (const f of filters) w.field(f);
  return packet((PACKET.UNSUBSCRIBE << 4) | 2, w.concat());
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/**
 * Splits a byte stream into MQTT packets. push() bytes as they come; it returns the whole
 * packets now available as {type, flags, body}. Throws on a malformed length.
 */
export class PacketReader {
  constructor(maxPacket = 268435460) {
    this.chunks = [];
    this.length = 0;
    this.need = 0; // size of the packet being received, once its header is known
    this.headerLength = 0;
    this.maxPacket = maxPacket;
  }

  push(bytes) {
    if (bytes.length) { this.chunks.push(bytes); this.length += bytes.length; }
    const out = [];
    for (;;) {
      if (!this.need) {
        // Fixed header: type and flags, then 1-4 bytes of remaining length.
        const head = this._peek(5);
        if (head.length < 2) break;
        let len = 0, mul = 1, i = 1, done = false;
        for (; i < head.length; i++) {
          len += (head[i] & 0x7f) * mul;
          mul *= 128;
          if (!(head[i] & 0x80)) { done = true; i++; break; }
          if (i === 4) throw new Error('malformed remaining length');
        }
        if (!done) break; // the length itself is incomplete
        if (i + len > this.maxPacket) throw new Error('packet too large');
        this.need = i + len;
        this.headerLength = i;
      }
      if (this.length < this.need) break; // wait for the rest of this packet
      const all = this._take(this.need);
      out.push({ type: all[0] >> 4, flags: all[0] & 15, body: all.subarray(this.headerLength) });
      this.need = 0;
    }
    return out;
  }

  _peek(n) {
    const out = new Uint8Array(Math.min(n, this.length));
    let o = 0;
    for (const c of this.chunks) {
      if (o >= out.length) break;
      const k = Math.min(c.length, out.length - o);
      out.set(c.subarray(0, k), o);
      o += k;
    }
    return out;
  }

  _take(n) {
    let out;
    if (this.chunks[0].length >= n) {
      // The common case: the whole packet sits in the first chunk, no copy.
      out = this.chunks[0].subarray(0, n);
      const rest = this.chunks[0].subarray(n);
      if (rest.length) this.chunks[0] = rest; else this.chunks.shift();
    } else {
      out = new Uint8Array(n);
      let o = 0;
      let used = 0; // whole chunks consumed, removed at once below (shift() each is O(n²))
      while (o < n) {
        const c = this.chunks[used];
        const k = Math.min(c.length, n - o);
        out.set(k === c.length ? c : c.subarray(0, k), o);
        o += k;
        if (k === c.length) used++; else this.chunks[used] = c.subarray(k);
      }
      this.chunks.splice(0, used);
    }
    this.length -= n;
    return out;
  }
}

const u16 = (b, o) => (b[o] << 8) | b[o + 1];

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/**
 * Options: clientId (default random 'web-xxxxxxxx'), username, password, keepalive
 * (seconds, default 60, 0 = off), clean (default true), will {topic, payload, qos, retain},
 * protocolVersion (4 = MQTT 3.1.1, default; 3 = MQTT 3.1 "MQIsdp"), protocols (WebSocket
 * subprotocols, default ['mqtt'], or ['mqttv3.1'] with protocolVersion 3), connectTimeout
 * (ms, default 10000), WebSocket (constructor; default globalThis.WebSocket).
 */
export class MqttClient {
  constructor(url, options = {}) {
    this.url = url;
    this.options = {
      clientId: 'web-' + Math.random().toString(36).slice(2, 10),
      keepalive: 60,
      clean: true,
      protocolVersion: 4,
      connectTimeout: 10000,
      ...options,
    };
    if (!this.options.protocols) this.options.protocols = [this.options.protocolVersion === 3 ? 'mqttv3.1' : 'mqtt'];
    this.connected = false;
    this.ws = null;
    this.handlers = new Map();
    this.nextId = 1;
    this.pending = new Map(); // packet id -> {resolve, reject, kind, ...}
    this.incomingQos2 = new Set(); // ids of QoS 2 PUBLISH received, until PUBREL
    this.lastSent = 0;
    this.pingSentAt = 0;
    this.timer = null;
    this.stats = { sent: 0, received: 0, bytesSent: 0, bytesReceived: 0 };
  }

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return this;
  }

  off(event, fn) { this.handlers.get(event)?.delete(fn); return this; }

  _emit(event, ...args) {
    for (const fn of this.handlers.get(event) ?? []) {
      try { fn(...args); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }

  /** Opens the WebSocket and sends CONNECT. Resolves with the CONNACK; rejects with an
   *  Error whose .code is the CONNACK return code (or undefined for a network failure). */
  connect() {
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    if (!WS) return Promise.reject(new Error('no WebSocket implementation'));
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timeout);
        reject(err);
        this._close(err);
      };
      const timeout = setTimeout(() => fail(new Error('connect timed out')), this.options.connectTimeout);
      let ws;
      try {
        ws = new WS(this.url, this.options.protocols);
      } catch (e) {
        fail(e);
        return;
      }
      this.ws = ws;
      this.reader = new PacketReader();
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        this._send(encodeConnect(this.options));
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data === 'string') {
          const e = new Error('text frame received: MQTT uses binary frames');
          if (settled) this._close(e); else fail(e);
          return;
        }
        const bytes = new Uint8Array(ev.data);
        this.stats.bytesReceived += bytes.length;
        let packets;
        try {
          packets = this.reader.push(bytes);
        } catch (e) {
          if (settled) this._close(e); else fail(e);
          return;
        }
        for (const p of packets) {
          if (this.ws !== ws) return;
          if (!settled) {
            if (p.type !== PACKET.CONNACK || p.body.length < 2) { fail(new Error('expected CONNACK')); return; }
            const code = p.body[1];
            const connack = { sessionPresent: !!(p.body[0] & 1), returnCode: code };
            this._emit('packet', 'CONNACK', connack);
            if (code !== 0) {
              const e = new Error(`connection refused: ${CONNACK_CODES[code] ?? 'code ' + code}`);
              e.code = code;
              fail(e);
              return;
            }
            settled = true;
            clearTimeout(timeout);
            this.connected = true;
            this._startKeepalive();
            this._emit('connect', connack);
            resolve(connack);
            continue;
          }
          this._handle(p);
        }
      };
      ws.onerror = () => {
        // The close event that follows carries the details; a browser tells nothing more.
        if (!settled) fail(new Error(`cannot open WebSocket ${this.url}`));
      };
      ws.onclose = (ev) => {
        if (!settled) fail(new Error(`WebSocket closed before CONNACK (code ${ev.code})`));
        else this._close(null, ev);
      };
    });
  }

  /** Subscribes; resolves with the granted QoS (0x80 = refused by the broker). */
  async subscribe(filter, qos = 0) {
    validateTopic(filter, true);
    const id = this._allocId();
    const granted = await this._request(id, 'SUBACK', encodeSubscribe(id, [[filter, qos]]));
    return granted[0];
  }

  async unsubscribe(filter) {
    validateTopic(filter, true);
    const id = this._allocId();
    await this._request(id, 'UNSUBACK', encodeUnsubscribe(id, [filter]));
  }

  /** Publishes; QoS 0 resolves when written, QoS 1 on PUBACK, QoS 2 on PUBCOMP. */
  publish(topic, payload, { qos = 0, retain = false } = {}) {
    try {
      validateTopic(topic, false);
    } catch (e) {
      return Promise.reject(e);
    }
    if (!this.connected) return Promise.reject(new Error('not connected'));
    if (qos === 0) {
      this._send(encodePublish(topic, payload, { qos, retain }));
      return Promise.resolve();
    }
    const id = this._allocId();
    return this._request(id, qos === 1 ? 'PUBACK' : 'PUBREC', encodePublish(topic, payload, { qos, retain, id }))
      .then(() => (qos === 2 ? this._request(id, 'PUBCOMP', encodeAck(PACKET.PUBREL, id, 2)) : undefined));
  }

  /** Sends DISCONNECT (so no will is published) and closes the WebSocket. */
  end() {
    if (this.ws && this.connected) {
      try { this._send(packet(PACKET.DISCONNECT << 4, new Uint8Array(0))); } catch { /* closing anyway */ }
    }
    this._close(null, { code: 1000, reason: 'client disconnected' });
    try { this.ws?.close(1000); } catch { /* already closed */ }
  }

  // -- internals -------------------------------------------------------------------------

  _send(bytes) {
    if (!this.ws || this.ws.readyState !== 1) throw new Error('not connected');
    this.ws.send(bytes);
    this.lastSent = Date.now();
    this.stats.sent++;
    this.stats.bytesSent += bytes.length;
  }

  _allocId() {
    for (let i = 0; i < 65535; i++) {
      const id = this.nextId;
      this.nextId = this.nextId === 65535 ? 1 : this.nextId + 1;
      if (!this.pending.has(id)) return id;
    }
    throw new Error('no free packet identifier');
  }

  _request(id, expect, bytes) {
    if (!this.connected) return Promise.reject(new Error('not connected'));
    return new Promise((resolve, reject) => {
      this.pending.set(id, { expect, resolve, reject });
      try {
        this._send(bytes);
      } catch (e) {
        this.pending.delete(id);
        reject(e);
      }
    });
  }

  _settle(id, type, value) {
    const p = this.pending.get(id);
    if (!p || p.expect !== type) return false;
    this.pending.delete(id);
    p.resolve(value);
    return true;
  }

  _handle(p) {
    this.stats.received++;
    const b = p.body;
    switch (p.type) {
      case PACKET.PUBLISH: {
        const qos = (p.flags >> 1) & 3;
        const tlen = u16(b, 0);
        const topic = utf8(b.subarray(2, 2 + tlen));
        let o = 2 + tlen;
        const id = qos ? u16(b, o) : 0;
        if (qos) o += 2;
        const payload = b.subarray(o);
        const info = { topic, qos, retain: !!(p.flags & 1), dup: !!(p.flags & 8), id, payload };
        this._emit('packet', 'PUBLISH', info);
        if (qos === 1) this._send(encodeAck(PACKET.PUBACK, id));
        if (qos === 2) {
          const seen = this.incomingQos2.has(id);
          this.incomingQos2.add(id);
          this._send(encodeAck(PACKET.PUBREC, id));
          if (seen) return; // a resend of a message already delivered
        }
        this._emit('message', topic, payload, info);
        return;
      }
      case PACKET.PUBACK:
      case PACKET.PUBREC:
      case PACKET.PUBCOMP: {
        const id = u16(b, 0);
        this._emit('packet', NAMES[p.type], { id });
        this._settle(id, NAMES[p.type], undefined);
        return;
      }
      case PACKET.PUBREL: {
        const id = u16(b, 0);
        this._emit('packet', 'PUBREL', { id });
        this.incomingQos2.delete(id);
        this._send(encodeAck(PACKET.PUBCOMP, id));
        return;
      }
      case PACKET.SUBACK: {
        const id = u16(b, 0);
        const granted = Array.from(b.subarray(2));
        this._emit('packet', 'SUBACK', { id, granted });
        this._settle(id, 'SUBACK', granted);
        return;
      }
      case PACKET.UNSUBACK: {
        const id = u16(b, 0);
        this._emit('packet', 'UNSUBACK', { id });
        this._settle(id, 'UNSUBACK', undefined);
        return;
      }
      case PACKET.PINGRESP:
        this.pingSentAt = 0;
        this._emit('packet', 'PINGRESP', {});
        return;
      default:
        this._close(new Error(`unexpected packet type ${p.type} from the broker`));
    }
  }

  _startKeepalive() {
    const ka = this.options.keepalive * 1000;
    if (!ka) return;
    this.lastSent = Date.now();
    // Check often enough to send the PINGREQ within the keep alive period.
    this.timer = setInterval(() => {
      const now = Date.now();
      if (this.pingSentAt && now - this.pingSentAt > ka) {
        this._close(new Error('no PINGRESP from the broker'));
        return;
      }
      if (!this.pingSentAt && now - this.lastSent >= ka * 0.9) {
        this.pingSentAt = now;
        try { this._send(packet(PACKET.PINGREQ << 4, new Uint8Array(0))); } catch { /* closing */ }
      }
    }, Math.min(1000, ka / 4));
  }

  _close(error, ev) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    const wasConnected = this.connected;
    this.connected = false;
    clearInterval(this.timer);
    this.timer = null;
    this.pingSentAt = 0;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (ws.readyState === 0 || ws.readyState === 1) {
      try { ws.close(error ? 4000 : 1000); } catch { /* ignore */ }
    }
    const err = error ?? new Error('connection closed');
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.incomingQos2.clear();
    if (error && wasConnected) this._emit('error', error);
    if (wasConnected) this._emit('close', { code: ev?.code ?? 1006, reason: ev?.reason ?? '', error });
  }
}
