// mqttjs.test.mjs - midge's WebSocket listener with MQTT.js (npm `mqtt`) as the client:
// both subprotocols, paths / and /mqtt, wildcards, QoS 0/1/2 in both directions (also
// against TCP clients), retained messages, the will, and 1 MB messages; then MQTT 5.0
// (protocolVersion 5) over WebSocket and TCP: CONNACK properties, forwarded properties and
// User Properties in order, subscription identifiers, No Local, Retain As Published, Retain
// Handling, topic aliases, reason codes, session expiry, and 3.1.1 and 5.0 clients on the
// same topics. Everything runs twice: over ws:// and over wss:// (WebSocket over TLS, a
// broker of its own with a certificate from a CA made for the run, which the clients trust).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import {
  REFERENCE, TIMEOUT, end, mqttConnect, publish, sleep, startBroker, subscribe, tcpPublish, tcpSubscriber,
  uid, waitFor,
} from './harness.mjs';

for (const scheme of REFERENCE ? ['ws'] : ['ws', 'wss']) describe(`over ${scheme}://`, () => {
  let broker;
  before(async () => { broker = await startBroker({ tls: scheme === 'wss' }); });
  after(async () => { await broker?.stop(); });
  const url = (p) => (scheme === 'wss' ? broker.wssUrl(p) : broker.wsUrl(p));
  const tlsOpts = () => (scheme === 'wss' ? broker.tlsOptions : {});
  const connect = (u, opts = {}) => mqttConnect(u, { ...tlsOpts(), ...opts });

  /** MQTT.js options that keep a handle on the underlying `ws` WebSocket in holder.socket. */
  function capture(holder, extra = {}) {
    return {
      ...extra,
      createWebsocket: (u, protocols, opts) => {
        holder.socket = new WebSocket(u, protocols, opts.wsOptions);
        return holder.socket;
      },
    };
  }

  describe('subprotocols and paths', () => {
    for (const [name, opts, proto] of [
      ['MQTT 3.1.1 (protocolId MQTT, v4) uses "mqtt"', {}, 'mqtt'],
      ['MQTT 3.1 (MQIsdp, v3) uses "mqttv3.1"', { protocolId: 'MQIsdp', protocolVersion: 3 }, 'mqttv3.1'],
    ]) {
      for (const p of ['/mqtt', '/']) {
        test(`${name} on path ${p}`, async () => {
          const h = {};
          const c = await connect(url(p), capture(h, opts));
          assert.equal(h.socket.protocol, proto, 'the broker echoes the offered subprotocol');
          const topic = `proto/${proto}/${p === '/' ? 'root' : 'mqtt'}`;
          await subscribe(c, topic, 1);
          await publish(c, topic, 'hello', { qos: 1 });
          const [m] = await c.waitMessages(1);
          assert.equal(m.topic, topic);
          assert.equal(m.payload.toString(), 'hello');
          await end(c);
        });
      }
    }

    test('raw handshake: the chosen subprotocol is one of those offered', async () => {
      for (const offered of [['mqtt'], ['mqttv3.1'], ['foo', 'mqtt']]) {
        const ws = new WebSocket(url('/mqtt'), offered, tlsOpts());
        await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
        assert.equal(ws.protocol, offered.find((x) => x === 'mqtt' || x === 'mqttv3.1'));
        ws.terminate();
      }
    });
  });

  describe('routing', () => {
    test('wildcards + and #, and $SYS only for $SYS filters', async () => {
      const sub = await connect(url());
      await subscribe(sub, 'w/+/c', 0);
      await subscribe(sub, 'w/a/#', 0);
      const hash = await connect(url('/'));
      await subscribe(hash, '#', 0);
      const pub = await connect(url());
      for (const t of ['w/a/c', 'w/b/c', 'w/a/b/c', 'w/a', 'w/b/d', 'x/a/c']) await publish(pub, t, t, { qos: 1 });
      await publish(pub, 'w/done', 'end', { qos: 1 });
      await hash.waitMessages(1, (m) => m.topic === 'w/done');
      await sleep(100);
      assert.deepEqual(sub.received.map((m) => m.topic).sort(), ['w/a', 'w/a/b/c', 'w/a/c', 'w/b/c']);
      assert.ok(!hash.received.some((m) => m.topic.startsWith('$')), '# must not match $SYS topics');
      const sys = await connect(url());
      await subscribe(sys, '$SYS/broker/clients/connected', 0);
      const [m] = await sys.waitMessages(1);
      assert.match(m.payload.toString(), /^\d+$/);
      // The WebSocket clients count as connected clients (at the next $SYS update).
      await sys.waitMessages(1, (x) => Number(x.payload.toString()) >= 4, TIMEOUT);
      await Promise.all([sub, hash, pub, sys].map(end));
    });

    test('UTF-8 topics and payloads', async () => {
      const c = await connect(url());
      const topic = '感測器/客廳/溫度';
      await subscribe(c, '感測器/+/溫度', 1);
      await publish(c, topic, '二十一度 ✓', { qos: 1 });
      const [m] = await c.waitMessages(1);
      assert.equal(m.topic, topic);
      assert.equal(m.payload.toString('utf8'), '二十一度 ✓');
      await end(c);
    });
  });

  describe('QoS', () => {
    test('QoS 0/1/2 publish x subscribe between WebSocket clients', async () => {
      const subs = [];
      for (const q of [0, 1, 2]) {
        const s = await connect(url());
        assert.equal(await subscribe(s, 'qos/#', q), q);
        subs.push(s);
      }
      const pub = await connect(url('/'));
      for (const q of [0, 1, 2]) await publish(pub, `qos/${q}`, `m${q}`, { qos: q });
      for (const [sq, s] of subs.entries()) {
        const got = await s.waitMessages(3);
        assert.deepEqual(got.map((m) => [m.topic, m.payload.toString(), m.qos]),
          [0, 1, 2].map((pq) => [`qos/${pq}`, `m${pq}`, Math.min(pq, sq)]));
      }
      await Promise.all([...subs, pub].map(end));
    });

    // Mosquitto 2.0.11's websockets stall after max_inflight (20) QoS 2 messages to a client.
    test('QoS 2 many in flight, in order', { skip: REFERENCE ? 'Mosquitto websockets stall here' : false }, async () => {
      const s = await connect(url());
      await subscribe(s, 'many/q2', 2);
      const p = await connect(url());
      const n = 500;
      await Promise.all(Array.from({ length: n }, (_, i) => publish(p, 'many/q2', String(i), { qos: 2 })));
      const got = await s.waitMessages(n, () => true, TIMEOUT * 2);
      assert.deepEqual(got.map((m) => Number(m.payload)), Array.from({ length: n }, (_, i) => i));
      await sleep(100);
      assert.equal(s.received.length, n, 'no duplicates');
      await Promise.all([s, p].map(end));
    });

    test('TCP publisher to WebSocket subscriber and back, QoS 0/1/2', async () => {
      const s = await connect(url());
      await subscribe(s, 'mix/tcp/#', 2);
      for (const q of [0, 1, 2]) tcpPublish(broker.tcp, ['-t', `mix/tcp/${q}`, '-m', `tcp${q}`, '-q', String(q)]);
      const got = await s.waitMessages(3);
      assert.deepEqual(got.map((m) => [m.topic, m.payload.toString(), m.qos]), [0, 1, 2].map((q) => [`mix/tcp/${q}`, `tcp${q}`, q]));

      const tsub = tcpSubscriber(broker.tcp, 'mix/ws/#', { qos: 2 });
      await tsub.ready;
      for (const q of [0, 1, 2]) await publish(s, `mix/ws/${q}`, `ws${q}`, { qos: q });
      assert.deepEqual(await tsub.waitLines(3), ['mix/ws/0 ws0', 'mix/ws/1 ws1', 'mix/ws/2 ws2']);
      tsub.stop();
      await end(s);
    });
  });

  describe('retained messages', () => {
    test('a new WebSocket subscriber gets the retained message; an empty one clears it', async () => {
      const p = await connect(url());
      await publish(p, 'ret/lights', 'ON', { qos: 1, retain: true });
      const s = await connect(url('/'));
      await subscribe(s, 'ret/+', 1);
      const [m] = await s.waitMessages(1);
      assert.deepEqual([m.topic, m.payload.toString(), m.retain], ['ret/lights', 'ON', true]);
      // A live message on an existing subscription has retain 0 (MQTT-3.3.1-9).
      await publish(p, 'ret/lights', 'OFF', { qos: 1, retain: true });
      const [, live] = await s.waitMessages(2);
      assert.deepEqual([live.payload.toString(), live.retain], ['OFF', false]);
      await publish(p, 'ret/lights', '', { qos: 1, retain: true });
      const s2 = await connect(url());
      await subscribe(s2, 'ret/+', 1);
      await publish(p, 'ret/marker', 'x', { qos: 1 });
      const got = await s2.waitMessages(1);
      assert.deepEqual(got.map((x) => x.topic), ['ret/marker'], 'the retained message was cleared');
      await Promise.all([p, s, s2].map(end));
    });

    test('retained from TCP reaches a WebSocket subscriber', async () => {
      tcpPublish(broker.tcp, ['-t', 'ret/tcp', '-m', '42', '-q', '1', '-r']);
      const s = await connect(url());
      await subscribe(s, 'ret/tcp', 0);
      const [m] = await s.waitMessages(1);
      assert.deepEqual([m.payload.toString(), m.retain], ['42', true]);
      await end(s);
    });
  });

  describe('will', () => {
    test('killing the WebSocket publishes the will; DISCONNECT does not', async () => {
      const watcher = await connect(url());
      await subscribe(watcher, 'will/#', 1);
      const tsub = tcpSubscriber(broker.tcp, 'will/#', { qos: 1 });
      await tsub.ready;

      const h = {};
      const dying = await connect(url(), capture(h, {
        clientId: uid('dying'), keepalive: 30,
        will: { topic: 'will/dying', payload: Buffer.from('gone 離線'), qos: 1, retain: false },
      }));
      dying.on('error', () => {});
      h.socket.terminate(); // no close frame, no DISCONNECT: the TCP connection just ends
      const [m] = await watcher.waitMessages(1);
      assert.deepEqual([m.topic, m.payload.toString(), m.qos], ['will/dying', 'gone 離線', 1]);
      assert.deepEqual(await tsub.waitLines(1), ['will/dying gone 離線']);
      dying.end(true);

      const polite = await connect(url('/'), {
        will: { topic: 'will/polite', payload: Buffer.from('should not appear'), qos: 1, retain: false },
      });
      await end(polite);
      await publish(watcher, 'will/marker', 'm', { qos: 1 });
      await watcher.waitMessages(2);
      assert.deepEqual(watcher.received.map((x) => x.topic), ['will/dying', 'will/marker']);
      tsub.stop();
      await end(watcher);
    });

    test('a retained will from a WebSocket client', async () => {
      const h = {};
      const c = await connect(url(), capture(h, {
        will: { topic: 'will/status', payload: Buffer.from('offline'), qos: 1, retain: true },
      }));
      c.on('error', () => {});
      h.socket.terminate();
      c.end(true);
      const s = await connect(url());
      // The will may take a moment to be published; a retained one is there once it was.
      for (let i = 0; i < 50 && !s.received.length; i++) {
        await subscribe(s, 'will/status', 1);
        if (!s.received.length) { await s.unsubscribe('will/status'); await sleep(50); }
      }
      const [m] = await s.waitMessages(1);
      assert.deepEqual([m.payload.toString(), m.retain], ['offline', true]);
      await end(s);
    });
  });

  // Mosquitto 2.0.11's websockets take seconds for 100 KB and never deliver 1 MB.
  describe('large messages', { skip: REFERENCE ? 'too slow on Mosquitto websockets' : false }, () => {
    const big = crypto.randomBytes(1024 * 1024);
    const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

    test('1 MB from WebSocket to WebSocket and TCP subscribers, QoS 0/1/2', async () => {
      const s = await connect(url());
      await subscribe(s, 'big/ws/#', 2);
      const t = await connect(`mqtt://127.0.0.1:${broker.tcp}`); // MQTT.js over TCP
      await subscribe(t, 'big/ws/#', 2);
      const p = await connect(url('/'));
      for (const q of [0, 1, 2]) {
        await publish(p, `big/ws/${q}`, big, { qos: q });
        for (const c of [s, t]) {
          const [m] = await c.waitMessages(1, (x) => x.topic === `big/ws/${q}`, TIMEOUT * 2);
          assert.equal(m.payload.length, big.length);
          assert.equal(sha(m.payload), sha(big), `QoS ${q} to ${c === s ? 'WebSocket' : 'TCP'}`);
          assert.equal(m.qos, q);
        }
      }
      await Promise.all([s, t, p].map(end));
    });

    test('1 MB from TCP to a WebSocket subscriber', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'midge-ws-big-'));
      const file = path.join(dir, 'big.bin');
      fs.writeFileSync(file, big);
      try {
        const s = await connect(url());
        await subscribe(s, 'big/tcp', 1);
        tcpPublish(broker.tcp, ['-t', 'big/tcp', '-f', file, '-q', '1']);
        const [m] = await s.waitMessages(1, () => true, TIMEOUT * 2);
        assert.equal(sha(m.payload), sha(big));
        await end(s);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  // MQTT 5.0: the scheme's WebSocket listener, and (once, in the ws:// run) plain TCP. Each
  // test pairs a client on that transport with one on the other, so both directions cross.
  // (Mosquitto words its reason strings and assigned ids differently: not run against it.)
  for (const tr of REFERENCE ? [] : scheme === 'wss' ? ['wss'] : ['ws', 'tcp']) describe(`MQTT 5 over ${tr}`, () => {
    let b5, dir;
    before(async () => {
      // A second broker for what needs configuration: an acl_file, a password, and topic
      // aliases towards clients that accept them.
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'midge-ws5-'));
      fs.writeFileSync(path.join(dir, 'acl'), 'topic readwrite v5/#\ntopic read ro/#\nuser alice\ntopic readwrite v5/#\n');
      b5 = await startBroker({
        tls: scheme === 'wss', users: { alice: 'pw 密碼' },
        conf: [`acl_file ${path.join(dir, 'acl')}`, 'max_topic_alias_broker 5'],
      });
    });
    after(async () => {
      await b5?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    const tcpUrl = (b) => `mqtt://127.0.0.1:${b.tcp}`;
    const webUrl = (b) => (scheme === 'wss' ? b.wssUrl() : b.wsUrl());
    const here = (b) => (tr === 'tcp' ? tcpUrl(b) : webUrl(b));
    const there = (b) => (tr === 'tcp' ? webUrl(b) : tcpUrl(b));
    /** An MQTT.js 5.0 client that keeps every acknowledgement and DISCONNECT it receives
     *  (wss:// trusting the CA of the broker of u). */
    async function c5(u, opts = {}) {
      const ca = u.startsWith('wss:') && u.includes(`:${b5.wss}/`) ? b5.tlsOptions : tlsOpts();
      const c = await mqttConnect(u, { ...ca, protocolVersion: 5, ...opts });
      c.acks = [];
      c.on('packetreceive', (p) => { if (/ack$|^pubrec|^pubcomp|^disconnect$/.test(p.cmd)) c.acks.push(p); });
      return c;
    }
    const sub5 = (c, filter, opts) => new Promise((resolve, reject) =>
      c.subscribe(filter, opts, (err, granted) => (err ? reject(err) : resolve(granted.map((g) => g.qos)))));
    /** Publishes; resolves with the PUBACK or PUBREC (MQTT 5: its reason code), rejects on a refusal. */
    const pub5 = (c, topic, payload, opts) => new Promise((resolve, reject) => {
      c.publish(topic, payload, opts, (err, packet) => {
        if (err) { reject(err); return; }
        resolve(c.acks.find((a) => a.messageId === packet?.messageId && /^pub(ack|rec)$/.test(a.cmd)));
      });
    });

    test('CONNACK properties; an empty client id gets one assigned', async () => {
      const c = await c5(here(broker), { clientId: '' });
      const p = c.connack.properties;
      assert.equal(c.connack.reasonCode, 0);
      assert.equal(p.receiveMaximum, 20);
      assert.equal(p.topicAliasMaximum, 10);
      assert.match(p.assignedClientIdentifier, /^auto-/);
      await end(c);
    });

    test('PUBLISH properties are forwarded; User Properties keep their order; request and response', async () => {
      const s = await c5(there(broker));
      await sub5(s, 'v5/fwd/#', { qos: 1 });
      const p = await c5(here(broker));
      const properties = {
        payloadFormatIndicator: true, messageExpiryInterval: 600, contentType: 'application/json',
        responseTopic: 'v5/fwd/reply', correlationData: Buffer.from([1, 2, 3]),
        userProperties: { z: '1', a: ['2', '3'], 中文: '值 ✓' },
      };
      await pub5(p, 'v5/fwd/req', '{"t":21.5}', { qos: 1, properties });
      const [m] = await s.waitMessages(1);
      const got = m.properties;
      assert.equal(m.payload.toString(), '{"t":21.5}');
      assert.deepEqual(Object.entries(got.userProperties), [['z', '1'], ['a', ['2', '3']], ['中文', '值 ✓']]);
      assert.equal(got.payloadFormatIndicator, true);
      assert.equal(got.contentType, 'application/json');
      assert.equal(got.responseTopic, 'v5/fwd/reply');
      assert.deepEqual([...got.correlationData], [1, 2, 3]);
      assert.ok(got.messageExpiryInterval > 0 && got.messageExpiryInterval <= 600);
      // The responder answers on the response topic with the correlation data.
      await pub5(s, got.responseTopic, 'ok', { qos: 1, properties: { correlationData: got.correlationData } });
      const [, r] = await s.waitMessages(2);
      assert.deepEqual([r.topic, [...r.properties.correlationData]], ['v5/fwd/reply', [1, 2, 3]]);
      await Promise.all([s, p].map(end));
    });

    test('subscription identifiers: every matching one on a single copy, replaced on resubscribe', async () => {
      const s = await c5(here(broker));
      await sub5(s, 'v5/sid/+', { qos: 1, properties: { subscriptionIdentifier: 7 } });
      await sub5(s, 'v5/sid/#', { qos: 0, properties: { subscriptionIdentifier: 268435455 } });
      await sub5(s, 'v5/sid/plain', { qos: 0 });
      const p = await c5(there(broker));
      await pub5(p, 'v5/sid/a', 'a', { qos: 1 });
      await pub5(p, 'v5/sid/a/b', 'b', { qos: 1 });
      const [a, b] = await s.waitMessages(2);
      assert.deepEqual([a.topic, [...a.properties.subscriptionIdentifier].sort((x, y) => x - y), a.qos], ['v5/sid/a', [7, 268435455], 1]);
      assert.deepEqual([b.topic, b.properties.subscriptionIdentifier], ['v5/sid/a/b', 268435455]);
      await sub5(s, 'v5/sid/#', { qos: 0, properties: { subscriptionIdentifier: 11 } });
      await pub5(p, 'v5/sid/a/c', 'c', { qos: 1 });
      const [, , c] = await s.waitMessages(3);
      assert.equal(c.properties.subscriptionIdentifier, 11);
      await Promise.all([s, p].map(end));
    });

    // [MQTT-3.3.4-4]: the one copy carries the identifiers of all matching subscriptions.
    // Large ones (4-byte variable byte integers, 5 bytes each with their property id), so
    // that a fixed-size property block cannot hold them all either. (Up to 08586da only 8
    // reached the client, broker_publish's ids[8]; v5's 67038fb lifted the cap.)
    test('subscription identifiers: all 32 of 32 overlapping subscriptions on the one copy', async () => {
      const s = await c5(here(broker));
      const filters = [];
      for (let m = 0; m < 32; m++) filters.push(['v5', 'b', 'c', 'd', 'e'].map((x, i) => ((m >> i) & 1 ? '+' : x)).join('/'));
      for (const [i, f] of filters.entries()) await sub5(s, f, { qos: 0, properties: { subscriptionIdentifier: 268435455 - i } });
      const p = await c5(there(broker));
      await pub5(p, 'v5/b/c/d/e', 'x', { qos: 1 });
      const [m] = await s.waitMessages(1);
      const ids = [m.properties.subscriptionIdentifier].flat();
      assert.equal(s.received.length, 1, 'one copy');
      assert.deepEqual(ids.sort((a, b) => a - b), filters.map((_, i) => 268435455 - i).sort((a, b) => a - b),
        `all 32 identifiers (got ${ids.length})`);
      await Promise.all([s, p].map(end));
    });

    test('No Local: a client does not get its own messages back', async () => {
      const c = await c5(here(broker));
      await sub5(c, 'v5/nl', { qos: 1, nl: true });
      await pub5(c, 'v5/nl', 'mine', { qos: 1 });
      const o = await c5(there(broker));
      await pub5(o, 'v5/nl', 'theirs', { qos: 1 });
      await c.waitMessages(1);
      assert.deepEqual(c.received.map((m) => m.payload.toString()), ['theirs']);
      await Promise.all([c, o].map(end));
    });

    test('Retain As Published and Retain Handling 0, 1 and 2', async () => {
      const p = await c5(there(broker));
      await pub5(p, 'v5/rh/state', 'R', { qos: 1, retain: true });
      const [r0, r1, r2] = await Promise.all([0, 1, 2].map(() => c5(here(broker))));
      for (const [c, rh] of [[r0, 0], [r1, 1], [r2, 2]]) {
        await sub5(c, 'v5/rh/state', { qos: 1, rh, rap: rh === 2 });
        await sub5(c, 'v5/rh/state', { qos: 1, rh, rap: rh === 2 }); // again: an existing subscription
      }
      await pub5(p, 'v5/rh/state', 'live', { qos: 1, retain: true });
      for (const c of [r0, r1, r2]) await c.waitMessages(1, (m) => m.payload.toString() === 'live');
      const seen = (c) => c.received.map((m) => `${m.payload}${m.retain ? ' (retained)' : ''}`);
      assert.deepEqual(seen(r0), ['R (retained)', 'R (retained)', 'live'], 'rh 0: at every SUBSCRIBE');
      assert.deepEqual(seen(r1), ['R (retained)', 'live'], 'rh 1: only for a new subscription');
      assert.deepEqual(seen(r2), ['live (retained)'], 'rh 2: never; rap keeps the flag');
      await pub5(p, 'v5/rh/state', '', { qos: 1, retain: true });
      await Promise.all([p, r0, r1, r2].map(end));
    });

    test('topic aliases: MQTT.js sends them; a client that accepts them gets them', async () => {
      const s = await c5(there(b5), { properties: { topicAliasMaximum: 5 } });
      const aliases = [];
      s.on('packetreceive', (x) => { if (x.cmd === 'publish') aliases.push(x.properties?.topicAlias); });
      await sub5(s, 'v5/alias/#', { qos: 1 });
      const p = await c5(here(b5), { autoAssignTopicAlias: true });
      const sent = [];
      p.on('packetsend', (x) => { if (x.cmd === 'publish') sent.push([x.topic, x.properties?.topicAlias]); });
      for (let i = 0; i < 3; i++) await pub5(p, 'v5/alias/long/topic/name', String(i), { qos: 1 });
      const got = await s.waitMessages(3);
      assert.deepEqual(sent, [['v5/alias/long/topic/name', 1], ['', 1], ['', 1]], 'MQTT.js used an alias');
      assert.deepEqual(got.map((m) => `${m.topic} ${m.payload}`), [0, 1, 2].map((i) => `v5/alias/long/topic/name ${i}`));
      assert.deepEqual(aliases, [1, 1, 1], 'the broker used one towards the subscriber');
      await Promise.all([s, p].map(end));
    });

    test('reason codes: 0x10 no matching subscribers, 0x11 no subscription existed, 0x87 from acl_file', async () => {
      const c = await c5(here(b5));
      assert.equal((await pub5(c, 'v5/nobody', 'x', { qos: 1 })).reasonCode, 0x10);
      assert.equal((await pub5(c, 'v5/nobody', 'x', { qos: 2 })).reasonCode, 0x10);
      await new Promise((resolve) => c.unsubscribe('v5/never', resolve));
      assert.deepEqual(c.acks.find((a) => a.cmd === 'unsuback').granted, [0x11]);
      const refused = await sub5(c, 'closed/#', { qos: 1 }).then(() => null, (x) => x); // MQTT.js rejects it
      assert.deepEqual(refused?.packet?.granted, [0x87]);
      assert.deepEqual(await sub5(c, 'ro/#', { qos: 1 }), [1]);
      const e = await pub5(c, 'ro/x', 'x', { qos: 1 }).then(() => null, (x) => x);
      assert.equal(e?.code, 0x87, 'PUBACK 0x87 rejects the publish');
      assert.equal(c.acks.find((a) => a.cmd === 'puback' && a.reasonCode === 0x87)?.properties?.reasonString, 'not authorized by acl_file');
      await end(c);
    });

    test('refusals: CONNACK 0x87 for a wrong password, 0x8C for an authentication method', async () => {
      await assert.rejects(c5(here(b5), { username: 'alice', password: 'nope' }), (e) => e.code === 0x87);
      await assert.rejects(c5(here(b5), { username: 'alice', password: 'pw 密碼', properties: { authenticationMethod: 'SCRAM-SHA-1' } }),
        (e) => e.code === 0x8c);
      const ok = await c5(here(b5), { username: 'alice', password: 'pw 密碼' });
      await end(ok);
    });

    test("the broker's DISCONNECT: 0x8E when another connection takes the client id", async () => {
      const id = uid('v5take');
      const first = await c5(here(broker), { clientId: id });
      const said = new Promise((resolve) => first.once('disconnect', resolve));
      const second = await c5(there(broker), { clientId: id });
      const d = await said;
      assert.equal(d.reasonCode, 0x8e);
      assert.equal(d.properties?.reasonString, 'another connection took over the client id');
      first.end(true);
      await end(second);
    });

    test('Session Expiry Interval: a session resumed with its queued message', async () => {
      const id = uid('v5sess');
      const opts = { clientId: id, clean: false, properties: { sessionExpiryInterval: 300 } };
      const c = await c5(here(broker), opts);
      assert.equal(c.connack.sessionPresent, false);
      await sub5(c, 'v5/sess', { qos: 1 });
      await end(c);
      const p = await c5(there(broker));
      await pub5(p, 'v5/sess', 'queued', { qos: 1 });
      const back = await c5(here(broker), opts);
      assert.equal(back.connack.sessionPresent, true);
      const [m] = await back.waitMessages(1);
      assert.equal(m.payload.toString(), 'queued');
      await new Promise((resolve) => back.end(false, { properties: { sessionExpiryInterval: 0 } }, resolve));
      await Promise.all([p].map(end));
    });

    test('3.1.1 and 5.0 clients on the same topics, both directions, retained and will', async () => {
      const v4 = await connect(there(broker)); // MQTT.js default: 3.1.1
      const v5 = await c5(here(broker));
      await subscribe(v4, 'v5/mix/#', 2);
      await sub5(v5, 'v5/mix/#', { qos: 2 });
      await pub5(v5, 'v5/mix/from5', 'five', { qos: 2, properties: { userProperties: { k: 'v' }, contentType: 'text/plain' } });
      await publish(v4, 'v5/mix/from4', 'four', { qos: 2 });
      const four = await v4.waitMessages(2);
      assert.deepEqual(four.map((m) => [m.topic, m.payload.toString(), m.qos, m.properties]),
        [['v5/mix/from5', 'five', 2, undefined], ['v5/mix/from4', 'four', 2, undefined]]);
      const five = await v5.waitMessages(2);
      assert.deepEqual(five.map((m) => [m.topic, m.payload.toString(), m.qos, m.properties?.userProperties && { ...m.properties.userProperties }]),
        [['v5/mix/from5', 'five', 2, { k: 'v' }], ['v5/mix/from4', 'four', 2, undefined]]);
      // A retained message from 5.0 keeps its properties for a later 5.0 subscriber.
      await pub5(v5, 'v5/mix/retained', 'kept', { qos: 1, retain: true, properties: { userProperties: { unit: '°C' } } });
      const late5 = await c5(there(broker));
      await sub5(late5, 'v5/mix/retained', { qos: 1 });
      const late4 = await connect(here(broker));
      await subscribe(late4, 'v5/mix/retained', 1);
      const [[r5], [r4]] = await Promise.all([late5.waitMessages(1), late4.waitMessages(1)]);
      assert.deepEqual([r5.payload.toString(), r5.retain, { ...r5.properties.userProperties }], ['kept', true, { unit: '°C' }]);
      assert.deepEqual([r4.payload.toString(), r4.retain, r4.properties], ['kept', true, undefined]);
      await pub5(v5, 'v5/mix/retained', '', { qos: 1, retain: true });
      // A 5.0 will (with its properties) reaches both.
      const dying = await c5(here(broker), {
        will: { topic: 'v5/mix/will', payload: Buffer.from('gone'), qos: 1, retain: false, properties: { contentType: 'text/plain', userProperties: { why: 'test' } } },
      });
      await new Promise((resolve) => dying.end(false, { reasonCode: 0x04 }, resolve));
      const [w4] = await v4.waitMessages(1, (m) => m.topic === 'v5/mix/will');
      const [w5] = await v5.waitMessages(1, (m) => m.topic === 'v5/mix/will');
      assert.equal(w4.payload.toString(), 'gone');
      assert.deepEqual([w5.payload.toString(), w5.properties.contentType, { ...w5.properties.userProperties }], ['gone', 'text/plain', { why: 'test' }]);
      await Promise.all([v4, v5, late5, late4].map(end));
    });
  });
});
