"""Subscription requests a kabar user can see and answer, with slixmpp on the other side:
`kabar roster` lists requests in both directions (ours not yet answered: "(asked)"; theirs: "asks
you" with the command that answers), `approve` answers one, `listen` prints how to answer a new
one, and in `kabar chat` (tmux) a bare /approve or /deny explains when several requests wait and
acts on the one that remains.

Run: /usr/bin/python3 test_kabar_requests.py --kabard PATH --kabarctl PATH
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402
from test_client_chat import Tmux  # noqa: E402

import slixmpp  # noqa: E402

STEP = 15.0


class Peer(slixmpp.ClientXMPP):
    """carol, a slixmpp client that records the presence stanzas she gets."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.auto_authorize = None  # answer nothing by itself
        self.auto_subscribe = False
        self.started = asyncio.get_event_loop().create_future()
        self.presences = []
        self.add_event_handler("session_start", lambda e: self.started.done() or self.started.set_result(True))
        self.add_event_handler("presence", lambda p: self.presences.append((str(p["from"].bare), p["type"])))

    async def wait_presence(self, frm, ptype, timeout=STEP):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (frm, ptype) in self.presences:
                return True
            await asyncio.sleep(0.05)
        return False


async def scenario(R, srv, k, tmp):
    d = srv.domain
    alice, bob, carol = f"alice@{d}", f"bob@{d}", f"carol@{d}"
    pw = dict(client_matrix.PASSWORDS, carol="Carol-Secret-3")
    for user, p in pw.items():
        srv.add_user(user, p)

    async def kabar(user, *argv):
        return await asyncio.to_thread(k.run, *argv, user=user, password=pw[user])

    c = Peer(carol, pw["carol"])
    c.connect(("127.0.0.1", srv.port), force_starttls=True)
    try:
        await asyncio.wait_for(asyncio.shield(c.started), STEP)
        c.send_presence()
        # carol asks alice (offline); alice asks bob.
        c.send_presence(pto=alice, ptype="subscribe")
        await c.get_roster()  # a round trip: the request has reached kabard
        r = await kabar("alice", "roster", "add", bob)
        R.check(r.returncode == 0, f"alice: roster add bob ({r.stderr.strip()})")

        r = await kabar("alice", "roster")
        lines = dict(l.split("\t", 1) for l in r.stdout.splitlines())
        R.check(r.returncode == 0 and lines.get(bob, "").startswith("none (asked)"),
                f"alice's roster: her request to bob waits for bob: {lines.get(bob)!r}")
        R.check(lines.get(carol) == f"none (asks you: kabar roster approve {carol}, or deny)",
                f"alice's roster: carol's request, with how to answer: {lines.get(carol)!r}")

        r = await kabar("alice", "roster", "approve", carol)
        R.check(r.returncode == 0, f"alice: roster approve carol ({r.stderr.strip()})")
        R.check(await c.wait_presence(alice, "subscribed"), "carol (slixmpp) gets alice's approval")
        R.check(await c.wait_presence(alice, "subscribe"), "and alice's request back")
        r = await kabar("alice", "roster")
        R.check(carol in r.stdout and "asks you" not in r.stdout,
                f"alice's roster: carol no longer asks: {r.stdout.strip()!r}")

        # bob listens (plain text); carol asks him: the line says how to answer.
        out = open(os.path.join(tmp, "bob-listen.txt"), "w+")
        lp = subprocess.Popen([k.binary, "listen"], env=k.env("bob", pw["bob"]), stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            ready = False
            deadline = time.monotonic() + STEP
            while time.monotonic() < deadline and not ready:
                await asyncio.sleep(0.1)
                out.seek(0)
                ready = "listening as" in out.read()
            R.check(ready, "bob listens")
            c.send_presence(pto=bob, ptype="subscribe")
            hint = f"asks to see your presence: kabar roster approve {carol} (or deny {carol})"
            text = ""
            deadline = time.monotonic() + STEP
            while time.monotonic() < deadline and hint not in text:
                await asyncio.sleep(0.1)
                out.seek(0)
                text = out.read()
            R.check(hint in text, f"bob's listen: carol asks, and how to answer: {text!r}")
        finally:
            lp.terminate()
            lp.wait(timeout=10)
            out.close()

        # bob's chat: alice and carol both wait.
        tmux = Tmux(tmp)
        try:
            e = k.env("bob", pw["bob"])
            e = {kk: v for kk, v in e.items() if kk.startswith("KABAR_") or kk in ("HOME", "PATH")}
            e["LANG"] = "C.UTF-8"
            tmux.start("bob", f"{k.binary} chat", e)
            ok, text = await asyncio.to_thread(tmux.wait, "bob", f"[?] {carol}")
            R.check(ok and f"[?] {alice}" in text,
                    "bob's chat lists both requests with [?]\n" + text)
            tmux.keys("bob", "/approve")
            ok, text = await asyncio.to_thread(
                tmux.wait, "bob", f"2 requests wait ({alice}, {carol}): /approve JID")
            R.check(ok, "a bare /approve with two requests names them\n" + text)
            tmux.keys("bob", f"/deny {carol}")
            R.check(await c.wait_presence(bob, "unsubscribed"), "carol (slixmpp) gets bob's denial")
            tmux.keys("bob", "/approve")
            ok, text = await asyncio.to_thread(tmux.wait, "bob", f"approved {alice}")
            R.check(ok, "a bare /approve with one request left approves it\n" + text)
            tmux.keys("bob", "/deny")
            ok, text = await asyncio.to_thread(tmux.wait, "bob", "no subscription request is waiting")
            R.check(ok, "a bare /deny with none left says so\n" + text)
            tmux.keys("bob", "/quit")
            deadline = time.monotonic() + 10
            while tmux.alive("bob") and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            tmux.kill()
        r = await kabar("alice", "roster")
        lines = dict(l.split("\t", 1) for l in r.stdout.splitlines())
        R.check(lines.get(bob, "").startswith("to (asks you"),
                f"alice's roster: bob approved her and asked back: {lines.get(bob)!r}")
    finally:
        c.disconnect()
        await asyncio.sleep(0.2)


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_requests")
    logging.basicConfig(level=logging.CRITICAL)
    tmp = tempfile.mkdtemp(prefix="kabar-requests-")
    try:
        with kabartest.Kabard(args) as srv:
            k = client_matrix.Kabar(client_matrix.kabar_binary(args), srv.port, srv.domain, tmp)
            kabartest.run_in_new_loop(R, "scenario finished", 150, [scenario], R, srv, k, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
