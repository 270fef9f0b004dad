// The browser half of test_web_client.py: Chromium (headless, a fresh profile per context)
// driven by playwright-core from web/node_modules through the Converse.js page kabard serves.
// Writes one JSON object per line to stdout (the Python side checks them) and reads "go" lines
// from stdin where it must wait for the other side. Every WebSocket frame the page sends and
// receives is watched here: an IQ of type get or set the page sent must be answered (result or
// error with its id) by the end.
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const modules = process.env.KABAR_WEB_MODULES;
const { chromium } = await import(join(modules, 'playwright-core', 'index.mjs'));
const HTTP = process.env.KABAR_HTTP;
const HTTPS = process.env.KABAR_HTTPS;
const SHOT = process.env.KABAR_SHOT;
const STEP = 60_000;

const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const log = (line) => say({ event: 'log', line });

const stdin = createInterface({ input: process.stdin });
const waiting = [];
const queued = [];
stdin.on('line', (l) => (waiting.length ? waiting.shift()(l) : queued.push(l)));
const nextLine = () =>
  new Promise((resolve) => (queued.length ? resolve(queued.shift()) : waiting.push(resolve)));

// IQ requests the page sent (by id) and the ids answered.
const sentIqs = new Map();
const answered = new Set();
// OMEMO's PEP publishes (device lists, bundles) that got a result: OMEMO started.
let omemoPublished = 0;
// The last frames both ways, shown when a step fails (what the page was sent, and what it sent).
const recent = [];
const remember = (dir, s) => {
  recent.push(`${dir} ${s.slice(0, 300)}`);
  if (recent.length > 80) recent.shift();
};
function watchFrames(page) {
  page.on('websocket', (ws) => {
    ws.on('framesent', (f) => {
      const s = String(f.payload);
      remember('>>', s);
      const m = /^<iq\b[^>]*>/.exec(s);
      if (!m) return;
      const type = /\stype=["'](get|set)["']/.exec(m[0]);
      const id = /\sid=["']([^"']+)["']/.exec(m[0]);
      const omemo = /<publish node=["'](eu\.siacs\.conversations\.axolotl|urn:xmpp:omemo:2)/.test(s);
      if (type && id) sentIqs.set(id[1], { text: s.slice(0, 200), at: Date.now(), omemo });
    });
    ws.on('framereceived', (f) => {
      const s = String(f.payload);
      remember('<<', s);
      const m = /^<iq\b[^>]*>/.exec(s);
      if (!m) return;
      const type = /\stype=["'](result|error)["']/.exec(m[0]);
      const id = /\sid=["']([^"']+)["']/.exec(m[0]);
      if (type && id) {
        answered.add(id[1]);
        const q = sentIqs.get(id[1]);
        if (q && q.omemo && type[1] === 'result') omemoPublished += 1;
      }
    });
  });
}

// Before a page goes away, the answers to what it asked (a page closed right after its roster
// showed may still be waiting for some): up to 20 s. An IQ the page sends after that, while it
// closes, goes out on a connection about to go: nothing can answer it, and it is not counted.
// (OMEMO's device list and bundle publishes, sent together once its keys are made, often go
// out so: counted, they once passed for publishes kabard never answered.)
const closing = [];  // [from, to] of each page's closing, in ms
async function settle() {
  for (let i = 0; i < 200; ++i) {
    if ([...sentIqs.keys()].every((id) => answered.has(id))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  closing.push([Date.now(), Infinity]);
}
async function closePage(context) {
  await context.close();
  closing[closing.length - 1][1] = Date.now();
}
const sentWhileClosing = (at) => closing.some(([from, to]) => at >= from && at <= to);

// launch() starts Chromium on a new, empty temporary profile (Playwright makes the
// user-data-dir and refuses one given as a flag), and each context below is fresh too.
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

async function newPage(opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...opts });
  const page = await context.newPage();
  // Converse's footer asks the internet for logos: only this machine is reachable.
  await page.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === '127.0.0.1' || host === 'localhost') return route.continue();
    return route.abort();
  });
  page.on('pageerror', (e) => log(`pageerror: ${e.message}`));
  watchFrames(page);
  return { context, page };
}

async function login(page, base, user, password) {
  await page.goto(base);
  const jid = page.locator('input[name="jid"]');
  await jid.waitFor({ timeout: STEP });
  await jid.fill(`${user}@localhost`);
  await page.locator('input[name="password"]').fill(password);
  await page.locator('input[name="password"]').press('Enter');
  // The roster (the control box's contact list) is there once the session is up.
  await page.locator('converse-roster').first().waitFor({ timeout: STEP });
}

// A contact's entry in the roster: its link, inside a list item whose data-status is the
// contact's presence.
function contact(page, name) {
  return page.locator(`.roster-contacts a.open-chat[data-jid="${name}@localhost"]`);
}

// Converse draws a roster entry again when the contact's presence or vCard arrives: a click on
// the entry it replaced opens nothing (a loaded machine once showed a chat never opening after
// the click). So the click is repeated until the chat opens, within the same step's time.
async function openChat(page, name) {
  const area = page.locator('textarea.chat-textarea').last();
  const deadline = Date.now() + STEP;
  const left = () => Math.max(1, deadline - Date.now());
  for (;;) {
    const link = contact(page, name).first();
    await link.waitFor({ timeout: left() });
    await link.click();
    try {
      await area.waitFor({ timeout: Math.min(5000, left()) });
      return area;
    } catch (e) {
      if (Date.now() >= deadline) throw e;
    }
  }
}

async function send(page, area, text) {
  await area.fill(text);
  await area.press('Enter');
}

async function seen(page, text) {
  await page.locator('.chat-msg__text, .chat-msg__body').filter({ hasText: text }).first()
    .waitFor({ timeout: STEP });
}

try {
  // ws:// from http://
  {
    const { context, page } = await newPage();
    await login(page, HTTP, 'alice', 'alice-pw');
    say({ event: 'logged-in' });
    await contact(page, 'bob').first().waitFor({ timeout: STEP });
    // Presence: the contact's list item carries its status.
    let online = true;
    try {
      await page.locator('.roster-contacts li[data-status="online"] a.open-chat[data-jid="bob@localhost"]')
        .first().waitFor({ timeout: STEP });
    } catch {
      online = false;
    }
    say({ event: 'roster', online });
    const box = await openChat(page, 'bob');
    await send(page, box, 'hello from the web 1');
    say({ event: 'sent' });
    await seen(page, 'hello from slixmpp 1');
    say({ event: 'received' });
    await page.screenshot({ path: SHOT });
    say({ event: 'screenshot', path: SHOT });
    // OMEMO makes its keys, then publishes its device list and bundle (with publish-options):
    // both answered before this page goes.
    for (let i = 0; i < STEP / 100 && omemoPublished < 2; ++i) {
      await new Promise((r) => setTimeout(r, 100));
    }
    say({ event: 'omemo', published: omemoPublished });
    // The page goes away with its connection (Converse enabled stream management: kabard keeps
    // the session for [sm] resume_timeout, 2 s in this test, then alice is offline).
    await settle();
    await closePage(context);
    say({ event: 'logged-out' });
  }
  await nextLine();  // the other side has sent a message to alice meanwhile
  {
    const { context, page } = await newPage();
    await login(page, HTTP, 'alice', 'alice-pw');
    await openChat(page, 'bob');
    await seen(page, 'while you were away');
    say({ event: 'offline-delivered' });
    await settle();
    await closePage(context);
  }
  {
    // Registration (XEP-0077) from the page.
    const { context, page } = await newPage();
    await page.goto(HTTP);
    await page.locator('a.register-account').first().click();
    const user = page.locator('input[name="username"]');
    await user.waitFor({ timeout: STEP });
    await user.fill('webuser');
    await page.locator('input[name="password"]').fill('webuser-pw');
    await page.locator('input[name="password"]').press('Enter');
    await page.locator('converse-roster').first().waitFor({ timeout: STEP });
    say({ event: 'registered' });
    await settle();
    await closePage(context);
  }
  {
    // wss:// from https:// (the self-signed certificate accepted for the test).
    const { context, page } = await newPage({ ignoreHTTPSErrors: true });
    await login(page, HTTPS, 'alice', 'alice-pw');
    const box = await openChat(page, 'bob');
    await send(page, box, 'hello from the web 2');
    await seen(page, 'hello from slixmpp 2');
    say({ event: 'wss', ok: true });
    await settle();
    await closePage(context);
  }
  const late = [...sentIqs.entries()].filter(([id, q]) => !answered.has(id) && sentWhileClosing(q.at));
  for (const [, q] of late) log(`sent as its page closed, not counted: ${q.text}`);
  const unanswered = [...sentIqs.entries()]
    .filter(([id, q]) => !answered.has(id) && !sentWhileClosing(q.at))
    .map(([, q]) => q.text);
  say({ event: 'iqs', sent: sentIqs.size, unanswered });
  say({ event: 'done' });
} catch (e) {
  say({ event: 'fail', error: String(e && e.stack || e).slice(0, 2000) });
  for (const line of recent) log(line);
  process.exitCode = 1;
} finally {
  await browser.close();
  stdin.close();
}
