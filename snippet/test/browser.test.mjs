// The snippet and library in real headless Chromium (Debian's, driven by playwright-core) against a real
// `cdp up`, which also serves the test pages (`--site`): what the browser sends is checked where it lands, in
// the collector's raw/ folder.
//
// Run by scripts/test after the Rust build: node --test snippet/test/browser.test.mjs
// Environment: CDP_BIN (default target/debug/cdp), CHROMIUM (default /usr/bin/chromium).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { launch } from './chromium.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CDP = process.env.CDP_BIN || join(root, 'target', 'debug', 'cdp');
const SNIPPET = readFileSync(join(root, 'snippet', 'dist', 'snippet.min.js'), 'utf8');

let data;
let site;
let up;
let port;
let key;
let browser;

/// Starts `cdp up` on a fresh folder with one source, and Chromium resolving *.shop.example to 127.0.0.1.
before(async () => {
  data = mkdtempSync(join(tmpdir(), 'cdp-snippet-'));
  site = join(data, 'site');
  mkdirSync(join(site, 't'), { recursive: true });
  const added = execFileSync(CDP, ['source', 'add', 'web', '--data', data], { encoding: 'utf8' });
  key = added.trim().split('\n').pop().trim();
  port = await startCollector(0);
  browser = await launch(['--host-resolver-rules=MAP *.shop.example 127.0.0.1']);
});

/// Starts `cdp up` on `listen` (0: a free port); resolves to its port.
function startCollector(listen) {
  const args = ['up', '--listen', `127.0.0.1:${listen}`, '--data', data, '--site', site];
  up = spawn(CDP, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`cdp up did not start: ${out}`)), 20000);
    up.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    up.on('exit', (code) => reject(new Error(`cdp up exited (${code}): ${out}`)));
  });
}

async function stopCollector() {
  const exited = new Promise((resolve) => up.once('exit', resolve));
  up.kill('SIGINT');
  await exited;
}

after(async () => {
  await browser?.close();
  up?.kill();
  if (data) rmSync(data, { recursive: true, force: true });
});

/// Every event stored under raw/, in the order of the objects' names (ULIDs: arrival) and lines.
function stored() {
  const out = [];
  const walk = (dir) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, name.name);
      if (name.isDirectory()) walk(path);
      else if (name.name.endsWith('.ndjson.gz')) {
        for (const line of gunzipSync(readFileSync(path)).toString('utf8').split('\n')) {
          if (line.trim()) out.push(JSON.parse(line));
        }
      }
    }
  };
  walk(join(data, 'raw'));
  return out;
}

async function until(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function named(event) {
  return stored().filter((e) => e.event === event);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Pages on `host` (www.shop.example, ...) written into the folder `cdp up` serves, each with the snippet
/// (same origin: an empty host) and `body`.
function url(host, name, query = '') {
  return `http://${host}:${port}/t/${name}.html${query}`;
}
async function newContext(pages, init) {
  for (const [name, page] of Object.entries(pages)) {
    const snippet = SNIPPET.replace('__HOST__', '')
      .replace('__WRITE_KEY__', key)
      .replace('__OPTIONS__', JSON.stringify(page.options || {}));
    const html = `<!doctype html><html><head><title>${page.title || name}</title><script>${snippet}</script></head><body><script>${page.body || ''}</script></body></html>`;
    writeFileSync(join(site, 't', `${name}.html`), html);
  }
  const context = await browser.newContext();
  if (init) await context.addInitScript(init);
  return context;
}
async function open(context, target) {
  const page = await context.newPage();
  await page.goto(target);
  await page.waitForFunction(() => window.cdp && window.cdp.loaded === true);
  return page;
}

test('the demo page served by cdp up sends a page view and a click', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${port}/demo?writeKey=${key}`);
  await page.waitForFunction(() => window.cdp && window.cdp.loaded === true);
  const aid = await page.evaluate(() => cdp.user().anonymousId());
  await page.click('#view');
  const events = await until('the demo events', () => {
    const mine = stored().filter((e) => e.anonymousId === aid);
    return mine.some((e) => e.event === 'Product Viewed') && mine;
  });
  const view = events.find((e) => e.type === 'page');
  assert.equal(view.context.page.path, '/demo');
  assert.equal(view.context.library.name, 'cdp.js');
  assert.equal(events.find((e) => e.event === 'Product Viewed').properties.sku, 'tee-01');
  await context.close();
});

test('calls made before the library loads arrive in order, with page context and UTM campaign', async () => {
  const context = await newContext({
    order: {
      title: 'Spring sale',
      body: `cdp.track('Early A', {n: 1}); cdp.identify('u-order', {email: 'Order@Example.com', plan: 'pro'});
             cdp.track('Early B', {n: 2}); cdp.page('Pricing');`,
    },
  });
  const page = await open(context, url('www.shop.example', 'order', '?utm_source=news&utm_medium=email&utm_campaign=spring'));
  const aid = await page.evaluate(() => cdp.user().anonymousId());
  const events = await until('five events', () => {
    const mine = stored().filter((e) => e.anonymousId === aid);
    return mine.length >= 5 && mine;
  });
  assert.deepEqual(
    events.map((e) => [e.type, e.event || e.name || null]),
    [
      ['page', null],
      ['track', 'Early A'],
      ['identify', null],
      ['track', 'Early B'],
      ['page', 'Pricing'],
    ],
  );
  const stamps = events.map((e) => Date.parse(e.timestamp));
  assert.deepEqual([...stamps].sort((a, b) => a - b), stamps, 'timestamps follow the calls');
  const view = events[0];
  assert.equal(view.context.page.path, '/t/order.html');
  assert.equal(view.context.page.title, 'Spring sale');
  assert.equal(view.context.page.search, '?utm_source=news&utm_medium=email&utm_campaign=spring');
  assert.match(view.context.page.url, /^http:\/\/www\.shop\.example:\d+\/t\/order\.html\?utm_source=news/);
  assert.deepEqual(view.context.campaign, { source: 'news', medium: 'email', name: 'spring' });
  assert.equal(view.context.library.name, 'cdp.js');
  assert.ok(view.context.userAgent.includes('Chrome'), view.context.userAgent);
  assert.ok(view.context.locale && view.context.timezone, 'locale and timezone');
  assert.equal(events[1].properties.n, 1);
  assert.equal(events[1].userId, undefined, 'before identify');
  assert.equal(events[2].userId, 'u-order');
  assert.equal(events[2].traits.plan, 'pro');
  assert.equal(events[3].userId, 'u-order', 'identify persists the user id');
  assert.ok(
    events[2].identifiers.some((i) => i.type === 'email' && i.value === 'order@example.com'),
    'the collector normalized the email',
  );
  // After a reload the user is still known.
  await page.reload();
  await page.waitForFunction(() => window.cdp && window.cdp.loaded === true);
  assert.equal(await page.evaluate(() => cdp.user().id()), 'u-order');
  assert.equal((await page.evaluate(() => cdp.user().traits())).plan, 'pro');
  await page.evaluate(() => cdp.reset());
  assert.equal(await page.evaluate(() => cdp.user().id()), null);
  assert.notEqual(await page.evaluate(() => cdp.user().anonymousId()), aid, 'reset draws a new anonymous id');
  await context.close();
});

test('the anonymous id survives reloads and is shared by subdomains; the cookie wins over localStorage', async () => {
  const context = await newContext({ id: {} });
  const www = await open(context, url('www.shop.example', 'id'));
  const aid = await www.evaluate(() => cdp.user().anonymousId());
  assert.match(aid, /^[0-9a-f-]{36}$/);
  await www.reload();
  await www.waitForFunction(() => window.cdp && window.cdp.loaded === true);
  assert.equal(await www.evaluate(() => cdp.user().anonymousId()), aid, 'same id after reload');
  const cookie = (await context.cookies()).find((c) => c.name === 'cdp_aid');
  assert.equal(cookie.domain, '.shop.example', 'set on the registrable domain');
  assert.equal(await www.evaluate(() => localStorage.getItem('cdp_aid')), aid, 'mirrored in localStorage');

  const blog = await open(context, url('blog.shop.example', 'id'));
  assert.equal(await blog.evaluate(() => cdp.user().anonymousId()), aid, 'same id on another subdomain');

  await www.evaluate(() => localStorage.setItem('cdp_aid', 'stale-local-id'));
  await www.reload();
  await www.waitForFunction(() => window.cdp && window.cdp.loaded === true);
  assert.equal(await www.evaluate(() => cdp.user().anonymousId()), aid, 'the cookie wins');
  assert.equal(await www.evaluate(() => localStorage.getItem('cdp_aid')), aid, 'and repairs the mirror');
  await until('page views from both subdomains', () => {
    const hosts = new Set(stored().filter((e) => e.anonymousId === aid).map((e) => new URL(e.context.page.url).hostname));
    return hosts.has('www.shop.example') && hosts.has('blog.shop.example');
  });
  await context.close();
});

test('with cookies and storage blocked, events still arrive with an anonymous id', async () => {
  const block = () => {
    const refuse = () => {
      throw new DOMException('blocked by the test', 'SecurityError');
    };
    Object.defineProperty(Document.prototype, 'cookie', { get: refuse, set: refuse, configurable: true });
    Object.defineProperty(window, 'localStorage', { get: refuse, configurable: true });
  };
  const context = await newContext({ blocked: { body: "cdp.track('Blocked storage')" } }, block);
  const page = await open(context, url('www.shop.example', 'blocked'));
  const [event] = await until('the event', () => named('Blocked storage').length && named('Blocked storage'));
  assert.match(event.anonymousId, /^[0-9a-f-]{36}$/);
  assert.equal(await page.evaluate(() => cdp.user().anonymousId()), event.anonymousId, 'one id for the page');
  const pageView = stored().find((e) => e.type === 'page' && e.anonymousId === event.anonymousId);
  assert.ok(pageView, 'the page view has the same id');
  await context.close();
});

test('offline, then online: every queued event arrives exactly once, also across a reload', async () => {
  // Retries are slow here on purpose: going online flushes at once, and Chromium lets a keepalive request
  // that a closing page starts slip past its offline emulation.
  const options = { retryBase: 5000, flushInterval: 100 };
  const context = await newContext({ offline: { options }, 'offline-next': { options } });
  const page = await open(context, url('www.shop.example', 'offline'));
  const aid = await page.evaluate(() => cdp.user().anonymousId());
  await until('the page view', () => stored().some((e) => e.anonymousId === aid));

  await context.setOffline(true);
  const ids = await page.evaluate(() => {
    ['Offline 1', 'Offline 2', 'Offline 3'].forEach((name) => cdp.track(name));
    return true;
  });
  assert.ok(ids);
  await sleep(1500);
  assert.equal(named('Offline 1').length, 0, 'nothing arrives while offline');
  await context.setOffline(false);
  await until('the offline events', () => ['Offline 1', 'Offline 2', 'Offline 3'].every((n) => named(n).length));
  await sleep(1500);
  for (const name of ['Offline 1', 'Offline 2', 'Offline 3']) assert.equal(named(name).length, 1, name);

  // The collector stopped: an event queued after a failed send stays stored when the page is closed (a beacon
  // would be lost), and the next page sends it once the collector is back.
  await stopCollector();
  await page.evaluate(() => cdp.track('Across reload'));
  await sleep(600);
  await page.close({ runBeforeUnload: true });
  await sleep(300);
  await startCollector(port);
  assert.equal(named('Across reload').length, 0);
  await open(context, url('www.shop.example', 'offline-next'));
  await until('the event queued before the reload', () => named('Across reload').length);
  await sleep(1500);
  assert.equal(named('Across reload').length, 1, 'exactly once');
  await context.close();
});

test('navigating away right after track still delivers the event', async () => {
  const context = await newContext({ leave: {}, next: {} });
  const page = await open(context, url('www.shop.example', 'leave'));
  await page.evaluate(() => cdp.track('Clicked away'));
  await page.goto(url('www.shop.example', 'next'));
  await until('the event sent as the page went away', () => named('Clicked away').length);
  await context.close();
});

test('with requireConsent, nothing is sent or stored until consent; then events flow', async () => {
  const context = await newContext({
    consent: { options: { requireConsent: true }, body: "cdp.track('Before consent')" },
  });
  const requests = [];
  context.on('request', (r) => r.url().includes('/v1/') && requests.push(r.url()));
  const page = await open(context, url('www.shop.example', 'consent'));
  await sleep(1500);
  assert.deepEqual(requests, [], 'nothing sent');
  assert.equal(named('Before consent').length, 0);
  assert.deepEqual((await context.cookies()).filter((c) => c.name.startsWith('cdp_')), [], 'no cookie');
  const keys = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('cdp_')));
  assert.deepEqual(keys, [], 'nothing in localStorage');

  await page.evaluate(() => cdp.consent({ analytics: true, marketing: false }));
  const [event] = await until('the event held until consent', () => named('Before consent').length && named('Before consent'));
  assert.deepEqual(event.context.consent, { categoryPreferences: { analytics: true, marketing: false } });
  await page.evaluate(() => cdp.track('After consent'));
  await until('an event after consent', () => named('After consent').length);
  assert.ok((await context.cookies()).some((c) => c.name === 'cdp_aid'), 'the id is stored once allowed');
  await context.close();
});

test('screen, group and alias have Segment shapes; large queues go out in requests under 64 KB', async () => {
  const context = await newContext({ shapes: { options: { flushAt: 1000, flushInterval: 200 } } });
  const sizes = [];
  context.on('request', (r) => r.url().endsWith('/v1/batch') && sizes.push(Buffer.byteLength(r.postData() || '')));
  const page = await open(context, url('www.shop.example', 'shapes'));
  const aid = await page.evaluate(() => {
    cdp.screen('Onboarding', 'Welcome', { step: 1 });
    cdp.identify('u-shapes');
    cdp.group('acme', { name: 'Acme', plan: 'team' });
    cdp.alias('u-shapes-2');
    const filler = 'x'.repeat(1000);
    for (let i = 0; i < 150; i++) cdp.track('Bulk', { i, filler });
    return cdp.user().anonymousId();
  });
  const events = await until('every event', () => {
    const mine = stored().filter((e) => e.anonymousId === aid);
    return mine.filter((e) => e.event === 'Bulk').length >= 150 && mine;
  });
  const screen = events.find((e) => e.type === 'screen');
  assert.equal(screen.name, 'Welcome');
  assert.equal(screen.properties.category, 'Onboarding');
  assert.equal(screen.properties.step, 1);
  const group = events.find((e) => e.type === 'group');
  assert.equal(group.groupId, 'acme');
  assert.equal(group.traits.plan, 'team');
  assert.equal(group.userId, 'u-shapes');
  const alias = events.find((e) => e.type === 'alias');
  assert.equal(alias.previousId, 'u-shapes');
  assert.equal(alias.userId, 'u-shapes-2');
  const bulk = events.filter((e) => e.event === 'Bulk').map((e) => e.properties.i);
  assert.deepEqual(bulk, [...Array(150).keys()], 'each once, in order');
  assert.ok(sizes.length >= 3, `split into several requests (${sizes})`);
  assert.ok(sizes.every((n) => n <= 64 * 1024), `every request under 64 KB (${sizes})`);
  await context.close();
});
