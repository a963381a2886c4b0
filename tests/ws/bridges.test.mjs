// bridges.test.mjs - the page's bridges panel (web/app.js, onBridge: one row per bridge from
// $SYS/broker/bridge/NAME/...) in Debian's headless Chromium, against a midge with a bridge to
// a second, real midge that the test starts, stops and starts again on the same port: the
// bridge is listed and connected; messages each way move its Sent and Received counts; with
// the remote stopped the row turns to down, its Reconnects count grows while the bridge
// retries, and messages for the remote pile up in Queued; with the remote back the row is
// connected again and the queue drains into Sent. On a 390-px phone the panel does not make
// the page scroll sideways. Screenshots: bridges-desktop.png, bridges-mobile.png.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  REFERENCE, TIMEOUT, end, freePort, mqttConnect, publish, startBroker, subscribe, waitFor,
} from './harness.mjs';
import { launch, openPage, overflow, screenshot } from './chromium.mjs';

// The panel's columns (index.html's #bridges): name, then BRIDGE_COLS of app.js.
const COLS = ['name', 'state', 'sent', 'received', 'queued', 'dropped', 'reconnects'];

/** The row of bridge name as {column: text}, plus the state cell's class. */
async function row(page, name) {
  const cells = await page.locator(`#bridges tr[data-bridge="${name}"] td`).evaluateAll(
    (tds) => tds.map((td) => ({ text: td.textContent, cls: td.className })));
  if (cells.length !== COLS.length) return null;
  const r = Object.fromEntries(COLS.map((c, i) => [c, cells[i].text]));
  r.stateClass = cells[1].cls;
  return r;
}

/** Waits until the row of bridge name satisfies pred; returns it. */
async function rowWhere(page, name, pred, what, timeout = TIMEOUT * 2) {
  let last = null;
  return waitFor(async () => { last = await row(page, name); return last && pred(last) && last; },
    () => `the bridges panel: ${what} (row ${JSON.stringify(last)})`, timeout);
}

// midge's own bridges and $SYS/broker/bridge/ figures.
const skip = REFERENCE ? 'bridges and their $SYS figures are midge\'s' : false;

describe('the bridges panel', { skip }, () => {
  let port, remote, local, ctx, page, pub, watcher, device;
  const remoteConf = () => [`listener ${port} 127.0.0.1`];
  before(async () => {
    port = await freePort();
    remote = await startBroker({ conf: remoteConf() });
    local = await startBroker({
      conf: ['connection lab', `address 127.0.0.1:${port}`, 'remote_clientid r-lab',
        'local_clientid l-lab', 'topic lab/# out 1', 'topic cmd/# in 1', 'restart_timeout 1'],
    });
    await local.waitLog(/bridge lab: connected to /);
    await remote.waitLog(/client r-lab subscribed to cmd\/#/);
    ctx = await launch();
    pub = await mqttConnect(`mqtt://127.0.0.1:${local.tcp}`, { clientId: 'lab-sensor' });
  });
  after(async () => {
    await ctx?.close();
    for (const c of [pub, watcher, device]) if (c?.connected) await end(c);
    await local?.stop();
    await remote?.stop();
  });

  test('the bridge is listed, connected', async () => {
    page = await openPage(ctx, local.pageUrl);
    await page.waitForSelector('body[data-state="on"]');
    await page.waitForSelector('#bridges tr[data-bridge="lab"]');
    assert.equal(await page.isVisible('#bridges'), true);
    const r = await rowWhere(page, 'lab', (x) => x.state === 'connected 已連線', 'connected');
    assert.equal(r.name, 'lab');
    assert.equal(r.stateClass, 'ok');
    assert.equal(r.queued, '0');
    assert.equal(r.dropped, '0');
  });

  test('messages each way move Sent and Received', async () => {
    watcher = await mqttConnect(`mqtt://127.0.0.1:${remote.tcp}`, { clientId: 'hq-watcher' });
    await subscribe(watcher, 'lab/#', 1);
    for (let i = 0; i < 3; i++) await publish(pub, 'lab/temp', `2${i}.5`, { qos: 1 });
    await watcher.waitMessages(3, (m) => m.topic === 'lab/temp');
    device = await mqttConnect(`mqtt://127.0.0.1:${remote.tcp}`, { clientId: 'hq-console' });
    for (const cmd of ['lights on', 'lights off']) await publish(device, 'cmd/lab/lights', cmd, { qos: 1 });
    await rowWhere(page, 'lab', (x) => x.sent === '3' && x.received === '2', 'Sent 3 and Received 2');
  });

  test('the remote stopped: down, retrying, messages for it queued', async () => {
    for (const c of [watcher, device]) await end(c);
    await remote.stop();
    const down = await rowWhere(page, 'lab', (x) => x.state === 'down 未連線', 'down');
    assert.equal(down.stateClass, 'error');
    const before = Number(down.reconnects);
    await rowWhere(page, 'lab', (x) => Number(x.reconnects) > before, `Reconnects over ${before} (retrying)`);
    for (let i = 0; i < 4; i++) await publish(pub, 'lab/temp', `3${i}.0`, { qos: 1 });
    await rowWhere(page, 'lab', (x) => x.queued === '4', 'Queued 4');
    assert.equal((await row(page, 'lab')).sent, '3');
  });

  test('the remote back on its port: connected again, the queue drained into Sent', async () => {
    const mark = local.lines.length;
    remote = await startBroker({ conf: remoteConf() });
    await local.waitLog(/bridge lab: connected to /, TIMEOUT * 2, mark);
    const r = await rowWhere(page, 'lab', (x) => x.state === 'connected 已連線' && x.queued === '0' && x.sent === '7',
      'connected, Queued 0, Sent 7');
    assert.equal(r.stateClass, 'ok');
    assert.equal(r.dropped, '0');
  });

  test('screenshots; no sideways scrolling on a 390-px phone; no page errors', async () => {
    await page.locator('#bridges').scrollIntoViewIfNeeded();
    await screenshot(page, 'bridges-desktop.png');
    assert.deepEqual(ctx.errors, []);

    const phone = await launch({ width: 390, height: 844 });
    try {
      const p = await openPage(phone, local.pageUrl);
      await p.waitForSelector('body[data-state="on"]');
      await rowWhere(p, 'lab', (x) => x.state === 'connected 已連線' && x.sent === '7', 'the row on the phone');
      await p.locator('#bridges').scrollIntoViewIfNeeded();
      await screenshot(p, 'bridges-mobile.png'); // before the checks: it shows what is wrong
      const wide = await overflow(p);
      assert.ok(wide <= 0, `no horizontal scrolling on a phone (${wide}px too wide)`);
      // The whole table is on the screen, its last column included.
      const box = await p.locator('#bridges').boundingBox();
      assert.ok(box.x >= 0 && box.x + box.width <= 390, `the panel within the 390-px screen: ${JSON.stringify(box)}`);
      assert.deepEqual(phone.errors, []);
    } finally {
      await phone.close();
    }
  });
});
