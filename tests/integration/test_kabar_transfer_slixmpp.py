"""Transfers that stop, and a contact that never answers, with slixmpp on the other side of kabar
(issue 20, items 4 and 5). Debian's slixmpp 1.8.3 has no Jingle, so its side of XEP-0234 over
XEP-0261 (in-band bytestreams, slixmpp's stanzas sent by hand) is written here:

- gina (slixmpp) sends bob (`kabar listen --json --accept-files`) a file and stops after 40 KiB
  with session-terminate <cancel/>: bob says the sender cancelled it after that many bytes and
  keeps them in a hidden .part; gina offers the same file again and bob's session-accept asks
  for the rest (<range offset='40960'/>, XEP-0234 §8); bob ends with the whole file, its SHA-256
  checked, resumed from 40960, and no .part left. From another session gina sends 8 KiB and
  goes offline: bob says the sender went offline, and keeps what arrived.
- hank (slixmpp) announces Jingle file transfer but never answers the offer (its IQ is left
  unanswered): alice's `kabar sendfile` gives up on it and falls back to HTTP upload, saying
  why, exit 0 (issue 20 item 4: it used to wait 15 s and fail with the "unreachable" exit 4).
- ivy (slixmpp) accepts alice's file, takes 3 blocks in-band and drops her connection: sendfile
  says the stream broke and the offer made again was refused, exit 1, and uploads nothing.
These two wait on kabar's IQ timeout (15 s) and run beside the first part.

Run: /usr/bin/python3 test_kabar_transfer_slixmpp.py --kabard PATH --kabarctl PATH
"""
import asyncio
import base64
import hashlib
import logging
import os
import shutil
import ssl
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402

import slixmpp  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

STEP = 20.0
NS_JINGLE = "urn:xmpp:jingle:1"
NS_FT = "urn:xmpp:jingle:apps:file-transfer:5"
NS_IBB_T = "urn:xmpp:jingle:transports:ibb:1"
NS_IBB = "http://jabber.org/protocol/ibb"
NS_HASHES = "urn:xmpp:hashes:2"
BLOCK = 4096
STOP_AFTER = 10 * BLOCK


class Peer(slixmpp.ClientXMPP):
    """A slixmpp client that takes Jingle IQs itself: each is queued and, unless `silent`,
    answered with a result."""

    def __init__(self, jid, password, silent=False):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        self["xep_0030"].add_feature(NS_JINGLE)
        self["xep_0030"].add_feature(NS_FT)
        self["xep_0030"].add_feature(NS_IBB_T)
        self.silent = silent
        self.jingle = asyncio.Queue()
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start",
                               lambda e: self.started.done() or self.started.set_result(True))
        self.register_handler(Callback(
            "jingle", MatchXPath("{jabber:client}iq/{%s}jingle" % NS_JINGLE), self._on_jingle))

    def _on_jingle(self, iq):
        if iq["type"] != "set":
            return
        self.jingle.put_nowait(iq.xml.find("{%s}jingle" % NS_JINGLE))
        if not self.silent:
            iq.reply().send()

    async def next_action(self, action, sid, timeout=STEP):
        """The next Jingle `action` of session `sid` (others are skipped)."""
        while True:
            j = await asyncio.wait_for(self.jingle.get(), timeout)
            if j.get("action") == action and sid in (None, j.get("sid")):
                return j

    async def set(self, to, payload):
        """Sends an IQ set with this payload (an Element); the answer (raises on an error)."""
        iq = self.make_iq_set(ito=to)
        iq.append(payload)
        return await iq.send(timeout=STEP)


def jingle(action, sid, initiator=None, content=None, reason=None):
    j = ET.Element("{%s}jingle" % NS_JINGLE, action=action, sid=sid)
    if initiator:
        j.set("initiator", initiator)
    if content is not None:
        j.append(content)
    if reason:
        r = ET.SubElement(j, "{%s}reason" % NS_JINGLE)
        ET.SubElement(r, "{%s}%s" % (NS_JINGLE, reason))
    return j


def offer(name, data, ibb_sid):
    c = ET.Element("{%s}content" % NS_JINGLE, creator="initiator", name="file",
                   senders="initiator")
    d = ET.SubElement(c, "{%s}description" % NS_FT)
    f = ET.SubElement(d, "{%s}file" % NS_FT)
    ET.SubElement(f, "{%s}name" % NS_FT).text = name
    ET.SubElement(f, "{%s}size" % NS_FT).text = str(len(data))
    ET.SubElement(f, "{%s}range" % NS_FT)  # we can send from an offset (XEP-0234 §8)
    h = ET.SubElement(f, "{%s}hash" % NS_HASHES, algo="sha-256")
    h.text = base64.b64encode(hashlib.sha256(data).digest()).decode()
    ET.SubElement(c, "{%s}transport" % NS_IBB_T, sid=ibb_sid, **{"block-size": str(BLOCK)})
    return c


def range_offset(accept):
    r = accept.find(".//{%s}range" % NS_FT)
    return None if r is None else int(r.get("offset", "0"))


async def send_ibb(peer, to, ibb_sid, data, start, stop):
    """Opens the in-band stream and sends data[start:stop] in blocks."""
    await peer.set(to, ET.Element("{%s}open" % NS_IBB, sid=ibb_sid, stanza="iq",
                                  **{"block-size": str(BLOCK)}))
    seq = 0
    for off in range(start, stop, BLOCK):
        d = ET.Element("{%s}data" % NS_IBB, sid=ibb_sid, seq=str(seq))
        d.text = base64.b64encode(data[off:min(off + BLOCK, stop)]).decode()
        await peer.set(to, d)
        seq += 1


async def stop_and_resume(R, srv, k, tmp):
    pw = "Slix-Secret-9"
    srv.add_user("gina", pw)
    inbox = os.path.join(tmp, "bob-in")
    os.makedirs(inbox)
    li = k.listen("bob", "--accept-files", inbox)
    peer = Peer(f"gina@{srv.domain}/slix", pw)
    peer.connect(("127.0.0.1", srv.port), force_starttls=True)
    try:
        ev = await li.wait_async(lambda e: e.get("type") == "ready")
        bob = ev.get("jid") if ev else None
        R.check(bool(bob), f"bob listens ({ev})")
        await asyncio.wait_for(asyncio.shield(peer.started), STEP)
        peer.send_presence()
        me = peer.boundjid.full
        data = os.urandom(200_000)

        # The first offer: 40 KiB, then the sender stops.
        await peer.set(bob, jingle("session-initiate", "s1", me, offer("slix.bin", data, "i1")))
        acc = await peer.next_action("session-accept", "s1")
        R.check(range_offset(acc) == 0, f"bob accepts from byte 0 (range offset "
                f"{range_offset(acc)}): {ET.tostring(acc)[:300]!r}")
        await send_ibb(peer, bob, "i1", data, 0, STOP_AFTER)
        await peer.set(bob, jingle("session-terminate", "s1", reason="cancel"))
        ev = await li.wait_async(lambda e: e.get("type") == "file-error", timeout=STEP)
        err = ev.get("error", "") if ev else ""
        R.check(f"the sender cancelled it after {STOP_AFTER} of {len(data)} bytes" in err and
                "the same file sent again resumes" in err,
                f"bob says gina (slixmpp) cancelled it, after how many bytes: {ev}")
        parts = [n for n in os.listdir(inbox) if n.startswith(".slix.bin.") and n.endswith(".part")]
        size = os.path.getsize(os.path.join(inbox, parts[0])) if len(parts) == 1 else None
        R.check(size == STOP_AFTER, f"bob keeps the {STOP_AFTER} bytes in a .part ({parts}, {size})")

        # The same file again: bob asks for the rest.
        await peer.set(bob, jingle("session-initiate", "s2", me, offer("slix.bin", data, "i2")))
        acc = await peer.next_action("session-accept", "s2")
        off = range_offset(acc)
        R.check(off == STOP_AFTER, f"bob's session-accept asks for the rest: range offset {off}")
        await send_ibb(peer, bob, "i2", data, off or 0, len(data))
        await peer.set(bob, ET.Element("{%s}close" % NS_IBB, sid="i2"))
        ev = await li.wait_async(lambda e: e.get("type") == "file", timeout=STEP)
        R.check(ev is not None and
                ev.get("sha256") == hashlib.sha256(data).hexdigest() and
                ev.get("hash_checked") == "yes" and int(ev.get("resumed_from", 0)) == STOP_AFTER,
                f"bob has the whole file, its hash checked, resumed from {STOP_AFTER}: {ev}")
        term = await peer.next_action("session-terminate", "s2")
        R.check(term.find("{%s}reason/{%s}success" % (NS_JINGLE, NS_JINGLE)) is not None,
                "bob ends the session with <success/>")
        with open(os.path.join(inbox, "slix.bin"), "rb") as f:
            R.check(f.read() == data, "slix.bin holds the same bytes")
        R.check(not [n for n in os.listdir(inbox) if n.endswith(".part")], "no .part is left")
        errors = [e for e in li.events if e.get("type") == "file-error"]
        R.check(len(errors) == 1, f"one file-error only (the cancelled one): {errors}")
    finally:
        li.stop()
        peer.disconnect()


async def sender_goes_offline(R, srv, k, tmp):
    """gina (another slixmpp session, her presence directed to bob) sends 8 KiB and goes
    offline: bob says the sender went offline, and keeps the bytes."""
    inbox = os.path.join(tmp, "bob-in-2")
    os.makedirs(inbox)
    li = k.listen("bob", "--accept-files", inbox)
    peer = Peer(f"gina@{srv.domain}/slix2", "Slix-Secret-9")
    peer.connect(("127.0.0.1", srv.port), force_starttls=True)
    try:
        ev = await li.wait_async(lambda e: e.get("type") == "ready")
        bob = ev.get("jid") if ev else None
        await asyncio.wait_for(asyncio.shield(peer.started), STEP)
        peer.send_presence(pto=bob)  # so that bob learns when she goes (RFC 6121 §4.6)
        data = os.urandom(100_000)
        me = peer.boundjid.full
        await peer.set(bob, jingle("session-initiate", "g1", me, offer("gone.bin", data, "j1")))
        await peer.next_action("session-accept", "g1")
        await send_ibb(peer, bob, "j1", data, 0, 2 * BLOCK)
        peer.disconnect()
        ev = await li.wait_async(lambda e: e.get("type") == "file-error", timeout=STEP)
        err = ev.get("error", "") if ev else ""
        R.check(f"the sender went offline after {2 * BLOCK} of {len(data)} bytes" in err and
                "the same file sent again resumes" in err,
                f"bob says gina (slixmpp) went offline, after how many bytes: {ev}")
        parts = [n for n in os.listdir(inbox) if n.endswith(".part")]
        R.check(len(parts) == 1, f"and keeps them in a .part: {parts}")
    finally:
        li.stop()
        peer.disconnect()


async def receiver_vanishes(R, srv, k, tmp):
    """alice sends ivy (slixmpp: Jingle file transfer, in-band, by hand) a file; ivy takes 3
    blocks and drops her connection. alice's sendfile says the stream broke and that the offer
    made again was refused, exit 1: no upload (ivy's client can take files; she is gone)."""
    pw = "Slix-Secret-9"
    srv.add_user("ivy", pw)
    peer = Peer(f"ivy@{srv.domain}/slix", pw)
    blocks = []

    def on_ibb(iq):
        blocks.append(iq.xml.find("{%s}data" % NS_IBB) is not None)
        if sum(blocks) < 3:
            iq.reply().send()
        elif sum(blocks) == 3:
            peer.abort()  # gone, without a word
    peer.register_handler(Callback(
        "ibb", MatchXPath("{jabber:client}iq/{%s}open" % NS_IBB), on_ibb))
    peer.register_handler(Callback(
        "ibb-data", MatchXPath("{jabber:client}iq/{%s}data" % NS_IBB), on_ibb))
    peer.connect(("127.0.0.1", srv.port), force_starttls=True)
    src = os.path.join(tmp, "vanish.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(1_000_000))
    await asyncio.wait_for(asyncio.shield(peer.started), STEP)
    peer.send_presence()
    sender = asyncio.ensure_future(asyncio.to_thread(
        k.run, "sendfile", "--no-direct", "--no-proxy", peer.boundjid.full, src, user="alice",
        timeout=60))
    init = await peer.next_action("session-initiate", None)
    sid = init.get("sid")
    content = init.find("{%s}content" % NS_JINGLE)
    for t in content.findall("{*}transport"):
        for c in list(t):
            t.remove(c)
    me = peer.boundjid.full
    acc = jingle("session-accept", sid, content=content)
    acc.set("responder", me)
    await peer.set(init.get("initiator"), acc)
    ce = ET.Element("{%s}content" % NS_JINGLE, creator="initiator", name=content.get("name"))
    t = ET.SubElement(ce, "{urn:xmpp:jingle:transports:s5b:1}transport",
                      sid=content.find("{*}transport").get("sid"))
    ET.SubElement(t, "{urn:xmpp:jingle:transports:s5b:1}candidate-error")
    await peer.set(init.get("initiator"), jingle("transport-info", sid, content=ce))
    rep = await peer.next_action("transport-replace", sid)
    await peer.set(init.get("initiator"),
                   jingle("transport-accept", sid, content=rep.find("{%s}content" % NS_JINGLE)))
    r = await sender
    R.check(sum(blocks) >= 3, f"ivy (slixmpp) took 3 blocks, then dropped ({sum(blocks)})")
    R.check(r.returncode == 1 and "broke" in r.stderr and "offered again" in r.stderr and
            "uploaded" not in r.stdout,
            f"sendfile says the stream broke and the offer made again was refused, exit 1, no "
            f"upload: {r.returncode} {r.stdout.strip()} {r.stderr.strip()}")


async def silent_contact(R, srv, k, tmp):
    pw = "Slix-Secret-9"
    srv.add_user("hank", pw)
    peer = Peer(f"hank@{srv.domain}/slix", pw, silent=True)
    peer.connect(("127.0.0.1", srv.port), force_starttls=True)
    try:
        await asyncio.wait_for(asyncio.shield(peer.started), STEP)
        peer.send_presence()
        src = os.path.join(tmp, "agenda.txt")
        with open(src, "w") as f:
            f.write("the agenda\n" * 500)
        t0 = time.monotonic()
        r = await asyncio.to_thread(k.run, "sendfile", peer.boundjid.full, src, user="alice",
                                    timeout=60)
        took = time.monotonic() - t0
        R.check(not peer.jingle.empty(), "hank (slixmpp) got the offer and did not answer it")
        R.check(r.returncode == 0 and "did not answer the offer" in r.stdout and
                "uploaded" in r.stdout,
                f"sendfile to a contact that never answers: says so, uploads, exit 0 "
                f"({took:.1f} s): {r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
    finally:
        peer.disconnect()


async def scenario(R, srv, k, tmp):
    # The two that wait on kabar's IQ timeout (15 s) run beside the rest.
    silent = asyncio.ensure_future(silent_contact(R, srv, k, tmp))
    vanishes = asyncio.ensure_future(receiver_vanishes(R, srv, k, tmp))
    try:
        await stop_and_resume(R, srv, k, tmp)
        await sender_goes_offline(R, srv, k, tmp)
    finally:
        await silent
        await vanishes
    await asyncio.sleep(0.2)


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_transfer_slixmpp")
    logging.basicConfig(level=logging.CRITICAL)
    tmp = tempfile.mkdtemp(prefix="kabar-slixft-")
    http_port = kabartest.free_port()
    try:
        with client_matrix.kabard_with_kabar(
                args, tmp, extra_flags=["--http", f"127.0.0.1:{http_port}"]) as (srv, k):
            kabartest.run_in_new_loop(R, "the scenario finished", 90, [scenario], R, srv, k, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
