"""Interoperability with Debian's profanity 0.13.1 (a terminal client), driven in tmux.

Profanity logs in to kabard over STARTTLS (trusting the self-signed certificate), sends a message
that a slixmpp client receives, and shows a message the slixmpp client sends back.

Run: /usr/bin/python3 test_profanity.py --kabard PATH --kabarctl PATH
"""
import asyncio
import logging
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402

import slixmpp  # noqa: E402

DOMAIN = "localhost"
TOTAL = 80.0
STEP = 15.0


class Tmux:
    """A private tmux server (own socket) holding one fixed-size session."""

    def __init__(self, workdir, name="prof"):
        self.sock = os.path.join(workdir, "tmux.sock")
        self.name = name
        self.started = False

    def run(self, *argv, check=True):
        return subprocess.run(["tmux", "-S", self.sock, *argv], capture_output=True, text=True,
                              check=check, stdin=subprocess.DEVNULL, timeout=10)

    def start(self, command, env):
        envargs = []
        for k, v in env.items():
            envargs += ["-e", f"{k}={v}"]
        self.run("new-session", "-d", "-s", self.name, "-x", "160", "-y", "48", *envargs, command)
        self.started = True

    def keys(self, text, enter=True):
        self.run("send-keys", "-t", self.name, "-l", text)
        if enter:
            self.run("send-keys", "-t", self.name, "Enter")

    def capture(self):
        r = self.run("capture-pane", "-p", "-J", "-t", self.name, "-S", "-200", check=False)
        return r.stdout if r.returncode == 0 else ""

    def kill(self):
        if self.started:
            self.run("kill-server", check=False)
            self.started = False


async def wait_pane(tmux, needles, timeout=STEP):
    """Waits until one of `needles` shows in the pane; returns (needle or None, pane text)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = tmux.capture()
        for n in needles:
            if n in text:
                return n, text
        await asyncio.sleep(0.2)
    return None, text


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.whitespace_keepalive = False
        self.outcome = asyncio.get_event_loop().create_future()
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.add_event_handler("session_start", lambda e: self._settle("session"))
        self.add_event_handler("failed_auth", lambda e: self._settle("failed_auth"))
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("disconnected", lambda e: self._settle("disconnected"))
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence", lambda p: self.presences.put_nowait(p))

    def _settle(self, v):
        if not self.outcome.done():
            self.outcome.set_result(v)

    def _on_connection_failed(self, e):
        self._settle("connection_failed")
        self.abort()


async def next_matching(queue, pred, timeout=STEP):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            return None
        if pred(item):
            return item


async def scenario(r, kd, tmux, home):
    alice_pw, bob_pw = "prof-alice-pw", "prof-bob-pw"
    kd.add_user("alice", alice_pw)
    kd.add_user("bob", bob_pw)
    alice_jid, bob_jid = f"alice@{DOMAIN}", f"bob@{DOMAIN}"

    bob = Peer(bob_jid + "/slix", bob_pw)
    bob.connect(("127.0.0.1", kd.port), force_starttls=True)
    try:
        outcome = await asyncio.wait_for(asyncio.shield(bob.outcome), STEP)
    except asyncio.TimeoutError:
        outcome = "timeout"
    if not r.check(outcome == "session", f"slixmpp peer bob logs in ({outcome})"):
        bob.abort()
        return
    bob.send_presence()

    try:
        env = {"HOME": home, "XDG_CONFIG_HOME": os.path.join(home, ".config"),
               "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
               "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        tmux.start("profanity -l DEBUG", env)
        found, text = await wait_pane(tmux, ["Profanity", "profanity"], timeout=10)
        if not r.check(found is not None, "profanity starts in tmux"):
            print(text)
            return

        tmux.keys(f"/connect {alice_jid} server 127.0.0.1 port {kd.port} tls trust")
        found, text = await wait_pane(tmux, ["Enter password:", "password:"], timeout=10)
        if not r.check(found is not None, "profanity asks for the password"):
            print(text)
            return
        tmux.keys(alice_pw)
        found, text = await wait_pane(tmux, ["logged in successfully", "Login failed",
                                             "failed", "TLS certificate"], timeout=STEP)
        if not r.check(found == "logged in successfully",
                       f"profanity logs in over STARTTLS ({found})"):
            print(text)
            return

        # Profanity's initial presence reaches nobody (no subscription); a message does.
        body_out = "Hello bob from profanity 7f3a"
        tmux.keys(f"/msg {bob_jid} {body_out}")
        m = await next_matching(bob.messages, lambda m: m["body"] == body_out)
        r.check(m is not None, "slixmpp peer receives profanity's message")
        r.check(m is not None and str(m["from"]).split("/", 1)[0] == alice_jid
                and "/" in str(m["from"]),
                "the message comes from alice's full JID"
                + ("" if m is None else f" ({m['from']})"))
        r.check(m is not None and m["type"] == "chat", "the message is type chat")

        body_in = "Reply from slixmpp to profanity 91bc"
        reply_to = m["from"] if m is not None else alice_jid
        bob.send_message(mto=reply_to, mbody=body_in, mtype="chat")
        found, text = await wait_pane(tmux, [body_in], timeout=5)
        if found is None:
            # The chat window may not be in front: bring it up.
            tmux.keys(f"/msg {bob_jid}")
            found, text = await wait_pane(tmux, [body_in], timeout=STEP)
        if not r.check(found is not None, "profanity shows the message from the slixmpp peer"):
            print(text)

        # A second message to the bare JID reaches profanity too (routing by priority).
        body_in2 = "Second one to the bare JID c0de"
        bob.send_message(mto=alice_jid, mbody=body_in2, mtype="chat")
        found, text = await wait_pane(tmux, [body_in2], timeout=STEP)
        if not r.check(found is not None, "profanity shows a message sent to its bare JID"):
            print(text)

        tmux.keys("/quit")
        # profanity sends </stream:stream>; kabard marks alice offline.
        deadline = time.monotonic() + 10
        gone = False
        while time.monotonic() < deadline:
            if any(f" {alice_jid}/" in line and line.rstrip().endswith(" offline")
                   for line in kd.read_log().splitlines()):
                gone = True
                break
            await asyncio.sleep(0.2)
        r.check(gone, "kabard sees profanity's session end after /quit")
    finally:
        try:
            await asyncio.wait_for(bob.disconnect(wait=1.0), 3.0)
        except Exception:
            bob.abort()


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("profanity")
    logging.basicConfig(level=logging.CRITICAL)
    if shutil.which("profanity") is None or shutil.which("tmux") is None:
        print("profanity or tmux is not installed")
        r.check(False, "profanity and tmux are installed")
        r.finish()
    home = tempfile.mkdtemp(prefix="kabar-prof-")
    tmux = Tmux(home)
    try:
        with kabartest.Kabard(args) as kd:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(asyncio.wait_for(scenario(r, kd, tmux, home), TOTAL))
            except asyncio.TimeoutError:
                r.check(False, f"scenario finished within {TOTAL:.0f} s")
            finally:
                tmux.kill()
                loop.run_until_complete(asyncio.sleep(0.2))
                kabartest.shutdown_loop(loop)
            r.check(kd.alive(), "kabard still running at the end")
    finally:
        tmux.kill()
        if r.failed:
            log = os.path.join(home, ".local", "share", "profanity", "logs", "profanity.log")
            try:
                with open(log) as f:
                    sys.stderr.write("---- profanity log (tail) ----\n" + f.read()[-4000:] + "\n")
            except OSError:
                pass
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    r.finish()


if __name__ == "__main__":
    main()
