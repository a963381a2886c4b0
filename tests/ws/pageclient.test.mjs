// pageclient.test.mjs - the page's own MQTT client (web/mqtt.js) run in Node with the `ws`
// package's WebSocket: packet reassembly on its own, then against the broker: CONNECT
// options, QoS 0/1/2 both directions, keepalive, refusals, the will, UTF-8 and 1 MB.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { MqttClient, PacketReader, encodePublish, topicMatches, utf8 } from '../../web/mqtt.js';
import {
  REFERENCE, TIMEOUT, end, mqttConnect, publish, sleep, startBroker, subscribe, uid, waitFor,
} from './harness.mjs';

/** A web/mqtt.js client that records its messages and packets. */
function pageClient(url, opts = {}) {
  const c = new MqttClient(url, { WebSocket, clientId: uid('page'), ...opts });
  c.received = [];
  c.packets = [];
  c.on('message', (topic, payload, info) => c.received.push({ topic, payload, text: utf8(payload), qos: info.qos, retain: info.retain }));
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
