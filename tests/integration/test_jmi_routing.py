"""Jingle Message Initiation (XEP-0353) through a real kabard, in raw XML: a proposal to the
callee's bare JID reaches every device of theirs (with XEP-0280 carbons, also one with a negative
priority), the caller's other devices see it as a sent carbon, the answer (proceed) from one
device is copied to the callee's other devices (so they stop ringing) and to the caller's other
devices; the messages, which carry no body but a <store/> hint, are archived (XEP-0313) and
stored offline (XEP-0160).

"Nothing arrived" is never judged by waiting: the same sender then sends a marker to the same
recipient, which the server delivers after anything the first stanza caused.

Run: /usr/bin/python3 test_jmi_routing.py --kabard PATH --kabarctl PATH
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import NS_CLIENT, NS_FORWARD, login, online, q, tostr, until_marker  # noqa: E402
from xmpp_raw import carbon as unwrap_carbon  # noqa: E402
from xmpp_raw import enable_carbons as enable  # noqa: E402

R = kabartest.Results("jmi_routing")
PW = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
NS_JMI = "urn:xmpp:jingle-message:0"
NS_MAM = "urn:xmpp:mam:2"
SID = "ca3cf894-5325-482f-a412-a6e9f832298d"
section = R.section


def jmi(kind, to, inner=""):
    return ("<message to='%s' type='chat' id='%s-%s'><%s xmlns='%s' id='%s'>%s</%s>"
            "<store xmlns='urn:xmpp:hints'/></message>" % (to, kind, to.replace("@", "."), kind,
                                                          NS_JMI, SID, inner, kind))


PROPOSE_INNER = "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>"


def direct(el, kind):
    """The <kind/> JMI element of a message as it is, or None."""
    if el.tag != q(NS_CLIENT, "message"):
        return None
    return el.find(q(NS_JMI, kind))


def carbon(el, flag, kind):
    """The message inside a <sent/>/<received/> carbon when it carries a JMI <kind/>, or None."""
    inner = unwrap_carbon(el, flag)
    if inner is None or inner.find(q(NS_JMI, kind)) is None:
        return None
    return inner


def dump(els):
    return [tostr(e) for e in els]


def check(cond, what, got=None):
    """R.check, with what arrived appended only when it failed."""
    R.check(cond, what if cond or got is None else "%s (got %s)" % (what, dump(got)))


@section
def routing(k):
    home = online(k.port, "alice", PW["alice"], "home")
    garden = online(k.port, "alice", PW["alice"], "garden")
    phone = online(k.port, "bob", PW["bob"], "phone")
    desk = online(k.port, "bob", PW["bob"], "desk")
    # XEP-0353 §2: devices with negative priorities too.
    tablet = login(k.port, "bob", PW["bob"], "tablet")
    tablet.presence(extra="<priority>-1</priority>")
    for c in (home, garden, phone, desk, tablet):
        R.check(enable(c), "carbons enabled for %s" % c.jid)
    for c in (home, garden, phone, desk, tablet):
        c.drain(0.05)

    # §3.1: the proposal to the bare JID.
    home.send(jmi("propose", "bob@localhost", PROPOSE_INNER))
    for dev in (phone, desk):
        got = until_marker(dev, home)
        props = [direct(e, "propose") for e in got if direct(e, "propose") is not None]
        check(len(props) == 1, "%s gets the proposal once" % dev.jid, got)
        R.check(bool(props) and props[0].get("id") == SID, "with its id")
    got = until_marker(tablet, home)
    check(any(direct(e, "propose") is not None or carbon(e, "received", "propose") is not None
              for e in got),
          "the device with a negative priority gets it too (as a carbon)", got)
    got = until_marker(garden, home)
    sent = [carbon(e, "sent", "propose") for e in got if carbon(e, "sent", "propose") is not None]
    check(len(sent) == 1 and sent[0].get("to") == "bob@localhost",
          "the caller's other device sees the proposal as a sent carbon", got)

    # §3.2: each ringing device says so to the caller's full JID.
    phone.send(jmi("ringing", "alice@localhost/home"))
    desk.send(jmi("ringing", "alice@localhost/home"))
    got = until_marker(home, phone) + until_marker(home, desk)
    R.check(sum(1 for e in got if direct(e, "ringing") is not None) == 2,
            "the caller hears both devices ringing")

    # §3.4: the phone takes the call.
    phone.send(jmi("proceed", "alice@localhost/home"))
    got = until_marker(home, phone)
    R.check(any(direct(e, "proceed") is not None for e in got), "the caller gets the proceed")
    for dev in (desk, tablet):
        got = until_marker(dev, phone)
        check(any(carbon(e, "sent", "proceed") is not None for e in got),
              "%s sees the proceed as a sent carbon and can stop ringing" % dev.jid, got)
    got = until_marker(garden, phone)
    check(any(carbon(e, "received", "proceed") is not None for e in got),
          "the caller's other device sees the proceed as a received carbon", got)

    # §3.6: finish, both ways.
    home.send(jmi("finish", "bob@localhost/phone",
                  "<reason xmlns='urn:xmpp:jingle:1'><success/></reason>"))
    got = until_marker(phone, home)
    R.check(any(direct(e, "finish") is not None for e in got), "the callee gets the finish")
    got = until_marker(desk, home)
    R.check(any(carbon(e, "received", "finish") is not None for e in got),
            "and its other devices a carbon of it")

    # §4 / XEP-0313: the bodiless messages with <store/> are in both archives.
    for c, who in ((home, "alice"), (phone, "bob")):
        c.drain(0.05)
        c.send("<iq type='set' id='mam1'><query xmlns='%s' queryid='q1'/></iq>" % NS_MAM)
        c.expect("{jabber:client}iq", id="mam1")
        kinds = set()
        for e in c.queue:
            r = e.find(q(NS_MAM, "result"))
            fwd = r.find(q(NS_FORWARD, "forwarded")) if r is not None else None
            m = fwd.find(q(NS_CLIENT, "message")) if fwd is not None else None
            if m is not None:
                for kind in ("propose", "ringing", "proceed", "finish"):
                    if m.find(q(NS_JMI, kind)) is not None:
                        kinds.add(kind)
        c.queue = []
        R.check({"propose", "proceed", "finish"} <= kinds,
                "%s's archive keeps the JMI messages (%s)" % (who, sorted(kinds)))
    for c in (home, garden, phone, desk, tablet):
        c.close()


@section
def offline(k):
    # XEP-0160 with XEP-0334 <store/>: a proposal to a callee with no device online waits for
    # the next login (the responder then decides from the archive whether it is still on).
    home = online(k.port, "alice", PW["alice"], "home")
    home.send(jmi("propose", "carol@localhost", PROPOSE_INNER))
    # Stored asynchronously: wait until the queue holds it, so the login below finds it there.
    deadline = time.monotonic() + 10
    while kabartest.offline_count(k, "carol") < 1 and time.monotonic() < deadline:
        pass
    R.check(kabartest.offline_count(k, "carol") == 1,
            "a bodiless proposal with <store/> is stored offline")
    carol = login(k.port, "carol", PW["carol"], "phone")
    carol.presence()
    m = carol.wait_for(lambda e: direct(e, "propose") is not None, what="offline proposal")
    R.check(m.find(q("urn:xmpp:delay", "delay")) is not None,
            "the stored proposal arrives at login with a delay stamp")
    home.close()
    carol.close()


def main():
    args = kabartest.parse_args()
    R.run_sections(kabartest.Kabard(args), PW, (routing, offline))


if __name__ == "__main__":
    main()
