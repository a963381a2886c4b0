// pageclient.test.mjs - the page's own MQTT client (web/mqtt.js) run in Node with the `ws`
// package's WebSocket: packet reassembly on its own, then against the broker: CONNECT
// options, QoS 0/1/2 both directions, keepalive, refusals, the will, UTF-8 and 1 MB; then
// MQTT 5: encoding rules without a broker, every MQTT 5 feature against the broker (with
// MQTT.js 5.0 and 3.1.1 clients on the other side), and malformed or unexpected packets
// from a fake broker (a `ws` server in this process), which must end in a DISCONNECT with
// the right reason code and never in an uncaught exception.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';

import WebSocket, { WebSocketServer } from 'ws';

import {
  MqttClient, PacketReader, encodeConnect, encodeDisconnect, encodePublish, encodeSubscribe, reasonText,
  topicMatches, utf8,
} from '../../web/mqtt.js';
import {
  REFERENCE, TIMEOUT, end, mqttConnect, publish, sleep, startBroker, subscribe, uid, waitFor,
} from './harness.mjs';

/** A web/mqtt.js client that records its messages and packets. */
function pageClient(url, opts = {}) {
  const c = new MqttClient(url, { WebSocket, clientId: uid('page'), ...opts });
  c.received = [];
  c.packets = [];
  c.on('message', (topic, payload, info) => c.received.push({ topic, payload, text: utf8(payload), qos: info.qos, retain: info.retain, properties: info.properties }));
  c.on('packet', (type, p) => c.packets.push({ type, ...p }));
  c.waitMessages = (n, pred = () => true, timeout = TIMEOUT) =>
    waitFor(() => { const m = c.received.filter(pred); return m.length >= n && m; }, `${n} message(s) on ${c.options.clientId}`, timeout);
  return c;
}

describe('PacketReader (no broker)', () => {
  test('packets split at every byte and several packets in one chunk', () => {
    const packets = [
      encodePublish('a/b', 'hello', { qos: 1, id: 7 }),
      encodePublish('t', new Uint8Array(200), {}), // 2-byte remaining length
      encodePublish('大/題', crypto.randomBytes(70000), { qos: 2, id: 65535, retain: true }), // 3 bytes
      Uint8Array.of(0xd0, 0x00), // PINGRESP
    ];
    const all = Buffer.concat(packets);
    for (const step of [1, 2, 3, 5, 127, 128, 4096, all.length]) {
      const r = new PacketReader();
      const out = [];
      for (let i = 0; i < all.length; i += step) out.push(...r.push(all.subarray(i, i + step)));
      assert.equal(out.length, packets.length, `step ${step}`);
      assert.deepEqual(out.map((p) => p.type), [3, 3, 3, 13]);
      assert.equal(out[2].flags, 0b0101);
      assert.equal(out[2].body.length, packets[2].length - 4);
      assert.equal(r.length, 0);
    }
  });

  test('a malformed remaining length is an error', () => {
    assert.throws(() => new PacketReader().push(Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0xff, 0x01)), /malformed/);
  });

  test('topicMatches', () => {
    assert.ok(topicMatches('a/+/c', 'a/b/c'));
    assert.ok(topicMatches('a/#', 'a'));
    assert.ok(topicMatches('#', 'a/b'));
    assert.ok(!topicMatches('#', '$SYS/broker/uptime'));
    assert.ok(topicMatches('$SYS/#', '$SYS/broker/uptime'));
    assert.ok(!topicMatches('a/+', 'a/b/c'));
    assert.ok(topicMatches('+/+', '/x'));
  });
});

describe('web/mqtt.js against the broker', () => {
  let broker;
  before(async () => { broker = await startBroker(); });
  after(async () => { await broker?.stop(); });

  test('QoS 0/1/2 both directions with MQTT.js, retained, UTF-8', async () => {
    const c = pageClient(broker.wsUrl());
    const ack = await c.connect();
    assert.deepEqual(ack, { sessionPresent: false, returnCode: 0 });
    assert.equal(await c.subscribe('page/in/#', 2), 2);
    const other = await mqttConnect(broker.wsUrl('/'));
    await subscribe(other, 'page/out/#', 2);
    for (const q of [0, 1, 2]) {
      await c.publish(`page/out/${q}`, `出${q}`, { qos: q });
      await publish(other, `page/in/${q}`, `入${q}`, { qos: q });
    }
    const got = await c.waitMessages(3);
    assert.deepEqual(got.map((m) => [m.topic, m.text, m.qos]), [0, 1, 2].map((q) => [`page/in/${q}`, `入${q}`, q]));
    const out = await other.waitMessages(3);
    assert.deepEqual(out.map((m) => [m.topic, m.payload.toString(), m.qos]), [0, 1, 2].map((q) => [`page/out/${q}`, `出${q}`, q]));
    // The QoS 2 handshakes ran both ways.
    for (const t of ['SUBACK', 'PUBACK', 'PUBREC', 'PUBCOMP', 'PUBREL']) {
      await waitFor(() => c.packets.some((p) => p.type === t), t);
    }

    await c.publish('page/retained/感測器', 'ON', { qos: 1, retain: true });
    const c2 = pageClient(broker.wsUrl('/'));
    await c2.connect();
    await c2.subscribe('page/retained/+', 1);
    const [r] = await c2.waitMessages(1);
    assert.deepEqual([r.topic, r.text, r.retain], ['page/retained/感測器', 'ON', true]);
    await c2.unsubscribe('page/retained/+');
    await c.publish('page/retained/感測器', 'OFF', { qos: 1, retain: true });
    await c2.subscribe('page/marker', 0);
    await c.publish('page/marker', 'm');
    await c2.waitMessages(2);
    assert.deepEqual(c2.received.map((m) => m.text), ['ON', 'm'], 'nothing after UNSUBSCRIBE');
    c.end();
    c2.end();
    await end(other);
  });

  test('MQTT 3.1 (MQIsdp) with subprotocol mqttv3.1', async () => {
    const c = pageClient(broker.wsUrl(), { protocolVersion: 3 });
    await c.connect();
    assert.equal(c.ws.protocol, 'mqttv3.1');
    await c.subscribe('v3/x', 1);
    await c.publish('v3/x', 'old', { qos: 1 });
    await c.waitMessages(1);
    c.end();
  });

  test('keepalive: PINGREQ when idle keeps the connection', async () => {
    const c = pageClient(broker.wsUrl(), { keepalive: 1 });
    await c.connect();
    await waitFor(() => c.packets.filter((p) => p.type === 'PINGRESP').length >= 2, '2 PINGRESP', 5000);
    assert.ok(c.connected);
    c.end();
  });

  test('the will is published when the WebSocket drops', async () => {
    const w = await mqttConnect(broker.wsUrl());
    await subscribe(w, 'page/will', 1);
    const c = pageClient(broker.wsUrl(), { will: { topic: 'page/will', payload: '離線 offline', qos: 1, retain: false } });
    let closed = null;
    c.on('close', (ev) => { closed = ev; });
    await c.connect();
    c.ws.terminate(); // the socket ends without a close frame or DISCONNECT
    const [m] = await w.waitMessages(1);
    assert.equal(m.payload.toString(), '離線 offline');
    await waitFor(() => closed, 'close event');
    assert.equal(c.connected, false);
    await end(w);
  });

  test('1 MB both ways', { skip: REFERENCE ? 'too slow on Mosquitto websockets' : false }, async () => {
    const big = crypto.randomBytes(1024 * 1024);
    const c = pageClient(broker.wsUrl());
    await c.connect();
    await c.subscribe('page/big/#', 2);
    const other = await mqttConnect(broker.wsUrl());
    await subscribe(other, 'page/big/from-page', 1);
    await c.publish('page/big/from-page', big, { qos: 2 });
    await publish(other, 'page/big/to-page', big, { qos: 1 });
    const [m] = await other.waitMessages(1, () => true, TIMEOUT * 2);
    assert.ok(Buffer.from(m.payload).equals(big));
    const got = await c.waitMessages(2, () => true, TIMEOUT * 2);
    for (const g of got) assert.ok(Buffer.from(g.payload).equals(big), g.topic);
    c.end();
    await end(other);
  });

  test('a bad topic is refused before it is sent', async () => {
    const c = pageClient(broker.wsUrl());
    await c.connect();
    await assert.rejects(c.publish('a/+', 'x'), /wildcards/);
    await assert.rejects(c.subscribe('a/#/b', 0), /#/);
    assert.ok(c.connected);
    c.end();
  });
});

describe('web/mqtt.js with passwords', () => {
  let broker;
  before(async () => { broker = await startBroker({ anonymous: false, users: { alice: 's3cret 密碼' } }); });
  after(async () => { await broker?.stop(); });

  test('anonymous is refused with CONNACK 5, a wrong password with 5 (as Mosquitto), the right one works', async () => {
    const anon = pageClient(broker.wsUrl());
    await assert.rejects(anon.connect(), (e) => e.code === 5);
    const wrong = pageClient(broker.wsUrl(), { username: 'alice', password: 'nope' });
    await assert.rejects(wrong.connect(), (e) => e.code === 5);
    const ok = pageClient(broker.wsUrl(), { username: 'alice', password: 's3cret 密碼' });
    await ok.connect();
    await ok.subscribe('alice/feeds/lights', 1);
    await ok.publish('alice/feeds/lights', 'ON', { qos: 1 });
    const [m] = await ok.waitMessages(1);
    assert.equal(m.text, 'ON');
    ok.end();
  });
});

// ---------------------------------------------------------------------------------------
// MQTT 5
// ---------------------------------------------------------------------------------------

/** A web/mqtt.js MQTT 5 client that records its messages, packets and close event. */
function pageClient5(url, opts = {}) {
  const c = pageClient(url, { protocolVersion: 5, ...opts });
  c.closed = null;
  c.on('close', (ev) => { c.closed = ev; });
  c.waitClosed = () => waitFor(() => c.closed, `close of ${c.options.clientId}`);
  return c;
}

/** The packets a PacketReader cuts from bytes (all of them must be whole). */
const packetsOf = (bytes, minimal = true) => new PacketReader(undefined, minimal).push(bytes);

describe('web/mqtt.js MQTT 5 encoding (no broker)', () => {
  test('CONNECT: level 5, properties in the order given, will properties, shortest lengths', () => {
    const bytes = encodeConnect({
      protocolVersion: 5, clientId: 'c1', keepalive: 30, clean: false, username: 'u', password: 'p',
      properties: { sessionExpiryInterval: 300, receiveMaximum: 10, maximumPacketSize: 4096, requestProblemInformation: 0, userProperties: [['k', 'v']] },
      will: { topic: 'w', payload: 'x', qos: 1, properties: { willDelayInterval: 5, contentType: 't' } },
    });
    const props = [0x11, 0, 0, 1, 0x2c, 0x21, 0, 10, 0x27, 0, 0, 0x10, 0, 0x17, 0, 0x26, 0, 1, 0x6b, 0, 1, 0x76];
    const willProps = [0x18, 0, 0, 0, 5, 0x03, 0, 1, 0x74];
    const body = [0, 4, 0x4d, 0x51, 0x54, 0x54, 5, 0b11001100, 0, 30, props.length, ...props, 0, 2, 0x63, 0x31,
      willProps.length, ...willProps, 0, 1, 0x77, 0, 1, 0x78, 0, 1, 0x75, 0, 1, 0x70];
    assert.deepEqual([...bytes], [0x10, body.length, ...body]);
  });

  test('variable byte integers in their shortest form: remaining lengths and subscription identifiers', () => {
    for (const [n, size] of [[4, 1], [127, 1], [128, 2], [16383, 2], [16384, 3], [2097151, 3], [2097152, 4]]) {
      const p = encodePublish('t', new Uint8Array(n - 4), { version: 5 }); // topic 3 bytes, properties 1
      assert.equal(p.length, 1 + size + n, `remaining length ${n}`);
      assert.equal(packetsOf(p)[0].body.length, n);
    }
    for (const [id, bytes] of [[1, [1]], [127, [0x7f]], [128, [0x80, 1]], [16384, [0x80, 0x80, 1]], [268435455, [0xff, 0xff, 0xff, 0x7f]]]) {
      const p = encodeSubscribe(1, [['a', { qos: 1 }]], 5, { subscriptionIdentifier: id });
      assert.deepEqual([...p.subarray(4, 5 + 1 + bytes.length)], [1 + bytes.length, 0x0b, ...bytes], `subscription identifier ${id}`);
    }
    assert.throws(() => encodeSubscribe(1, [['a', { qos: 1 }]], 5, { subscriptionIdentifier: 268435456 }), RangeError);
    assert.throws(() => encodeSubscribe(1, [['a', { qos: 1 }]], 5, { subscriptionIdentifier: 0 }), RangeError);
    // The reader refuses what is not in its shortest form, in MQTT 5.
    assert.throws(() => packetsOf(Uint8Array.of(0xd0, 0x80, 0x00)), (e) => e.reasonCode === 0x81);
    assert.equal(packetsOf(Uint8Array.of(0xd0, 0x80, 0x00), false).length, 1, '3.1.1 reads it');
  });

  test('property rules: where each may appear, values, U+0000, no aliases or subscription ids sent', () => {
    assert.throws(() => encodePublish('t', 'x', { version: 5, properties: { sessionExpiryInterval: 1 } }), /not allowed here/);
    assert.throws(() => encodePublish('t', 'x', { version: 5, properties: { topicAlias: 1 } }), /topic aliases/);
    assert.throws(() => encodePublish('t', 'x', { version: 5, properties: { subscriptionIdentifier: 1 } }), /subscription identifiers/);
    assert.throws(() => encodePublish('t', 'x', { version: 5, properties: { payloadFormatIndicator: 2 } }), RangeError);
    assert.throws(() => encodePublish('t', 'x', { version: 5, properties: { responseTopic: 'a/#' } }), /wildcards/);
    assert.throws(() => encodePublish('t', 'x', { version: 5, properties: { userProperties: [['a\u0000', 'b']] } }), /U\+0000/);
    assert.throws(() => encodePublish('t', 'x', { version: 5, properties: { nonsense: 1 } }), /not allowed here/);
    assert.throws(() => encodeConnect({ protocolVersion: 5, properties: { receiveMaximum: 0 } }), RangeError);
    assert.throws(() => encodeSubscribe(1, [['$share/g/a', { qos: 0, noLocal: true }]], 5), /No Local/);
    // User Properties keep their order and repeats, from pairs or from an object.
    const fromPairs = encodePublish('t', '', { version: 5, properties: { userProperties: [['a', '1'], ['b', '2'], ['a', '3']] } });
    const fromObject = encodePublish('t', '', { version: 5, properties: { userProperties: { a: ['1', '3'], b: '2' } } });
    const pair = (k, v) => [0x26, 0, 1, k.charCodeAt(0), 0, 1, v.charCodeAt(0)];
    assert.deepEqual([...fromPairs.subarray(5)], [21, ...pair('a', '1'), ...pair('b', '2'), ...pair('a', '3')]);
    assert.deepEqual([...fromObject.subarray(5)], [21, ...pair('a', '1'), ...pair('a', '3'), ...pair('b', '2')]);
  });

  test('DISCONNECT in its shortest forms; reason codes in words', () => {
    assert.deepEqual([...encodeDisconnect(4)], [0xe0, 0]);
    assert.deepEqual([...encodeDisconnect(5, 0)], [0xe0, 0]);
    assert.deepEqual([...encodeDisconnect(5, 0x04)], [0xe0, 1, 0x04]);
    assert.deepEqual([...encodeDisconnect(5, 0, { reasonString: 'ok' })], [0xe0, 7, 0, 5, 0x1f, 0, 2, 0x6f, 0x6b]);
    assert.equal(reasonText(0x87), '0x87 not authorized');
    assert.equal(reasonText(0x10), '0x10 no matching subscribers');
    assert.equal(reasonText(0x8e), '0x8E session taken over');
    assert.equal(reasonText(0, 9), '0x00 granted QoS 0');
    assert.equal(reasonText(0, 14), '0x00 normal disconnection');
    assert.equal(reasonText(0x05), '0x05 unknown reason code');
  });
});

// midge's reason strings, limits and log lines: not run against the reference broker.
const V5_SKIP = { skip: REFERENCE ? 'checks midge\'s own reason strings and log lines' : false };

describe('web/mqtt.js MQTT 5 against the broker', V5_SKIP, () => {
  let broker;
  before(async () => { broker = await startBroker(); });
  after(async () => { await broker?.stop(); });

  test('CONNACK: its properties are kept; an empty client id gets an assigned one', async () => {
    const c = pageClient5(broker.wsUrl(), { clientId: '', properties: { receiveMaximum: 5, userProperties: [['app', 'test']] } });
    const ack = await c.connect();
    assert.equal(ack.reasonCode, 0);
    assert.equal(ack.sessionPresent, false);
    assert.equal(ack.properties.receiveMaximum, 20, 'max_inflight_messages');
    assert.equal(ack.properties.topicAliasMaximum, 10, 'max_topic_alias');
    assert.match(ack.properties.assignedClientIdentifier, /^auto-/);
    assert.equal(c.clientId, ack.properties.assignedClientIdentifier);
    assert.equal(c.server.receiveMaximum, 20);
    await broker.waitLog(new RegExp(`client ${c.clientId} connected .*\\(MQTT 5\\.0, clean start 1, session expiry 0 s`));
    c.end();
  });

  test('PUBLISH properties both ways, User Properties in order, subscription identifiers', async () => {
    const sub = pageClient5(broker.wsUrl());
    await sub.connect();
    assert.equal(await sub.subscribe('p5/+', { qos: 1, properties: { subscriptionIdentifier: 5 } }), 1);
    assert.equal(await sub.subscribe('p5/#', { qos: 2, properties: { subscriptionIdentifier: 268435455 } }), 2);
    assert.equal(await sub.subscribe('p5/none', 0), 0, 'no identifier');
    const js = await mqttConnect(`mqtt://127.0.0.1:${broker.tcp}`, { protocolVersion: 5 }); // MQTT.js over TCP
    await subscribe(js, 'p5/#', 1);

    const pub = pageClient5(broker.wsUrl());
    await pub.connect();
    const properties = {
      payloadFormatIndicator: 1, messageExpiryInterval: 3600, contentType: 'text/plain; charset=utf-8',
      responseTopic: 'p5/reply', correlationData: Uint8Array.of(0, 1, 0xff),
      userProperties: [['room', '客廳'], ['unit', '°C'], ['room', 'kitchen']],
    };
    const res = await pub.publish('p5/temp', '21.5', { qos: 1, properties });
    assert.equal(res.reasonCode, 0);

    const [m] = await sub.waitMessages(1);
    const p = m.properties;
    assert.equal(m.qos, 1, 'one copy at the publish QoS for overlapping subscriptions');
    assert.deepEqual(p.userProperties, [['room', '客廳'], ['unit', '°C'], ['room', 'kitchen']], 'order and repeats kept');
    assert.equal(p.contentType, 'text/plain; charset=utf-8');
    assert.equal(p.payloadFormatIndicator, 1);
    assert.equal(p.responseTopic, 'p5/reply');
    assert.deepEqual([...p.correlationData], [0, 1, 0xff]);
    assert.ok(p.messageExpiryInterval > 0 && p.messageExpiryInterval <= 3600, `expiry ${p.messageExpiryInterval}`);
    assert.deepEqual([...p.subscriptionIdentifier].sort((a, b) => a - b), [5, 268435455]);

    const [j] = await js.waitMessages(1);
    assert.deepEqual({ ...j.properties.userProperties }, { room: ['客廳', 'kitchen'], unit: '°C' });
    assert.equal(j.properties.contentType, 'text/plain; charset=utf-8');
    assert.equal(j.properties.subscriptionIdentifier, undefined, 'MQTT.js subscribed without one');

    // From MQTT.js to the page client, and from 3.1.1 (no properties at all).
    await publish(js, 'p5/none', 'from js', { qos: 1, properties: { userProperties: { a: 'b' }, contentType: 'x/y' } });
    const [, n] = await sub.waitMessages(2);
    assert.deepEqual([n.text, n.properties.userProperties, n.properties.contentType], ['from js', [['a', 'b']], 'x/y']);
    assert.deepEqual(n.properties.subscriptionIdentifier.sort((a, b) => a - b), [5, 268435455], 'p5/none has none of its own');
    const old = pageClient(broker.wsUrl());
    await old.connect();
    await old.publish('p5/old', '3.1.1', { qos: 1 });
    const [, , o] = await sub.waitMessages(3);
    assert.deepEqual([o.topic, o.properties.userProperties, o.properties.contentType], ['p5/old', undefined, undefined]);
    await old.subscribe('p5/#', 1);
    await pub.publish('p5/temp', 'to 3.1.1', { qos: 1, properties });
    const [x] = await old.waitMessages(1);
    assert.deepEqual([x.text, x.properties], ['to 3.1.1', undefined]);
    for (const c of [sub, pub, old]) c.end();
    await end(js);
  });

  test('reason codes: PUBACK and PUBREC 0x10 no matching subscribers, UNSUBACK 0x11, PUBACK 0x99', async () => {
    const c = pageClient5(broker.wsUrl());
    await c.connect();
    assert.equal((await c.publish('nobody/here', 'x', { qos: 1 })).reasonCode, 0x10);
    assert.equal((await c.publish('nobody/here', 'x', { qos: 2 })).reasonCode, 0x10);
    await waitFor(() => c.packets.some((p) => p.type === 'PUBCOMP'), 'PUBCOMP after a PUBREC 0x10');
    assert.equal(await c.unsubscribe('never/subscribed'), 0x11);
    await c.subscribe('now/subscribed', 0);
    assert.equal(await c.unsubscribe('now/subscribed'), 0);
    assert.equal((await c.publish('nobody/here', 'x', { qos: 1 })).reasonCode, 0x10);
    // A payload that says it is UTF-8 and is not: 0x99, and the connection stays.
    const e = await c.publish('nobody/here', Uint8Array.of(0xff), { qos: 1, properties: { payloadFormatIndicator: 1 } }).catch((x) => x);
    assert.equal(e.reasonCode, 0x99, e.message);
    assert.ok(c.connected);
    c.end();
  });

  test('SUBSCRIBE options: No Local, Retain As Published, Retain Handling 0/1/2', async () => {
    const c = pageClient5(broker.wsUrl());
    await c.connect();
    await c.publish('opt/ret', 'R', { qos: 1, retain: true });
    // No Local: our own messages do not come back; another client's do.
    await c.subscribe('opt/nl', { qos: 1, noLocal: true });
    await c.publish('opt/nl', 'mine', { qos: 1 });
    const other = pageClient5(broker.wsUrl());
    await other.connect();
    await other.publish('opt/nl', 'theirs', { qos: 1 });
    await c.waitMessages(1);
    assert.deepEqual(c.received.map((m) => m.text), ['theirs']);
    // Retain Handling 0 sends the retained message at every SUBSCRIBE, 1 only for a new
    // subscription, 2 never; Retain As Published keeps the flag on live messages.
    const r = pageClient5(broker.wsUrl());
    await r.connect();
    await r.subscribe('opt/ret', { qos: 1, retainHandling: 0 });
    await r.subscribe('opt/ret', { qos: 1, retainHandling: 0 });
    await r.waitMessages(2);
    const r1 = pageClient5(broker.wsUrl());
    await r1.connect();
    await r1.subscribe('opt/ret', { qos: 1, retainHandling: 1 });
    await r1.subscribe('opt/ret', { qos: 1, retainHandling: 1 });
    const r2 = pageClient5(broker.wsUrl());
    await r2.connect();
    await r2.subscribe('opt/ret', { qos: 1, retainHandling: 2, retainAsPublished: true });
    await r2.subscribe('opt/+', { qos: 1, retainHandling: 2 });
    await other.publish('opt/ret', 'live', { qos: 1, retain: true });
    for (const x of [r, r1, r2]) await x.waitMessages(1, (m) => m.text === 'live');
    assert.deepEqual(r.received.map((m) => [m.text, m.retain]), [['R', true], ['R', true], ['live', false]]);
    assert.deepEqual(r1.received.map((m) => [m.text, m.retain]), [['R', true], ['live', false]]);
    assert.deepEqual(r2.received.map((m) => [m.text, m.retain]), [['live', true]], 'retain as published, one copy');
    for (const x of [c, other, r, r1, r2]) x.end();
  });

  test('Session Expiry Interval: a session kept across connections, and ended by DISCONNECT', async () => {
    const id = uid('persist5');
    const opts = { clientId: id, clean: false, properties: { sessionExpiryInterval: 300 } };
    const c = pageClient5(broker.wsUrl(), opts);
    assert.equal((await c.connect()).sessionPresent, false);
    await c.subscribe('sess/q', 1);
    c.end();
    const js = await mqttConnect(broker.wsUrl(), { protocolVersion: 5 });
    await publish(js, 'sess/q', 'while away', { qos: 1 });
    const back = pageClient5(broker.wsUrl(), opts);
    assert.equal((await back.connect()).sessionPresent, true);
    const [m] = await back.waitMessages(1);
    assert.equal(m.text, 'while away');
    let mark = broker.lines.length;
    back.end({ properties: { sessionExpiryInterval: 0 } }); // the session ends with this connection
    await broker.waitLog(new RegExp(`client ${id} disconnected`), TIMEOUT, mark);
    const again = pageClient5(broker.wsUrl(), opts);
    assert.equal((await again.connect()).sessionPresent, false);
    again.end();
    // Without a Session Expiry Interval (0), clean start 0 resumes nothing either.
    const zero = pageClient5(broker.wsUrl(), { clientId: uid('zero5'), clean: false });
    await zero.connect();
    mark = broker.lines.length;
    zero.end();
    await broker.waitLog(new RegExp(`client ${zero.clientId} disconnected`), TIMEOUT, mark);
    assert.equal((await pageClient5(broker.wsUrl(), { clientId: zero.clientId, clean: false }).connect()).sessionPresent, false);
    assert.throws(() => zero.end({ properties: { sessionExpiryInterval: 5 } }), /needs one on CONNECT/);
    await end(js);
  });

  test('DISCONNECT 0x04 publishes the will (with its properties); 0x00 does not', async () => {
    const w = pageClient5(broker.wsUrl());
    await w.connect();
    await w.subscribe('will5/#', 1);
    const will = (t) => ({ topic: t, payload: 'gone', qos: 1, properties: { contentType: 'text/plain', userProperties: [['why', 'test']] } });
    const a = pageClient5(broker.wsUrl(), { will: will('will5/a') });
    await a.connect();
    a.end({ reasonCode: 0x04 });
    const [m] = await w.waitMessages(1);
    assert.deepEqual([m.topic, m.text, m.properties.contentType, m.properties.userProperties], ['will5/a', 'gone', 'text/plain', [['why', 'test']]]);
    await broker.waitLog(/disconnected: DISCONNECT received \(0x04 disconnect with will message\)/);
    const b = pageClient5(broker.wsUrl(), { will: will('will5/b') });
    await b.connect();
    const mark = broker.lines.length;
    b.end();
    await broker.waitLog(new RegExp(`client ${b.clientId} disconnected: DISCONNECT received$`), TIMEOUT, mark);
    await w.publish('will5/marker', 'm', { qos: 1 });
    await w.waitMessages(2);
    assert.deepEqual(w.received.map((x) => x.topic), ['will5/a', 'will5/marker']);
    w.end();
  });

  test("the broker's DISCONNECT is reported: session taken over (0x8E) with its reason string", async () => {
    const id = uid('taken');
    const first = pageClient5(broker.wsUrl(), { clientId: id });
    const seen = [];
    first.on('disconnect', (d) => seen.push(d));
    await first.connect();
    const second = pageClient5(broker.wsUrl(), { clientId: id });
    await second.connect();
    const ev = await first.waitClosed();
    assert.equal(ev.reasonCode, 0x8e);
    assert.equal(ev.reasonString, 'another connection took over the client id');
    assert.match(ev.error.message, /0x8E session taken over/);
    assert.equal(seen[0].reasonCode, 0x8e);
    assert.ok(second.connected);
    second.end();
  });

  test('Request Problem Information 0: no reason strings on acknowledgements', async () => {
    // (The broker with an acl_file is below; here a PUBACK with a reason code and
    // no reason string must leave the connection up.)
    const c = pageClient5(broker.wsUrl(), { properties: { requestProblemInformation: 0 } });
    await c.connect();
    assert.equal((await c.publish('nobody/rpi', 'x', { qos: 1 })).reasonCode, 0x10);
    assert.ok(c.connected);
    c.end();
  });

  test('Receive Maximum: 100 QoS 1/2 publishes at once stay within the broker\'s 20; ignoring it gets 0x93', async () => {
    const s = pageClient5(broker.wsUrl());
    await s.connect();
    await s.subscribe('flow/#', 2);
    const c = pageClient5(broker.wsUrl());
    await c.connect();
    let most = 0;
    const send = c._send.bind(c);
    c._send = (b) => { send(b); most = Math.max(most, c.inflight); };
    const n = 100;
    await Promise.all(Array.from({ length: n }, (_, i) => c.publish('flow/x', String(i), { qos: 1 + (i % 2) })));
    assert.ok(most <= 20, `at most 20 in flight (${most})`);
    const got = await s.waitMessages(n);
    assert.deepEqual(got.map((m) => Number(m.text)), Array.from({ length: n }, (_, i) => i), 'in order');
    // A client that ignores the limit is disconnected by the broker with 0x93. (The 21
    // PUBLISH go in one write and nothing follows: a client still writing when the broker
    // closes may get EPIPE, and Node then drops the DISCONNECT it had received.)
    const rude = pageClient5(broker.wsUrl());
    await rude.connect();
    rude.ws.send(Buffer.concat(Array.from({ length: 21 }, (_, i) => encodePublish('flow/rude', 'x', { qos: 2, id: 100 + i, version: 5 }))));
    const ev = await rude.waitClosed();
    assert.equal(ev.reasonCode, 0x93, ev.error?.message);
    assert.equal(ev.reasonString, 'more than 20 QoS 1/2 PUBLISH unacknowledged (Receive Maximum)');
    s.end();
    c.end();
  });

  test("the client's Maximum Packet Size and Receive Maximum are sent to the broker", async () => {
    // (A broker sending a second QoS 2 message before the first one's PUBREL would be
    // answered with DISCONNECT 0x93 receive maximum exceeded by this client.)
    const small = pageClient5(broker.wsUrl(), { properties: { maximumPacketSize: 100, receiveMaximum: 1 } });
    await small.connect();
    await small.subscribe('mps/#', 2);
    const js = await mqttConnect(broker.wsUrl(), { protocolVersion: 5 });
    await publish(js, 'mps/big', Buffer.alloc(200), { qos: 2 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => publish(js, 'mps/small', String(i), { qos: 2 })));
    const got = await small.waitMessages(20);
    assert.deepEqual(got.map((m) => m.topic + ' ' + m.text), Array.from({ length: 20 }, (_, i) => `mps/small ${i}`),
      'the 200-byte message is not sent to it');
    assert.ok(small.connected, 'never more than one QoS 2 message unacknowledged');
    small.end();
    await end(js);
  });
});

describe('web/mqtt.js MQTT 5 and the limits a broker announces', V5_SKIP, () => {
  let broker, acl;
  before(async () => {
    acl = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'midge-acl5-')), 'acl');
    fs.writeFileSync(acl, 'topic readwrite open/#\ntopic read $SYS/#\ntopic read readonly/#\n');
    broker = await startBroker({
      conf: [`acl_file ${acl}`, 'max_keepalive 1', 'max_qos 1', 'retain_available false', 'max_packet_size 2000', 'max_inflight_messages 5'],
    });
  });
  after(async () => { await broker?.stop(); fs.rmSync(path.dirname(acl), { recursive: true, force: true }); });

  test('Maximum QoS, Retain Available, Maximum Packet Size and Receive Maximum are kept to', async () => {
    const c = pageClient5(broker.wsUrl(), { keepalive: 0 });
    const ack = await c.connect();
    assert.deepEqual([ack.properties.maximumQoS, ack.properties.retainAvailable, ack.properties.maximumPacketSize, ack.properties.receiveMaximum],
      [1, 0, 2000, 5]);
    await assert.rejects(c.publish('open/q2', 'x', { qos: 2 }), (e) => e.reasonCode === 0x9b);
    await assert.rejects(c.publish('open/r', 'x', { qos: 1, retain: true }), (e) => e.reasonCode === 0x9a);
    await assert.rejects(c.publish('open/big', new Uint8Array(2000), { qos: 1 }), (e) => e.reasonCode === 0x95);
    assert.equal(await c.subscribe('open/#', 2), 1, 'granted at most the maximum QoS');
    await Promise.all(Array.from({ length: 30 }, (_, i) => c.publish('open/many', String(i), { qos: 1 })));
    await c.waitMessages(30);
    assert.ok(c.connected, 'nothing the broker refuses was sent');
    c.end();
  });

  test('Server Keep Alive replaces ours (the broker would close us after 1.5 s otherwise)', async () => {
    const c = pageClient5(broker.wsUrl(), { keepalive: 60 });
    const ack = await c.connect();
    assert.equal(ack.properties.serverKeepAlive, 1);
    assert.equal(c.keepalive, 1);
    await waitFor(() => c.packets.filter((p) => p.type === 'PINGRESP').length >= 3, '3 PINGRESP', 10000);
    assert.ok(c.connected);
    c.end();
  });

  test('refusals by acl_file: SUBACK 0x87, PUBACK 0x87 with its reason string (unless told not to)', async () => {
    const c = pageClient5(broker.wsUrl());
    await c.connect();
    assert.equal(await c.subscribe('closed/#', 1), 0x87);
    assert.equal(await c.subscribe('readonly/#', 1), 1);
    const e = await c.publish('readonly/x', 'x', { qos: 1 }).catch((x) => x);
    assert.equal(e.reasonCode, 0x87);
    assert.match(e.message, /PUBACK 0x87 not authorized/);
    assert.equal(typeof e.reasonString, 'string');
    assert.ok(c.connected);
    const c2 = pageClient5(broker.wsUrl(), { properties: { requestProblemInformation: 0 } });
    await c2.connect();
    const e2 = await c2.publish('readonly/x', 'x', { qos: 1 }).catch((x) => x);
    assert.deepEqual([e2.reasonCode, e2.reasonString], [0x87, undefined], 'no reason string when not asked for');
    assert.ok(c2.connected);
    c.end();
    c2.end();
  });
});

describe('web/mqtt.js MQTT 5 refusals', V5_SKIP, () => {
  let broker;
  before(async () => { broker = await startBroker({ anonymous: false, users: { alice: 's3cret 密碼' } }); });
  after(async () => { await broker?.stop(); });

  test('CONNACK 0x87 for anonymous and a wrong password (with reason strings), 0x8C for an authentication method', async () => {
    const anon = pageClient5(broker.wsUrl());
    const e1 = await anon.connect().catch((e) => e);
    assert.deepEqual([e1.code, e1.reasonCode], [0x87, 0x87]);
    assert.match(e1.message, /^connection refused: 0x87 not authorized \(anonymous access is not allowed/);
    const wrong = pageClient5(broker.wsUrl(), { username: 'alice', password: 'nope' });
    const e2 = await wrong.connect().catch((e) => e);
    assert.equal(e2.reasonCode, 0x87);
    assert.equal(e2.reasonString, 'wrong password for user alice (password_file)');
    const quiet = pageClient5(broker.wsUrl(), { username: 'alice', password: 'nope', properties: { requestProblemInformation: 0 } });
    const e3 = await quiet.connect().catch((e) => e);
    assert.deepEqual([e3.reasonCode, e3.reasonString], [0x87, undefined]);
    const auth = pageClient5(broker.wsUrl(), { username: 'alice', password: 's3cret 密碼', properties: { authenticationMethod: 'SCRAM-SHA-1' } });
    const e4 = await auth.connect().catch((e) => e);
    assert.equal(e4.reasonCode, 0x8c);
    assert.match(e4.message, /0x8C bad authentication method/);
    const ok = pageClient5(broker.wsUrl(), { username: 'alice', password: 's3cret 密碼' });
    assert.equal((await ok.connect()).reasonCode, 0);
    ok.end();
  });
});

// A fake broker: a `ws` server in this process that answers the client's CONNECT with
// whatever a test gives it, and records what the client sends back.
describe('web/mqtt.js against malformed or unexpected packets from a fake broker', () => {
  let wss, url;
  const uncaught = [];
  const onUncaught = (e) => uncaught.push(e);
  before(async () => {
    process.on('uncaughtException', onUncaught);
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (p) => (p.has('mqtt') ? 'mqtt' : false) });
    await new Promise((r) => wss.once('listening', r));
    url = `ws://127.0.0.1:${wss.address().port}/mqtt`;
  });
  after(async () => {
    process.off('uncaughtException', onUncaught);
    await new Promise((r) => wss.close(r));
  });
  beforeEach(() => { uncaught.length = 0; });
  afterEach(async () => {
    await sleep(0); // let a callback scheduled by the client run, should it throw
    assert.deepEqual(uncaught, [], 'no uncaught exception');
  });

  const vbi = (n) => { const o = []; do { let d = n % 128; n = Math.floor(n / 128); if (n) d |= 128; o.push(d); } while (n); return o; };
  const pkt = (first, ...body) => Uint8Array.from([first, ...vbi(body.length), ...body]);
  const str = (s) => { const b = [...Buffer.from(s)]; return [b.length >> 8, b.length & 255, ...b]; };
  const props = (...p) => [...vbi(p.length), ...p];
  const CONNACK5 = pkt(0x20, 0, 0, 0);

  /** Runs the client (MQTT 5 unless opts say otherwise) against a fake broker that answers
   *  CONNECT with `answer` (bytes or a list of them); returns {c, got (the client's packets
   *  after CONNECT), error (the connect rejection), closed (the close event)}. */
  async function against(answer, opts = {}) {
    const server = new Promise((resolve) => wss.once('connection', (ws) => {
      const reader = new PacketReader();
      const got = [];
      let connected = false;
      ws.on('message', (data) => {
        for (const p of reader.push(new Uint8Array(data))) {
          if (!connected && p.type === 1) {
            connected = true;
            for (const a of [answer].flat()) ws.send(a);
          } else got.push(p);
        }
      });
      ws.on('close', () => resolve(got));
    }));
    const c = pageClient5(url, opts);
    const error = await c.connect().then(() => null, (e) => e);
    if (!error) await c.waitClosed();
    const got = await server;
    return { c, got, error, closed: c.closed };
  }

  /** The client got a good CONNACK, then `bad`: it must DISCONNECT with `code` and close. */
  async function disconnectsWith(code, bad, opts) {
    const { got, error, closed } = await against([CONNACK5, bad], opts);
    assert.equal(error, null);
    assert.equal(closed.reasonCode, code, closed.error?.message);
    const d = got.find((p) => p.type === 14);
    assert.ok(d, `a DISCONNECT was sent (got ${got.map((p) => p.type)})`);
    assert.deepEqual([...d.body], [code], 'DISCONNECT with the reason code alone');
    return closed;
  }

  test('before CONNACK: the connect fails with the reason, nothing is sent back', async () => {
    for (const [bytes, code, what] of [
      [pkt(0x30, ...str('t'), 0, ...[]), 0x82, 'PUBLISH before CONNACK'],
      [pkt(0x20, 2, 0, 0), 0x81, 'reserved CONNACK bits'],
      [pkt(0x21, 0, 0, 0), 0x81, 'reserved flags'],
      [pkt(0x20, 0, 0, 5, 0x21, 0), 0x81, 'properties run past the packet'],
      [pkt(0x20, 0, 0x10, 0), 0x82, 'a reason code CONNACK may not carry'],
      [pkt(0x20, 1, 0x87, 0), 0x81, 'session present in a refusal'],
      [Uint8Array.of(0x20, 0x83, 0x00, 0, 0, 0), 0x81, 'remaining length not in its shortest form'],
      [Uint8Array.of(0x20, 0xff, 0xff, 0xff, 0xff, 0x01), 0x81, 'remaining length of 5 bytes'],
      [pkt(0x20, 0, 0, 3, 0x12, 0, 5), 0x81, 'a truncated property'],
      [pkt(0x20, 0, 0, 0, 9), 0x81, 'trailing bytes'],
      [pkt(0xf0, 0x18, 0), 0x82, 'AUTH (continue authentication): no enhanced authentication here'],
    ]) {
      const { got, error } = await against(bytes);
      assert.ok(error, what);
      assert.equal(error.reasonCode, code, `${what}: ${error.message}`);
      assert.equal(error.code, undefined, `${what}: not a refusal`);
      assert.deepEqual(got, [], `${what}: nothing sent after CONNECT`);
    }
  });

  test('a refusal with its reason string; a text frame', async () => {
    const r = await against(pkt(0x20, 0, 0x87, ...props(0x1f, ...str('no way'))));
    assert.deepEqual([r.error.code, r.error.reasonCode, r.error.reasonString], [0x87, 0x87, 'no way']);
    assert.equal(r.error.message, 'connection refused: 0x87 not authorized (no way)');
    const t = await against('hello');
    assert.match(t.error.message, /text frame/);
  });

  test('malformed packets after CONNACK: DISCONNECT 0x81', async () => {
    const pub = (...p) => pkt(0x30, ...str('t'), ...p);
    for (const bad of [
      pub(...props(0x05, 1)), // unknown property
      pub(...props(0x11, 0, 0, 0, 1)), // Session Expiry Interval is not for PUBLISH
      pub(...props(0x0b, 0x81, 0x00)), // subscription identifier not in its shortest form
      pub(9, 0x0b, 1), // property length past the end
      pub(...props(0x26, ...str('a\u0000'), ...str('b'))), // U+0000
      pub(...props(0x03, 0, 2, 0xc3, 0x28)), // invalid UTF-8 in a property
      pkt(0x30, 0, 1, 0xff, 0), // invalid UTF-8 topic
      pkt(0x30, 0, 3, 0x61, 0x2f, 0x23, 0), // a wildcard in a topic name
      pkt(0x36, ...str('t'), 0, 1, 0), // QoS 3
      pkt(0x38, ...str('t'), 0), // DUP on QoS 0
      pkt(0x30, 0, 9, 0x61), // topic longer than the packet
      pkt(0x60, 0, 1), // PUBREL without its flags
      pkt(0x40, 0, 1, 0, 0, 0), // PUBACK with bytes after its properties
      pkt(0xd0, 0), // PINGRESP with a body
    ]) {
      const closed = await disconnectsWith(0x81, bad);
      assert.match(closed.error.message, /malformed/);
    }
  });

  test('protocol errors after CONNACK: DISCONNECT 0x82 (0x94 for a topic alias)', async () => {
    for (const bad of [
      pkt(0x30, ...str('t'), ...props(0x03, ...str('a'), 0x03, ...str('b'))), // a property twice
      pkt(0x30, ...str('t'), ...props(0x0b, 0)), // subscription identifier 0
      pkt(0x30, ...str('t'), ...props(0x01, 2)), // payload format indicator 2
      pkt(0x30, 0, 0, 0), // empty topic without an alias
      pkt(0x32, ...str('t'), 0, 0, 0), // packet identifier 0
      pkt(0x40, 0, 1, 0x8e), // a reason code PUBACK may not carry
      pkt(0x90, 0, 1, 0), // SUBACK without codes
      pkt(0x20, 0, 0, 0), // a second CONNACK
      pkt(0xf0, 0), // AUTH: no authentication method was asked for
      pkt(0x00), // reserved type 0
      pkt(0x80, 0, 1, 0, 0, 0), // SUBSCRIBE is for servers
    ]) await disconnectsWith(0x82, bad);
    await disconnectsWith(0x94, pkt(0x30, ...str('t'), ...props(0x23, 0, 1)));
  });

  test("limits of our own: Maximum Packet Size (0x95), Receive Maximum (0x93), Request Problem Information (0x82)", async () => {
    await disconnectsWith(0x95, pkt(0x30, ...str('t'), 0, ...new Array(100).fill(0x61)), { properties: { maximumPacketSize: 64 } });
    const q2 = (id) => pkt(0x34, ...str('t'), 0, id, 0);
    await disconnectsWith(0x93, [q2(1), q2(2), q2(3)].reduce((a, b) => Buffer.concat([a, b])), { properties: { receiveMaximum: 2 } });
    await disconnectsWith(0x82, pkt(0x40, 0, 1, 0x10, ...props(0x1f, ...str('why'))), { properties: { requestProblemInformation: 0 } });
  });

  test("the broker's DISCONNECT: reason code and string reported, nothing sent back", async () => {
    const { got, closed } = await against([CONNACK5, pkt(0xe0, 0x8b, ...props(0x1f, ...str('bye 再見')))]);
    assert.deepEqual([closed.reasonCode, closed.reasonString], [0x8b, 'bye 再見']);
    assert.match(closed.error.message, /disconnected by the broker: 0x8B server shutting down \(bye 再見\)/);
    assert.deepEqual(got, []);
    const plain = await against([CONNACK5, pkt(0xe0)]);
    assert.deepEqual([plain.closed.reasonCode, plain.closed.error], [0, null], 'a normal disconnection is no error');
    await disconnectsWith(0x82, pkt(0xe0, 0x04)); // 0x04 is the client's to send
  });

  test('well-formed surprises are handled: short acks, BOM, several subscription ids, unknown ids', async () => {
    const bomTopic = [0, 4, 0xef, 0xbb, 0xbf, 0x74];
    const answer = [
      CONNACK5,
      pkt(0x30, ...bomTopic, ...props(0x0b, 3, 0x0b, 0x80, 0x01), 0x68, 0x69),
      pkt(0x62, 0, 77), // PUBREL for an id we never got: PUBCOMP 0x92
      pkt(0x50, 0, 78), // PUBREC for an id we never sent: PUBREL 0x92
    ];
    const server = new Promise((resolve) => wss.once('connection', (ws) => {
      const reader = new PacketReader();
      const got = [];
      ws.on('message', (data) => {
        for (const p of reader.push(new Uint8Array(data))) {
          got.push(p);
          if (p.type === 1) for (const a of answer) ws.send(a);
          if (p.type === 3) ws.send(pkt(0x40, p.body[3], p.body[4])); // PUBACK, shortest form
          if (got.length === 4) resolve({ ws, got });
        }
      });
    }));
    const c = pageClient5(url);
    await c.connect();
    const [m] = await c.waitMessages(1);
    assert.equal(m.topic, '\ufefft', 'a BOM is kept as U+FEFF');
    assert.deepEqual(m.properties.subscriptionIdentifier, [3, 128]);
    assert.deepEqual(await c.publish('x', 'y', { qos: 1 }), { reasonCode: 0, properties: undefined });
    const { ws, got } = await server;
    const body = (type) => [...got.find((p) => p.type === type).body];
    assert.deepEqual(body(7), [0, 77, 0x92]);
    assert.deepEqual(body(6), [0, 78, 0x92]);
    assert.ok(c.connected);
    c.end();
    ws.close();
  });

  test('refusing acknowledgements: PUBACK and PUBREC 0x87 reject (no PUBREL follows), PUBCOMP 0x92 rejects', async () => {
    const server = new Promise((resolve) => wss.once('connection', (ws) => {
      const reader = new PacketReader();
      const got = [];
      ws.on('message', (data) => {
        for (const p of reader.push(new Uint8Array(data))) {
          got.push(p);
          const id = [p.body[p.type === 3 ? 3 : 0], p.body[p.type === 3 ? 4 : 1]];
          if (p.type === 1) ws.send(CONNACK5);
          if (p.type === 3 && p.flags === 2) ws.send(pkt(0x40, ...id, 0x87, ...props(0x1f, ...str('acl'))));
          if (p.type === 3 && p.flags === 4) ws.send(pkt(0x50, ...id, id[1] === 2 ? 0x87 : 0x10));
          if (p.type === 6) ws.send(pkt(0x70, ...id, 0x92));
        }
      });
      ws.on('close', () => resolve(got));
    }));
    const c = pageClient5(url);
    await c.connect();
    const e1 = await c.publish('t', 'x', { qos: 1 }).catch((e) => e);
    assert.deepEqual([e1.reasonCode, e1.reasonString, e1.message], [0x87, 'acl', 'PUBACK 0x87 not authorized: acl']);
    const e2 = await c.publish('t', 'x', { qos: 2 }).catch((e) => e);
    assert.deepEqual([e2.reasonCode, e2.message], [0x87, 'PUBREC 0x87 not authorized']);
    const e3 = await c.publish('t', 'x', { qos: 2 }).catch((e) => e);
    assert.deepEqual([e3.reasonCode, e3.message], [0x92, 'PUBCOMP 0x92 packet identifier not found']);
    assert.ok(c.connected);
    c.end();
    const got = await server;
    assert.deepEqual(got.map((p) => p.type), [1, 3, 3, 3, 6, 14], 'a PUBREL only after the PUBREC 0x10');
    assert.deepEqual([...got[4].body], [0, 3]);
  });

  test('MQTT 3.1.1: a broken packet closes the connection without DISCONNECT', async () => {
    for (const bad of [pkt(0x30, 0, 9, 0x61), pkt(0xe0), pkt(0x40, 0, 1, 0), pkt(0x90, 0, 1, 3)]) {
      const { got, error, closed } = await against([pkt(0x20, 0, 0), bad], { protocolVersion: 4 });
      assert.equal(error, null);
      assert.ok(closed.error, 'closed with an error');
      assert.deepEqual(got, [], 'nothing sent back');
    }
  });
});
