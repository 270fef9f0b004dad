// The browser half of test_call_browser.py: bundles call_browser_page.js (StanzaJS) with esbuild
// from web/node_modules, starts Debian's Chromium (headless, fake camera and microphone, WebRTC
// on loopback) through playwright-core, and runs one page per user. Commands come in on stdin, one
// JSON object per line ({cmd: open|call|stats|limit|release|hangup|close|quit, name, ...}); what the pages
// report goes out on stdout, one JSON object per line, with the page's name. bench/call_browser/run
// drives it too (a Y4M for the fake camera, video senders capped with `limit`).
import { createInterface } from 'node:readline';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';

const modules = process.env.KABAR_WEB_MODULES;
const WS = process.env.KABAR_WS;
const OUT = process.env.KABAR_BUNDLE;  // where the bundle is written
const FAKE_AUDIO = process.env.KABAR_FAKE_AUDIO;  // a WAV file for the fake microphone, if set
const FAKE_VIDEO = process.env.KABAR_FAKE_VIDEO;  // a Y4M file for the fake camera, if set
const HERE = dirname(fileURLToPath(import.meta.url));
// An origin of its own (localhost is a secure context: getUserMedia works), never connected to:
// every request to it is answered here.
const ORIGIN = 'http://localhost:9';

const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const esbuild = (await import(join(modules, 'esbuild', 'lib', 'main.js'))).default;
await esbuild.build({
  entryPoints: [join(HERE, 'call_browser_page.js')],
  bundle: true,
  platform: 'browser',
  format: 'iife',
  outfile: OUT,
  nodePaths: [modules],
  logLevel: 'error',
});
const bundle = readFileSync(OUT, 'utf8');
say({ event: 'bundled', bytes: bundle.length });

const { chromium } = await import(join(modules, 'playwright-core', 'index.mjs'));
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  // mDNS .local host candidates off (kabar resolves none); a page from a routed origin may open
  // a WebSocket to 127.0.0.1 (Local Network Access would block it).
  process.env.KABAR_MDNS ? '--disable-features=LocalNetworkAccessChecks'
    : '--disable-features=WebRtcHideLocalIpsWithMdns,LocalNetworkAccessChecks',
  '--autoplay-policy=no-user-gesture-required',
];
if (FAKE_AUDIO) args.push(`--use-file-for-fake-audio-capture=${FAKE_AUDIO}`);
if (FAKE_VIDEO) args.push(`--use-file-for-fake-video-capture=${FAKE_VIDEO}`);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args });

const pages = new Map();
const html = '<!doctype html><html><head><meta charset="utf-8"><title>call</title></head>' +
  '<body><script src="/call.js"></script></body></html>';

async function open({ name, jid, password, answer }) {
  const context = await browser.newContext({ permissions: ['microphone', 'camera'] });
  const page = await context.newPage();
  await page.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin !== ORIGIN) return route.abort();
    if (url.pathname === '/call.js')
      return route.fulfill({ contentType: 'text/javascript', body: bundle });
    return route.fulfill({ contentType: 'text/html', body: html });
  });
  page.on('pageerror', (e) => say({ event: 'log', page: name, line: `pageerror: ${e.message}` }));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning')
      say({ event: 'log', page: name, line: `console.${m.type()}: ${m.text()}` });
  });
  await page.exposeFunction('kabarReport', (ev) => say({ ...ev, page: name }));
  await page.goto(`${ORIGIN}/call.html`);
  await page.waitForFunction(() => !!window.kabarCall);
  pages.set(name, { context, page });
  await page.evaluate((o) => window.kabarCall.login(o), { jid, password, url: WS, answer });
}

async function handle(c) {
  const p = pages.get(c.name);
  switch (c.cmd) {
    case 'open':
      return open(c);
    case 'call':
      return p.page.evaluate((o) => window.kabarCall.call(o),
        { to: c.to, video: !!c.video, jmi: !!c.jmi, videoCodec: c.videoCodec });
    case 'stats':
      return say({ event: 'stats', page: c.name,
        stats: await p.page.evaluate(() => window.kabarCall.stats()) });
    case 'answer':
      return p.page.evaluate((on) => window.kabarCall.setAnswer(on), !!c.on);
    case 'jmi':
      return p.page.evaluate((o) => window.kabarCall.jmi(o),
        { to: c.to, kind: c.kind, id: c.id, reason: c.reason });
    case 'release':
      return p.page.evaluate(() => window.kabarCall.release());
    case 'limit':
      return p.page.evaluate((bps) => window.kabarCall.limitVideo(bps), c.bps || 0);
    case 'hangup':
      return p.page.evaluate(() => window.kabarCall.hangup());
    case 'close':
      await p.page.evaluate(() => window.kabarCall.logout()).catch(() => undefined);
      await p.context.close();
      pages.delete(c.name);
      return say({ event: 'closed', page: c.name });
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

const stdin = createInterface({ input: process.stdin });
try {
  for await (const line of stdin) {
    if (!line.trim()) continue;
    const c = JSON.parse(line);
    if (c.cmd === 'quit') break;
    try {
      await handle(c);
    } catch (err) {
      say({ event: 'fail', page: c.name, cmd: c.cmd, error: String((err && err.stack) || err) });
    }
  }
} finally {
  await browser.close();
  say({ event: 'exit' });
}
