"""`kabar sendfile` to clients that cannot take a file peer to peer, and transfers that stop.

- slixmpp as a client whose disco#info announces no Jingle file transfer: sendfile asks first
  (XEP-0030), uploads (XEP-0363) and sends the link instead, says why, exits 0; the link carries
  the same bytes. With --no-upload: exit 1 and the reason, not the "unreachable" 4.
- slixmpp announcing Jingle file transfer but refusing the offer: the same fallback.
- slixmpp with entity capabilities (XEP-0115), a mutual contact, without Jingle file transfer:
  `sendfile` to its bare JID learns its features from its presence's caps (disco#info of
  node#ver, no plain one) and uploads at once; a second run knows them from kabar's caps cache
  (no question at all). slixmpp's caps plugin verifies the ver in kabar's presence, and the
  features it stands for include Jingle file transfer.
- kabar to kabar: the sender's Ctrl-C tells the receiver, who says why the transfer stopped and
  keeps what arrived; sending the same file again resumes from there. Old .part files are
  removed by `listen --part-max-age`. In a terminal (tmux), the receiver's progress line ends
  before the line that says why the transfer stopped. The receiver's Ctrl-C: it keeps what
  arrived, the sender says the contact cancelled it (no new offer, no upload).

Run: /usr/bin/python3 test_kabar_sendfile_fallback.py --kabard PATH --kabarctl PATH
"""
import asyncio
import hashlib
import http.client
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402
from test_client_chat import Tmux  # noqa: E402

import slixmpp  # noqa: E402

STEP = 20.0
JINGLE_FT = "urn:xmpp:jingle:apps:file-transfer:5"


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, features=(), caps=False):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        if caps:
            self.register_plugin("xep_0115")
        for f in features:
            self["xep_0030"].add_feature(f)
        self.disco_gets = []  # (from, node) of each disco#info get received (node "" for none)
        self.caps_seen = {}   # full JID -> the ver in its last available presence
        self.add_filter("in", self._note_in)
        self.started = asyncio.get_event_loop().create_future()
        self.messages = []
        self.add_event_handler("session_start",
                               lambda e: self.started.done() or self.started.set_result(True))
        self.add_event_handler("message", lambda m: self.messages.append(m))


    def _note_in(self, stanza):
        if stanza.name == "iq" and stanza["type"] == "get":
            q = stanza.xml.find("{http://jabber.org/protocol/disco#info}query")
            if q is not None:
                self.disco_gets.append((stanza["from"].bare, q.get("node", "")))
        elif stanza.name == "presence" and stanza["type"] in ("available", ""):
            c = stanza.xml.find("{http://jabber.org/protocol/caps}c")
            if c is not None:
                self.caps_seen[stanza["from"].full] = c.get("ver")
        return stanza


def fetch(url):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    c.request("GET", u.path)
    data = c.getresponse().read()
    c.close()
    return data


def random_file(path, size):
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


async def to_slixmpp(R, srv, k, tmp):
    pw = "Slix-Secret-9"
    srv.add_user("dave", pw)
    srv.add_user("erin", pw)
    src = os.path.join(tmp, "notes.txt")
    want = random_file(src, 300_000)
    for user, features, why in (("dave", (), "does not support Jingle file transfer"),
                                ("erin", (JINGLE_FT,), "refused the offer")):
        peer = Peer(f"{user}@{srv.domain}/slix", pw, features)
        peer.connect(("127.0.0.1", srv.port), force_starttls=True)
        try:
            await asyncio.wait_for(asyncio.shield(peer.started), STEP)
            peer.send_presence()
            full = f"{user}@{srv.domain}/slix"
            r = await asyncio.to_thread(k.run, "sendfile", full, src, user="alice")
            R.check(r.returncode == 0 and why in r.stdout and "uploaded" in r.stdout,
                    f"sendfile to slixmpp ({user}): says why, uploads, exit 0: "
                    f"{r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
            deadline = time.monotonic() + STEP
            while not peer.messages and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            body = peer.messages[0]["body"] if peer.messages else ""
            R.check(body.startswith("http://") and
                    hashlib.sha256(await asyncio.to_thread(fetch, body)).hexdigest() == want,
                    f"{user} (slixmpp) gets a link to the same bytes: {body!r}")
            r = await asyncio.to_thread(k.run, "sendfile", "--no-upload", full, src, user="alice")
            R.check(r.returncode == 1 and why in r.stderr and "--no-upload" in r.stderr,
                    f"with --no-upload: exit 1 and why ({r.returncode}: {r.stderr.strip()})")
        finally:
            peer.disconnect()
            await asyncio.sleep(0.2)


async def caps_of_slixmpp(R, srv, k, tmp):
    pw = "Slix-Secret-9"
    srv.add_user("frank", pw)
    src = os.path.join(tmp, "caps.txt")
    want = random_file(src, 100_000)
    frank_bare = f"frank@{srv.domain}"
    peer = Peer(f"{frank_bare}/slix", pw, (), caps=True)
    peer.connect(("127.0.0.1", srv.port), force_starttls=True)
    li = None
    try:
        await asyncio.wait_for(asyncio.shield(peer.started), STEP)
        await peer["xep_0115"].update_caps(broadcast=False)
        # slixmpp keeps its roster from the server's roster pushes, which go only to a resource
        # that asked for the roster (RFC 6121 §2.1.6): without this, frank's slixmpp roster
        # stays at the "from" its own approval set locally.
        await peer.get_roster()
        peer.send_presence()
        # A mutual subscription: alice asks and slixmpp approves and asks back by itself
        # (auto_authorize, auto_subscribe); alice approves.
        alice_bare = f"alice@{srv.domain}"
        r = await asyncio.to_thread(k.run, "roster", "add", frank_bare, user="alice")
        R.check(r.returncode == 0, f"alice adds frank ({r.stderr.strip()})")
        item = peer.client_roster[alice_bare]
        deadline = time.monotonic() + STEP  # frank's request back has reached kabard
        while not (item["from"] and item["pending_out"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        R.check(item["from"] and item["pending_out"],
                f"frank (slixmpp) approved alice and asked back: {item['subscription']}, "
                f"pending_out {item['pending_out']}")
        r = await asyncio.to_thread(k.run, "roster", "approve", frank_bare, user="alice")
        deadline = time.monotonic() + STEP
        listed = ""
        while time.monotonic() < deadline:
            listed = (await asyncio.to_thread(k.run, "roster", user="alice")).stdout
            if f"{frank_bare}\tboth" in listed:
                break
            await asyncio.sleep(0.2)
        R.check(f"{frank_bare}\tboth" in listed,
                f"alice and frank (slixmpp) are mutual contacts ({listed.strip()!r}; "
                f"{r.stdout.strip()} {r.stderr.strip()})")
        deadline = time.monotonic() + STEP
        while item["subscription"] != "both" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        R.check(item["subscription"] == "both" and not item["pending_out"],
                f"frank's slixmpp roster has alice as 'both' too ({item['subscription']})")
        my_ver = await peer["xep_0115"].get_verstring(peer.boundjid.full)
        R.check(bool(my_ver), f"slixmpp announces caps ({my_ver})")

        peer.messages.clear()
        t0 = time.monotonic()
        r = await asyncio.to_thread(k.run, "sendfile", frank_bare, src, user="alice")
        took = time.monotonic() - t0
        R.check(r.returncode == 0 and "does not support Jingle file transfer" in r.stdout and
                "uploaded" in r.stdout,
                f"sendfile to slixmpp with caps: uploads at once, exit 0 ({took:.1f} s): "
                f"{r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
        node = f"{peer['xep_0115'].caps_node}#{my_ver}"
        # Every kabar run as alice so far (roster commands too) saw frank's presence: the first to
        # get the answer cached it, so sendfile may not have asked at all.
        asked = [n for (f, n) in peer.disco_gets if f == alice_bare]
        R.check(asked and all(n == node for n in asked),
                f"kabar asked slixmpp only for its caps node#ver, never a plain disco#info: "
                f"{asked}")
        deadline = time.monotonic() + STEP
        while not peer.messages and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        body = peer.messages[0]["body"] if peer.messages else ""
        R.check(body.startswith("http://") and
                hashlib.sha256(await asyncio.to_thread(fetch, body)).hexdigest() == want,
                f"frank (slixmpp) gets a link to the same bytes: {body!r}")
        cdir = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(k.home, "alice", ".cache"),
                            "kabar")
        cache = [n for n in os.listdir(cdir)
                 if n.startswith("caps-")]
        mode = (os.stat(os.path.join(cdir, cache[0])).st_mode & 0o777
                if cache else None)
        R.check(len(cache) == 1 and mode == 0o600, f"kabar's caps cache file, mode 0600: "
                f"{cache} {oct(mode) if mode is not None else None}")

        peer.disco_gets.clear()
        r = await asyncio.to_thread(k.run, "sendfile", frank_bare, src, user="alice")
        R.check(r.returncode == 0 and "does not support Jingle file transfer" in r.stdout,
                f"again: the same fallback ({r.stdout.strip()} {r.stderr.strip()})")
        asked = [n for (f, n) in peer.disco_gets if f == alice_bare]
        R.check(asked == [],
                f"the second run knew frank's caps from its cache: no question ({asked})")

        # kabar's own caps, as slixmpp's XEP-0115 plugin verifies them.
        os.makedirs(os.path.join(tmp, "alice-in"))
        li = k.listen("alice", "--accept-files", os.path.join(tmp, "alice-in"))
        ev = li.wait(lambda e: e.get("type") == "ready")
        alice_full = ev.get("jid") if ev else None
        R.check(bool(alice_full), f"alice listens ({ev})")
        verified, seen = None, None
        deadline = time.monotonic() + STEP
        while time.monotonic() < deadline:
            seen = peer.caps_seen.get(alice_full)
            verified = await peer["xep_0115"].get_verstring(alice_full)
            if seen and verified == seen:
                break
            await asyncio.sleep(0.1)
        R.check(seen and verified == seen,
                f"slixmpp verified the ver in kabar's presence ({seen}, verified {verified})")
        info = await peer["xep_0115"].get_caps(alice_full)
        features = info["features"] if info is not None else []
        R.check(JINGLE_FT in features and "http://jabber.org/protocol/caps" in features,
                f"kabar's caps stand for Jingle file transfer: {features}")
    finally:
        if li:
            li.stop()
        peer.disconnect()
        await asyncio.sleep(0.2)


def stop_and_resume(R, srv, k, tmp):
    inbox = os.path.join(tmp, "bob-in")
    os.makedirs(inbox)
    # An abandoned part from long ago, and a recent one.
    old = os.path.join(inbox, ".old.bin.0123456789abcdef01234567.part")
    new = os.path.join(inbox, ".new.bin.89abcdef0123456789abcdef.part")
    for p in (old, new):
        with open(p, "wb") as f:
            f.write(b"x" * 100)
    past = time.time() - 10 * 86400
    os.utime(old, (past, past))
    li = k.listen("bob", "--accept-files", inbox, "--part-max-age", "7")
    try:
        R.check(li.wait(lambda e: e.get("type") == "ready") is not None, "bob listens")
        R.check(not os.path.exists(old) and os.path.exists(new),
                "listen --part-max-age 7 removed the 10-day-old .part, kept the recent one")
        src = os.path.join(tmp, "big.bin")
        size = 24 * 1024 * 1024
        want = random_file(src, size)
        full = None
        ev = li.wait(lambda e: e.get("type") == "ready")
        full = ev.get("jid") if ev else f"bob@{srv.domain}"
        # In-band (no SOCKS5): slow enough to stop halfway.
        sender = subprocess.Popen([k.binary, "sendfile", "--no-direct", "--no-proxy", full, src],
                                  env=k.env("alice"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        part, got = None, 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and got < 1024 * 1024:
            parts = [n for n in os.listdir(inbox) if n.startswith(".big.bin.") and n.endswith(".part")]
            if parts:
                part = os.path.join(inbox, parts[0])
                got = os.path.getsize(part)
            time.sleep(0.02)
        R.check(part is not None and 0 < got < size, f"the transfer is under way ({got} bytes)")
        sender.send_signal(signal.SIGINT)
        out, err = sender.communicate(timeout=30)
        R.check(sender.returncode != 0 and "stopped" in err and "resumes" in err,
                f"the sender's Ctrl-C: it says it stopped ({sender.returncode}: {err.strip()})")
        ev = li.wait(lambda e: e.get("type") == "file-error", timeout=STEP)
        R.check(ev is not None and "the sender cancelled it after" in ev.get("error", "") and
                "the same file sent again resumes" in ev.get("error", ""),
                f"the receiver says the sender cancelled it: {ev}")
        kept = os.path.getsize(part) if part and os.path.exists(part) else 0
        R.check(kept > 0, f"the receiver kept {kept} bytes in its .part file")
        r = k.run("sendfile", full, src, user="alice", timeout=240)
        R.check(r.returncode == 0 and "resumed at byte" in r.stdout,
                f"sending again resumes ({r.stdout.strip()} {r.stderr.strip()})")
        ev = li.wait(lambda e: e.get("type") == "file", timeout=STEP)
        R.check(ev is not None and ev.get("sha256") == want and int(ev.get("resumed_from", 0)) > 0,
                f"bob has the whole file, resumed from {ev and ev.get('resumed_from')}")
        R.check(not os.path.exists(part), "and no .part is left")
    finally:
        li.stop()


def receiver_stops(R, srv, k, tmp):
    """bob's listen is stopped (Ctrl-C) in the middle of a transfer: the sender says why, and
    neither offers it again nor uploads it; bob keeps what arrived."""
    inbox = os.path.join(tmp, "bob-stop-in")
    os.makedirs(inbox)
    li = k.listen("bob", "--accept-files", inbox)
    try:
        ev = li.wait(lambda e: e.get("type") == "ready")
        R.check(ev is not None, "bob listens")
        full = ev.get("jid") if ev else f"bob@{srv.domain}"
        src = os.path.join(tmp, "stop.bin")
        random_file(src, 24 * 1024 * 1024)
        sender = subprocess.Popen([k.binary, "sendfile", "--no-direct", "--no-proxy", full, src],
                                  env=k.env("alice"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        got = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and got < 64 * 1024:
            parts = [n for n in os.listdir(inbox) if n.endswith(".part")]
            got = os.path.getsize(os.path.join(inbox, parts[0])) if parts else 0
            time.sleep(0.02)
        R.check(got > 0, f"the transfer is under way ({got} bytes)")
        li.proc.send_signal(signal.SIGINT)
        out, err = sender.communicate(timeout=60)
        R.check(sender.returncode == 1 and "the contact cancelled it after" in err and
                "uploaded" not in out,
                f"the sender says the contact cancelled it, and uploads nothing "
                f"({sender.returncode}: {out.strip()} {err.strip()})")
        R.check(li.proc.wait(timeout=STEP) == 0, "bob's listen ends, exit 0")
        parts = [n for n in os.listdir(inbox) if n.endswith(".part")]
        R.check(len(parts) == 1, f"and keeps what arrived for a resume: {parts}")
    finally:
        li.stop()


def stopped_in_a_terminal(R, srv, k, tmp):
    inbox = os.path.join(tmp, "bob-tty-in")
    os.makedirs(inbox)
    tmux = Tmux(tmp)
    try:
        e = {kk: v for kk, v in k.env("bob").items()
             if kk.startswith("KABAR_") or kk in ("HOME", "PATH")}
        e["LANG"] = "C.UTF-8"
        tmux.start("bob", f"{k.binary} listen --accept-files {inbox}", e)
        ok, text = tmux.wait("bob", "listening as ")
        R.check(ok, "bob listens in a terminal\n" + text)
        full = text[text.index("listening as ") + len("listening as "):].split()[0]
        src = os.path.join(tmp, "tty.bin")
        random_file(src, 24 * 1024 * 1024)
        sender = subprocess.Popen([k.binary, "sendfile", "--no-direct", "--no-proxy", full, src],
                                  env=k.env("alice"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        ok, text = tmux.wait("bob", "tty.bin [", timeout=30)  # the progress bar is drawn
        R.check(ok, "bob's progress bar is drawn\n" + text)
        sender.send_signal(signal.SIGINT)
        sender.communicate(timeout=30)
        ok, text = tmux.wait("bob", "the sender cancelled it after")
        lines = [l for l in text.splitlines() if "the sender cancelled it" in l]
        R.check(ok and len(lines) == 1 and lines[0].startswith("file from alice@"),
                "the reason is a line of its own, not appended to the progress line\n" + text)
        bars = [l for l in text.splitlines() if "tty.bin [" in l]
        R.check(len(bars) == 1 and "cancelled" not in bars[0],
                "the progress line ended where the transfer stopped\n" + text)
    finally:
        tmux.kill()


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_sendfile_fallback")
    logging.basicConfig(level=logging.CRITICAL)
    tmp = tempfile.mkdtemp(prefix="kabar-fallback-")
    http_port = kabartest.free_port()
    try:
        with client_matrix.kabard_with_kabar(
                args, tmp, extra_flags=["--http", f"127.0.0.1:{http_port}"]) as (srv, k):
            kabartest.run_in_new_loop(R, "the slixmpp part finished", 120,
                                      [to_slixmpp, caps_of_slixmpp], R, srv, k, tmp)
            R.section(stop_and_resume)(R, srv, k, tmp)
            R.section(receiver_stops)(R, srv, k, tmp)
            R.section(stopped_in_a_terminal)(R, srv, k, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
