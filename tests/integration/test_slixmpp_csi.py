"""Client State Indication (XEP-0352) with slixmpp's own plugin (Debian's python3-slixmpp 1.8.3:
xep_0352, with xep_0085 chat states) over STARTTLS, and raw XML for the edge cases the XEP
spells out.

slixmpp: romeo sees the feature, goes inactive; juliet changes her presence three times and the
nurse sends him two chat states: nothing arrives. The nurse's message with a body arrives at once,
after her latest chat state (held, then let go first); juliet's IQ is answered at once; on
<active/> romeo gets juliet's latest presence alone.

Raw XML: a CSI element before authentication ends the stream with <not-authorized/> (RFC 6120
§4.9.3.12); the feature is offered after authentication only; <inactive/> and <active/> get no
reply; <active/> followed by a ping: what was held comes before the pong (XEP-0352 §5.1);
with stream management (XEP-0198) the held stanzas count once delivered: the client's ack of
exactly what it received is right, one more is too high.

Run: /usr/bin/python3 test_slixmpp_csi.py --kabard PATH --kabarctl PATH
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402
import xmpp_raw  # noqa: E402
from slixtest import STEP, collect, drain  # noqa: E402
from xmpp_raw import NS_CLIENT, q  # noqa: E402

from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

QUIET = 1.0  # how long "nothing arrives" is watched
TOTAL = 120.0
DOMAIN = "localhost"
NS_CSI = "urn:xmpp:csi:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_SM = "urn:xmpp:sm:3"


class Client(slixtest.Client):
    def __init__(self, jid, password):
        super().__init__(jid, password, ("xep_0030", "xep_0085", "xep_0352"))
        # Every presence and message, in the order they arrived: ("presence", from, show or
        # type), ("state", from, chat state), ("body", from, body).
        self.got = asyncio.Queue()
        # slixmpp's "message" event skips messages without a body: these see everything.
        self.register_handler(Callback("all presence", MatchXPath("{jabber:client}presence"),
                                       self._on_presence))
        self.register_handler(Callback("all messages", MatchXPath("{jabber:client}message"),
                                       self._on_message))

    def _on_presence(self, p):
        kind = p["type"]
        if kind == "available":
            kind = p["show"] or "available"
        self.got.put_nowait(("presence", str(p["from"]), kind))

    def _on_message(self, m):
        body = m.xml.findtext("{jabber:client}body")
        if body is not None:
            self.got.put_nowait(("body", str(m["from"]), body))
            return
        for c in m.xml:
            if c.tag.startswith("{%s}" % NS_CHATSTATES):
                self.got.put_nowait(("state", str(m["from"]), c.tag.split("}")[1]))


async def login(r, kd, jid, pw):
    return await slixtest.login(r, kd, Client(jid, pw))


async def chat_state(sender, to, state):
    m = sender.make_message(mto=to, mtype="chat")
    m["chat_state"] = state
    m.send()


async def slixmpp_scenario(r, kd, clients):
    for u in ("romeo", "juliet", "nurse"):
        kd.add_user(u, u + "-pw")
    romeo = await login(r, kd, f"romeo@{DOMAIN}/phone", "romeo-pw")
    juliet = await login(r, kd, f"juliet@{DOMAIN}/balcony", "juliet-pw")
    nurse = await login(r, kd, f"nurse@{DOMAIN}/hall", "nurse-pw")
    clients += [romeo, juliet, nurse]
    r.check(romeo["xep_0352"].enabled, "slixmpp sees the csi stream feature")

    # Rosters: slixmpp approves and subscribes back by default, so each pair ends with 'both'.
    for who in (juliet, nurse):
        romeo.send_presence_subscription(pto=who.boundjid.bare)
        seen = await kabartest.next_matching(
            romeo.got, lambda g: g[0] == "presence" and g[1] == str(who.boundjid)
            and g[2] == "available", STEP)
        r.check(seen is not None, f"romeo sees {who.boundjid.bare}'s presence once subscribed")
    await collect(romeo.got, 0.5)

    romeo["xep_0352"].send_inactive()
    # Handled in order: once the server has answered an IQ sent after it, romeo is inactive.
    await romeo["xep_0030"].get_info(jid=DOMAIN, timeout=STEP)
    for show in ("away", "xa", "dnd"):
        juliet.send_presence(pshow=show)
    await chat_state(nurse, romeo.boundjid.full, "composing")
    await chat_state(nurse, romeo.boundjid.full, "paused")
    got = await collect(romeo.got, QUIET)
    r.check(got == [], f"inactive: presence and chat states are held ({got})")

    # An IQ goes at once (slixmpp's disco plugin answers it).
    try:
        info = await juliet["xep_0030"].get_info(jid=romeo.boundjid.full, timeout=STEP)
        r.check(info["type"] == "result", "inactive: an IQ to romeo is answered at once")
    except Exception as e:  # noqa: BLE001
        r.check(False, f"inactive: an IQ to romeo is answered at once ({e})")
    got = drain(romeo.got)
    r.check(got == [("presence", str(juliet.boundjid), "dnd")],
            f"the IQ from juliet let her held presence go first, the latest only ({got})")

    nurse.send_message(mto=romeo.boundjid.full, mbody="wake up", mtype="chat")
    first = await kabartest.next_matching(romeo.got, lambda g: True, STEP)
    second = await kabartest.next_matching(romeo.got, lambda g: True, STEP)
    r.check(first == ("state", str(nurse.boundjid), "paused"),
            f"the nurse's latest chat state comes first, coalesced ({first})")
    r.check(second == ("body", str(nurse.boundjid), "wake up"),
            f"then her message with a body, at once ({second})")
    got = await collect(romeo.got, 0.5)
    r.check(got == [], f"nothing else comes while romeo is inactive ({got})")

    juliet.send_presence(pshow="chat")
    await asyncio.sleep(0.3)
    romeo["xep_0352"].send_active()
    got = await collect(romeo.got, QUIET)
    r.check(got == [("presence", str(juliet.boundjid), "chat")],
            f"<active/>: juliet's latest presence alone ({got})")
    juliet.send_presence(pshow="away")
    p = await kabartest.next_matching(romeo.got, lambda g: g[0] == "presence", STEP)
    r.check(p == ("presence", str(juliet.boundjid), "away"), "active again: presence at once")


INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
ACTIVE = "<active xmlns='urn:xmpp:csi:0'/>"


def ping(id_):
    return "<iq type='get' id='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % id_


def chat_state_xml(to, state):
    return "<message to='%s' type='chat'><%s xmlns='%s'/></message>" % (to, state, NS_CHATSTATES)


def texts(els):
    return [xmpp_raw.tostr(e) for e in els]


def raw_online(kd, user, resource):
    return xmpp_raw.online(kd.port, user, user + "-pw", resource)


def befriend(a, b):
    """A 'both' subscription between two raw connections (RFC 6121 §3)."""
    a_bare, b_bare = a.jid.split("/")[0], b.jid.split("/")[0]
    a.presence(to=b_bare, type_="subscribe")
    b.expect_presence(type_="subscribe", from_=a_bare)
    b.presence(to=a_bare, type_="subscribed")
    b.presence(to=a_bare, type_="subscribe")
    a.expect_presence(type_="subscribe", from_=b_bare)
    a.presence(to=b_bare, type_="subscribed")


def raw_scenario(r, kd):
    for u in ("tybalt", "benvolio", "paris"):
        kd.add_user(u, u + "-pw")

    # Before authentication: not authorized (RFC 6120 §4.9.3.12); not offered either.
    c = xmpp_raw.Conn(kd.port)
    c.open_stream()
    c.starttls()
    r.check(c.features.find(q(NS_CSI, "csi")) is None, "csi is not offered before authentication")
    c.send(INACTIVE)
    try:
        cond = c.stream_error()
    except xmpp_raw.XmppError as e:
        cond = str(e)
    r.check(cond == "not-authorized", f"<inactive/> before authentication: {cond}")
    c.close()

    # After authentication: offered beside bind.
    c = xmpp_raw.Conn(kd.port)
    c.open_stream()
    c.starttls()
    feats = c.authenticate("tybalt", "tybalt-pw")
    r.check(feats.find(q(NS_CSI, "csi")) is not None, "csi is offered after authentication")
    c.close()

    t = raw_online(kd, "tybalt", "sword")
    b = raw_online(kd, "benvolio", "peace")
    p = raw_online(kd, "paris", "county")
    befriend(t, b)
    befriend(t, p)
    for x in (b, p):
        x.presence()
    t.drain(0.5)
    b.drain(0.1)
    p.drain(0.1)

    # No reply (XEP-0352 §4): the pong is the next thing that comes.
    t.send(INACTIVE + ping("ping1"))
    el = t.wait_for(lambda e: True)
    r.check(el.tag == q(NS_CLIENT, "iq") and el.get("id") == "ping1",
            f"no reply to <inactive/>: the pong comes next ({xmpp_raw.tostr(el)})")

    # Held, then let go before the pong that follows <active/> (§5.1).
    b.presence(extra="<show>away</show>")
    b.presence(extra="<show>xa</show>")
    b.send(chat_state_xml(t.jid, "composing"))
    p.presence(extra="<show>dnd</show>")
    got = t.drain(QUIET)
    r.check(got == [], f"inactive: nothing arrives ({texts(got)})")
    t.send(ACTIVE + ping("ping2"))
    seq = []
    while True:
        el = t.wait_for(lambda e: True)
        seq.append(el)
        if el.tag == q(NS_CLIENT, "iq"):
            break
    brief = [(e.tag.split("}")[1], e.get("from"), e.findtext(q(NS_CLIENT, "show"))) for e in seq]
    # Each sender's order holds; benvolio and paris may be on different shards, so their
    # stanzas reach tybalt's session in either order.
    from_b = [("presence", b.jid, "xa"), ("message", b.jid, None)]
    r.check(set(brief[:3]) == set(from_b + [("presence", p.jid, "dnd")])
            and [x for x in brief if x[1] == b.jid] == from_b and brief[3:] == [("iq", None, None)],
            f"<active/> then a ping: the latest of each, in order, then the pong ({brief})")

    # Stream management: held stanzas count once they are sent.
    t.send("<enable xmlns='urn:xmpp:sm:3'/>")
    t.expect(q(NS_SM, "enabled"))
    # Inactive before the contacts send (they may be on another shard): the pong says so.
    t.send(INACTIVE + ping("ping2b"))
    t.expect(q(NS_CLIENT, "iq"), id="ping2b")
    for show in ("away", "xa", "dnd", "chat"):
        b.presence(extra="<show>%s</show>" % show)
    p.send(chat_state_xml(t.jid, "paused"))
    got = [e for e in t.drain(QUIET) if e.tag != q(NS_SM, "r")]
    r.check(got == [], f"inactive with stream management: nothing arrives ({texts(got)})")
    t.send(ACTIVE + ping("ping3"))
    t.expect(q(NS_CLIENT, "iq"), id="ping3")
    stanzas = [e for e in t.queue if e.tag.startswith("{%s}" % NS_CLIENT)]
    t.queue = [e for e in t.queue if e.tag.startswith("{%s}" % NS_SM)]
    received = len(stanzas) + 2  # and the pongs to ping2b and ping3
    r.check(len(stanzas) == 2, f"two held stanzas, then the pong ({texts(stanzas)})")
    t.send("<a xmlns='urn:xmpp:sm:3' h='%d'/>" % received + ping("ping4"))
    try:
        t.expect(q(NS_CLIENT, "iq"), id="ping4")
        ok = True
    except xmpp_raw.XmppError as e:
        ok = False
        print(e)
    r.check(ok, f"<a h='{received}'/> (everything received) is accepted")
    received += 1  # the pong to ping4
    t.send("<a xmlns='urn:xmpp:sm:3' h='%d'/>" % (received + 1))
    try:
        cond = t.stream_error()
    except xmpp_raw.XmppError as e:
        cond = str(e)
    r.check(cond == "undefined-condition" and b"handled-count-too-high" in bytes(t.raw),
            f"an ack past what was sent is too high ({cond}): held stanzas were not counted early")
    for x in (t, b, p):
        x.close()


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("slixmpp_csi")
    slixtest.quiet_logging()
    with kabartest.Kabard(args) as kd:
        with slixtest.Loop(r, TOTAL) as lp:
            lp.run(slixmpp_scenario(r, kd, lp.clients))
        r.section(raw_scenario)(r, kd)
        r.check(kd.alive(), "kabard still running at the end")
    r.finish()


if __name__ == "__main__":
    main()
