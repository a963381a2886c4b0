// mqtt.js - a small MQTT 3.1, 3.1.1 and 5.0 client over WebSocket, for midge's browser page.
//
// No dependencies: it runs in any browser and, given a WebSocket class such as the `ws`
// package's (option `WebSocket`), in Node. One MQTT connection per MqttClient object:
//
//   import { MqttClient } from './mqtt.js';
//   const c = new MqttClient('ws://broker:9001/mqtt', { clientId: 'me', protocolVersion: 5 });
//   c.on('message', (topic, payload, info) => console.log(topic, utf8(payload), info.properties));
//   await c.connect();                       // resolves on success; rejects otherwise (err.code)
//   await c.subscribe('sensors/#', { qos: 1, noLocal: true }); // the granted QoS or reason code
//   await c.publish('a/b', 'hello', { qos: 2, properties: { userProperties: [['k', 'v']] } });
//   c.end();                                 // DISCONNECT, then close
//
// Events (c.on(name, fn)): 'connect' (connack), 'message' (topic, payload Uint8Array, info
// {topic, qos, retain, dup, id, payload, properties}), 'disconnect' ({reasonCode,
// properties}: the server's MQTT 5 DISCONNECT), 'close' ({code, reason, error, reasonCode,
// reasonString}), 'error' (Error), 'packet' (type name, packet) for every packet received.
//
// The protocol, section by section of the MQTT 3.1.1 specification:
//   2.2.3  remaining length: 1-4 bytes of 7 bits, least significant first.
//   1.5.3  strings: 2-byte big-endian length, then UTF-8 (received ones must be well-formed,
//          without U+0000; a BOM is kept as U+FEFF).
//   3.1    CONNECT: protocol "MQTT" level 4 ("MQIsdp" level 3 with protocolVersion 3),
//          flags user/pass/will retain/will QoS/will/clean session, keep alive, payload.
//   3.3-7  PUBLISH and its QoS 1 (PUBACK) and QoS 2 (PUBREC, PUBREL, PUBCOMP) handshakes,
//          in both directions. Incoming QoS 2 messages are delivered once, on PUBLISH; the
//          packet id is remembered until PUBREL so that a DUP resend is not delivered again.
//   3.8-11 SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK.
//   3.12   PINGREQ when nothing was sent for keepalive seconds; the connection is closed
//          when the PINGRESP does not come within another keepalive period.
// MQTT 5.0 (protocolVersion 5, "MQTT" level 5) adds, in the same code paths:
//   2.2.2  properties on every packet that has them, with the standard's rules: where each
//          may appear, which may repeat, their values (PROPS below). User Properties keep
//          their order: they are arrays of [name, value] pairs.
//   2.4    reason codes on CONNACK, the acknowledgements, SUBACK, UNSUBACK and DISCONNECT
//          (REASONS, reasonText); only those the standard allows in each packet.
//   3.2    the broker's CONNACK limits are kept: Receive Maximum (at most that many QoS 1
//          and 2 PUBLISH unacknowledged, the rest wait: 4.9), Maximum QoS, Retain Available
//          and Maximum Packet Size (a publish they forbid is refused here), Server Keep
//          Alive (replaces ours), Assigned Client Identifier (becomes clientId).
//   3.14   DISCONNECT with a reason code both ways; the broker's is reported ('disconnect',
//          'close').
//   4.13   a malformed packet or protocol error from the broker is answered with DISCONNECT
//          and its reason code (0x81, 0x82, ...), then the connection is closed.
//   Not supported: topic aliases (Topic Alias Maximum 0 is what we tell the broker) and
//   enhanced authentication (an Authentication Method may be sent, for brokers that accept
//   it in one step; an AUTH packet from the broker is a protocol error).
// A WebSocket message may hold part of a packet or several packets (MQTT over WebSocket,
// section 6): received bytes are buffered and cut into packets by their length.

export const PACKET = Object.freeze({
  CONNECT: 1, CONNACK: 2, PUBLISH: 3, PUBACK: 4, PUBREC: 5, PUBREL: 6, PUBCOMP: 7,
  SUBSCRIBE: 8, SUBACK: 9, UNSUBSCRIBE: 10, UNSUBACK: 11, PINGREQ: 12, PINGRESP: 13,
  DISCONNECT: 14, AUTH: 15,
});
const NAMES = Object.fromEntries(Object.entries(PACKET).map(([k, v]) => [v, k]));

/** CONNACK return codes of MQTT 3.1/3.1.1 (3.2.2.3). */
export const CONNACK_CODES = Object.freeze({
  0: 'accepted',
  1: 'unacceptable protocol version',
  2: 'identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorized (check the user name and password or key)',
});

/** MQTT 5 reason codes (2.4) in words. 0x00 also means "granted QoS 0" in SUBACK and
 *  "normal disconnection" in DISCONNECT (reasonText says so). */
export const REASONS = Object.freeze({
  0x00: 'success', 0x01: 'granted QoS 1', 0x02: 'granted QoS 2', 0x04: 'disconnect with will message',
  0x10: 'no matching subscribers', 0x11: 'no subscription existed', 0x18: 'continue authentication',
  0x19: 're-authenticate', 0x80: 'unspecified error', 0x81: 'malformed packet', 0x82: 'protocol error',
  0x83: 'implementation specific error', 0x84: 'unsupported protocol version',
  0x85: 'client identifier not valid', 0x86: 'bad user name or password', 0x87: 'not authorized',
  0x88: 'server unavailable', 0x89: 'server busy', 0x8a: 'banned', 0x8b: 'server shutting down',
  0x8c: 'bad authentication method', 0x8d: 'keep alive timeout', 0x8e: 'session taken over',
  0x8f: 'topic filter invalid', 0x90: 'topic name invalid', 0x91: 'packet identifier in use',
  0x92: 'packet identifier not found', 0x93: 'receive maximum exceeded', 0x94: 'topic alias invalid',
  0x95: 'packet too large', 0x96: 'message rate too high', 0x97: 'quota exceeded',
  0x98: 'administrative action', 0x99: 'payload format invalid', 0x9a: 'retain not supported',
  0x9b: 'QoS not supported', 0x9c: 'use another server', 0x9d: 'server moved',
  0x9e: 'shared subscriptions not supported', 0x9f: 'connection rate exceeded',
  0xa0: 'maximum connect time', 0xa1: 'subscription identifiers not supported',
  0xa2: 'wildcard subscriptions not supported',
});

/** "0x87 not authorized": a reason code and its words; type (PACKET.*) names 0x00. */
export function reasonText(code, type) {
  const words = code === 0 && type === PACKET.SUBACK ? 'granted QoS 0'
    : code === 0 && type === PACKET.DISCONNECT ? 'normal disconnection'
      : REASONS[code] ?? 'unknown reason code';
  return `0x${code.toString(16).toUpperCase().padStart(2, '0')} ${words}`;
}

// The reason codes a broker may send in each packet (3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1,
// 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1 without the client's 0x04).
const codes = (s) => new Set(s.split(' ').map((x) => parseInt(x, 16)));
const PUB_ACK_CODES = codes('00 10 80 83 87 90 91 97 99');
const REL_COMP_CODES = codes('00 92');
const SUBACK_311 = codes('00 01 02 80');
const ALLOWED = {
  [PACKET.CONNACK]: codes('00 80 81 82 83 84 85 86 87 88 89 8a 8c 90 95 97 99 9a 9b 9c 9d 9f'),
  [PACKET.PUBACK]: PUB_ACK_CODES, [PACKET.PUBREC]: PUB_ACK_CODES,
  [PACKET.PUBREL]: REL_COMP_CODES, [PACKET.PUBCOMP]: REL_COMP_CODES,
  [PACKET.SUBACK]: codes('00 01 02 80 83 87 8f 91 97 9e a1 a2'),
  [PACKET.UNSUBACK]: codes('00 11 80 83 87 8f 91'),
  [PACKET.DISCONNECT]: codes('00 80 81 82 83 87 89 8b 8d 8e 8f 90 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f a0 a1 a2'),
};

// MQTT 5 properties (2.2.2.2): identifier -> [name, type, where it may appear].
// Types: b byte 0 or 1, h two-byte integer, w four-byte integer, v variable byte integer,
// s UTF-8 string, d binary data, p UTF-8 string pair (User Property, may repeat).
// Where: C CONNECT, A CONNACK, P PUBLISH, W will, R PUBACK PUBREC PUBREL PUBCOMP,
// S SUBSCRIBE, s SUBACK, U UNSUBSCRIBE, u UNSUBACK, D DISCONNECT, X AUTH.
const PROPS = {
  0x01: ['payloadFormatIndicator', 'b', 'PW'],
  0x02: ['messageExpiryInterval', 'w', 'PW'],
  0x03: ['contentType', 's', 'PW'],
  0x08: ['responseTopic', 's', 'PW'],
  0x09: ['correlationData', 'd', 'PW'],
  0x0b: ['subscriptionIdentifier', 'v', 'PS'], // received ones: an array (a PUBLISH may hold several)
  0x11: ['sessionExpiryInterval', 'w', 'CAD'],
  0x12: ['assignedClientIdentifier', 's', 'A'],
  0x13: ['serverKeepAlive', 'h', 'A'],
  0x15: ['authenticationMethod', 's', 'CAX'],
  0x16: ['authenticationData', 'd', 'CAX'],
  0x17: ['requestProblemInformation', 'b', 'C'],
  0x18: ['willDelayInterval', 'w', 'W'],
  0x19: ['requestResponseInformation', 'b', 'C'],
  0x1a: ['responseInformation', 's', 'A'],
  0x1c: ['serverReference', 's', 'AD'],
  0x1f: ['reasonString', 's', 'ARsuDX'],
  0x21: ['receiveMaximum', 'h', 'CA'],
  0x22: ['topicAliasMaximum', 'h', 'CA'],
  0x23: ['topicAlias', 'h', 'P'],
  0x24: ['maximumQoS', 'b', 'A'],
  0x25: ['retainAvailable', 'b', 'A'],
  0x26: ['userProperties', 'p', 'CAPWRSsUuDX'],
  0x27: ['maximumPacketSize', 'w', 'CA'],
  0x28: ['wildcardSubscriptionAvailable', 'b', 'A'],
  0x29: ['subscriptionIdentifiersAvailable', 'b', 'A'],
  0x2a: ['sharedSubscriptionAvailable', 'b', 'A'],
};
const PROP_IDS = Object.fromEntries(Object.entries(PROPS).map(([id, [name]]) => [name, Number(id)]));
const NONZERO = new Set([0x0b, 0x21, 0x23, 0x27]); // a value of 0 is a protocol error

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8');
const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

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

/** An Error carrying the MQTT 5 reason code that describes it (err.reasonCode). */
function mqttError(reasonCode, message) {
  const e = new Error(message);
  e.reasonCode = reasonCode;
  return e;
}
const malformed = (what) => mqttError(0x81, `malformed packet from the broker: ${what}`);
const protocolError = (what) => mqttError(0x82, `protocol error by the broker: ${what}`);

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/** A variable byte integer (1.5.5) in its shortest form. */
function varint(n) {
  if (!Number.isInteger(n) || n < 0 || n > 268435455) throw new RangeError(`${n} does not fit a variable byte integer`);
  const out = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    out.push(d);
  } while (n > 0);
  return Uint8Array.from(out);
}

/** A growable byte writer. */
class Writer {
  constructor() { this.parts = []; this.length = 0; }
  byte(b) { return this.bytes(Uint8Array.of(b)); }
  u16(n) { return this.bytes(Uint8Array.of(n >> 8, n & 0xff)); }
  u32(n) { return this.bytes(Uint8Array.of(n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)); }
  bytes(u8) { this.parts.push(u8); this.length += u8.length; return this; }
  /** 2-byte length prefix, then the bytes (strings as UTF-8). */
  field(v) {
    const b = toBytes(v);
    if (b.length > 0xffff) throw new RangeError('string or field longer than 65535 bytes');
    return this.u16(b.length).bytes(b);
  }
  /** An MQTT 5 property block with its length; where is a letter of PROPS. */
  props(where, props) {
    const block = encodeProps(where, props);
    return this.bytes(varint(block.length)).bytes(block);
  }
  concat() {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    return out;
  }
}

/** User Properties as [name, value] pairs, from pairs or from an object ({k: v or [v...]}). */
function pairs(v) {
  if (Array.isArray(v)) return v;
  return Object.entries(v).flatMap(([k, x]) => (Array.isArray(x) ? x.map((y) => [k, y]) : [[k, x]]));
}

/** The property block (without its length) of props ({name: value}) in a packet `where`.
 *  Throws TypeError/RangeError for a property or value the standard does not allow there. */
function encodeProps(where, props = {}) {
  const w = new Writer();
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null) continue;
    const id = PROP_IDS[name];
    if (!id || !PROPS[id][2].includes(where)) throw new TypeError(`property ${name} is not allowed here`);
    const type = PROPS[id][1];
    for (const v of type === 'p' ? pairs(value) : [value]) {
      w.byte(id);
      if (type === 's' || type === 'p') {
        for (const s of type === 'p' ? v : [v]) {
          if (typeof s !== 'string' || s.includes('\u0000')) throw new TypeError(`${name}: a string without U+0000 expected`);
          w.field(s);
        }
        continue;
      }
      if (type === 'd') { w.field(v); continue; }
      const n = Number(v); // booleans are 0/1
      const max = { b: 1, h: 0xffff, w: 0xffffffff, v: 268435455 }[type];
      if (!Number.isInteger(n) || n < 0 || n > max || (n === 0 && NONZERO.has(id))) throw new RangeError(`${name}: ${v} is not allowed`);
      if (type === 'b') w.byte(n); else if (type === 'h') w.u16(n); else if (type === 'w') w.u32(n); else w.bytes(varint(n));
    }
  }
  return w.concat();
}

/** A whole packet: fixed header byte, remaining length, body. */
function packet(first, body) {
  const len = varint(body.length);
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

/** CONNECT from the client's options (see MqttClient). */
export function encodeConnect(o) {
  const version = o.protocolVersion === 3 || o.protocolVersion === 5 ? o.protocolVersion : 4;
  const v5 = version === 5;
  const w = new Writer();
  w.field(version === 3 ? 'MQIsdp' : 'MQTT').byte(version);
  let flags = 0;
  if (o.clean !== false) flags |= 0x02;
  if (o.will && o.will.topic) {
    validateTopic(o.will.topic, false);
    flags |= 0x04 | ((o.will.qos & 3) << 3);
    if (o.will.retain) flags |= 0x20;
  }
  const hasUser = o.username != null && o.username !== '';
  const hasPass = (hasUser || v5) && o.password != null && o.password !== ''; // 5.0 allows a password alone
  if (hasUser) flags |= 0x80;
  if (hasPass) flags |= 0x40;
  w.byte(flags).u16(o.keepalive ?? 60);
  if (v5) w.props('C', o.properties);
  w.field(o.clientId ?? '');
  if (flags & 0x04) {
    if (v5) w.props('W', o.will.properties);
    w.field(o.will.topic).field(o.will.payload);
  }
  if (hasUser) w.field(o.username);
  if (hasPass) w.field(o.password);
  return packet(PACKET.CONNECT << 4, w.concat());
}

/** PUBLISH; version 5 adds the property block (properties, as in PROPS). */
export function encodePublish(topic, payload, { qos = 0, retain = false, dup = false, id = 0, version = 4, properties } = {}) {
  const w = new Writer().field(topic);
  if (qos) w.u16(id);
  if (version === 5) {
    if (properties?.topicAlias || properties?.subscriptionIdentifier) {
      throw new TypeError('topic aliases and subscription identifiers are not sent by this client'); // [MQTT-3.3.4-6]
    }
    if (properties?.responseTopic != null) validateTopic(properties.responseTopic, false); // [MQTT-3.3.2-14]
    w.props('P', properties);
  }
  w.bytes(toBytes(payload));
  const first = (PACKET.PUBLISH << 4) | (dup ? 8 : 0) | ((qos & 3) << 1) | (retain ? 1 : 0);
  return packet(first, w.concat());
}

/** PUBACK, PUBREC, PUBREL (flags 2), PUBCOMP; with MQTT 5 a reason code when not 0. */
function encodeAck(type, id, reasonCode = 0) {
  const flags = type === PACKET.PUBREL ? 2 : 0;
  const body = reasonCode ? Uint8Array.of(id >> 8, id & 0xff, reasonCode) : Uint8Array.of(id >> 8, id & 0xff);
  return packet((type << 4) | flags, body);
}

/** SUBSCRIBE: subs are [filter, {qos, noLocal, retainAsPublished, retainHandling}]. */
export function encodeSubscribe(id, subs, version = 4, properties) {
  const w = new Writer().u16(id);
  if (version === 5) w.props('S', properties);
  for (const [filter, o] of subs) {
    let opts = o.qos & 3;
    if (version === 5) {
      if (o.noLocal && filter.startsWith('$share/')) throw new TypeError('No Local on a shared subscription'); // [MQTT-3.8.3-4]
      if (o.retainHandling != null && ![0, 1, 2].includes(o.retainHandling)) throw new RangeError('retainHandling is 0, 1 or 2');
      opts |= (o.noLocal ? 4 : 0) | (o.retainAsPublished ? 8 : 0) | ((o.retainHandling ?? 0) << 4);
    }
    w.field(filter).byte(opts);
  }
  return packet((PACKET.SUBSCRIBE << 4) | 2, w.concat());
}

export function encodeUnsubscribe(id, filters, version = 4, properties) {
  const w = new Writer().u16(id);
  if (version === 5) w.props('U', properties);
  for (const f of filters) w.field(f);
  return packet((PACKET.UNSUBSCRIBE << 4) | 2, w.concat());
}

/** DISCONNECT: empty in 3.x and for MQTT 5's normal disconnection without properties. */
export function encodeDisconnect(version = 4, reasonCode = 0, properties) {
  if (version !== 5) return packet(PACKET.DISCONNECT << 4, new Uint8Array(0));
  const block = encodeProps('D', properties);
  if (!block.length) return packet(PACKET.DISCONNECT << 4, reasonCode ? Uint8Array.of(reasonCode) : new Uint8Array(0));
  return packet(PACKET.DISCONNECT << 4, new Writer().byte(reasonCode).bytes(varint(block.length)).bytes(block).concat());
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/**
 * Splits a byte stream into MQTT packets. push() bytes as they come; it returns the whole
 * packets now available as {type, flags, body}. Throws (err.reasonCode 0x81) on a malformed
 * length, or one not in its shortest form when `minimal` (MQTT 5), and (0x95) on a packet
 * larger than maxPacket.
 */
export class PacketReader {
  constructor(maxPacket = 268435460, minimal = false) {
    this.chunks = [];
    this.length = 0;
    this.need = 0; // size of the packet being received, once its header is known
    this.headerLength = 0;
    this.maxPacket = maxPacket;
    this.minimal = minimal;
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
          if (!(head[i] & 0x80)) {
            if (this.minimal && i > 1 && head[i] === 0) throw malformed('remaining length not in its shortest form');
            done = true;
            i++;
            break;
          }
          if (i === 4) throw malformed('remaining length longer than 4 bytes');
        }
        if (!done) break; // the length itself is incomplete
        if (i + len > this.maxPacket) throw mqttError(0x95, `packet of ${i + len} bytes from the broker is larger than our maximum packet size ${this.maxPacket}`);
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

/** Reads the fields of one packet body; every read past its end is a malformed packet. */
class Cursor {
  constructor(bytes) { this.b = bytes; this.o = 0; }
  get left() { return this.b.length - this.o; }
  take(n) {
    if (n > this.left) throw malformed('a field runs past the end of the packet');
    this.o += n;
    return this.b.subarray(this.o - n, this.o);
  }
  u8() { return this.take(1)[0]; }
  u16() { const b = this.take(2); return (b[0] << 8) | b[1]; }
  u32() { const b = this.take(4); return ((b[0] << 24) >>> 0) + ((b[1] << 16) | (b[2] << 8) | b[3]); }
  varint() {
    let n = 0;
    for (let i = 0, mul = 1; i < 4; i++, mul *= 128) {
      const d = this.u8();
      n += (d & 0x7f) * mul;
      if (!(d & 0x80)) {
        if (i > 0 && d === 0) throw malformed('variable byte integer not in its shortest form'); // [MQTT-1.5.5-1]
        return n;
      }
    }
    throw malformed('variable byte integer longer than 4 bytes');
  }
  binary() { return this.take(this.u16()); }
  /** A UTF-8 string: well-formed, no U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]), BOM kept. */
  string(what = 'string') {
    let s;
    try { s = strictDecoder.decode(this.binary()); } catch { throw malformed(`${what} is not valid UTF-8`); }
    if (s.includes('\u0000')) throw malformed(`${what} contains U+0000`);
    return s;
  }
  rest() { return this.take(this.left); }
  end(what) { if (this.left) throw malformed(`bytes after the end of ${what}`); }
}

/** An MQTT 5 property block from r, in a packet `where` (a letter of PROPS), as {name: value}. */
function readProps(r, where) {
  const block = new Cursor(r.take(r.varint()));
  const out = {};
  while (block.left) {
    const id = block.varint();
    const spec = PROPS[id];
    const hex = `0x${id.toString(16).padStart(2, '0')}`;
    if (!spec) throw malformed(`unknown property ${hex}`);
    const [name, type, places] = spec;
    if (!places.includes(where)) throw malformed(`property ${name} is not allowed in this packet`);
    let v;
    switch (type) {
      case 'b': v = block.u8(); break;
      case 'h': v = block.u16(); break;
      case 'w': v = block.u32(); break;
      case 'v': v = block.varint(); break;
      case 's': v = block.string(name); break;
      case 'd': v = block.binary(); break;
      default: v = [block.string(name), block.string(name)];
    }
    if ((type === 'b' && v > 1) || (v === 0 && NONZERO.has(id))) throw protocolError(`${name} ${v} is not allowed`);
    if (type === 'p' || id === 0x0b) (out[name] ??= []).push(v);
    else if (name in out) throw protocolError(`${name} given twice`);
    else out[name] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/**
 * Options: clientId (default random 'web-xxxxxxxx'; '' lets an MQTT 5 broker assign one),
 * username, password, keepalive (seconds, default 60, 0 = off), clean (default true; Clean
 * Start in MQTT 5), will {topic, payload, qos, retain, properties}, protocolVersion (4 =
 * MQTT 3.1.1, default; 3 = MQTT 3.1 "MQIsdp"; 5 = MQTT 5.0), properties (MQTT 5 CONNECT
 * properties: sessionExpiryInterval, receiveMaximum, maximumPacketSize,
 * requestProblemInformation, requestResponseInformation, userProperties,
 * authenticationMethod), protocols (WebSocket subprotocols, default ['mqtt'], or
 * ['mqttv3.1'] with protocolVersion 3), connectTimeout (ms, default 10000), WebSocket
 * (constructor; default globalThis.WebSocket).
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
    this.v5 = this.options.protocolVersion === 5;
    this.clientId = this.options.clientId;
    this.keepalive = this.options.keepalive;
    this.server = {}; // MQTT 5: the broker's CONNACK properties
    this.connected = false;
    this.ws = null;
    this.handlers = new Map();
    this.nextId = 1;
    this.pending = new Map(); // packet id -> {expect, resolve, reject}
    this.incomingQos2 = new Set(); // ids of QoS 2 PUBLISH received, until PUBREL
    this.inflight = 0; // QoS 1/2 PUBLISH sent and not completed (MQTT 5 flow control)
    this.waiting = []; // publishes waiting for the broker's Receive Maximum to allow them
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

  /** Opens the WebSocket and sends CONNECT. Resolves with the CONNACK ({sessionPresent,
   *  returnCode}, with MQTT 5 also reasonCode and properties); rejects with an Error whose
   *  .code is the CONNACK code (MQTT 5: also .reasonCode, .reasonString), or without a code
   *  for a network failure or a broken CONNACK. */
  connect() {
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    if (!WS) return Promise.reject(new Error('no WebSocket implementation'));
    let connectPacket;
    try {
      connectPacket = encodeConnect(this.options); // bad options are refused before any I/O
    } catch (e) {
      return Promise.reject(e);
    }
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
      this.reader = new PacketReader(this.options.properties?.maximumPacketSize || undefined, this.v5);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        try { this._send(connectPacket); } catch (e) { fail(e); }
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data === 'string') {
          this._abort(new Error('text frame received: MQTT uses binary frames'), fail, settled);
          return;
        }
        const bytes = new Uint8Array(ev.data);
        this.stats.bytesReceived += bytes.length;
        try {
          for (const p of this.reader.push(bytes)) {
            if (this.ws !== ws) return;
            if (settled) { this._handle(p); continue; }
            const ack = this._connack(p);
            this._emit('packet', 'CONNACK', ack);
            if (ack.returnCode !== 0) { fail(this._refusal(ack)); return; }
            settled = true;
            clearTimeout(timeout);
            this.connected = true;
            this._startKeepalive();
            this._emit('connect', ack);
            resolve(ack);
          }
        } catch (e) {
          this._abort(e, fail, settled);
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

  /** Subscribes to one filter. opts: a QoS, or {qos, noLocal, retainAsPublished,
   *  retainHandling, properties: {subscriptionIdentifier, userProperties}} (all but qos
   *  MQTT 5 only). Resolves with the SUBACK code: the granted QoS, or 0x80 and up when
   *  refused (MQTT 5: the reason code, reasonText() has its words). */
  async subscribe(filter, opts = 0) {
    const o = typeof opts === 'number' ? { qos: opts } : opts;
    validateTopic(filter, true);
    const v = this.options.protocolVersion;
    const id = this._allocId();
    const ack = await this._request(id, 'SUBACK', encodeSubscribe(id, [[filter, o]], v, o.properties));
    return ack.codes[0];
  }

  /** Unsubscribes; resolves with the UNSUBACK reason code (MQTT 5; 0 in 3.x). */
  async unsubscribe(filter, { properties } = {}) {
    validateTopic(filter, true);
    const id = this._allocId();
    const ack = await this._request(id, 'UNSUBACK', encodeUnsubscribe(id, [filter], this.options.protocolVersion, properties));
    return ack.codes[0] ?? 0;
  }

  /** Publishes; QoS 0 resolves when written, QoS 1 on PUBACK, QoS 2 on PUBCOMP, with the
   *  PUBACK's or PUBREC's {reasonCode, properties} (MQTT 5: 0x10 when nobody subscribed).
   *  Rejects with err.reasonCode when the broker refuses (0x80 and up), or before sending
   *  what the broker said it would refuse (MQTT 5 Maximum QoS, Retain Available, Maximum
   *  Packet Size). properties (MQTT 5): payloadFormatIndicator, messageExpiryInterval,
   *  contentType, responseTopic, correlationData, userProperties. */
  async publish(topic, payload, { qos = 0, retain = false, properties } = {}) {
    validateTopic(topic, false);
    if (!this.connected) throw new Error('not connected');
    if (this.v5 && qos > (this.server.maximumQoS ?? 2)) {
      throw mqttError(0x9b, `QoS ${qos} is not supported by the broker (maximum QoS ${this.server.maximumQoS})`);
    }
    if (this.v5 && retain && this.server.retainAvailable === 0) throw mqttError(0x9a, 'the broker does not support retained messages');
    const opts = { qos, retain, version: this.options.protocolVersion, properties };
    if (qos === 0) {
      this._send(encodePublish(topic, payload, opts));
      return undefined;
    }
    await this._acquire();
    try {
      const id = this._allocId();
      const ack = await this._request(id, qos === 1 ? 'PUBACK' : 'PUBREC', encodePublish(topic, payload, { ...opts, id }));
      if (ack.reasonCode >= 0x80) throw this._ackError(ack, qos === 1 ? 'PUBACK' : 'PUBREC');
      if (qos === 2) {
        const comp = await this._request(id, 'PUBCOMP', encodeAck(PACKET.PUBREL, id));
        if (comp.reasonCode >= 0x80) throw this._ackError(comp, 'PUBCOMP');
      }
      return { reasonCode: ack.reasonCode, properties: ack.properties };
    } finally {
      this._release();
    }
  }

  /** Sends DISCONNECT (so no will is published; MQTT 5: reasonCode 0x04 asks for it) and
   *  closes the WebSocket. MQTT 5 properties: sessionExpiryInterval (not when CONNECT gave
   *  0: [MQTT-3.14.2-2]), reasonString, userProperties. */
  end({ reasonCode = 0, properties } = {}) {
    if (this.v5 && properties?.sessionExpiryInterval && !this.options.properties?.sessionExpiryInterval) {
      throw new TypeError('a session expiry interval on DISCONNECT needs one on CONNECT');
    }
    if (this.ws && this.connected) {
      try { this._send(encodeDisconnect(this.options.protocolVersion, reasonCode, properties)); } catch { /* closing anyway */ }
    }
    this._close(null, { code: 1000, reason: 'client disconnected' });
  }

  // -- internals -------------------------------------------------------------------------

  _send(bytes) {
    if (!this.ws || this.ws.readyState !== 1) throw new Error('not connected');
    const max = this.server.maximumPacketSize;
    if (max && bytes.length > max) {
      throw mqttError(0x95, `packet of ${bytes.length} bytes is larger than the broker's maximum packet size ${max}`);
    }
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

  /** MQTT 5 flow control: a QoS 1/2 PUBLISH may go when fewer than the broker's Receive
   *  Maximum are unacknowledged (4.9); others wait, in order. */
  _acquire() {
    const max = this.v5 ? this.server.receiveMaximum ?? 65535 : Infinity;
    if (this.inflight < max) { this.inflight++; return Promise.resolve(); }
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  _release() {
    if (!this.connected) return;
    const next = this.waiting.shift();
    if (next) next.resolve(); else this.inflight--;
  }

  _ackError(ack, type) {
    const why = ack.properties?.reasonString;
    const e = mqttError(ack.reasonCode, `${type} ${reasonText(ack.reasonCode)}${why ? ': ' + why : ''}`);
    e.reasonString = why;
    return e;
  }

  /** The CONNACK (3.2), checked. */
  _connack(p) {
    if (p.type === PACKET.AUTH && this.v5) throw protocolError('AUTH: this client does not take part in enhanced authentication');
    if (p.type !== PACKET.CONNACK) throw protocolError(`${NAMES[p.type] ?? 'packet type ' + p.type} before CONNACK`);
    if (p.flags) throw malformed('reserved flags of CONNACK');
    const r = new Cursor(p.body);
    const flags = r.u8();
    const code = r.u8();
    if (flags & 0xfe) throw malformed('reserved bits of CONNACK'); // [MQTT-3.2.2-1]
    const ack = { sessionPresent: !!(flags & 1), returnCode: code };
    if (this.v5) {
      if (!ALLOWED[PACKET.CONNACK].has(code)) throw protocolError(`CONNACK reason code ${code}`);
      if (code && ack.sessionPresent) throw malformed('session present in a refusal'); // [MQTT-3.2.2-6]
      ack.reasonCode = code;
      ack.properties = readProps(r, 'A');
    }
    r.end('CONNACK');
    if (this.v5 && code === 0) {
      this.server = ack.properties;
      this.clientId = ack.properties.assignedClientIdentifier ?? this.clientId;
      this.keepalive = ack.properties.serverKeepAlive ?? this.keepalive; // [MQTT-3.2.2-21]
    }
    return ack;
  }

  _refusal(ack) {
    const code = ack.returnCode;
    const why = ack.properties?.reasonString;
    const words = this.v5 ? reasonText(code) : CONNACK_CODES[code] ?? 'code ' + code;
    const e = new Error(`connection refused: ${words}${why ? ' (' + why + ')' : ''}`);
    e.code = code;
    if (this.v5) { e.reasonCode = code; e.reasonString = why; }
    return e;
  }

  /** A broken stream or packet: before CONNACK the connect fails; after it, MQTT 5 tells
   *  the broker why with DISCONNECT ([MQTT-4.13.1-1] as the client's side) and closes. */
  _abort(err, fail, settled) {
    if (!settled) { fail(err); return; }
    if (this.v5 && this.connected && ALLOWED[PACKET.DISCONNECT].has(err.reasonCode)) {
      try { this._send(encodeDisconnect(5, err.reasonCode)); } catch { /* closing anyway */ }
    }
    this._close(err);
  }

  _handle(p) {
    this.stats.received++;
    const r = new Cursor(p.body);
    const v5 = this.v5;
    const name = NAMES[p.type];
    if (p.type !== PACKET.PUBLISH && p.flags !== (p.type === PACKET.PUBREL ? 2 : 0)) {
      throw malformed(`reserved flags of ${name ?? 'packet type ' + p.type}`); // [MQTT-2.1.3-1]
    }
    switch (p.type) {
      case PACKET.PUBLISH:
        this._receivePublish(p, r);
        return;
      case PACKET.PUBACK:
      case PACKET.PUBREC:
      case PACKET.PUBREL:
      case PACKET.PUBCOMP: {
        const ack = { id: r.u16(), reasonCode: 0 };
        if (v5 && r.left) {
          ack.reasonCode = r.u8();
          if (!ALLOWED[p.type].has(ack.reasonCode)) throw protocolError(`${name} reason code ${ack.reasonCode}`);
          if (r.left) ack.properties = readProps(r, 'R');
        }
        r.end(name);
        if (!ack.id) throw protocolError(`${name} with packet identifier 0`);
        this._checkProblemInfo(name, ack.properties);
        this._emit('packet', name, ack);
        if (p.type === PACKET.PUBREL) {
          // [MQTT-4.3.3-11]: answered whatever happened; MQTT 5 says when the id is unknown.
          const known = this.incomingQos2.delete(ack.id);
          this._send(encodeAck(PACKET.PUBCOMP, ack.id, v5 && !known ? 0x92 : 0));
        } else if (!this._settle(ack.id, name, ack) && p.type === PACKET.PUBREC && ack.reasonCode < 0x80) {
          // [MQTT-4.3.3-4]: a PUBREC is answered; MQTT 5 says when we never sent the id.
          const known = this.pending.get(ack.id)?.expect === 'PUBCOMP';
          this._send(encodeAck(PACKET.PUBREL, ack.id, v5 && !known ? 0x92 : 0));
        }
        return;
      }
      case PACKET.SUBACK:
      case PACKET.UNSUBACK: {
        const ack = { id: r.u16() };
        if (v5) ack.properties = readProps(r, p.type === PACKET.SUBACK ? 's' : 'u');
        ack.codes = Array.from(r.rest());
        const allowed = v5 ? ALLOWED[p.type] : SUBACK_311;
        if (!ack.id) throw protocolError(`${name} with packet identifier 0`);
        if ((v5 || p.type === PACKET.SUBACK) && !ack.codes.length) throw protocolError(`${name} without reason codes`);
        if (!v5 && p.type === PACKET.UNSUBACK && ack.codes.length) throw malformed('bytes after the end of UNSUBACK');
        for (const c of ack.codes) if (!allowed.has(c)) throw protocolError(`${name} code ${c}`);
        this._checkProblemInfo(name, ack.properties);
        this._emit('packet', name, ack);
        this._settle(ack.id, name, ack);
        return;
      }
      case PACKET.PINGRESP:
        r.end('PINGRESP');
        this.pingSentAt = 0;
        this._emit('packet', 'PINGRESP', {});
        return;
      case PACKET.DISCONNECT: {
        if (!v5) throw protocolError('DISCONNECT from the broker'); // 3.1.1 has none from servers
        const d = { reasonCode: r.left ? r.u8() : 0, properties: r.left ? readProps(r, 'D') : {} };
        r.end('DISCONNECT');
        if (!ALLOWED[PACKET.DISCONNECT].has(d.reasonCode)) throw protocolError(`DISCONNECT reason code ${d.reasonCode}`);
        this._emit('packet', 'DISCONNECT', d);
        this._emit('disconnect', d);
        const why = d.properties.reasonString;
        const err = mqttError(d.reasonCode, `disconnected by the broker: ${reasonText(d.reasonCode, PACKET.DISCONNECT)}${why ? ' (' + why + ')' : ''}`);
        err.reasonString = why;
        this._close(d.reasonCode ? err : null, undefined, d); // [MQTT-3.14.4-1]: never answered
        return;
      }
      case PACKET.AUTH:
        // After CONNACK only in answer to a re-authentication, which this client never starts.
        if (v5) throw protocolError('AUTH without a re-authentication asked for');
      // falls through: type 15 is reserved in 3.1.1
      default:
        throw protocolError(`unexpected ${name ?? 'packet type ' + p.type}`);
    }
  }

  _receivePublish(p, r) {
    const qos = (p.flags >> 1) & 3;
    if (qos === 3) throw malformed('PUBLISH with QoS 3'); // [MQTT-3.3.1-4]
    if (!qos && p.flags & 8) throw malformed('DUP on a QoS 0 PUBLISH'); // [MQTT-3.3.1-2]
    const topic = r.string('topic name');
    const id = qos ? r.u16() : 0;
    if (qos && !id) throw protocolError('PUBLISH with packet identifier 0');
    const properties = this.v5 ? readProps(r, 'P') : undefined;
    if (properties?.topicAlias) throw mqttError(0x94, 'topic alias invalid: this client allows none (Topic Alias Maximum 0)');
    if (!topic) throw this.v5 ? protocolError('empty topic name without a topic alias') : malformed('empty topic name');
    if (/[+#]/.test(topic)) throw malformed('wildcard in a topic name');
    const payload = r.rest();
    const info = { topic, qos, retain: !!(p.flags & 1), dup: !!(p.flags & 8), id, payload };
    if (properties) info.properties = properties;
    this._emit('packet', 'PUBLISH', info);
    if (qos === 1) this._send(encodeAck(PACKET.PUBACK, id));
    if (qos === 2) {
      const seen = this.incomingQos2.has(id);
      const max = this.v5 ? this.options.properties?.receiveMaximum ?? 65535 : Infinity;
      if (!seen && this.incomingQos2.size >= max) throw mqttError(0x93, `more than our receive maximum of ${max} QoS 2 messages unacknowledged`);
      this.incomingQos2.add(id);
      this._send(encodeAck(PACKET.PUBREC, id));
      if (seen) return; // a resend of a message already delivered
    }
    this._emit('message', topic, payload, info);
  }

  /** [MQTT-3.1.2-29]: with Request Problem Information 0, no reason string nor user
   *  properties on anything but PUBLISH, CONNACK and DISCONNECT. */
  _checkProblemInfo(name, props) {
    if (this.v5 && [0, false].includes(this.options.properties?.requestProblemInformation) && (props?.reasonString != null || props?.userProperties)) {
      throw protocolError(`reason string or user properties on ${name} after Request Problem Information 0`);
    }
  }

  _startKeepalive() {
    const ka = this.keepalive * 1000;
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

  /** Ends the connection once: rejects what waits, emits 'error' (for an error while
   *  connected) and 'close' ({code, reason, error, reasonCode, reasonString}; the reason
   *  code of the broker's DISCONNECT, or of the error that made us close). */
  _close(error, ev, disconnect) {
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
    const err = error ?? new Error(disconnect ? `disconnected by the broker: ${reasonText(disconnect.reasonCode, PACKET.DISCONNECT)}` : 'connection closed');
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.waiting) w.reject(err);
    this.waiting = [];
    this.inflight = 0;
    this.incomingQos2.clear();
    if (error && wasConnected) this._emit('error', error);
    if (wasConnected) {
      this._emit('close', {
        code: ev?.code ?? (disconnect ? 1000 : 1006), reason: ev?.reason ?? '', error,
        reasonCode: disconnect?.reasonCode ?? error?.reasonCode, reasonString: disconnect?.properties.reasonString,
      });
    }
  }
}
