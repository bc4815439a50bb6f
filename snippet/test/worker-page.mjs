// One snippet scenario against a collector at another origin (the real worker under `wrangler dev`, started by
// tests/tests/collectors.rs): a page on https://www.shop.example loads the library from the collector, sends
// a page view, a track and an identify, and waits until the collector accepted them.
//   node snippet/test/worker-page.mjs <collector url> <write key>
// Prints {"anonymousId": ...} on success; exits non-zero otherwise.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './chromium.mjs';

const [collector, key] = process.argv.slice(2);
if (!collector || !key) {
  console.error('usage: node snippet/test/worker-page.mjs <collector url> <write key>');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const snippet = readFileSync(join(here, '..', 'dist', 'snippet.min.js'), 'utf8')
  .replace('__HOST__', collector)
  .replace('__WRITE_KEY__', key)
  .replace('__OPTIONS__', '{"flushInterval": 100}');

// The page is public-looking but resolves to loopback in the test: allow it to reach the collector there.
const browser = await launch([
  '--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessRespectPreflightResults',
]);
const timer = setTimeout(() => {
  console.error('timed out');
  process.exit(1);
}, 60000);
try {
  const context = await browser.newContext();
  // The shop's page comes from the test; everything else goes to the collector on 127.0.0.1.
  await context.route('https://www.shop.example/**', (route) =>
    route.fulfill({
      contentType: 'text/html',
      body: `<!doctype html><html><head><title>Edge shop</title><script>${snippet}</script></head><body></body></html>`,
    }),
  );
  const page = await context.newPage();
  const accepted = [];
  page.on('response', (r) => r.url().startsWith(collector + '/v1/batch') && accepted.push(r.status()));
  await page.goto('https://www.shop.example/product?utm_source=edge');
  await page.waitForFunction(() => window.cdp && window.cdp.loaded === true);
  await page.evaluate(() => {
    cdp.track('Edge Viewed', { sku: 'edge-01' });
    cdp.identify('u-edge', { plan: 'edge' });
  });
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const left = await page.evaluate(() => JSON.parse(localStorage.getItem(Object.keys(localStorage).find((k) => k.startsWith('cdp_q.'))) || '{"q":[]}').q.length);
    if (left === 0 && accepted.includes(200)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!accepted.includes(200) || accepted.some((s) => s !== 200)) throw new Error(`collector answered ${accepted}`);
  const anonymousId = await page.evaluate(() => cdp.user().anonymousId());
  console.log(JSON.stringify({ anonymousId }));
} catch (e) {
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  await browser.close();
}
