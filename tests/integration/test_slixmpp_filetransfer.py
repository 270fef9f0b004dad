#!/usr/bin/python3
"""Stream initiation file transfer (XEP-0095/XEP-0096) between Debian's slixmpp 1.8.3 and `kabar`,
both directions, over SOCKS5 (XEP-0065) and in-band (XEP-0047), bytes and SHA-256 checked.

What slixmpp 1.8.3 really does, learned from its plugins (xep_0095/0096/0065/0047):
- xep_0096 builds the <si/> offer (name, size, MD5 hash attribute) and xep_0095 sends it; the
  stream itself is then up to the application: xep_0065.handshake() (streamhosts: only the proxies
  it discovered, never its own address) or xep_0047.open_stream() (IQ stanzas, 4 KiB blocks).
- xep_0095.offer() with its default methods raises TypeError (it hands the form plain strings
  where FormField.add_option(**option) wants mappings): the methods must be given as
  [{"label": "", "value": NS}].
- xep_0095 registers its async SI request handler as a plain Callback, so as a receiver slixmpp
  never answers an offer; the test re-registers it as a CoroutineCallback.
- As a receiver, xep_0095 picks the method by its own registration order, which puts IBB (50)
  before SOCKS5 (100): offered both, slixmpp takes IBB. So `kabar sendfile --no-ibb` is how we
  make it take SOCKS5. Its xep_0065 connects to every streamhost at once and reports the first in
  the offer's order that worked; its xep_0047 refuses blocks over 8 KiB.
- Nothing in XEP-0096 confirms the file: the receiver knows the size and the MD5.

Run: /usr/bin/python3 test_slixmpp_filetransfer.py --kabard PATH --kabarctl PATH
"""
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402

from slixmpp.xmlstream.handler import CoroutineCallback  # noqa: E402
from slixmpp.xmlstream.matcher import StanzaPath  # noqa: E402

STEP = 30.0
MIB = 1024 * 1024
R = kabartest.Results("slixmpp_filetransfer")
SOCKS5 = "http://jabber.org/protocol/bytestreams"
IBB = "http://jabber.org/protocol/ibb"


class Slix(slixtest.Client):
    def __init__(self, jid, password):
        super().__init__(jid, password,
                         ("xep_0030", "xep_0047", "xep_0065", "xep_0095", "xep_0096"))
        # slixmpp 1.8.3 registers its async SI request handler as a plain Callback, so it is never
        # awaited and an SI offer goes unanswered: register it as a coroutine callback.
        self.remove_handler("SI Request")
        self.register_handler(CoroutineCallback("SI Request", StanzaPath("iq@type=set/si"),
                                                self["xep_0095"]._handle_request))
        self.done = asyncio.get_event_loop().create_future()
        self.received = bytearray()
        self.si_requests = []
        self.add_event_handler("session_start", lambda e: self.send_presence())
        self.add_event_handler("si_request", self._on_si)
        self.add_event_handler("socks5_data", self._on_data)
        self.add_event_handler("socks5_closed", lambda e: self._finish("socks5"))
        self.add_event_handler("ibb_stream_data", self._on_ibb_data)
        self.add_event_handler("ibb_stream_end", lambda s: self._finish("ibb"))

    async def _on_si(self, iq):
        self.si_requests.append(iq)
        await self["xep_0095"].accept(iq["from"], iq["si"]["id"])

    def _on_data(self, data):
        self.received.extend(data)

    def _on_ibb_data(self, stream):
        while True:
            try:
                self.received.extend(stream.read())
            except Exception:  # noqa: BLE001 (empty queue)
                break

    def _finish(self, how):
        if not self.done.done():
            self.done.set_result(how)

    def reset(self):
        self.received = bytearray()
        self.done = asyncio.get_event_loop().create_future()


class Listener(kabartest.JsonLines):
    """`kabar listen --json ...` in the background, waited for without blocking slixmpp's loop."""

    async def wait(self, pred, timeout=STEP):
        return await self.wait_async(pred, timeout)

    def stop(self):
        super().stop()
        return self.stderr


def kabar_env(work, k, user, pw):
    e = dict(os.environ)
    e["HOME"] = os.path.join(work, "home-" + user)
    os.makedirs(e["HOME"], exist_ok=True)
    for v in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        e.pop(v, None)
    e.update(KABAR_JID=f"{user}@localhost", KABAR_PASSWORD=pw,
             KABAR_SERVER=f"127.0.0.1:{k.port}", KABAR_INSECURE="1")
    return e


async def slix_to_kabar(k, kabar, work, alice, method, size):
    """slixmpp alice offers a file by SI to `kabar listen --accept-files` (carol)."""
    label = "slixmpp -> kabar over " + ("SOCKS5 (proxy)" if method == SOCKS5 else "IBB")
    dest = os.path.join(work, "in-" + ("s5b" if method == SOCKS5 else "ibb"))
    os.makedirs(dest)
    li = Listener([kabar, "listen", "--json", "--accept-files", dest],
                  kabar_env(work, k, "carol", "carol-pw"))
    try:
        ready = await li.wait(lambda e: e.get("type") == "ready")
        if not R.check(ready is not None, f"{label}: kabar listens"):
            return
        to = ready["jid"]
        data = os.urandom(size)
        sid = uuid.uuid4().hex
        r = await alice["xep_0096"].request_file_transfer(
            to, sid=sid, name="from-slixmpp.bin", size=size, hash=hashlib.md5(data).hexdigest(),
            methods=[{"label": "", "value": method}], timeout=STEP)
        chosen = r["si"]["feature_neg"]["form"].get_values().get("stream-method")
        R.check(chosen == method, f"{label}: kabar accepts, choosing {chosen}")
        if method == SOCKS5:
            sock = await asyncio.wait_for(alice["xep_0065"].handshake(to, sid=sid), STEP)
            R.check(sock is not None, f"{label}: the bytestream is activated")
            for i in range(0, size, 65536):
                await sock.write(data[i:i + 65536])
            await asyncio.sleep(0.2)
            sock.transport.close()
        else:
            stream = await alice["xep_0047"].open_stream(to, sid=sid)
            await stream.sendall(data)
            await stream.close()
        ev = await li.wait(lambda e: e.get("type") in ("file", "file-error"), 60)
        ok = ev is not None and ev.get("type") == "file"
        R.check(ok, f"{label}: kabar reports the file ({ev})")
        if ok:
            want = hashlib.sha256(data).hexdigest()
            R.check(ev.get("protocol") == "si" and ev.get("sha256") == want and
                    ev.get("hash_checked") == "yes",
                    f"{label}: SHA-256 equal, MD5 checked by kabar")
            R.check(open(ev["path"], "rb").read() == data and
                    os.path.basename(ev["path"]) == "from-slixmpp.bin",
                    f"{label}: {size // 1024} KiB saved as {ev['path']}")
    finally:
        li.stop()


async def kabar_to_slix(k, kabar, work, bob, flags, expect, size):
    label = f"kabar -> slixmpp over {expect}"
    bob.reset()
    src = os.path.join(work, f"to-slixmpp-{expect}.bin")
    data = os.urandom(size)
    with open(src, "wb") as f:
        f.write(data)
    env = kabar_env(work, k, "alice", "alice-pw")
    proc = await asyncio.create_subprocess_exec(kabar, "sendfile", *flags, "bob@localhost/recv",
                                                src, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE,
                                                stdin=subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    out, err = out.decode(), err.decode()
    R.check(proc.returncode == 0 and f"over {expect} (stream initiation)" in out,
            f"{label}: kabar sendfile chose stream initiation and exits 0 ({out.strip()} "
            f"{err.strip()})")
    try:
        await asyncio.wait_for(bob.done, STEP)
    except asyncio.TimeoutError:
        pass
    for _ in range(100):
        if len(bob.received) >= size:
            break
        await asyncio.sleep(0.05)
    R.check(len(bob.si_requests) > 0, f"{label}: slixmpp got the SI offer")
    R.check(hashlib.sha256(bytes(bob.received)).hexdigest() == hashlib.sha256(data).hexdigest(),
            f"{label}: {size // 1024} KiB arrived at slixmpp, SHA-256 equal "
            f"({len(bob.received)} bytes)")


async def scenario(k, kabar, work):
    alice = Slix("alice@localhost/send", "alice-pw")
    bob = Slix("bob@localhost/recv", "bob-pw")
    outcomes = await slixtest.start_all(k.port, (alice, bob), STEP)
    R.check(outcomes == ["session", "session"], "both slixmpp clients logged in (%s)" % outcomes)
    try:
        await slix_to_kabar(k, kabar, work, alice, SOCKS5, 4 * MIB)
        await slix_to_kabar(k, kabar, work, alice, IBB, 1 * MIB)
        await kabar_to_slix(k, kabar, work, bob, ["--no-ibb"], "s5b-direct", 4 * MIB)
        await kabar_to_slix(k, kabar, work, bob, ["--no-ibb", "--no-direct"], "s5b-proxy",
                            4 * MIB)
        await kabar_to_slix(k, kabar, work, bob, ["--no-direct", "--no-proxy"], "ibb", 1 * MIB)
    finally:
        for c in (alice, bob):
            await c.stop()


def main():
    slixtest.quiet_logging()
    args = kabartest.parse_args()
    kabar = os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar")
    port = kabartest.free_port()
    work = tempfile.mkdtemp(prefix="kabar-slixft-")
    k = kabartest.Kabard(args, extra_flags=("--proxy65", "127.0.0.1:%d" % port))
    try:
        with k:
            for u in ("alice", "bob", "carol"):
                k.add_user(u, u + "-pw")
            with slixtest.Loop(R, 280) as lp:
                lp.run(scenario(k, kabar, work))
            R.check(k.alive(), "kabard alive")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
