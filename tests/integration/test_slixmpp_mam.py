"""Message Archive Management (XEP-0313) with slixmpp's own plugins (Debian's python3-slixmpp
1.8.3: xep_0313 with xep_0059 paging, xep_0441 preferences) over STARTTLS, and raw XML for
what the plugins do not send.

alice writes 30 messages to bob: bob receives each with a <stanza-id by='bob@localhost'/>, and
both archives page through them forward and backward (pages of 7), each exactly once and in
order. carol's messages are found by the 'with' filter, a time window by 'start'; chat states
and <no-store/> stay out; a message to dave, offline, is archived and arrives at his login with
its stanza-id; bob cannot read alice's archive (forbidden); the archive and the preferences
survive a restart of kabard; preferences 'never' stop archiving; deleting an account deletes
its archive.

Run: /usr/bin/python3 test_slixmpp_mam.py --kabard PATH --kabarctl PATH
"""
import asyncio
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402
from slixtest import STEP, next_matching  # noqa: E402

import slixmpp  # noqa: E402
from slixmpp.exceptions import IqError  # noqa: E402
from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

TOTAL = 120.0
DOMAIN = "localhost"
SID = "{urn:xmpp:sid:0}stanza-id"


class Client(slixtest.Client):
    def __init__(self, jid, password):
        super().__init__(jid, password,
                         ("xep_0030", "xep_0059", "xep_0297", "xep_0313", "xep_0441"))
        self.results = []
        # Archive results have no <body/> of their own: slixmpp's "message" event skips them.
        self.register_handler(Callback(
            "mam results", MatchXPath("{jabber:client}message/{urn:xmpp:mam:2}result"),
            lambda m: self.results.append(m)))

    def keep_message(self, m):
        # Archive results come as messages too: only what is not one is a delivery.
        return m.xml.find("{urn:xmpp:mam:2}result") is None


async def login(r, kd, jid, pw):
    return await slixtest.login(r, kd, Client(jid, pw))


def body_of(result):
    fwd = result["mam_result"]["forwarded"]
    return fwd["stanza"]["body"]


async def archive(c, reverse=False, with_jid=None, start=None, page=7):
    """Every message of c's archive, through slixmpp's paging (pages of `page`)."""
    out = []
    async for m in c["xep_0313"].iterate(jid=c.boundjid.bare, reverse=reverse, with_jid=with_jid,
                                         start=start, rsm={"max": page}):
        out.append((m["mam_result"]["id"], body_of(m)))
    return out


async def archive_backward(c, page=7):
    """c's archive paged backward from the end (RSM <before/>, then <before>first</before>), as
    (id, body) newest first. slixmpp's own reverse iteration stops after one page whenever the
    server gives <first index/> and <count/> (it takes first index + page = count for the end,
    which holds only going forward), so the pages are asked for here."""
    out = []
    before = True
    for n in range(100):
        iq = c.make_iq_set(ito=c.boundjid.bare)
        qid = f"back{n}"
        iq["mam"]["queryid"] = qid
        iq["mam"]["rsm"]["max"] = str(page)
        iq["mam"]["rsm"]["before"] = before
        c.results = []
        res = await iq.send(timeout=STEP)
        got = [m for m in c.results if m["mam_result"]["queryid"] == qid]
        out += reversed([(m["mam_result"]["id"], body_of(m)) for m in got])
        fin = res.xml.find("{urn:xmpp:mam:2}fin")
        if fin is None or fin.get("complete") == "true" or not got:
            break
        before = got[0]["mam_result"]["id"]
    return out


async def wait_for_bodies(queue, want):
    got = []
    while len(got) < len(want):
        m = await next_matching(queue, lambda m: bool(m["body"]))
        if m is None:
            break
        got.append(m)
    return got


async def scenario(r, kd, clients):
    for u in ("alice", "bob", "carol", "dave"):
        kd.add_user(u, f"{u}-pw")
    a = await login(r, kd, f"alice@{DOMAIN}/home", "alice-pw")
    b = await login(r, kd, f"bob@{DOMAIN}/phone", "bob-pw")
    c = await login(r, kd, f"carol@{DOMAIN}/pc", "carol-pw")
    clients += [a, b, c]

    info = await b["xep_0030"].get_info(jid=f"bob@{DOMAIN}", timeout=STEP)
    feats = info["disco_info"]["features"]
    r.check("urn:xmpp:mam:2" in feats and "urn:xmpp:mam:2#extended" in feats
            and "urn:xmpp:sid:0" in feats, "the account's bare JID announces mam:2, #extended, sid:0")
    form = await b["xep_0313"].get_fields(jid=f"bob@{DOMAIN}", timeout=STEP)
    names = {f.get("var") for f in form.xml.iter("{jabber:x:data}field")} if form is not None else set()
    r.check({"with", "start", "end", "before-id", "after-id", "ids"} <= names,
            "the query form offers with, start, end, before-id, after-id, ids")

    want = [f"m{i:02d}" for i in range(30)]
    for body in want:
        a.send_message(mto=f"bob@{DOMAIN}", mbody=body, mtype="chat")
    got = await wait_for_bodies(b.messages, want)
    r.check([m["body"] for m in got] == want, "bob receives the 30 messages in order")
    sids = [m.xml.find(SID) for m in got]
    r.check(all(s is not None and s.get("by") == f"bob@{DOMAIN}" and s.get("id") for s in sids),
            "each carries a stanza-id by bob's archive")

    fwd = await archive(b)
    r.check([x[1] for x in fwd] == want, "bob's archive, paged forward by 7: each once, in order"
            + ("" if [x[1] for x in fwd] == want else f" (got {[x[1] for x in fwd]})"))
    r.check([x[0] for x in fwd] == [s.get("id") for s in sids],
            "the archive's ids are the stanza-ids bob received")
    back = await archive_backward(b)
    r.check([x[1] for x in back] == list(reversed(want)),
            "paged backward from the end: each once, newest first"
            + ("" if [x[1] for x in back] == list(reversed(want)) else f" (got {back})"))
    mine = await archive(a)
    r.check([x[1] for x in mine] == want, "alice's own archive holds what she sent")
    r.check(not set(x[0] for x in mine) & set(x[0] for x in fwd),
            "the two archives have ids of their own")
    r.check(all(m.xml.find(SID) is None for m in list(a.messages._queue)),
            "alice gets no stanza-id of her archive back")

    # The 'with' filter and a time window.
    await asyncio.sleep(0.05)
    before_carol = datetime.datetime.now(datetime.timezone.utc)
    await asyncio.sleep(0.05)
    c.send_message(mto=f"bob@{DOMAIN}", mbody="from carol 1", mtype="chat")
    c.send_message(mto=f"bob@{DOMAIN}", mbody="from carol 2", mtype="chat")
    await wait_for_bodies(b.messages, ["from carol 1", "from carol 2"])
    only = await archive(b, with_jid=slixmpp.JID(f"carol@{DOMAIN}"))
    r.check([x[1] for x in only] == ["from carol 1", "from carol 2"],
            "with=carol: only her two messages")
    recent = await archive(b, start=before_carol)
    r.check([x[1] for x in recent] == ["from carol 1", "from carol 2"],
            "start=just before carol wrote: only hers"
            + ("" if len(recent) == 2 else f" (got {[x[1] for x in recent]})"))

    # What is not archived.
    raw = ("<message to='bob@localhost' type='chat'><composing "
           "xmlns='http://jabber.org/protocol/chatstates'/></message>")
    a.send_raw(raw)
    a.send_raw("<message to='bob@localhost' type='chat'><body>off the record</body>"
               "<no-store xmlns='urn:xmpp:hints'/></message>")
    m = await next_matching(b.messages, lambda m: m["body"] == "off the record")
    r.check(m is not None and m.xml.find(SID) is None,
            "a <no-store/> message arrives without a stanza-id")
    total = await archive(b)
    r.check(len(total) == 32, f"chat states and <no-store/> stay out of the archive ({len(total)})")

    # Someone else's archive.
    try:
        await b["xep_0313"].retrieve(jid=slixmpp.JID(f"alice@{DOMAIN}"), timeout=STEP)
        cond = "result"
    except IqError as e:
        cond = e.iq["error"]["condition"]
    r.check(cond == "forbidden", f"bob asking for alice's archive: forbidden ({cond})")

    # Offline: archived at once, delivered at login with the stanza-id.
    a.send_message(mto=f"dave@{DOMAIN}", mbody="while you were out", mtype="chat")
    await asyncio.sleep(0.3)
    d = await login(r, kd, f"dave@{DOMAIN}/laptop", "dave-pw")
    clients.append(d)
    m = await next_matching(d.messages, lambda m: m["body"] == "while you were out")
    sid = m.xml.find(SID) if m is not None else None
    r.check(sid is not None and sid.get("by") == f"dave@{DOMAIN}",
            "dave gets the offline message with its stanza-id")
    dave_archive = await archive(d)
    r.check([x[1] for x in dave_archive] == ["while you were out"]
            and sid is not None and dave_archive[0][0] == sid.get("id"),
            "dave's archive holds it under that id")

    # Metadata (#extended).
    md = await b["xep_0313"].get_archive_metadata(jid=slixmpp.JID(f"bob@{DOMAIN}"), timeout=STEP)
    r.check(md["mam_metadata"]["start"]["id"] == fwd[0][0]
            and md["mam_metadata"]["end"]["id"] == total[-1][0],
            "metadata names the first and the last message")

    # Preferences.
    await c["xep_0441"].set_preferences(default="never", always=[slixmpp.JID(f"alice@{DOMAIN}")],
                                        timeout=STEP)
    default, always, never = await c["xep_0441"].get_preferences(timeout=STEP)
    r.check(default == "never" and [str(j) for j in always] == [f"alice@{DOMAIN}"],
            f"carol's preferences read back ({default}, {[str(j) for j in always]})")
    c.send_message(mto=f"bob@{DOMAIN}", mbody="carol unarchived", mtype="chat")
    c.send_message(mto=f"alice@{DOMAIN}", mbody="carol to alice", mtype="chat")
    await next_matching(a.messages, lambda m: m["body"] == "carol to alice")
    await next_matching(b.messages, lambda m: m["body"] == "carol unarchived")
    cs = await archive(c)
    r.check([x[1] for x in cs] == ["from carol 1", "from carol 2", "carol to alice"],
            "default never, alice always: only what went to alice is added"
            + ("" if len(cs) == 3 else f" ({[x[1] for x in cs]})"))
    return fwd


async def after_restart(r, kd, clients, fwd):
    b = await login(r, kd, f"bob@{DOMAIN}/phone", "bob-pw")
    c = await login(r, kd, f"carol@{DOMAIN}/pc", "carol-pw")
    clients += [b, c]
    again = await archive(b)
    r.check([x[0] for x in again[:30]] == [x[0] for x in fwd],
            "after a restart bob's archive is the same, under the same ids")
    default, _, _ = await c["xep_0441"].get_preferences(timeout=STEP)
    r.check(default == "never", "and carol's preferences stay")


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("slixmpp_mam")
    slixtest.quiet_logging()
    with kabartest.Kabard(args) as kd:
        with slixtest.Loop(r, TOTAL) as lp:
            fwd = lp.run(scenario(r, kd, lp.clients), "the scenario")
            lp.abort_clients()
            r.check(kd.stop() == 0, "kabard stops on SIGTERM")
            kd.start()
            if fwd:
                lp.run(after_restart(r, kd, lp.clients, fwd), "after the restart")
            lp.abort_clients()
            kd.ctl("user", "delete", "bob")
            n = kabartest.sqlite_count(kd, "SELECT COUNT(*) FROM archive_msg WHERE username = 'bob'")
            r.check(n == 0, f"deleting bob deletes his archive ({n} left)")
        r.check(kd.alive(), "kabard still running at the end")
    r.finish()


if __name__ == "__main__":
    main()
