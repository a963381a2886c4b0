// chromium.mjs - the page tests' browser (browser, admin and bridges tests): Debian's headless
// Chromium (/usr/bin/chromium, or CHROMIUM_BIN) through playwright-core, never a downloaded
// one. Each launch gets a fresh profile in a temporary directory, removed at close; a context
// collects the page's uncaught errors and console errors (ctx.errors) and every URL it
// requests (ctx.requests); a page the WebSocket URLs it opens (page.sockets). Kept apart from
// harness.mjs so that the tests without a browser do not load playwright.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { ARTIFACTS, TIMEOUT } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
// This machine has no internet: keep Chromium from trying to reach it.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** A browser context with a fresh Chromium profile (--user-data-dir in a new temp directory). */
export async function launch(viewport = { width: 1280, height: 900 }) {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium package`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'midge-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, headless: true, args: ARGS, viewport, timeout: 30000,
  });
  ctx.setDefaultTimeout(TIMEOUT);
  ctx.errors = [];
  ctx.requests = [];
  ctx.on('request', (r) => ctx.requests.push(r.url()));
  const close = ctx.close.bind(ctx);
  ctx.close = async () => { await close(); fs.rmSync(dir, { recursive: true, force: true }); };
  return ctx;
}

/** Opens url in ctx's first page; it must answer 200 with HTML. Console errors matching
 *  expected (a RegExp, e.g. the 401 of a refused login) are not counted as errors. */
export async function openPage(ctx, url, { expected = null } = {}) {
  const page = ctx.pages()[0] ?? await ctx.newPage();
  page.on('pageerror', (e) => ctx.errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !(expected && expected.test(m.text()))) ctx.errors.push(`console: ${m.text()}`);
  });
  page.sockets = [];
  page.on('websocket', (ws) => page.sockets.push(ws.url()));
  const res = await page.goto(url);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'] || '', /^text\/html/);
  return page;
}

/** A full-page screenshot in ARTIFACTS; returns its path. */
export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** How many pixels the page is wider than its window (0 or less: no sideways scrolling). */
export const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
