"""The web client kabard serves (Converse.js 14 from npm) in a real browser: Chromium, headless,
driven by playwright-core (web_client.mjs, run with node), against kabard over ws:// and then
wss://, with a slixmpp client (Debian's python3-slixmpp) on the other side. Logged in through
the page: the roster shows the contact and its presence; a message typed in the page reaches
slixmpp and slixmpp's answer appears in the page; a message sent while the page's user is
offline arrives at the next login; an account is registered from the page; OMEMO starts (its
WebAssembly is served beside the page; the device list and bundle it publishes with
publish-options are answered); no page raised an error; and every IQ the page sent got an answer
(the WebSocket frames the page sent and received, counted in the browser).

The screenshot goes to the build directory (web-client.png beside kabard), or to
docs/web-client.png with KABAR_SCREENSHOT_DOCS=1 (or --screenshot PATH).

Run: /usr/bin/python3 test_web_client.py --kabard PATH --kabarctl PATH
"""
import asyncio
import json
import os
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from kabartest import free_port  # noqa: E402
import xmpp_raw  # noqa: E402

import slixmpp  # noqa: E402

R = kabartest.Results("web_client")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
STEP = 60.0


def befriend(port, a, b):
    """Mutual presence subscription between a and b (RFC 6121 §3), by raw clients."""
    ca = xmpp_raw.online(port, a, a + "-pw", resource="setup")
    cb = xmpp_raw.online(port, b, b + "-pw", resource="setup")
    for x, y, cy in ((ca, b, cb), (cb, a, ca)):
        x.presence(to=f"{y}@localhost", type="subscribe")
        cy.expect_presence(type="subscribe", timeout=10)
        cy.presence(to=f"{x is ca and a or b}@localhost", type="subscribed")
    time.sleep(0.5)
    ca.close()
    cb.close()


class Bob(slixmpp.ClientXMPP):
    """The slixmpp side: answers the page's first message, reports what it receives."""

    def __init__(self, jid, password, events):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.whitespace_keepalive = False
        self.events = events
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence", self.on_presence)

    async def start(self, _):
        self.send_presence()
        await self.get_roster()
        self.events.append(("ready", None))

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.events.append(("message", (str(msg["from"]), msg["body"])))
            if msg["body"].startswith("hello from the web"):
                self.send_message(mto=msg["from"], mbody="hello from slixmpp " +
                                  msg["body"].split()[-1], mtype="chat")

    def on_presence(self, p):
        self.events.append(("presence", (str(p["from"]), p["type"])))


class Node:
    """web_client.mjs: JSON lines out, one word per line in (go)."""

    def __init__(self, env):
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "web_client.mjs")], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.page_errors = []  # uncaught errors in the page (a missing asset, a script failing)
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr = []
        threading.Thread(target=self._err, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "log", "line": line.rstrip()}
            if ev.get("event") != "log":
                print("page:", json.dumps(ev)[:400], flush=True)
            else:
                print("page log:", str(ev.get("line"))[:400], flush=True)
                if str(ev.get("line")).startswith("pageerror:"):
                    self.page_errors.append(ev["line"])
            with self.cv:
                self.lines.append(ev)
                self.cv.notify_all()
        with self.cv:
            self.lines.append({"event": "exit"})
            self.cv.notify_all()

    def _err(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait(self, name, timeout=STEP):
        deadline = time.time() + timeout
        with self.cv:
            while True:
                for ev in self.lines:
                    if ev.get("event") in (name, "exit", "fail"):
                        self.lines.remove(ev)
                        return ev
                left = deadline - time.time()
                if left <= 0:
                    return {"event": "timeout"}
                self.cv.wait(left)

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()


def run_bob(port, events, stop):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    bob = Bob("bob@localhost/slixmpp", "bob-pw", events)
    bob.connect(("127.0.0.1", port), force_starttls=True)

    async def until_stopped():
        while not stop.is_set():
            await asyncio.sleep(0.05)
        bob.disconnect()
        await asyncio.sleep(0.5)

    loop.run_until_complete(until_stopped())


def wait_event(events, pred, timeout=STEP):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for kind, data in list(events):
            if pred(kind, data):
                return data or True
        time.sleep(0.05)
    return None


def main():
    ap_args = [a for a in sys.argv[1:] if not a.startswith("--screenshot")]
    shot = None
    for a in sys.argv[1:]:
        if a.startswith("--screenshot="):
            shot = a.split("=", 1)[1]
    sys.argv = [sys.argv[0]] + ap_args
    args = kabartest.parse_args()
    if shot is None:
        if os.environ.get("KABAR_SCREENSHOT_DOCS"):
            shot = os.path.join(ROOT, "docs", "web-client.png")
        else:
            shot = os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "web-client.png")
    modules = os.path.join(ROOT, "web", "node_modules")
    if not os.path.exists(os.path.join(modules, "converse.js", "dist", "converse.min.js")):
        R.check(False, "Converse.js is installed in web/node_modules (make deps)")
        R.finish()
    http_port = free_port()
    https_port = free_port()
    # A page that goes away leaves its session waiting for a resumption (Converse enables stream
    # management): 2 s here, so that alice is offline soon after.
    k = kabartest.Kabard(args, config="[sm]\nresume_timeout = 2\n",
                         extra_flags=["--http", f"127.0.0.1:{http_port}", "--https",
                                      f"127.0.0.1:{https_port}", "--threads", "2"])
    with k:
        k.add_user("alice", "alice-pw")
        k.add_user("bob", "bob-pw")
        befriend(k.port, "alice", "bob")
        events = []
        stop = threading.Event()
        t = threading.Thread(target=run_bob, args=(k.port, events, stop), daemon=True)
        t.start()
        R.check(wait_event(events, lambda kd, d: kd == "ready", 30) is not None,
                "slixmpp (bob) online")
        env = dict(os.environ)
        env.update({"KABAR_WEB_MODULES": modules,
                    "KABAR_HTTP": f"http://127.0.0.1:{http_port}/",
                    "KABAR_HTTPS": f"https://127.0.0.1:{https_port}/",
                    "KABAR_SHOT": shot})
        status, body, headers = kabartest.http_request(
            "GET", f"http://127.0.0.1:{http_port}/curve25519_compiled.wasm")
        R.check(status == 200 and headers.get("content-type") == "application/wasm" and
                body[:4] == b"\0asm", f"Converse's OMEMO WebAssembly served beside the page "
                f"({status} {headers.get('content-type')})")
        node = Node(env)
        try:
            scenario(k, node, events)
        finally:
            stop.set()
            t.join(10)
            node.proc.stdin.close()
            try:
                node.proc.wait(30)
            except subprocess.TimeoutExpired:
                node.proc.kill()
            if R.failed:
                sys.stderr.write("---- node stderr ----\n" + "".join(node.stderr)[-4000:] + "\n")
        R.check(k.alive(), "kabard still running")
    R.finish()


def scenario(k, node, events):
    ev = node.wait("logged-in")
    R.check(ev.get("event") == "logged-in", f"logged in through the page over ws:// ({ev})")
    ev = node.wait("roster")
    R.check(ev.get("event") == "roster" and ev.get("online"),
            f"the roster shows bob, online ({ev})")
    ev = node.wait("sent")
    R.check(wait_event(events, lambda kd, d: kd == "message" and d[1] == "hello from the web 1")
            is not None, "the message typed in the page reached slixmpp")
    ev = node.wait("received")
    R.check(ev.get("event") == "received", "slixmpp's answer appears in the page")
    ev = node.wait("screenshot")
    R.check(ev.get("event") == "screenshot" and os.path.getsize(ev["path"]) > 10000,
            f"screenshot taken ({ev.get('path')})")
    ev = node.wait("omemo")
    R.check(ev.get("event") == "omemo" and ev.get("published", 0) >= 2,
            f"OMEMO started: its device list and bundle published and answered ({ev})")
    ev = node.wait("logged-out")
    R.check(ev.get("event") == "logged-out", "the page closed")
    R.check(wait_event(events, lambda kd, d: kd == "presence" and
                       d[0].startswith("alice@localhost") and d[1] == "unavailable")
            is not None, "slixmpp saw alice go offline")
    # While alice is offline: a message to her bare JID is stored (XEP-0160).
    before = len(events)
    del before
    k_msg = "while you were away"
    bob_send(k, k_msg)
    time.sleep(0.5)
    node.go()
    ev = node.wait("offline-delivered")
    R.check(ev.get("event") == "offline-delivered",
            "the message sent while offline is shown at the next login")
    ev = node.wait("registered")
    R.check(ev.get("event") == "registered", f"an account registered from the page ({ev})")
    users = k.ctl("user", "list").stdout.split()
    R.check(any(u.startswith("webuser") for u in users), f"kabard has the new account ({users})")
    ev = node.wait("wss")
    R.check(ev.get("event") == "wss" and ev.get("ok"),
            f"over wss://: logged in, roster, a message each way ({ev})")
    R.check(wait_event(events, lambda kd, d: kd == "message" and d[1] == "hello from the web 2")
            is not None, "the message typed over wss:// reached slixmpp")
    ev = node.wait("iqs")
    R.check(ev.get("event") == "iqs" and ev.get("sent", 0) > 5 and not ev.get("unanswered"),
            f"every IQ the page sent was answered ({ev.get('sent')} sent, unanswered: "
            f"{ev.get('unanswered')})")
    ev = node.wait("done")
    R.check(ev.get("event") == "done", f"the browser part ended ({ev})")
    # Converse's OMEMO library fetches /curve25519_compiled.wasm beside the page: a 404 there
    # aborted it on every page load (a page error). Served, OMEMO starts (checked above).
    R.check(not node.page_errors, f"no error in the page ({node.page_errors[:3]})")


def bob_send(k, body):
    c = xmpp_raw.online(k.port, "bob", "bob-pw", resource="offline-sender", roster=False)
    c.message("alice@localhost", body)
    c.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
    c.close()


if __name__ == "__main__":
    main()
