"""Message carbons (XEP-0280) and blocking (XEP-0191) with slixmpp's own plugins (Debian's
python3-slixmpp 1.8.3: xep_0280, xep_0191) over STARTTLS.

Two resources of romeo enable carbons; juliet writes to one and the other sees a received carbon;
one writes to juliet and the other sees a sent carbon, with the stanza-id (XEP-0359) under which
romeo's archive holds it (XEP-0313 §3.5; a MAM query names that id) while juliet's copy carries
none of romeo's. Then romeo blocks juliet: the resource
that fetched the blocklist gets the push, juliet's message is refused with service-unavailable,
romeo's to her with <blocked/>; after the unblock both ways work again.

Run: /usr/bin/python3 test_slixmpp_carbons_blocking.py --kabard PATH --kabarctl PATH
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402
from slixtest import STEP, next_matching  # noqa: E402

import slixmpp  # noqa: E402
from slixmpp.exceptions import IqError  # noqa: E402

TOTAL = 80.0
DOMAIN = "localhost"
SID = "{urn:xmpp:sid:0}stanza-id"


class Client(slixtest.Client):
    def __init__(self, jid, password):
        super().__init__(jid, password, ("xep_0030", "xep_0059", "xep_0297", "xep_0280",
                                         "xep_0191", "xep_0313"))
        self.errors = asyncio.Queue()
        self.carbons = asyncio.Queue()
        self.pushes = asyncio.Queue()
        self.add_event_handler("message_error", lambda m: self.errors.put_nowait(m))
        self.add_event_handler("carbon_received", lambda m: self.carbons.put_nowait(("received", m)))
        self.add_event_handler("carbon_sent", lambda m: self.carbons.put_nowait(("sent", m)))
        self.add_event_handler("blocked", lambda iq: self.pushes.put_nowait(("block", iq)))
        self.add_event_handler("unblocked", lambda iq: self.pushes.put_nowait(("unblock", iq)))


async def login(r, kd, jid, pw):
    return await slixtest.login(r, kd, Client(jid, pw))


async def scenario(r, kd, clients):
    kd.add_user("romeo", "romeo-pw")
    kd.add_user("juliet", "juliet-pw")
    a = await login(r, kd, f"romeo@{DOMAIN}/a", "romeo-pw")
    b = await login(r, kd, f"romeo@{DOMAIN}/b", "romeo-pw")
    j = await login(r, kd, f"juliet@{DOMAIN}/balcony", "juliet-pw")
    clients += [a, b, j]
    info = await a["xep_0030"].get_info(jid=DOMAIN, timeout=STEP)
    feats = info["disco_info"]["features"]
    r.check("urn:xmpp:carbons:2" in feats and "urn:xmpp:blocking" in feats,
            "the server announces carbons and blocking")
    for c in (a, b):
        res = await c["xep_0280"].enable(timeout=STEP)
        r.check(res["type"] == "result", f"{c.boundjid} enables carbons")

    j.send_message(mto=f"romeo@{DOMAIN}/a", mbody="to a 41", mtype="chat")
    m = await next_matching(a.messages, lambda m: m["body"] == "to a 41")
    r.check(m is not None, "romeo/a gets juliet's message")
    c = await next_matching(b.carbons, lambda c: c[0] == "received")
    inner = c[1]["carbon_received"] if c else None
    r.check(inner is not None and inner["body"] == "to a 41"
            and str(inner["from"]) == f"juliet@{DOMAIN}/balcony",
            "romeo/b sees it as a received carbon")

    a.send_message(mto=f"juliet@{DOMAIN}", mbody="from a 42", mtype="chat")
    m = await next_matching(j.messages, lambda m: m["body"] == "from a 42")
    r.check(m is not None, "juliet gets romeo/a's message")
    c = await next_matching(b.carbons, lambda c: c[0] == "sent")
    inner = c[1]["carbon_sent"] if c else None
    r.check(inner is not None and inner["body"] == "from a 42"
            and str(inner["to"]) == f"juliet@{DOMAIN}", "romeo/b sees it as a sent carbon")
    # XEP-0313 §3.5: the id of romeo's archive inside the carbon's forwarded message, none of
    # it in juliet's copy.
    sids = [s for s in inner.xml.findall(SID) if s.get("by") == f"romeo@{DOMAIN}"] if inner else []
    r.check(len(sids) == 1 and sids[0].get("id"),
            "the sent carbon carries a stanza-id by romeo's archive")
    r.check(m is not None and all(s.get("by") != f"romeo@{DOMAIN}" for s in m.xml.findall(SID)),
            "juliet's copy carries no stanza-id by romeo's archive")
    archived = []
    async for res in a["xep_0313"].iterate(jid=slixmpp.JID(f"romeo@{DOMAIN}"), rsm={"max": 50}):
        archived.append((res["mam_result"]["id"], res["mam_result"]["forwarded"]["stanza"]["body"]))
    want = sids[0].get("id") if sids else None
    r.check(want is not None and (want, "from a 42") in archived,
            "romeo's archive holds the message under the carbon's stanza-id"
            + ("" if want is not None and (want, "from a 42") in archived
               else f" ({want} not in {archived})"))

    # Blocking.
    for c in (a, b):
        res = await c["xep_0191"].get_blocked(timeout=STEP)
        r.check(len(res["blocklist"]["items"]) == 0, f"{c.boundjid}: the blocklist is empty")
    await a["xep_0191"].block(f"juliet@{DOMAIN}", timeout=STEP)
    p = await next_matching(b.pushes, lambda p: p[0] == "block")
    r.check(p is not None and {str(x) for x in p[1]["block"]["items"]} == {f"juliet@{DOMAIN}"},
            "romeo/b gets the block push")
    res = await b["xep_0191"].get_blocked(timeout=STEP)
    r.check({str(x) for x in res["blocklist"]["items"]} == {f"juliet@{DOMAIN}"},
            "the blocklist holds juliet")
    j.send_message(mto=f"romeo@{DOMAIN}", mbody="blocked 43", mtype="chat")
    e = await next_matching(j.errors, lambda e: True)
    r.check(e is not None and e["error"]["condition"] == "service-unavailable",
            "juliet's message is refused with service-unavailable"
            + ("" if e is None else f" ({e['error']['condition']})"))
    a.send_message(mto=f"juliet@{DOMAIN}", mbody="to blocked 44", mtype="chat")
    e = await next_matching(a.errors, lambda e: True)
    r.check(e is not None and e["error"]["condition"] == "not-acceptable"
            and e.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None,
            "romeo's message to her is refused with not-acceptable and <blocked/>")
    try:
        await j["xep_0030"].get_info(jid=f"romeo@{DOMAIN}/a", timeout=STEP)
        iq_refused = False
    except IqError as ex:
        iq_refused = ex.iq["error"]["condition"] == "service-unavailable"
    r.check(iq_refused, "juliet's IQ to romeo/a is refused with service-unavailable")

    await a["xep_0191"].unblock(f"juliet@{DOMAIN}", timeout=STEP)
    p = await next_matching(b.pushes, lambda p: p[0] == "unblock")
    r.check(p is not None, "romeo/b gets the unblock push")
    j.send_message(mto=f"romeo@{DOMAIN}/a", mbody="again 45", mtype="chat")
    m = await next_matching(a.messages, lambda m: m["body"] == "again 45")
    r.check(m is not None, "after the unblock juliet's messages arrive again")


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("slixmpp_carbons_blocking")
    slixtest.quiet_logging()
    with kabartest.Kabard(args) as kd:
        with slixtest.Loop(r, TOTAL) as lp:
            lp.run(scenario(r, kd, lp.clients))
        r.check(kd.alive(), "kabard still running at the end")
    r.finish()


if __name__ == "__main__":
    main()
