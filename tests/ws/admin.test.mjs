// admin.test.mjs - the page's admin view (web/admin.js) in Debian's headless Chromium, against
// a broker with `admin_user alice`: a wrong password is refused in words; alice logs in and
// sees two real clients (one over TCP, one over WebSocket) in the live table with their
// listeners; the detail panel; kicking the TCP one (two clicks) removes it from the table and
// its will arrives; the retained browser shows the dry-run count before deleting the messages
// under a filter, and keeps the rest; the publish form reaches a subscriber; on a 390-px
// phone nothing scrolls sideways. Screenshots: admin-desktop.png, admin-mobile.png (with
// MIDGE_UPDATE_SCREENSHOT=1 also docs/admin-screenshot.png).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import mqtt from 'mqtt';

import {
  ARTIFACTS, REFERENCE, ROOT, TIMEOUT, end, mqttConnect, publish, startBroker, subscribe, waitFor,
} from './harness.mjs';
import { launch, openPage, screenshot } from './chromium.mjs';

/** MQTT.js over plain TCP (the broker's mqtt listener), resolved at CONNACK. */
function tcpClient(port, opts) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: TIMEOUT, ...opts });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

// A refused login is an HTTP 401 (or 403) the browser reports on the console: expected here.
const REFUSED = /status of 40[13]/;

const skip = REFERENCE ? 'the admin API is midge\'s' : false;

describe('the admin view', { skip }, () => {
  let broker, ctx, page, tcp, ws, watcher;
  before(async () => {
    broker = await startBroker({ users: { alice: 'secret', bob: 'builder' }, anonymous: true, conf: ['admin_user alice'] });
    ctx = await launch();
    tcp = await tcpClient(broker.tcp, { clientId: 'esp32-tcp', username: 'bob', password: 'builder',
      will: { topic: 'class/esp32-tcp/status', payload: 'offline', qos: 1, retain: false } });
    await subscribe(tcp, 'class/esp32-tcp/cmd', 1);
    ws = await mqttConnect(broker.wsUrl(), { clientId: 'phone-ws', username: 'bob', password: 'builder' });
    watcher = await mqttConnect(broker.wsUrl(), { clientId: 'watcher', username: 'bob', password: 'builder' });
    await subscribe(watcher, 'class/#', 1);
    for (let i = 0; i < 5; i++) await publish(watcher, `junk/debug/${i}`, `noise ${i}`, { qos: 1, retain: true });
    await publish(watcher, 'keep/config', '{"rate": 5}', { qos: 1, retain: true });
  });
  after(async () => {
    await ctx?.close();
    for (const c of [ws, watcher]) if (c) await end(c);
    if (tcp && tcp.connected) await end(tcp);
    await broker?.stop();
  });

  test('a wrong password is refused, then alice logs in', async () => {
    page = await openPage(ctx, broker.pageUrl, { expected: REFUSED });
    await page.click('#admin-open');
    await page.fill('#admin-login [name="user"]', 'alice');
    await page.fill('#admin-login [name="password"]', 'nope');
    await page.click('#admin-login button[type="submit"]');
    await waitFor(async () => /wrong user name or password/.test(await page.textContent('#admin-login-error')), 'the refusal in words');
    assert.equal(await page.isVisible('#admin-main'), false);
    await page.fill('#admin-login [name="user"]', 'bob');
    await page.fill('#admin-login [name="password"]', 'builder');
    await page.click('#admin-login button[type="submit"]');
    await waitFor(async () => /not an admin_user/.test(await page.textContent('#admin-login-error')), 'not an admin');
    await page.fill('#admin-login [name="user"]', 'alice');
    await page.fill('#admin-login [name="password"]', 'secret');
    await page.click('#admin-login button[type="submit"]');
    await page.waitForSelector('body[data-admin="on"]');
    assert.match(await page.textContent('#admin-who'), /alice/);
  });

  test('two real clients, one TCP and one WebSocket, live in the table; the detail panel', async () => {
    const tcpRow = page.locator('#admin-clients tr[data-client="esp32-tcp"]');
    const wsRow = page.locator('#admin-clients tr[data-client="phone-ws"]');
    await tcpRow.waitFor();
    await wsRow.waitFor();
    assert.match(await tcpRow.textContent(), /online/);
    assert.match(await tcpRow.textContent(), /3\.1\.1/);
    // Live: a client that connects now appears without a click.
    const late = await mqttConnect(broker.wsUrl(), { clientId: 'late-comer', username: 'bob', password: 'builder' });
    await page.locator('#admin-clients tr[data-client="late-comer"]').waitFor({ timeout: TIMEOUT * 2 });
    await end(late);
    // Filter and sort.
    await page.fill('#admin-client-filter', 'esp32');
    await waitFor(async () => (await page.locator('#admin-clients tbody tr').count()) === 1, 'filtered to esp32-tcp');
    await page.fill('#admin-client-filter', '');
    await waitFor(async () => (await page.locator('#admin-clients tbody tr').count()) >= 3, 'all again');
    await page.click('#admin-clients th[data-sort="client_id"]'); // descending now
    const ids = await page.locator('#admin-clients tbody tr').evaluateAll((rs) => rs.map((r) => r.dataset.client));
    assert.deepEqual(ids, [...ids].sort().reverse());
    await tcpRow.click();
    await page.waitForSelector('#admin-detail:not([hidden])');
    const detail = await page.textContent('#admin-detail');
    assert.match(detail, /esp32-tcp/);
    assert.match(detail, new RegExp(`127\\.0\\.0\\.1:${broker.tcp} \\(mqtt\\)`));
    assert.match(detail, /class\/esp32-tcp\/cmd\s+QoS 1/);
    assert.match(detail, /class\/esp32-tcp\/status/); // the will's topic
    await wsRow.click();
    await waitFor(async () => new RegExp(`127\\.0\\.0\\.1:${broker.ws} \\(websockets\\)`).test(await page.textContent('#admin-detail')), 'the WebSocket listener in the detail');
  });

  test('kick: the row goes and the will arrives', async () => {
    const btn = page.locator('#admin-clients tr[data-client="esp32-tcp"] button[data-kick]');
    await btn.click();
    assert.match(await btn.textContent(), /Sure/); // armed, not yet sent
    await btn.click();
    await page.locator('#admin-clients tr[data-client="esp32-tcp"]').waitFor({ state: 'detached' });
    const [will] = await watcher.waitMessages(1, (m) => m.topic === 'class/esp32-tcp/status');
    assert.equal(will.payload.toString(), 'offline');
    await waitFor(() => !tcp.connected, 'the TCP client closed by the broker');
    if (!REFERENCE) await broker.waitLog(/client esp32-tcp disconnected: disconnected by admin alice/);
  });

  test('retained: the dry-run count first, then the delete; the rest stays', async () => {
    await page.click('#admin .tabs [data-tab="retained"]');
    await page.locator('#admin-retained tr[data-topic="keep/config"]').waitFor();
    await page.fill('#admin-retained-form [name="filter"]', 'junk/#');
    await page.click('#admin-retained-form button[type="submit"]');
    await waitFor(async () => (await page.locator('#admin-retained tbody tr').count()) === 5, 'five junk messages listed');
    assert.match(await page.textContent('#admin-retained tr[data-topic="junk/debug/3"]'), /noise 3/);
    await page.click('#admin-retained-delete');
    await page.waitForSelector('#admin-confirm:not([hidden])');
    assert.match(await page.textContent('#admin-confirm-text'), /^5 retained messages match junk\/#/);
    // Nothing deleted yet: the count came from a dry run.
    assert.equal(await page.locator('#admin-retained tbody tr').count(), 5);
    await page.screenshot({ path: path.join(ARTIFACTS, 'admin-confirm.png') });
    await page.click('#admin-confirm-yes');
    await waitFor(async () => /Deleted 5 retained messages under junk\/#/.test(await page.textContent('#admin-retained-status')), 'deleted');
    assert.equal(await page.locator('#admin-retained tbody tr').count(), 0);
    await page.fill('#admin-retained-form [name="filter"]', '#');
    await page.click('#admin-retained-form button[type="submit"]');
    await page.locator('#admin-retained tr[data-topic="keep/config"]').waitFor();
    assert.equal(await page.locator('#admin-retained tr[data-topic^="junk/"]').count(), 0);
  });

  test('publish from the form reaches a subscriber', async () => {
    await page.click('#admin .tabs [data-tab="apublish"]');
    await page.fill('#admin-publish [name="topic"]', 'class/announce');
    await page.fill('#admin-publish [name="payload"]', '下課 class over');
    await page.selectOption('#admin-publish [name="qos"]', '1');
    await page.click('#admin-publish button[type="submit"]');
    const [m] = await watcher.waitMessages(1, (x) => x.topic === 'class/announce');
    assert.equal(m.payload.toString(), '下課 class over');
    // The watcher and the page's own topic tree (it subscribes to #).
    await waitFor(async () => /Published to class\/announce: 2 receivers/.test(await page.textContent('#admin-publish-result')), 'the result');
  });

  test('screenshots; usable on a phone; no page errors', async () => {
    await page.click('#admin .tabs [data-tab="clients"]');
    await page.locator('#admin-clients tr[data-client="phone-ws"]').click();
    await page.waitForSelector('#admin-detail:not([hidden])');
    await page.evaluate(() => window.scrollTo(0, 0)); // the admin view is the page's first card
    const file = path.join(ARTIFACTS, 'admin-desktop.png');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: file });
    if (process.env.MIDGE_UPDATE_SCREENSHOT === '1') fs.copyFileSync(file, path.join(ROOT, 'docs', 'admin-screenshot.png'));
    assert.deepEqual(ctx.errors, []);

    const phone = await launch({ width: 390, height: 844 });
    try {
      const p = await openPage(phone, broker.pageUrl + '?admin=1', { expected: REFUSED });
      await p.fill('#admin-login [name="user"]', 'alice');
      await p.fill('#admin-login [name="password"]', 'secret');
      await p.click('#admin-login button[type="submit"]');
      await p.locator('#admin-clients tr[data-client="phone-ws"]').waitFor();
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `no horizontal scrolling on a phone (${overflow}px too wide)`);
      await p.locator('#admin-clients tr[data-client="phone-ws"]').click();
      await p.waitForSelector('#admin-detail:not([hidden])');
      await screenshot(p, 'admin-mobile.png');
      assert.deepEqual(phone.errors, []);
    } finally {
      await phone.close();
    }
  });
});
